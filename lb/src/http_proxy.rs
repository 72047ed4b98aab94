//! The L7 proxy of `http` and `https` listeners, as pingora's [`ProxyHttp`]: route by host and
//! path, answer fixed responses and redirects, add the forwarding headers, pick a server from
//! the backend's pool (pingora keeps the upstream connections alive), map failures to 502, 503
//! and 504, count and log every request.

use crate::http_config::{HttpListener, HttpRoute};
use crate::http_metrics::{HttpMetrics, RouteCounters, UpstreamHandles};
use crate::pool::{Pool, Tried};
use crate::sni::SniPattern;
use crate::upstream_tls::{CaError, Upstream};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use lab_daemon::logging::Escaped;
use lab_daemon::Name;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
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
    body: Bytes,
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
    in_flight: Arc<AtomicUsize>,
    metrics: HttpMetrics,
    default_counters: RouteCounters,
    duration: prometheus_client::metrics::histogram::Histogram,
    by_backend: foldhash::HashMap<Name, UpstreamHandles>,
    /// Kept-alive server connections of the HTTP/1.1 path.
    pub(crate) idle: crate::http1::IdleConnections,
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
            .get_or_create(&crate::http_metrics::ListenerLabel {
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
            in_flight: Arc::new(AtomicUsize::new(0)),
            metrics,
            idle: crate::http1::IdleConnections::default(),
        })
    }

    fn route(&self, ctx: &Ctx) -> Option<&Route> {
        self.route_at(ctx.route)
    }

    pub(crate) fn route_at(&self, route: Option<usize>) -> Option<&Route> {
        route.and_then(|i| self.routes.get(i))
    }

    fn pool(&self, ctx: &Ctx) -> &Arc<Pool> {
        self.pool_of(ctx.route)
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

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            response: self.response_timeout,
            client_body: self.client_body_timeout,
            client_send: self.client_send_timeout,
            keepalive: Duration::from_secs(self.keepalive_secs),
        }
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

pub struct Ctx {
    started: Instant,
    client: IpAddr,
    host: String,
    route: Option<usize>,
    tried: Tried,
    server: Option<std::net::SocketAddr>,
    upstream_started: Option<Instant>,
    body_seen: u64,
    /// Set when the proxy itself answered with an error, for the error counter.
    error_kind: Option<&'static str>,
    _in_flight: Option<InFlight>,
}

/// An h2 client may send its cookies as several `cookie` fields (browsers do, for header
/// compression); HTTP/1.1 has one, the crumbs joined with "; " (RFC 9113 §8.2.3). Passed on
/// as several, a server would read them as one list joined with ", ".
fn join_cookies(request: &mut RequestHeader) -> Result<()> {
    let crumbs: Vec<&[u8]> = request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if crumbs.len() < 2 {
        return Ok(());
    }
    let joined = HeaderValue::from_bytes(&crumbs.join(&b"; "[..]))
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "joining cookies", e))?;
    request.insert_header(http::header::COOKIE, joined)
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

/// Whether any `Connection` field of `headers` names a framing field.
fn connection_names_framing(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|value| names_framing(value.as_bytes()))
}

/// Takes the fields of the server's hop out of its response on pingora's path, which passes
/// them on (our path writes only the end-to-end ones): those its `Connection` names and the
/// standard ones, and any framing field of a 204; `Keep-Alive` would tell the client the server's idle timeout. pingora writes
/// the client's `Connection` itself and keeps the framing fields; a 101 keeps the
/// `Connection` and `Upgrade` the switch needs.
fn strip_hop_by_hop(response: &mut ResponseHeader) {
    if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    // A 204 has no body and says nothing of one (RFC 9110 §8.6, §6.1); an h2 client resets
    // the stream of one that declares a length.
    if response.status == http::StatusCode::NO_CONTENT {
        response.remove_header(&http::header::CONTENT_LENGTH);
        response.remove_header(&http::header::TRANSFER_ENCODING);
    }
    let named: Vec<HeaderName> = response
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| {
            *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING
        })
        .collect();
    for name in &named {
        response.remove_header(name);
    }
    for name in HOP_BY_HOP {
        response.remove_header(name);
    }
}

