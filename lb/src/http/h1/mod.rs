//! The HTTP/1.1 path of `http` listeners and of `https` connections that chose HTTP/1.1: the
//! requests that make up nearly all of an ingress's traffic (HTTP/1.1, no body or one of a
//! plain `Content-Length`, or a WebSocket upgrade, to a plain HTTP/1.1 backend) are proxied
//! here, on the client's connection, with our own upstream keep-alive pool; a request this path
//! does not carry hands the connection, with the bytes already read, to pingora's session for
//! the rest of its life. Both paths route, add forwarding headers, count and log through the
//! same [`HttpRouter`], so a client sees one proxy.
//!
//! Why a path of its own: pingora's HTTP/1 machinery costs four to five times the CPU per
//! request of the proxying itself (measured in bench/lb-http.sh), which on a small lab box is
//! CPU taken from the backends.

mod chunked;
mod deadline;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod head;

use crate::backend::pool::{ActiveGuard, Pool, Tried};
use crate::http::router::{idempotent, Finished, HttpRouter, InFlight, Route, Timeouts};
use crate::l4::client_socket::{ClientSocket, FIRST_READ_SIZE};
use crate::l4::splice::copy_both_ways;
use crate::tls::stream::TlsClient;
use bytes::{Buf, BytesMut};
use chunked::ChunkedScanner;
use deadline::Deadline;
use head::{Framing, Parsed};
use pingora_core::server::ShutdownWatch;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Room made for each read from either side.
const READ_SIZE: usize = 16 * 1024;

/// A connection idle this long between requests gives its buffers back, and leaves [`serve`]
/// for [`until_readable`]: a client that sends its next request sooner (a busy keep-alive
/// connection) reuses them, one that sits idle costs the connection's socket and a wait alone
/// (lab-lb's container has 512 MiB for thousands of clients).
const BUFFERS_KEPT_IDLE: Duration = Duration::from_secs(2);

/// Largest response head accepted from a server (pingora's limit too).
const MAX_RESPONSE_HEAD: usize = 1024 * 1024;

/// A client connection this path serves.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    /// The connection is shut down right after the next write: a stream that can may hold
    /// that write's last bytes for the shutdown to send with them.
    fn ends_after_next_write(&mut self) {}

    /// Ready once the client's bytes are there (or its end, or an error), without taking a
    /// buffer to wait with; they stay for the next read. A read into no room returns as soon as
    /// the stream could read (a rustls stream: once it holds plaintext).
    fn poll_client_bytes(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self).poll_read(cx, &mut ReadBuf::new(&mut []))
    }
}

impl ClientStream for ClientSocket {
    fn ends_after_next_write(&mut self) {
        ClientSocket::ends_after_next_write(self);
    }

    fn poll_client_bytes(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ClientSocket::poll_client_bytes(self, cx)
    }
}

/// Its close_notify is a record of its own after the response's.
impl ClientStream for TlsClient {}

/// How a connection left this path.
pub enum Served {
    /// Closed, or to be closed.
    Closed,
    /// A request this path does not carry: the client's bytes not yet handled, for pingora.
    HandOver(BytesMut),
    /// Quiet between requests for `BUFFERS_KEPT_IDLE`: everything this path held is given back,
    /// and the connection waits with [`until_readable`] for its next request until the
    /// keep-alive deadline it carries.
    Idle(tokio::time::Instant),
    /// A 101 made a tunnel of the connection (its head is sent): what is left is
    /// [`Tunnel::run`], which holds the server's socket and the request's log fields, not this
    /// path's state (a WebSocket may stay open and quiet for hours).
    Tunnel(Box<Tunnel>),
}

/// A connection after a 101: bytes both ways between the client and `upstream` until both
/// sides are done, then the request's log line.
pub struct Tunnel {
    upstream: TcpStream,
    server: SocketAddr,
    route: Option<usize>,
    method: http::Method,
    host: String,
    path: String,
    started: Instant,
    client: IpAddr,
    /// The tunnel is a request in flight (`max_requests`) to a server kept active (a drain
    /// waits for it) until it ends.
    _in_flight: Option<InFlight>,
    _active: Option<ActiveGuard>,
}

