//! Step 10 (audit half): one structured event per request on the `audit` tracing target
//! (design §8.3). Never carries a token or a secret: only the fields below.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

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

/// Where JSON log lines go, when the process logs JSON (`tollgate run`): audit events are
/// then encoded here directly, as the same one-line JSON object the log formatter would
/// write, instead of through tracing-subscriber's general formatter (which costs a third
/// of a cache-hit request on one core: BENCHMARKS.md). Set once at start-up.
static JSON_WRITER: OnceLock<tracing_appender::non_blocking::NonBlocking> = OnceLock::new();

/// Sends audit events as JSON lines straight to `writer` (the log writer of `tollgate run`).
pub fn write_json_to(writer: tracing_appender::non_blocking::NonBlocking) {
    let _ = JSON_WRITER.set(writer);
}

/// One audit line, in the field names and order of the JSON log format.
#[derive(serde::Serialize)]
struct Line<'a> {
    timestamp: String,
    level: &'static str,
    message: &'static str,
    request_id: &'a str,
    client: IpAddr,
    method: &'a str,
    path: &'a str,
    route: i64,
    provider: &'a str,
    subject: &'a str,
    account: &'a str,
    mapping: &'a str,
    permission_source: &'a str,
    decision: &'static str,
    reason: &'static str,
    status: u16,
    latency_us: u64,
    target: &'static str,
}

/// Emits the event if `mode` asks for it.
pub fn record(mode: AuditMode, ev: &AuditEvent<'_>) {
    let allowed = ev.reason.decision() == "allow";
    match mode {
        AuditMode::Off => return,
        AuditMode::Denied if allowed => return,
        AuditMode::All | AuditMode::Denied => {}
    }
    if let Some(w) = JSON_WRITER.get() {
        // The log filter still decides (`TOLLGATE_LOG=audit=off` silences audit events).
        if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
            return;
        }
        let line = Line {
            timestamp: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            level: "INFO",
            message: "request",
            request_id: ev.request_id,
            client: ev.client.ip(),
            method: ev.method,
            path: ev.path.unwrap_or(""),
            route: ev.route.map(|r| r as i64).unwrap_or(-1),
            provider: ev.provider.unwrap_or(""),
            subject: ev.subject.unwrap_or(""),
            account: ev.account.unwrap_or(""),
            mapping: ev.mapping.unwrap_or(""),
            permission_source: ev.permission_source.unwrap_or(""),
            decision: ev.reason.decision(),
            reason: ev.reason.as_str(),
            status: ev.status,
            latency_us: ev.latency.as_micros() as u64,
            target: "audit",
        };
        let mut buf = Vec::with_capacity(512);
        if serde_json::to_writer(&mut buf, &line).is_ok() {
            buf.push(b'\n');
            // One write is one queued line; the queue is lossless (it waits when full).
            let _ = w.clone().write_all(&buf);
        }
        return;
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
