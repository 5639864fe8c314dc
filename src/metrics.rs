//! Typed recording methods over our own Prometheus registry (design §8.2). Labels are
//! bounded: they come from enums, never from requests.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::{Reason, UpstreamError};

/// All metrics of one process. Cheap to share (`Arc<Metrics>`); survives reloads.
pub struct Metrics {
    registry: Registry,
    /// Indexed by [`Reason::index`].
    requests: Vec<IntCounter>,
    request_duration: Histogram,
    upstream_errors: [IntCounter; 3],
    identity_headers_stripped: IntCounter,
    identity_groups_truncated: IntCounter,
    connections_active: IntGauge,
    connections_refused: IntCounter,
    auth_duration: Histogram,
    token_cache_hits: IntCounter,
    token_cache_misses: IntCounter,
    jwks_fetch: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: GaugeVec,
    jwks_stale: IntGaugeVec,
    config_reload_success: IntCounter,
    config_reload_failure: IntCounter,
    config_last_reload_success: Gauge,
}

/// The key-cache metrics of one provider (labels resolved once).
#[derive(Clone)]
pub struct JwksMetrics {
    pub success: IntCounter,
    pub not_modified: IntCounter,
    pub error: IntCounter,
    pub keys: IntGauge,
    pub last_success: Gauge,
    pub stale: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tollgate".into()), None)?;
        let requests_vec = IntCounterVec::new(
            Opts::new("requests_total", "Requests by decision and reason"),
            &["decision", "reason"],
        )?;
        registry.register(Box::new(requests_vec.clone()))?;
        let requests = Reason::ALL
            .iter()
            .map(|r| requests_vec.with_label_values(&[r.decision(), r.as_str()]))
            .collect();
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request head to response head",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        let upstream_vec = IntCounterVec::new(
            Opts::new("upstream_errors_total", "Failed upstream requests by kind"),
            &["kind"],
        )?;
        registry.register(Box::new(upstream_vec.clone()))?;
        let upstream_errors = [
            upstream_vec.with_label_values(&["connect"]),
            upstream_vec.with_label_values(&["timeout"]),
            upstream_vec.with_label_values(&["protocol"]),
        ];
        let identity_headers_stripped = IntCounter::new(
            "identity_headers_stripped_total",
            "Client-supplied identity headers removed",
        )?;
        registry.register(Box::new(identity_headers_stripped.clone()))?;
        let identity_groups_truncated = IntCounter::new(
            "identity_groups_truncated_total",
            "Requests whose X-Auth-Groups was cut to respect max_identity_bytes",
        )?;
        registry.register(Box::new(identity_groups_truncated.clone()))?;
        let connections_active = IntGauge::new("connections_active", "Open client connections")?;
        registry.register(Box::new(connections_active.clone()))?;
        let connections_refused = IntCounter::new(
            "connections_refused_total",
            "Connections closed at accept because max_connections was reached",
        )?;
        registry.register(Box::new(connections_refused.clone()))?;
        let build_info =
            IntGaugeVec::new(Opts::new("build_info", "Build information"), &["version"])?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let auth_duration = Histogram::with_opts(
            HistogramOpts::new(
                "auth_duration_seconds",
                "Time spent verifying the token (including waits for keys)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(auth_duration.clone()))?;
        let token_cache_hits =
            IntCounter::new("token_cache_hits_total", "Verified-token cache hits")?;
        registry.register(Box::new(token_cache_hits.clone()))?;
        let token_cache_misses =
            IntCounter::new("token_cache_misses_total", "Verified-token cache misses")?;
        registry.register(Box::new(token_cache_misses.clone()))?;
        let jwks_fetch = IntCounterVec::new(
            Opts::new("jwks_fetch_total", "Key set fetches by provider and result"),
            &["provider", "result"],
        )?;
        registry.register(Box::new(jwks_fetch.clone()))?;
        let jwks_keys = IntGaugeVec::new(
            Opts::new("jwks_keys", "Usable keys in the current key set"),
            &["provider"],
        )?;
        registry.register(Box::new(jwks_keys.clone()))?;
        let jwks_last_success = GaugeVec::new(
            Opts::new(
                "jwks_last_success_timestamp_seconds",
                "Unix time of the last successful key set fetch",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(jwks_last_success.clone()))?;
        let jwks_stale = IntGaugeVec::new(
            Opts::new(
                "jwks_stale",
                "1 while the last fetch failed and the previous key set is being served",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(jwks_stale.clone()))?;
        let reload_vec = IntCounterVec::new(
            Opts::new("config_reload_total", "Configuration reloads by result"),
            &["result"],
        )?;
        registry.register(Box::new(reload_vec.clone()))?;
        let config_last_reload_success = Gauge::new(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the running configuration was loaded",
        )?;
        registry.register(Box::new(config_last_reload_success.clone()))?;
        config_last_reload_success.set(unix_now());
        Ok(Self {
            config_reload_success: reload_vec.with_label_values(&["success"]),
            config_reload_failure: reload_vec.with_label_values(&["failure"]),
            config_last_reload_success,
            registry,
            auth_duration,
            token_cache_hits,
            token_cache_misses,
            jwks_fetch,
            jwks_keys,
            jwks_last_success,
            jwks_stale,
            requests,
            request_duration,
            upstream_errors,
            identity_headers_stripped,
            identity_groups_truncated,
            connections_active,
            connections_refused,
        })
    }

    pub fn request(&self, reason: Reason, seconds: f64) {
        if let Some(c) = self.requests.get(reason.index()) {
            c.inc();
        }
        self.request_duration.observe(seconds);
    }

    pub fn upstream_error(&self, e: UpstreamError) {
        let [connect, timeout, protocol] = &self.upstream_errors;
        match e {
            UpstreamError::Connect => connect.inc(),
            UpstreamError::Timeout => timeout.inc(),
            UpstreamError::Protocol => protocol.inc(),
        }
    }

    pub fn identity_headers_stripped(&self, n: usize) {
        if n > 0 {
            self.identity_headers_stripped.inc_by(n as u64);
        }
    }

    pub fn identity_groups_truncated(&self) {
        self.identity_groups_truncated.inc();
    }

    pub fn connection_opened(&self) {
        self.connections_active.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_active.dec();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Metric handles for one provider's key cache.
    pub fn jwks(&self, provider: &str) -> JwksMetrics {
        JwksMetrics {
            success: self.jwks_fetch.with_label_values(&[provider, "success"]),
            not_modified: self
                .jwks_fetch
                .with_label_values(&[provider, "not_modified"]),
            error: self.jwks_fetch.with_label_values(&[provider, "error"]),
            keys: self.jwks_keys.with_label_values(&[provider]),
            last_success: self.jwks_last_success.with_label_values(&[provider]),
            stale: self.jwks_stale.with_label_values(&[provider]),
        }
    }

    pub fn config_reload(&self, ok: bool) {
        if ok {
            self.config_reload_success.inc();
            self.config_last_reload_success.set(unix_now());
        } else {
            self.config_reload_failure.inc();
        }
    }

    pub fn token_cache(&self, hit: bool) {
        if hit {
            self.token_cache_hits.inc();
        } else {
            self.token_cache_misses.inc();
        }
    }

    pub fn auth_duration(&self, seconds: f64) {
        self.auth_duration.observe(seconds);
    }

    /// The registry for components that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
