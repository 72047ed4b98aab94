//! The L7 proxy of `http` and `https` listeners, as pingora's [`ProxyHttp`]: route by host and
//! path, answer fixed responses and redirects, add the forwarding headers, pick a server from
//! the backend's pool (pingora keeps the upstream connections alive), map failures to 502, 503
//! and 504, count and log every request.

use super::router::{
    host_without_port, idempotent, names_framing, Finished, HttpRouter, InFlight, HOP_BY_HOP,
};
use crate::backend::pool::Tried;
use crate::tls::upstream::Upstream;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

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
        session.set_read_timeout(Some(self.timeouts().client_body));
        session.set_write_timeout(Some(self.timeouts().client_send));
        // pingora keeps a connection the client wants kept without an idle limit of its own.
        let keeps_alive = session
            .as_downstream()
            .as_http1()
            .is_some_and(|h1| h1.get_keepalive_timeout().is_some());
        if keeps_alive {
            session.set_keepalive(Some(self.timeouts().keepalive.as_secs()));
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
        if raw.len() > self.max_header_bytes() {
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
        let Some(route) = self.route_at(ctx.route) else {
            return Ok(false);
        };
        if route.redirect_https && !self.https() {
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
            if let Some(max) = self.route_at(ctx.route).and_then(|r| r.max_body) {
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
        let pool = self.pool_of(ctx.route);
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
        let mut peer = Upstream::peer(self.upstream(&pool.name), address);
        peer.options.connection_timeout = Some(self.timeouts().connect);
        // Kept-alive connections age out as our HTTP/1.1 path's do (pingora keeps them until the
        // server closes them).
        peer.options.idle_timeout = Some(super::idle::MAX_IDLE);
        // An upgraded stream (WebSocket) may stay silent for as long as its users like.
        if !session.is_upgrade_req() {
            peer.options.read_timeout = Some(self.timeouts().response);
            // A server that stops taking the request is as good as one that stops answering.
            peer.options.write_timeout = Some(self.timeouts().response);
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
        let pool = self.pool_of(ctx.route).clone();
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
        if let Some(handles) = self.upstream_handles(&self.pool_of(ctx.route).name) {
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
        if let Some(route) = self.route_at(ctx.route) {
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
            if let Some(handles) = self.upstream_handles(&self.pool_of(ctx.route).name) {
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
        if let Some(route) = self.route_at(ctx.route) {
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
