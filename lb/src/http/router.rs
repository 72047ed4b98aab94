//! A listener's routing as both HTTP paths (ours for HTTP/1.1, pingora's for the rest) use it:
//! routes matched by host and normalised path, the backend's pool, timeouts, the forwarding
//! headers, the fields never forwarded, and the access log and request counters.

use super::idle::IdleConnections;
use super::metrics::{HttpMetrics, ListenerLabel, RouteCounters, UpstreamHandles};
use crate::backend::pool::Pool;
use crate::config::http::{HttpListener, HttpRoute};
use crate::l4::sni::SniPattern;
use crate::tls::upstream::{CaError, Upstream};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use lab_daemon::logging::Escaped;
use lab_daemon::Name;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A route ready to match: parsed patterns, headers and its pool.
pub(crate) struct Route {
    /// For labels and the access log: `host+path` as configured.
    label: String,
    host: Option<SniPattern>,
    path: String,
    pub(crate) pool: Option<Arc<Pool>>,
    pub(crate) status: Option<u16>,
    pub(crate) body: Bytes,
    pub(crate) redirect_https: bool,
    pub(crate) add_request: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove_request: Vec<String>,
    pub(crate) add_response: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove_response: Vec<String>,
    pub(crate) max_body: Option<u64>,
    counters: RouteCounters,
}

fn headers(map: &std::collections::BTreeMap<String, String>) -> Vec<(HeaderName, HeaderValue)> {
    // Validated at config load; an entry that still fails to parse is left out.
    map.iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::try_from(k.as_str()).ok()?,
                HeaderValue::try_from(v.as_str()).ok()?,
            ))
        })
        .collect()
}

impl Route {
    fn new(
        route: &HttpRoute,
        pools: &HashMap<Name, Arc<Pool>>,
        default: &Arc<Pool>,
        listener: &str,
        metrics: &HttpMetrics,
    ) -> Self {
        let label = format!(
            "{}{}",
            route.host.as_deref().unwrap_or("*"),
            route.path.as_deref().unwrap_or("/")
        );
        let pool = route.backend.as_ref().and_then(|b| pools.get(b).cloned());
        // A route that answers itself names no backend.
        let backend = match (&pool, route.status.is_some() || route.redirect_https) {
            (Some(pool), _) => pool.name.to_string(),
            (None, true) => "-".to_owned(),
            (None, false) => default.name.to_string(),
        };
        Self {
            counters: RouteCounters::new(metrics, listener, &label, &backend),
            label,
            host: route
                .host
                .as_deref()
                .and_then(|h| SniPattern::parse(&h.to_ascii_lowercase()).ok()),
            path: route
                .path
                .as_deref()
                .map_or_else(|| "/".into(), |p| normalize_path(p).into_owned()),
            pool,
            status: route.status,
            body: Bytes::from(route.body.clone().unwrap_or_default()),
            redirect_https: route.redirect_https,
            add_request: headers(&route.add_request_headers),
            remove_request: route.remove_request_headers.clone(),
            add_response: headers(&route.add_response_headers),
            remove_response: route.remove_response_headers.clone(),
            max_body: route.max_body,
        }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        self.host.as_ref().is_none_or(|p| p.matches(host)) && path.starts_with(&self.path)
    }
}

/// One listener's request handling; rebuilt on reload.
pub struct HttpRouter {
    pub listener: Name,
    https: bool,
    routes: Vec<Route>,
    default: Arc<Pool>,
    /// Backends reached over TLS or h2; plain HTTP/1.1 for the rest.
    upstreams: foldhash::HashMap<Name, Upstream>,
    trusted: Vec<IpNet>,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_header_bytes: usize,
    client_body_timeout: Duration,
    client_send_timeout: Duration,
    /// Whole seconds, as pingora takes them; at least 1.
    keepalive_secs: u64,
    max_requests: Option<usize>,
    h2_max_streams: u32,
    h2c: bool,
    in_flight: Arc<AtomicUsize>,
    metrics: HttpMetrics,
    default_counters: RouteCounters,
    duration: prometheus_client::metrics::histogram::Histogram,
    by_backend: foldhash::HashMap<Name, UpstreamHandles>,
    /// Kept-alive server connections of the HTTP/1.1 path.
    pub(crate) idle: Arc<IdleConnections>,
}

