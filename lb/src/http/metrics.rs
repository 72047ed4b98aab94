//! `lab_lb_http_*` and `lab_lb_tls_*`: what `http` and `https` listeners do per request.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub route: String,
    pub backend: String,
    pub method: String,
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReuseLabels {
    pub backend: String,
    pub reused: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub listener: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub listener: String,
    pub version: String,
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    ])
}

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily<ListenerLabel>,
    pub upstream_duration: HistogramFamily<UpstreamLabels>,
    pub upstream_connections: Family<ReuseLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    pub h2_calmed: Family<ErrorLabels, Counter>,
}

impl HttpMetrics {
    /// Registers on a registry already prefixed with `lab_lb`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(request_histogram),
            upstream_duration: Family::new_with_constructor(request_histogram),
            upstream_connections: Family::default(),
            errors: Family::default(),
            tls_handshakes: Family::default(),
            h2_calmed: Family::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by listener, route, backend, method class and status class",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to the end of its response",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register_with_unit(
            "http_upstream_duration",
            "Time from choosing a server to its response header",
            Unit::Seconds,
            metrics.upstream_duration.clone(),
        );
        registry.register(
            "http_upstream_connections",
            "Requests sent upstream, by whether a kept-alive connection was reused",
            metrics.upstream_connections.clone(),
        );
        registry.register(
            "http_errors",
            "Requests answered with an error of the proxy's own (dead_upstream, no_server, timeout, limit, too_large, bad_request)",
            metrics.errors.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes on https listeners, by version and result",
            metrics.tls_handshakes.clone(),
        );
        registry.register(
            "http_h2_calmed_connections",
            "HTTP/2 connections closed with ENHANCE_YOUR_CALM, by kind (rapid_reset: streams reset faster than answered; flood: frames that do no work past the allowance; h2: a limit of the h2 layer's own)",
            metrics.h2_calmed.clone(),
        );
        metrics
    }

    pub fn error(&self, listener: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                listener: listener.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn h2_calmed(&self, listener: &str, kind: &str) {
        self.h2_calmed
            .get_or_create(&ErrorLabels {
                listener: listener.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn handshake(&self, listener: &str, version: &str, result: &str) {
        self.handshake_counter(listener, version, result).inc();
    }

    /// The counter [`Self::handshake`] counts on, for a caller to keep (labels are looked up
    /// in a lock and their strings made: not something to do per connection).
    pub fn handshake_counter(&self, listener: &str, version: &str, result: &str) -> Counter {
        self.tls_handshakes
            .get_or_create(&HandshakeLabels {
                listener: listener.to_owned(),
                version: version.to_owned(),
                result: result.to_owned(),
            })
            .clone()
    }
}

/// Handles resolved when a listener is built, so a request only touches atomics.
#[derive(Clone)]
pub struct RouteCounters {
    /// By method class (read, write), then status class (1xx..5xx, none).
    by_class: [[Counter; 6]; 2],
}

const METHOD_CLASSES: [&str; 2] = ["read", "write"];
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

impl RouteCounters {
    pub fn new(metrics: &HttpMetrics, listener: &str, route: &str, backend: &str) -> Self {
        let by_class = METHOD_CLASSES.map(|method| {
            STATUS_CLASSES.map(|status| {
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        listener: listener.to_owned(),
                        route: route.to_owned(),
                        backend: backend.to_owned(),
                        method: method.to_owned(),
                        status: status.to_owned(),
                    })
                    .clone()
            })
        });
        Self { by_class }
    }

    pub fn count(&self, method: &http::Method, status: u16) {
        let m = usize::from(method_class(method) == "write");
        let s = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[m][s].inc();
    }
}

/// One backend's upstream handles.
#[derive(Clone)]
pub struct UpstreamHandles {
    pub duration: Histogram,
    pub reused: Counter,
    pub fresh: Counter,
}

impl UpstreamHandles {
    pub fn new(metrics: &HttpMetrics, backend: &str) -> Self {
        let reuse = |reused: bool| {
            metrics
                .upstream_connections
                .get_or_create(&ReuseLabels {
                    backend: backend.to_owned(),
                    reused: reused.to_string(),
                })
                .clone()
        };
        Self {
            duration: metrics
                .upstream_duration
                .get_or_create(&UpstreamLabels {
                    backend: backend.to_owned(),
                })
                .clone(),
            reused: reuse(true),
            fresh: reuse(false),
        }
    }
}

/// `GET`/`HEAD` are reads, the rest writes: a few label values whatever clients send.
pub fn method_class(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => "read",
        _ => "write",
    }
}
