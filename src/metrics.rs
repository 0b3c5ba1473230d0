//! Every Prometheus metric the service exports, named and registered in one place.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Requests by repository, package and cache result (HIT, MISS, STALE, REVALIDATED, ERROR...).
    pub requests: IntCounterVec,
    /// Body bytes sent to clients, by repository.
    pub bytes_served: IntCounterVec,
    /// Upstream requests by repository and HTTP status (or "error").
    pub upstream_requests: IntCounterVec,
    /// Body bytes received from upstreams, by repository.
    pub upstream_bytes: IntCounterVec,
    /// Time to upstream response headers, by repository.
    pub upstream_latency: HistogramVec,
    /// Requests that joined a fill already in flight instead of asking upstream.
    pub coalesced_waiters: IntCounterVec,
    pub bypass: IntCounterVec,
    /// Objects in the cache (as counted by this process since start-up).
    pub cache_objects: IntGaugeVec,
    /// Client connections open now.
    pub connections_open: IntGauge,
    /// Client connections answered 503 because `server.max_connections` were open.
    pub connections_refused: IntCounter,
    /// Bytes in the cache (as counted by this process since start-up).
    pub cache_bytes: IntGaugeVec,
    /// `storage.max_size`, when set.
    pub cache_limit_bytes: IntGauge,
    /// Objects evicted, by repository and reason.
    pub evictions: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let requests = counter(
            "artifactapi_requests_total",
            "Requests by repository, package and cache result.",
            &["repository", "package", "cache"],
        );
        let bytes_served = counter(
            "artifactapi_bytes_served_total",
            "Body bytes sent to clients.",
            &["repository"],
        );
        let upstream_requests = counter(
            "artifactapi_upstream_requests_total",
            "Requests sent upstream, by response status.",
            &["repository", "status"],
        );
        let upstream_bytes = counter(
            "artifactapi_upstream_bytes_total",
            "Body bytes received from upstream.",
            &["repository"],
        );
        let coalesced_waiters = counter(
            "artifactapi_coalesced_waiters_total",
            "Requests that joined an upstream fetch already in flight.",
            &["repository"],
        );
        let bypass = counter(
            "artifactapi_bypass_total",
            "Bodies passed from upstream to clients uncached, by reason (no_space, too_large).",
            &["repository", "reason"],
        );
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "artifactapi_upstream_latency_seconds",
                "Time until upstream response headers.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["repository"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(upstream_latency.clone()))
            .expect("unique metric");
        let gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["repository"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let cache_objects = gauge_vec(
            "artifactapi_cache_objects",
            "Objects stored, by repository (local repositories included).",
        );
        let cache_bytes = gauge_vec(
            "artifactapi_cache_bytes",
            "Bytes stored, by repository (local repositories included).",
        );
        let cache_limit_bytes = gauge(
            "artifactapi_cache_limit_bytes",
            "storage.max_size: bytes of cached remote content, at most (0: no limit).",
        );
        let evictions = counter(
            "artifactapi_evictions_total",
            "Cached objects evicted, by repository and reason (max_size, repository_max_size, min_free, unused).",
            &["repository", "reason"],
        );
        let connections_open = gauge(
            "artifactapi_connections_open",
            "Client connections open now.",
        );
        let connections_refused = IntCounter::new(
            "artifactapi_connections_refused_total",
            "Client connections answered 503 because server.max_connections were open.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections_refused.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            bytes_served,
            upstream_requests,
            upstream_bytes,
            upstream_latency,
            coalesced_waiters,
            bypass,
            cache_objects,
            cache_bytes,
            cache_limit_bytes,
            evictions,
            connections_open,
            connections_refused,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