impl HttpRouter {
    pub fn new(
        listener: Name,
        https: bool,
        http: &HttpListener,
        default: Arc<Pool>,
        pools: &HashMap<Name, Arc<Pool>>,
        metrics: HttpMetrics,
    ) -> Result<Self, CaError> {
        let mut upstreams = foldhash::HashMap::default();
        for protocol in &http.upstreams {
            upstreams.insert(protocol.backend.clone(), Upstream::load(protocol)?);
        }
        let routes: Vec<Route> = http
            .routes
            .iter()
            .map(|r| Route::new(r, pools, &default, listener.as_str(), &metrics))
            .collect();
        let default_counters = RouteCounters::new(
            &metrics,
            listener.as_str(),
            "default",
            default.name.as_str(),
        );
        let duration = metrics
            .duration
            .get_or_create(&ListenerLabel {
                listener: listener.to_string(),
            })
            .clone();
        let by_backend = routes
            .iter()
            .filter_map(|r| r.pool.as_ref())
            .chain(std::iter::once(&default))
            .map(|p| {
                (
                    p.name.clone(),
                    UpstreamHandles::new(&metrics, p.name.as_str()),
                )
            })
            .collect();
        Ok(Self {
            default_counters,
            duration,
            by_backend,
            listener,
            https,
            routes,
            default,
            upstreams,
            trusted: http.trusted_proxies.clone(),
            connect_timeout: http.upstream_connect_timeout,
            response_timeout: http.upstream_response_timeout,
            max_header_bytes: http.max_header_bytes as usize,
            client_body_timeout: http.client_body_timeout,
            client_send_timeout: http.client_send_timeout,
            keepalive_secs: http.keepalive_timeout.as_secs().max(1),
            max_requests: http.max_requests.map(|m| m as usize),
            h2_max_streams: http.h2_max_concurrent_streams,
            h2c: http.h2c,
            in_flight: Arc::new(AtomicUsize::new(0)),
            metrics,
            idle: Arc::default(),
        })
    }

    pub(crate) fn route_at(&self, route: Option<usize>) -> Option<&Route> {
        route.and_then(|i| self.routes.get(i))
    }

    /// The backend a request on `route` (None: the default) goes to.
    pub(crate) fn pool_of(&self, route: Option<usize>) -> &Arc<Pool> {
        self.route_at(route)
            .and_then(|r| r.pool.as_ref())
            .unwrap_or(&self.default)
    }

    /// The first route matching a host (as [`host_without_port`] gives it) and path, the path
    /// normalised first: `/%61dmin`, `//admin` and `/x/../admin` are all `/admin` to a route,
    /// as they are to most servers behind it.
    pub(crate) fn match_route(&self, host: &str, path: &str) -> Option<usize> {
        let path = normalize_path(path);
        self.routes.iter().position(|r| r.matches(host, &path))
    }

    /// The servers of every backend this listener sends requests to, each counted once.
    pub(crate) fn server_count(&self) -> usize {
        let by_backend: HashMap<&Name, usize> = self
            .routes
            .iter()
            .filter_map(|r| r.pool.as_ref())
            .chain([&self.default])
            .map(|pool| (&pool.name, pool.server_count()))
            .collect();
        by_backend.values().sum()
    }

    /// Whether requests to `backend` go over plain HTTP/1.1 (no TLS, no h2 upstream).
    pub(crate) fn plain_upstream(&self, backend: &Name) -> bool {
        !self.upstreams.contains_key(backend)
    }

    /// Whether every backend is reached over plain HTTP/1.1 (what our h2 path carries).
    pub(crate) fn every_upstream_plain(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// `h2_max_concurrent_streams`.
    pub(crate) fn h2_max_streams(&self) -> u32 {
        self.h2_max_streams
    }

    /// `h2c`: cleartext h2 by prior knowledge on an `http` listener.
    pub(crate) fn h2c(&self) -> bool {
        self.h2c
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            response: self.response_timeout,
            client_body: self.client_body_timeout,
            client_send: self.client_send_timeout,
            keepalive: Duration::from_secs(self.keepalive_secs),
        }
    }