impl Tunnel {
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self: Box<Self>,
        router: &HttpRouter,
        socket: &mut S,
    ) {
        // Without timeouts: a WebSocket may stay quiet as long as its users like.
        let error = copy_both_ways(socket, &mut self.upstream)
            .await
            .err()
            .map(|e| format!("tunnel: {e}"));
        router.record(&Finished {
            route: self.route,
            method: &self.method,
            status: 101,
            started: self.started,
            client: self.client,
            host: &self.host,
            path: &self.path,
            server: Some(self.server),
            error_kind: None,
            error: error.as_deref(),
        });
        let _ = socket.shutdown().await;
    }
}

/// Waits, holding nothing of this path's, until the client's bytes are there (true), or until
/// `until` passes or the daemon stops (false: the connection is to be closed). What an idle
/// connection costs is this wait's state, not [`serve`]'s (its buffers, its timer, the
/// per-request futures it is sized for).
pub async fn until_readable<S: ClientStream>(
    socket: &mut S,
    until: tokio::time::Instant,
    shutdown: &ShutdownWatch,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut watched = shutdown.clone();
    tokio::select! {
        biased;
        ready = tokio::time::timeout_at(until, std::future::poll_fn(|cx| socket.poll_client_bytes(cx))) => {
            matches!(ready, Ok(Ok(())))
        }
        _ = watched.changed() => false,
    }
}

