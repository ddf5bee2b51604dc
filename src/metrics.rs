//! Prometheus metrics (`GET /metrics`): requests by route and status, logins
//! by outcome, rate-limit rejections by rule, audit rows written and audit
//! write latency, the password-hashing queue depth and the rate-limit windows
//! held in memory.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every series portcullis exports, in its own registry.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub logins: IntCounterVec,
    pub rate_limit_rejections: IntCounterVec,
    /// Forward-auth checks by outcome (`portcullis_forward_auth_total`).
    pub forward_auth: ForwardAuthCounters,
    pub rate_limit_unavailable: IntCounter,
    pub audit_rows: IntCounter,
    pub audit_write_seconds: Histogram,
    pub hash_queue_depth: IntGauge,
    pub rate_limit_keys: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("portcullis".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route pattern and status",
            ),
            &["route", "status"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new("logins_total", "Login attempts by outcome"),
            &["outcome"],
        )?;
        let rate_limit_rejections = IntCounterVec::new(
            Opts::new(
                "rate_limit_rejections_total",
                "Requests refused with 429, by rule",
            ),
            &["rule"],
        )?;
        let rate_limit_unavailable = IntCounter::new(
            "rate_limit_unavailable_total",
            "Guarded requests refused with 503 because the rate-limit store could not be reached",
        )?;
        let audit_rows = IntCounter::new("audit_rows_written_total", "Audit rows committed")?;
        let audit_write_seconds = Histogram::with_opts(
            HistogramOpts::new("audit_write_seconds", "Time to commit one audit batch").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            ),
        )?;
        let hash_queue_depth = IntGauge::new("hash_queue_depth", "Password hashing jobs waiting")?;
        let forward_auth = IntCounterVec::new(
            Opts::new("forward_auth_total", "Forward-auth checks by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(forward_auth.clone()))?;
        let forward_auth = ForwardAuthCounters::new(&forward_auth);
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(rate_limit_rejections.clone()))?;
        registry.register(Box::new(rate_limit_unavailable.clone()))?;
        registry.register(Box::new(audit_rows.clone()))?;
        registry.register(Box::new(audit_write_seconds.clone()))?;
        let rate_limit_keys = IntGauge::new(
            "rate_limit_keys",
            "Rate-limit windows held in memory (bounded by max_keys)",
        )?;
        registry.register(Box::new(hash_queue_depth.clone()))?;
        registry.register(Box::new(rate_limit_keys.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            logins,
            rate_limit_rejections,
            forward_auth,
            rate_limit_unavailable,
            audit_rows,
            audit_write_seconds,
            hash_queue_depth,
            rate_limit_keys,
        })
    }

    /// Counts a forward-auth check.
    pub fn forward_auth(&self, outcome: ForwardAuthOutcome) {
        self.forward_auth.0[outcome as usize].inc();
    }

    /// Counts a login attempt: `success`, `failure`, `mfa_required`,
    /// `rate_limited`, `mfa_success`, `mfa_failure`.
    pub fn login(&self, outcome: &str) {
        self.logins.with_label_values(&[outcome]).inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// How a forward-auth check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthOutcome {
    Allowed,
    Bypass,
    SignIn,
    Forbidden,
    Malformed,
    Untrusted,
}

impl ForwardAuthOutcome {
    const ALL: [(Self, &'static str); 6] = [
        (Self::Allowed, "allowed"),
        (Self::Bypass, "bypass"),
        (Self::SignIn, "sign_in"),
        (Self::Forbidden, "forbidden"),
        (Self::Malformed, "malformed"),
        (Self::Untrusted, "untrusted"),
    ];
}

/// One counter per outcome, resolved once (a check costs an atomic add).
#[derive(Clone)]
pub struct ForwardAuthCounters([IntCounter; 6]);

impl ForwardAuthCounters {
    fn new(vec: &IntCounterVec) -> Self {
        Self(ForwardAuthOutcome::ALL.map(|(_, label)| vec.with_label_values(&[label])))
    }
}

impl std::fmt::Debug for ForwardAuthCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardAuthCounters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new().unwrap();
        m.http_requests.with_label_values(&["/health", "200"]).inc();
        m.login("success");
        m.rate_limit_rejections
            .with_label_values(&["login_ip"])
            .inc();
        m.audit_rows.inc_by(3);
        m.audit_write_seconds.observe(0.002);
        m.hash_queue_depth.set(2);
        m.rate_limit_keys.set(7);
        let text = m.render();
        for series in [
            "portcullis_http_requests_total{route=\"/health\",status=\"200\"} 1",
            "portcullis_logins_total{outcome=\"success\"} 1",
            "portcullis_rate_limit_rejections_total{rule=\"login_ip\"} 1",
            "portcullis_audit_rows_written_total 3",
            "portcullis_audit_write_seconds_count 1",
            "portcullis_hash_queue_depth 2",
            "portcullis_rate_limit_keys 7",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }
}