    /// Whether the listener is `https` (what a `redirect_https` route checks).
    pub(crate) fn https(&self) -> bool {
        self.https
    }

    /// How requests to `backend` reach it when not over plain HTTP/1.1: TLS, h2.
    pub(crate) fn upstream(&self, backend: &Name) -> Option<&Upstream> {
        self.upstreams.get(backend)
    }

    pub(crate) fn max_header_bytes(&self) -> usize {
        self.max_header_bytes
    }

    /// Takes a slot under `max_requests`; None when the listener is full.
    pub(crate) fn admit(&self) -> Option<Option<InFlight>> {
        let Some(limit) = self.max_requests else {
            return Some(None);
        };
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= limit {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Some(InFlight(self.in_flight.clone())))
    }

    pub(crate) fn upstream_handles(&self, backend: &Name) -> Option<&UpstreamHandles> {
        self.by_backend.get(backend)
    }

    /// The forwarding headers for a request from `client` for `host`, given what the request
    /// already carried: from a trusted proxy the chain so far is kept and the peer appended;
    /// from anyone else whatever they claimed is dropped.
    pub(crate) fn forwarding(
        &self,
        client: &ClientName,
        host: &str,
        xff: Option<&str>,
        forwarded: Option<&str>,
    ) -> Forwarding {
        let proto = if self.https { "https" } else { "http" };
        let xff = match xff {
            Some(chain) if client.trusted => format!("{chain}, {}", client.text),
            _ => client.text.clone(),
        };
        let mut element = String::with_capacity(32 + host.len());
        element.push_str("for=");
        element.push_str(&client.forwarded);
        element.push_str(";proto=");
        element.push_str(proto);
        if !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            element.push_str(";host=");
            element.push_str(host);
        }
        let forwarded = match forwarded {
            Some(chain) if client.trusted => format!("{chain}, {element}"),
            _ => element,
        };
        Forwarding {
            xff,
            proto,
            forwarded,
        }
    }

    /// How the forwarding headers name `client`: written once per connection.
    pub(crate) fn client_name(&self, client: IpAddr) -> ClientName {
        ClientName {
            trusted: self.trusted.iter().any(|net| net.contains(&client)),
            text: client.to_string(),
            forwarded: forwarded_for(client),
        }
    }

    /// Counts a finished request and writes its access log line.
    /// Counts an h2 connection of this listener closed with ENHANCE_YOUR_CALM, by `kind`.
    pub(crate) fn h2_calmed(&self, kind: &str) {
        self.metrics.h2_calmed(self.listener.as_str(), kind);
    }

    pub(crate) fn record(&self, done: &Finished<'_>) {
        let route = self.route_at(done.route);
        let label = route.map_or("default", |r| r.label.as_str());
        let backend = match route {
            Some(r) if r.pool.is_none() && (r.status.is_some() || r.redirect_https) => "-",
            _ => self.pool_of(done.route).name.as_str(),
        };
        let elapsed = done.started.elapsed();
        route
            .map_or(&self.default_counters, |r| &r.counters)
            .count(done.method, done.status);
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(kind) = done.error_kind {
            if done.status >= 400 || done.error.is_some() {
                self.metrics.error(self.listener.as_str(), kind);
            }
        }
        tracing::info!(
            target: "access",
            listener = %self.listener,
            client = %done.client,
            method = %done.method,
            host = %Escaped(done.host),
            path = %Escaped(done.path),
            status = done.status,
            route = label,
            backend = %backend,
            server = %done.server.map_or_else(|| "-".to_string(), |s| s.to_string()),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            error = %Escaped(done.error.unwrap_or("")),
            "request"
        );
    }
}

/// The listener's timeouts, as the HTTP/1.1 path applies them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub client_body: Duration,
    pub client_send: Duration,
    pub keepalive: Duration,
}