/// Serves the requests of `client` on `socket` until the connection ends, idles, or a request
/// needs pingora. A client that sends nothing before `keepalive_until` is done.
pub async fn serve<S: ClientStream>(
    router: &HttpRouter,
    socket: &mut S,
    client: IpAddr,
    keepalive_until: tokio::time::Instant,
    shutdown: &ShutdownWatch,
) -> Served {
    // One wait for shutdown for the connection's life, not one made and dropped per request
    // (each a registration in the watch's waiter list).
    let mut watched = shutdown.clone();
    let mut stopping = pin!(watched.changed());
    let timeouts = router.timeouts();
    let client_name = router.client_name(client);
    // Made when bytes come, reused from request to request while the client is busy, and given
    // back when it idles: the client's bytes, the request as sent upstream, the server's bytes,
    // and the client's bytes of the response.
    let mut buf = BytesMut::new();
    let mut upstream_request = Vec::new();
    let mut buffers = Buffers {
        from_server: BytesMut::new(),
        to_client: Vec::new(),
        deadline: Deadline::new(timeouts.shortest()),
    };
    let mut first_keepalive = Some(keepalive_until);
    loop {
        // The next request's head.
        let mut head_deadline: Option<tokio::time::Instant> = None;
        // Counted once from the end of the last request, whatever waits it is made of.
        let mut keepalive_deadline = first_keepalive.take();
        let mut route_index = None;
        let (request, head_len) = loop {
            if !buf.is_empty() {
                let plan = |request: &head::Request| {
                    route_index = router.match_route(&request.host, &request.path);
                    let route = router.route_at(route_index);
                    // Fixed responses, redirects and TLS or h2 upstreams are pingora's.
                    let answers_itself =
                        route.is_some_and(|r| r.status.is_some() || r.redirect_https);
                    // So is a body over the route's limit (its 413 is pingora's to send).
                    let too_large = route
                        .and_then(|r| r.max_body)
                        .is_some_and(|max| request.body > max);
                    if answers_itself
                        || too_large
                        || !router.plain_upstream(&router.pool_of(route_index).name)
                    {
                        return None;
                    }
                    let forwarding = router.forwarding(
                        &client_name,
                        &request.host,
                        request.xff.as_deref(),
                        request.forwarded.as_deref(),
                    );
                    Some(head::Plan { route, forwarding })
                };
                let max = router.max_header_bytes();
                match head::parse_request(&buf, max, &mut upstream_request, plan) {
                    Parsed::Complete(request, n) => break (request, n),
                    Parsed::Partial => {}
                    Parsed::Other => {
                        tracing::debug!(client = %client, "request handed to pingora's session");
                        return Served::HandOver(buf);
                    }
                }
            }
            if *shutdown.borrow() && buf.is_empty() {
                return Served::Closed;
            }
            // Idle between requests: the keep-alive timeout; a head once begun must be whole
            // within the body timeout, however slowly its bytes trickle in.
            let now = tokio::time::Instant::now();
            let until = match head_deadline {
                Some(until) if !buf.is_empty() => until,
                _ if !buf.is_empty() => *head_deadline.insert(now + timeouts.client_body),
                _ => *keepalive_deadline.get_or_insert(now + timeouts.keepalive),
            };
            let between_requests = buf.is_empty();
            let wait_until = if between_requests {
                until.min(now + BUFFERS_KEPT_IDLE)
            } else {
                until
            };
            let read = async {
                // Holding no buffer (woken by bytes that were not a request's, a TLS record
                // of its own say), it gets one once the client's bytes are there.
                if buf.capacity() == 0 {
                    std::future::poll_fn(|cx| socket.poll_client_bytes(cx)).await?;
                }
                buf.reserve(if between_requests {
                    FIRST_READ_SIZE
                } else {
                    READ_SIZE
                });
                socket.read_buf(&mut buf).await
            };
            let read = tokio::select! {
                biased;
                read = buffers.deadline.within(wait_until, read) => read,
                _ = &mut stopping, if between_requests => return Served::Closed,
            };
            match read {
                Some(Ok(n)) if n > 0 => {}
                // Idle for a while, not for good: the buffers go, the connection stays. (A
                // read cut short has taken nothing from the socket.)
                None if wait_until < until => return Served::Idle(until),
                _ => return Served::Closed,
            }
        };
        // Boxed, allocated per request: what a request needs on its way (the exchange's
        // futures, its head, the log line's fields) would otherwise size the connection's
        // state for all its life, most of which is spent waiting between requests.
        let go_on = {
            let (socket, buf, upstream_request, buffers) =
                (&mut *socket, &mut buf, &mut upstream_request, &mut buffers);
            Box::pin(async move {
                let started = Instant::now();
                let route = router.route_at(route_index);
                let pool = router.pool_of(route_index);
                let close = request.close || *shutdown.borrow();
                let mut finished = Finished {
                    route: route_index,
                    method: &request.method,
                    status: 0,
                    started,
                    client,
                    host: &request.host,
                    path: &request.path,
                    server: None,
                    error_kind: None,
                    error: None,
                };
                let Some(_slot) = router.admit() else {
                    buf.advance(head_len);
                    // A body left unread ends the connection.
                    let close = close || request.body > 0;
                    finished.status = 503;
                    finished.error_kind = Some("limit");
                    let answer = head::own_response(
                        503,
                        &[("retry-after", "1")],
                        b"too many requests in flight\n",
                        close,
                    );
                    let written =
                        send(socket, &answer, &mut buffers.deadline, timeouts.client_send)
                            .await
                            .is_ok();
                    router.record(&finished);
                    return (close || !written).then_some(Served::Closed);
                };
                buf.advance(head_len);
                // What of the body came with the head goes out with it; the rest streams after.
                let in_buf = request.body.min(buf.len() as u64) as usize;
                upstream_request.extend_from_slice(&buf[..in_buf]);
                buf.advance(in_buf);
                let exchange = Exchange {
                    router,
                    pool,
                    route,
                    timeouts,
                    client,
                    request: upstream_request,
                    idempotent: idempotent(&request.method),
                    to_head: request.method == http::Method::HEAD,
                    upgrade: request.upgrade.is_some(),
                    close,
                    body_left: request.body - in_buf as u64,
                };
                let mut outcome = exchange.run(socket, buf, buffers).await;
                if let Some(upgraded) = outcome.upgraded.take() {
                    // Logged when the tunnel ends; this path's state goes now.
                    return Some(Served::Tunnel(Box::new(Tunnel {
                        upstream: upgraded.upstream,
                        server: upgraded.server,
                        route: route_index,
                        method: request.method,
                        host: request.host,
                        path: request.path,
                        started,
                        client,
                        _in_flight: _slot,
                        _active: upgraded.active,
                    })));
                }
                finished.status = outcome.status;
                finished.server = outcome.server;
                finished.error_kind = outcome.error_kind;
                finished.error = outcome.error.as_deref();
                router.record(&finished);
                if !outcome.keep_client {
                    let _ = socket.shutdown().await;
                    return Some(Served::Closed);
                }
                None
            })
            .await
        };
        if let Some(served) = go_on {
            return served;
        }
    }
}