/// The host a request is for: `Host` (HTTP/1.1) or the URI's authority (h2), lower-case,
/// without port.
fn request_host(req: &RequestHeader) -> String {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    host_without_port(raw)
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

/// Requests whose body length is ambiguous (RFC 9112 §6.3): both `Content-Length` and
/// `Transfer-Encoding`, several `Content-Length` lines, or one whose value is more than digits
/// (`3, 3`, which pingora takes as 3 and passes on as it came). pingora resolves the first by
/// dropping `Content-Length`, but a server behind another hop may not; refusing them all keeps
/// any chain from disagreeing about where the next request starts. Read from the raw header
/// bytes, as the parsed header is already normalised.
fn ambiguous_length(raw: &[u8]) -> bool {
    let mut lengths = 0;
    let mut chunked = false;
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let value = line[colon + 1..].trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return true;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
    }
    (chunked && lengths > 0) || lengths > 1
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

/// Answers a request the proxy refuses itself (`kind` for the error counter), and closes the
/// connection after it: what follows on it cannot be trusted to be framed as the client meant.
async fn refuse(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    kind: &'static str,
    body: &'static [u8],
) -> Result<bool> {
    ctx.error_kind = Some(kind);
    session.set_keepalive(None);
    respond(session, status, &[], Bytes::from_static(body)).await?;
    Ok(true)
}

async fn respond(
    session: &mut Session,
    status: u16,
    extra: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(extra.len() + 2))?;
    for (name, value) in extra {
        resp.insert_header(name.clone(), value.clone())?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    let empty = body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

fn forwarded_for(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// The router as pingora's proxy holds it, shared with the HTTP/1.1 path of the same listener.
pub struct SharedRouter(pub Arc<HttpRouter>);

impl std::ops::Deref for SharedRouter {
    type Target = HttpRouter;

    fn deref(&self) -> &HttpRouter {
        &self.0
    }
}

#[async_trait]
impl ProxyHttp for SharedRouter {
    type CTX = Ctx;

    /// No downstream modules: pingora's default adds a (disabled) compression module that
    /// every request would still pass through.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host: String::new(),
            route: None,
            tried: Tried::new(),
            server: None,
            upstream_started: None,
            body_seen: 0,
            error_kind: None,
            _in_flight: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.started = Instant::now();
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            ctx.client = client.ip();
        }
        session.set_read_timeout(Some(self.client_body_timeout));
        session.set_write_timeout(Some(self.client_send_timeout));
        // pingora keeps a connection the client wants kept without an idle limit of its own.
        let keeps_alive = session
            .as_downstream()
            .as_http1()
            .is_some_and(|h1| h1.get_keepalive_timeout().is_some());
        if keeps_alive {
            session.set_keepalive(Some(self.keepalive_secs));
        }
        match self.admit() {
            Some(slot) => ctx._in_flight = slot,
            None => {
                ctx.error_kind = Some("limit");
                respond(
                    session,
                    503,
                    &[(http::header::RETRY_AFTER, HeaderValue::from_static("1"))],
                    Bytes::from_static(b"too many requests in flight\n"),
                )
                .await?;
                return Ok(true);
            }
        }
        let raw = session.as_downstream().to_h1_raw();
        if raw.len() > self.max_header_bytes {
            return refuse(
                session,
                ctx,
                431,
                "too_large",
                b"request header too large\n",
            )
            .await;
        }
        // HTTP/1.1 requires `Host` (RFC 9112 §3.2): without it the request would be routed
        // by the default and reach the server with no name at all.
        let version = session.req_header().version;
        let no_host = version == http::Version::HTTP_11
            && !session
                .req_header()
                .headers
                .contains_key(http::header::HOST);
        if no_host {
            return refuse(session, ctx, 400, "bad_request", b"no Host\n").await;
        }
        if connection_names_framing(&session.req_header().headers) {
            return refuse(
                session,
                ctx,
                400,
                "bad_request",
                b"Connection names a framing field\n",
            )
            .await;
        }
        if !session.is_http2() && ambiguous_length(&raw) {
            return refuse(
                session,
                ctx,
                400,
                "bad_request",
                b"ambiguous request length\n",
            )
            .await;
        }
        let req = session.req_header();
        ctx.host = request_host(req);
        let path = req.uri.path().to_owned();
        ctx.route = self.match_route(&ctx.host, &path);
        let Some(route) = self.route(ctx) else {
            return Ok(false);
        };
        if route.redirect_https && !self.https {
            let target = format!(
                "https://{}{}",
                ctx.host,
                req.uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let location = HeaderValue::try_from(target)
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad host"))?;
            respond(
                session,
                308,
                &[(http::header::LOCATION, location)],
                Bytes::new(),
            )
            .await?;
            return Ok(true);
        }
        if let Some(status) = route.status {
            let body = route.body.clone();
            let extra = route.add_response.clone();
            respond(session, status, &extra, body).await?;
            return Ok(true);
        }
        if let Some(max) = route.max_body {
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max) {
                return refuse(session, ctx, 413, "too_large", b"request body too large\n").await;
            }
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An empty last piece carries nothing, but pingora writes it to a chunked upstream body
        // as `0\r\n\r\n`, its end, and then ends the body again (cloudflare/pingora#935):
        // the server reads the second end as a malformed request. h2 clients end a body of
        // unknown length with just such a piece (an empty DATA frame with END_STREAM). Only
        // the last: pingora takes no piece at all as the end of the body.
        if end_of_stream && body.as_ref().is_some_and(|chunk| chunk.is_empty()) {
            *body = None;
        }
        // Chunked bodies declare no length; count them as they come.
        if let Some(chunk) = body {
            ctx.body_seen += chunk.len() as u64;
            if let Some(max) = self.route(ctx).and_then(|r| r.max_body) {
                if ctx.body_seen > max {
                    ctx.error_kind = Some("too_large");
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(413),
                        "request body too large",
                    ));
                }
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let pool = self.pool(ctx);
        let Some((i, address)) = pool.pick(ctx.client, &ctx.tried) else {
            let kind = if ctx.tried.is_empty() {
                "no_server"
            } else {
                "dead_upstream"
            };
            ctx.error_kind = Some(kind);
            let status = if ctx.tried.is_empty() { 503 } else { 502 };
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                format!("no server of backend `{}` to try", pool.name),
            ));
        };
        ctx.tried.push(i);
        ctx.server = Some(address);
        ctx.upstream_started = Some(Instant::now());
        let mut peer = Upstream::peer(self.upstreams.get(&pool.name), address);
        peer.options.connection_timeout = Some(self.connect_timeout);
        // Kept-alive connections age out as our HTTP/1.1 path's do (pingora keeps them until the
        // server closes them).
        peer.options.idle_timeout = Some(crate::http1::MAX_IDLE);
        // An upgraded stream (WebSocket) may stay silent for as long as its users like.
        if !session.is_upgrade_req() {
            peer.options.read_timeout = Some(self.response_timeout);
            // A server that stops taking the request is as good as one that stops answering.
            peer.options.write_timeout = Some(self.response_timeout);
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let pool = self.pool(ctx).clone();
        if let Some(&i) = ctx.tried.last() {
            pool.connect_failed(i, &e.to_string());
        }
        // Only a request the server never saw, and whose repetition is harmless, goes again.
        let retries_used = ctx.tried.len().saturating_sub(1) as u32;
        if idempotent(&session.req_header().method) && retries_used < pool.retries() {
            e.set_retry(true);
        }
        ctx.error_kind = Some("dead_upstream");
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.error_kind = None;
        if let Some(handles) = self.by_backend.get(&self.pool(ctx).name) {
            if reused {
                handles.reused.inc();
            } else {
                handles.fresh.inc();
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let header = |name| {
            upstream
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let forwarding = self.forwarding(
            &self.client_name(ctx.client),
            &ctx.host,
            header(http::header::HeaderName::from_static("x-forwarded-for")),
            header(http::header::FORWARDED),
        );
        upstream.insert_header("x-forwarded-for", forwarding.xff)?;
        upstream.insert_header("x-forwarded-proto", forwarding.proto)?;
        if !ctx.host.is_empty() {
            upstream.insert_header("x-forwarded-host", ctx.host.as_str())?;
        }
        upstream.insert_header(http::header::FORWARDED, forwarding.forwarded)?;
        join_cookies(upstream)?;
        // An HTTP/1.0 client may send no Host; the request goes on as HTTP/1.1, which needs
        // one: the server's address, as nginx's `proxy_set_header Host $proxy_host` does.
        if !upstream.headers.contains_key(http::header::HOST) {
            if let Some(server) = ctx.server {
                upstream.insert_header(http::header::HOST, server.to_string())?;
            }
        }
        if let Some(route) = self.route(ctx) {
            for name in &route.remove_request {
                upstream.remove_header(name.as_str());
            }
            for (name, value) in &route.add_request {
                upstream.insert_header(name.clone(), value.clone())?;
            }
        }
        let _ = session;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if connection_names_framing(&upstream.headers) {
            ctx.error_kind = Some("dead_upstream");
            return Err(Error::explain(
                ErrorType::HTTPStatus(502),
                "the server's Connection names a framing field",
            ));
        }
        strip_hop_by_hop(upstream);
        if let Some(started) = ctx.upstream_started.take() {
            if let Some(handles) = self.by_backend.get(&self.pool(ctx).name) {
                handles.duration.observe(started.elapsed().as_secs_f64());
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An HTTP/1.0 client knows no transfer coding (RFC 9112 §6.1), and pingora would send
        // it the chunks as they are: the body goes plain instead, ended by the close.
        if session.req_header().version == http::Version::HTTP_10
            && response
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            response.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        if let Some(route) = self.route(ctx) {
            for name in &route.remove_response {
                response.remove_header(name.as_str());
            }
            for (name, value) in &route.add_response {
                response.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                ctx.error_kind = Some("timeout");
                504
            }
            ErrorType::ConnectTimedout => {
                ctx.error_kind = Some("dead_upstream");
                502
            }
            _ => match e.esource() {
                ErrorSource::Upstream => {
                    ctx.error_kind.get_or_insert("dead_upstream");
                    502
                }
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => {
                        ctx.error_kind.get_or_insert("bad_request");
                        400
                    }
                },
                _ => 500,
            },
        };
        if code > 0 {
            if let Err(write) = session.respond_error(code).await {
                tracing::debug!(error = %write, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let error = e.map(|e| e.to_string());
        self.record(&Finished {
            route: ctx.route,
            method: &req.method,
            status,
            started: ctx.started,
            client: ctx.client,
            host: &ctx.host,
            path: req.uri.path(),
            server: ctx.server,
            error_kind: ctx.error_kind,
            error: error.as_deref(),
        });
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