impl Timeouts {
    /// The shortest wait for a read or write on either side.
    pub fn shortest(&self) -> Duration {
        self.response
            .min(self.client_body)
            .min(self.client_send)
            .min(self.keepalive)
    }
}

/// A client's address as `X-Forwarded-For` and `Forwarded` write it, and whether its own
/// forwarding headers are believed.
pub(crate) struct ClientName {
    trusted: bool,
    text: String,
    forwarded: String,
}

/// `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` values for one request
/// (`X-Forwarded-Host` is the request's host).
pub(crate) struct Forwarding {
    pub xff: String,
    pub proto: &'static str,
    pub forwarded: String,
}

/// What the access log and the request metrics say of one finished request.
pub(crate) struct Finished<'a> {
    pub route: Option<usize>,
    pub method: &'a http::Method,
    pub status: u16,
    pub started: Instant,
    pub client: IpAddr,
    pub host: &'a str,
    pub path: &'a str,
    pub server: Option<std::net::SocketAddr>,
    pub error_kind: Option<&'static str>,
    pub error: Option<&'a str>,
}

/// Counts a request in flight until the request ends.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The fields the proxy writes itself: `lb.toml` refuses routes that change them, by these lists.
pub(crate) use lab_schema::lb::headers::{FRAMING, HOP_BY_HOP};

/// Whether one `Connection` value names a framing field.
pub(crate) fn names_framing(connection: &[u8]) -> bool {
    connection.split(|&b| b == b',').any(|token| {
        let token = token.trim_ascii();
        FRAMING
            .iter()
            .any(|name| token.eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// A path as routes match it (RFC 3986 §6.2.2): percent-encoded unreserved characters decoded,
/// the other escapes' hex in upper case, empty segments (`//`) merged and dot-segments removed.
/// Only for matching: the request goes on with the path it came with.
pub(crate) fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') || !(path.contains('%') || path.contains("//") || path.contains("/."))
    {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normal.push('/');
    }
    Cow::Owned(normal)
}

/// `%XX` of an unreserved character (letters, digits, `-._~`) as the character; other escapes
/// kept, their hex in upper case.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escape {
            Some((high, low)) => {
                let byte = high << 4 | low;
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(byte);
                } else {
                    out.push(b'%');
                    out.extend_from_slice(format!("{byte:02X}").as_bytes());
                }
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    // Only ASCII was decoded, into ASCII, so the text is as valid as it was.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// A `Host` value as routes match it: lower-case, without port or the root's trailing dot
/// (`App.Example.` is `app.example`).
pub(crate) fn host_without_port(raw: &str) -> String {
    let without_port = match raw.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || raw.starts_with('[') => {
            if port.chars().all(|c| c.is_ascii_digit()) {
                host
            } else {
                raw
            }
        }
        _ => raw,
    };
    let without_dot = without_port.strip_suffix('.').unwrap_or(without_port);
    without_dot.to_ascii_lowercase()
}

pub(crate) fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

fn forwarded_for(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_servers_read_alike_match_alike() {
        for (sent, normal) in [
            ("/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%61%64%6D%69%6e/x", "/admin/x"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/x/%2e%2E/admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/admin/.", "/admin/"),
            ("/a/b/..", "/a/"),
            ("/", "/"),
            ("/..", "/"),
            ("/%7euser", "/~user"),
            // Not unreserved: kept escaped (a `/` inside a segment is not a separator).
            ("/a%2fb", "/a%2Fb"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/%", "/%"),
            ("/%zz", "/%zz"),
            ("/%4", "/%4"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_path(sent), normal, "{sent}");
        }
    }

    #[test]
    fn ordinary_paths_are_not_copied() {
        assert!(matches!(normalize_path("/api/v1/pods"), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/file.tar.gz"), Cow::Borrowed(_)));
    }

    #[test]
    fn hosts_match_without_case_port_or_the_roots_dot() {
        for (sent, normal) in [
            ("App.Example", "app.example"),
            ("app.example.", "app.example"),
            ("APP.EXAMPLE.:8443", "app.example"),
            ("[::1]:80", "[::1]"),
        ] {
            assert_eq!(host_without_port(sent), normal, "{sent}");
        }
    }
}