/// One request on its way to a server and back.
struct Exchange<'a> {
    router: &'a HttpRouter,
    pool: &'a Pool,
    route: Option<&'a Route>,
    timeouts: Timeouts,
    client: IpAddr,
    request: &'a [u8],
    idempotent: bool,
    to_head: bool,
    /// The client asked to switch protocols: a 101 makes a tunnel of the connection.
    upgrade: bool,
    /// The client's connection ends with this response.
    close: bool,
    /// Body bytes still to come from the client after `request`.
    body_left: u64,
}

/// What a client connection keeps from request to request: where an exchange reads the
/// server's bytes into and writes the client's from, and the connection's read timer.
struct Buffers {
    from_server: BytesMut,
    to_client: Vec<u8>,
    deadline: Deadline,
}

struct Outcome {
    status: u16,
    server: Option<SocketAddr>,
    error_kind: Option<&'static str>,
    error: Option<String>,
    keep_client: bool,
    /// A 101 sent on to the client: the connection is a tunnel to the server from here.
    upgraded: Option<Upgraded>,
}

struct Upgraded {
    upstream: TcpStream,
    server: SocketAddr,
    active: Option<ActiveGuard>,
}

/// Why an exchange could not go on: the server's side failed, or the client's body did.
enum Failure {
    /// The server closed or reset a kept-alive connection before answering: it may have closed
    /// it as idle just as the request went out.
    Closed(String),
    Timeout,
    Broken(String),
    /// The client stopped sending its body: 400 for a stall (as pingora), nothing when gone.
    Client(u16, String),
}

