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

/// One audit line, in the field names and order of the JSON log format. Both encodings
/// (this one, and the `tracing` event used with `--log-format pretty` and in-process) are
/// made from it, so the conversions (absent → `""`, no route → `-1`) exist once; a test
/// checks that tracing-subscriber's JSON for the event is this object.
#[derive(serde::Serialize)]
struct Line<'a> {
    timestamp: Timestamp,
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

/// RFC 3339 with microseconds, as the log formatter writes it; serialized without an
/// intermediate `String`.
struct Timestamp(SystemTime);

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(self.0))
    }
}

impl<'a> Line<'a> {
    fn new(ev: &'a AuditEvent<'a>, now: SystemTime) -> Self {
        Line {
            timestamp: Timestamp(now),
            level: "INFO",
            message: "request",
            request_id: ev.request_id,
            client: ev.client.ip(),
            method: ev.method,
            path: ev.path.unwrap_or(""),
            route: ev
                .route
                .map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX)),
            provider: ev.provider.unwrap_or(""),
            subject: ev.subject.unwrap_or(""),
            account: ev.account.unwrap_or(""),
            mapping: ev.mapping.unwrap_or(""),
            permission_source: ev.permission_source.unwrap_or(""),
            decision: ev.reason.decision(),
            reason: ev.reason.as_str(),
            status: ev.status,
            latency_us: u64::try_from(ev.latency.as_micros()).unwrap_or(u64::MAX),
            target: "audit",
        }
    }

    /// The line as a `tracing` event on the `audit` target.
    fn trace(&self) {
        tracing::info!(
            target: "audit",
            request_id = self.request_id,
            client = %self.client,
            method = self.method,
            path = self.path,
            route = self.route,
            provider = self.provider,
            subject = self.subject,
            account = self.account,
            mapping = self.mapping,
            permission_source = self.permission_source,
            decision = self.decision,
            reason = self.reason,
            status = self.status,
            latency_us = self.latency_us,
            "request"
        );
    }
}

/// Emits the event if `mode` asks for it.
pub fn record(mode: AuditMode, ev: &AuditEvent<'_>) {
    let allowed = ev.reason.decision() == "allow";
    match mode {
        AuditMode::Off => return,
        AuditMode::Denied if allowed => return,
        AuditMode::All | AuditMode::Denied => {}
    }
    let line = Line::new(ev, SystemTime::now());
    let Some(w) = JSON_WRITER.get() else {
        line.trace();
        return;
    };
    // The log filter still decides (`TOLLGATE_LOG=info,audit=off` silences audit events).
    if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
        return;
    }
    let mut buf = Vec::with_capacity(512);
    if serde_json::to_writer(&mut buf, &line).is_ok() {
        buf.push(b'\n');
        // One write is one queued line; the queue is lossless (it waits when full).
        let _ = w.clone().write_all(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_direct_line_is_what_the_json_log_formatter_writes() {
        let ev = AuditEvent {
            request_id: "r-1",
            client: "[::ffff:10.0.0.9]:4000".parse().unwrap(),
            method: "GET",
            path: Some("/api/\"quoted\""),
            route: None,
            provider: Some("corp"),
            subject: Some("alice"),
            account: None,
            mapping: Some("corp login"),
            permission_source: Some("scope"),
            reason: Reason::Authenticated,
            status: 200,
            latency: Duration::from_micros(1234),
        };
        let line = Line::new(&ev, SystemTime::now());
        // The formatter `tollgate run` installs (src/main.rs), writing into a buffer.
        let sink = Sink::default();
        let out = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || line.trace());
        let traced: serde_json::Value = serde_json::from_slice(&sink.0.lock().unwrap()).unwrap();
        let direct = serde_json::to_value(&line).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys(&direct), keys(&traced));
        for (k, v) in direct.as_object().unwrap() {
            if k != "timestamp" {
                assert_eq!(&traced[k], v, "{k}");
            }
        }
        // Same timestamp format: RFC 3339, microseconds, UTC.
        let ts = |v: &serde_json::Value| v["timestamp"].as_str().unwrap().len();
        assert_eq!(ts(&direct), ts(&traced));
        assert!(direct["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
