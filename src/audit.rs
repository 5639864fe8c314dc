//! Step 10 (audit half): one structured event per request on the `audit` tracing target
//! (design §8.3). Never carries a token or a secret: only the fields below.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::AuditMode;
use crate::error::Reason;

/// What one request did.
pub struct AuditEvent<'a> {
    pub request_id: &'a str,
    pub client: SocketAddr,
    pub method: &'a str,
    /// Canonical path (absent when the path was rejected).
    pub path: Option<&'a str>,
    pub route: Option<usize>,
    pub provider: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub account: Option<&'a str>,
    pub mapping: Option<&'a str>,
    pub permission_source: Option<&'a str>,
    pub reason: Reason,
    pub status: u16,
    pub latency: Duration,
}

/// Emits the event if `mode` asks for it.
pub fn record(mode: AuditMode, ev: &AuditEvent<'_>) {
    let allowed = ev.reason.decision() == "allow";
    match mode {
        AuditMode::Off => return,
        AuditMode::Denied if allowed => return,
        AuditMode::All | AuditMode::Denied => {}
    }
    tracing::info!(
        target: "audit",
        request_id = ev.request_id,
        client = %ev.client.ip(),
        method = ev.method,
        path = ev.path.unwrap_or(""),
        route = ev.route.map(|r| r as i64).unwrap_or(-1),
        provider = ev.provider.unwrap_or(""),
        subject = ev.subject.unwrap_or(""),
        account = ev.account.unwrap_or(""),
        mapping = ev.mapping.unwrap_or(""),
        permission_source = ev.permission_source.unwrap_or(""),
        decision = ev.reason.decision(),
        reason = ev.reason.as_str(),
        status = ev.status,
        latency_us = ev.latency.as_micros() as u64,
        "request"
    );
}