impl Exchange<'_> {
    async fn run<S: ClientStream>(
        &self,
        socket: &mut S,
        from_client: &mut BytesMut,
        buffers: &mut Buffers,
    ) -> Outcome {
        let mut tried = Tried::new();
        loop {
            let Some((i, server)) = self.pool.pick(self.client, &tried) else {
                let (status, kind) = if tried.is_empty() {
                    (503, "no_server")
                } else {
                    (502, "dead_upstream")
                };
                let error = format!("no server of backend `{}` to try", self.pool.name);
                return self
                    .fail(socket, &mut buffers.deadline, status, kind, error, None)
                    .await;
            };
            tried.push(i);
            let mut active = self.pool.track(i);
            let upstream_started = Instant::now();
            let mut reused = true;
            let mut stream = self.router.idle.take(server);
            buffers.from_server.clear();
            let response = loop {
                let ubuf = &mut buffers.from_server;
                let mut upstream = match stream.take() {
                    Some(s) => s,
                    None => {
                        reused = false;
                        match self.connect(server).await {
                            Ok(s) => s,
                            Err(e) => {
                                self.pool.connect_failed(i, &e);
                                let retries_used = tried.len().saturating_sub(1) as u32;
                                if self.idempotent && retries_used < self.pool.retries() {
                                    break None;
                                }
                                return self
                                    .dead_upstream(socket, &mut buffers.deadline, e, server)
                                    .await;
                            }
                        }
                    }
                };
                let sent = self.send(
                    &mut upstream,
                    ubuf,
                    &mut buffers.to_client,
                    socket,
                    from_client,
                    &mut buffers.deadline,
                );
                match sent.await {
                    Ok((response, head_len)) => break Some((upstream, response, head_len)),
                    // Once more on a new connection, for a request that may be repeated.
                    Err(Failure::Closed(_)) if reused && self.idempotent => {
                        ubuf.clear();
                        continue;
                    }
                    Err(Failure::Closed(e)) | Err(Failure::Broken(e)) => {
                        return self
                            .dead_upstream(socket, &mut buffers.deadline, e, server)
                            .await;
                    }
                    Err(Failure::Timeout) => {
                        let e = format!("no response within {:?}", self.timeouts.response);
                        return self
                            .fail(
                                socket,
                                &mut buffers.deadline,
                                504,
                                "timeout",
                                e,
                                Some(server),
                            )
                            .await;
                    }
                    Err(Failure::Client(0, e)) => {
                        return Outcome {
                            status: 0,
                            server: Some(server),
                            error_kind: None,
                            error: Some(e),
                            keep_client: false,
                            upgraded: None,
                        };
                    }
                    Err(Failure::Client(status, e)) => {
                        return self
                            .fail(
                                socket,
                                &mut buffers.deadline,
                                status,
                                "bad_request",
                                e,
                                Some(server),
                            )
                            .await;
                    }
                }
            };
            let Some((upstream, response, head_len)) = response else {
                continue;
            };
            if let Some(handles) = self.router.upstream_handles(&self.pool.name) {
                if reused {
                    handles.reused.inc();
                } else {
                    handles.fresh.inc();
                }
                handles
                    .duration
                    .observe(upstream_started.elapsed().as_secs_f64());
            }
            if response.status == 101 {
                let mut outcome = self
                    .tunnel(socket, from_client, upstream, buffers, head_len, server)
                    .await;
                if let Some(upgraded) = &mut outcome.upgraded {
                    upgraded.active = active.take();
                }
                return outcome;
            }
            return self
                .relay(socket, upstream, buffers, response, head_len, server)
                .await;
        }
    }

    async fn connect(&self, server: SocketAddr) -> Result<TcpStream, String> {
        match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(server)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeouts.connect)),
        }
    }

    /// Sends the request (streaming the rest of its body from the client) and reads the final
    /// response head (1xx interim heads are dropped), written for the client into `head_out`.
    /// A failure is `Closed` (may go again) only while nothing of the body was streamed.
    async fn send<S: AsyncRead + Unpin>(
        &self,
        upstream: &mut TcpStream,
        ubuf: &mut BytesMut,
        head_out: &mut Vec<u8>,
        client: &mut S,
        from_client: &mut BytesMut,
        deadline: &mut Deadline,
    ) -> Result<(head::Response, usize), Failure> {
        let wait = self.timeouts.response;
        send_upstream(upstream, self.request, deadline, wait, Failure::Closed).await?;
        let mut left = self.body_left;
        while left > 0 {
            match read_within(client, from_client, self.timeouts.client_body, deadline).await {
                Ok(0) => return Err(Failure::Client(0, "client closed inside the body".into())),
                Ok(_) => {}
                Err(Failure::Timeout) => {
                    return Err(Failure::Client(400, "client body timeout".into()))
                }
                Err(Failure::Closed(e) | Failure::Broken(e) | Failure::Client(_, e)) => {
                    return Err(Failure::Client(0, e))
                }
            }
            // Bytes past the body are the client's next request: they stay.
            let n = left.min(from_client.len() as u64) as usize;
            let body = &from_client[..n];
            send_upstream(upstream, body, deadline, wait, Failure::Broken).await?;
            from_client.advance(n);
            left -= n as u64;
        }
        let streamed = self.body_left > 0;
        let mut answered = false;
        loop {
            if !ubuf.is_empty() {
                let client = head::ForClient {
                    route: self.route,
                    close: self.close,
                    upgrade: self.upgrade,
                    out: head_out,
                };
                match head::parse_response(ubuf, self.to_head, client) {
                    // Interim answers are dropped; a 101 is final (HTTP ends on this connection).
                    Parsed::Complete(response, n)
                        if response.status < 200 && response.status != 101 =>
                    {
                        ubuf.advance(n);
                        continue;
                    }
                    Parsed::Complete(response, n) => return Ok((response, n)),
                    Parsed::Partial if ubuf.len() < MAX_RESPONSE_HEAD => {}
                    _ => return Err(Failure::Broken("malformed response head".into())),
                }
            }
            match read_within(upstream, ubuf, self.timeouts.response, deadline).await {
                Ok(0) if answered => {
                    return Err(Failure::Broken("closed inside the response head".into()))
                }
                Ok(0) if streamed => return Err(Failure::Broken("closed before answering".into())),
                Ok(0) => return Err(Failure::Closed("closed before answering".into())),
                Ok(_) => answered = true,
                Err(Failure::Closed(e)) if answered || streamed => return Err(Failure::Broken(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Passes the response (its head already written for the client in `to_client`) on, then
    /// keeps the server's connection if it can serve another request.
    async fn relay<S: ClientStream>(
        &self,
        socket: &mut S,
        mut upstream: TcpStream,
        buffers: &mut Buffers,
        response: head::Response,
        head_len: usize,
        server: SocketAddr,
    ) -> Outcome {
        let close = self.close || response.framing == Framing::UntilClose;
        let Buffers {
            from_server: ubuf,
            to_client: out,
            deadline,
        } = buffers;
        ubuf.advance(head_len);
        let mut body = Body::new(response.framing);
        let mut outcome = Outcome {
            status: response.status,
            server: Some(server),
            error_kind: None,
            error: None,
            keep_client: !close,
            upgraded: None,
        };
        loop {
            match body.take(ubuf) {
                Ok(n) => {
                    out.extend_from_slice(&ubuf[..n]);
                    ubuf.advance(n);
                }
                Err(e) => {
                    // Nothing more can be said to the client: the head is out.
                    outcome.error = Some(e);
                    outcome.keep_client = false;
                    let _ = send(socket, out, deadline, self.timeouts.client_send).await;
                    return outcome;
                }
            }
            if close && body.done() {
                socket.ends_after_next_write();
            }
            if let Err(e) = send(socket, out, deadline, self.timeouts.client_send).await {
                outcome.error = Some(format!("client: {e}"));
                outcome.keep_client = false;
                return outcome;
            }
            out.clear();
            if body.done() {
                break;
            }
            ubuf.clear();
            match read_within(&mut upstream, ubuf, self.timeouts.response, deadline).await {
                Ok(0) if response.framing == Framing::UntilClose => return outcome,
                Ok(0) => {
                    outcome.error = Some("server closed inside the body".into());
                    outcome.keep_client = false;
                    return outcome;
                }
                Ok(_) => {}
                Err(Failure::Timeout) => {
                    outcome.error_kind = Some("timeout");
                    outcome.error = Some("server stalled inside the body".into());
                    outcome.keep_client = false;
                    return outcome;
                }
                Err(Failure::Closed(e) | Failure::Broken(e) | Failure::Client(_, e)) => {
                    outcome.error = Some(e);
                    outcome.keep_client = false;
                    return outcome;
                }
            }
        }
        // Bytes past the body's end are a server out of step: its connection is not reused.
        if response.keep_alive && ubuf.is_empty() {
            self.router.idle.put(server, upstream);
        }
        outcome
    }

    /// After a 101 (its head for the client in `to_client`): the head goes to the client with
    /// what the server sent past it, and what the client sent past its request to the server;
    /// the bytes after that flow in [`Tunnel::run`].
    async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: &mut S,
        from_client: &mut BytesMut,
        mut upstream: TcpStream,
        buffers: &mut Buffers,
        head_len: usize,
        server: SocketAddr,
    ) -> Outcome {
        buffers.from_server.advance(head_len);
        buffers.to_client.extend_from_slice(&buffers.from_server);
        buffers.from_server.clear();
        let (out, deadline) = (&mut buffers.to_client, &mut buffers.deadline);
        let mut outcome = Outcome {
            status: 101,
            server: Some(server),
            error_kind: None,
            error: None,
            keep_client: false,
            upgraded: None,
        };
        if let Err(e) = send(socket, out, deadline, self.timeouts.client_send).await {
            outcome.error = Some(format!("client: {e}"));
            return outcome;
        }
        match upstream.write_all(from_client).await {
            Ok(()) => {
                outcome.upgraded = Some(Upgraded {
                    upstream,
                    server,
                    active: None,
                })
            }
            Err(e) => outcome.error = Some(format!("tunnel: {e}")),
        }
        outcome
    }

    /// 502: the server could not be reached or broke off.
    async fn dead_upstream<S: AsyncWrite + Unpin>(
        &self,
        socket: &mut S,
        deadline: &mut Deadline,
        error: String,
        server: SocketAddr,
    ) -> Outcome {
        self.fail(socket, deadline, 502, "dead_upstream", error, Some(server))
            .await
    }

    /// An answer of the proxy's own; the client's connection closes after it, as pingora's do.
    async fn fail<S: AsyncWrite + Unpin>(
        &self,
        socket: &mut S,
        deadline: &mut Deadline,
        status: u16,
        kind: &'static str,
        error: String,
        server: Option<SocketAddr>,
    ) -> Outcome {
        let answer = head::own_response(status, &[], b"", true);
        let _ = send(socket, &answer, deadline, self.timeouts.client_send).await;
        Outcome {
            status,
            server,
            error_kind: Some(kind),
            error: Some(error),
            keep_client: false,
            upgraded: None,
        }
    }
}

/// Writes `bytes` to the client and flushes (a TLS stream may hold records back otherwise),
/// within `wait` of the client taking nothing.
async fn send<S: AsyncWrite + Unpin>(
    socket: &mut S,
    bytes: &[u8],
    deadline: &mut Deadline,
    wait: Duration,
) -> std::io::Result<()> {
    let written = async {
        socket.write_all(bytes).await?;
        socket.flush().await
    };
    match deadline.within_for(wait, written).await {
        Some(result) => result,
        None => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("not reading for {wait:?}"),
        )),
    }
}

/// Writes `bytes` to a server within `wait`; a write error is `failed`'s kind of failure.
async fn send_upstream(
    upstream: &mut TcpStream,
    bytes: &[u8],
    deadline: &mut Deadline,
    wait: Duration,
    failed: fn(String) -> Failure,
) -> Result<(), Failure> {
    match deadline.within_for(wait, upstream.write_all(bytes)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(failed(e.to_string())),
        None => Err(Failure::Timeout),
    }
}

/// Reads what is there (at least one byte, or 0 at the end) within `wait`.
async fn read_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    wait: Duration,
    deadline: &mut Deadline,
) -> Result<usize, Failure> {
    buf.reserve(READ_SIZE);
    match deadline.within_for(wait, stream.read_buf(buf)).await {
        Some(Ok(n)) => Ok(n),
        Some(Err(e)) => Err(Failure::Closed(e.to_string())),
        None => Err(Failure::Timeout),
    }
}

/// How much of a response body is still to come.
enum Body {
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
}

impl Body {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::None => Body::Length(0),
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(ChunkedScanner::default()),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    /// How many of `bytes` belong to the body.
    fn take(&mut self, bytes: &[u8]) -> Result<usize, String> {
        match self {
            Body::Length(left) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                Ok(n as usize)
            }
            Body::Chunked(scanner) => scanner.feed(bytes).map_err(|e| e.to_string()),
            Body::UntilClose => Ok(bytes.len()),
        }
    }

    fn done(&self) -> bool {
        match self {
            Body::Length(left) => *left == 0,
            Body::Chunked(scanner) => scanner.is_done(),
            Body::UntilClose => false,
        }
    }
}
