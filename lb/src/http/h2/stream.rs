//! One h2 stream proxied to an HTTP/1.1 server: the request head checked and routed, the body
//! passed on as it comes, the server picked from the pool (a kept-alive connection first), the
//! response passed back within the client's flow-control window, the server's connection kept
//! for the next request. A future polled by the connection's task, not a task of its own.

use super::dechunk::{Dechunker, Piece};
use super::request;
use super::response::{self, Head};
use crate::backend::pool::{ActiveGuard, Pool, Tried};
use crate::http::h1::head::Framing;
use crate::http::router::{idempotent, ClientName, Finished, HttpRouter, Route, Timeouts};
use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use bytes::{Buf, Bytes, BytesMut};
use std::future::{poll_fn, Future};
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Room made for each read from a server.
const READ_SIZE: usize = 16 * 1024;

/// Largest response head accepted from a server (as on the HTTP/1.1 path).
const MAX_RESPONSE_HEAD: usize = 1024 * 1024;

/// What one client connection's streams share.
pub(super) struct Connection<'a> {
    pub router: &'a HttpRouter,
    pub client: IpAddr,
    pub client_name: ClientName,
    pub timeouts: Timeouts,
}

/// How a stream ended, for the connection's count of resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    Answered,
    /// The client reset the stream before its response was complete.
    ResetByClient,
}

/// Why a request got no response from a server.
struct Refusal {
    status: u16,
    kind: &'static str,
    error: String,
    server: Option<SocketAddr>,
}

impl Refusal {
    fn new(status: u16, kind: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            error: error.into(),
            server: None,
        }
    }
}

/// A server's answer, its head parsed, what came after the head still in `buf`.
struct Answer {
    upstream: TcpStream,
    server: SocketAddr,
    head: Head,
    buf: BytesMut,
    _active: Option<ActiveGuard>,
}

/// What the access log says of a stream.
struct Record {
    status: u16,
    server: Option<SocketAddr>,
    error_kind: Option<&'static str>,
    error: Option<String>,
}

impl Connection<'_> {
    /// Serves one stream to its end.
    pub(super) async fn serve(
        &self,
        request: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
    ) -> StreamEnd {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let read = request::read(&parts);
        let (host, path) = match &read {
            Ok(r) => (r.host.as_str(), r.path.as_str()),
            Err(_) => ("", parts.uri.path()),
        };
        let route_index = self.router.match_route(host, path);
        let mut finished = Finished {
            route: route_index,
            method: &parts.method,
            status: 0,
            started,
            client: self.client,
            host,
            path,
            server: None,
            error_kind: None,
            error: None,
        };
        let (record, end) = self
            .exchange(&parts, &read, route_index, body, &mut respond)
            .await;
        finished.status = record.status;
        finished.server = record.server;
        finished.error_kind = record.error_kind;
        finished.error = record.error.as_deref();
        self.router.record(&finished);
        end
    }

    async fn exchange(
        &self,
        parts: &http::request::Parts,
        read: &Result<request::Request, request::Malformed>,
        route_index: Option<usize>,
        body: RecvStream,
        respond: &mut SendResponse<Bytes>,
    ) -> (Record, StreamEnd) {
        let router = self.router;
        let route = router.route_at(route_index);
        let request = match read {
            Ok(r) => r,
            Err(request::Malformed(why)) => {
                return self.refuse(respond, Refusal::new(400, "bad_request", *why));
            }
        };
        let Some(_slot) = router.admit() else {
            let refusal = Refusal::new(503, "limit", "too many requests in flight");
            return self.refuse(respond, refusal);
        };
        if request.head_bytes > router.max_header_bytes() {
            let refusal = Refusal::new(431, "too_large", "request header too large");
            return self.refuse(respond, refusal);
        }
        if let Some(route) = route {
            if let Some(answer) = self.answer_itself(route, request, parts, respond) {
                return answer;
            }
            if route
                .max_body
                .is_some_and(|max| request.length.is_some_and(|l| l > max))
            {
                let refusal = Refusal::new(413, "too_large", "request body too large");
                return self.refuse(respond, refusal);
            }
        }
        let forwarding = router.forwarding(
            &self.client_name,
            &request.host,
            joined(parts, "x-forwarded-for").as_deref(),
            joined(parts, "forwarded").as_deref(),
        );
        let has_body = !body.is_end_stream();
        let mut head = Vec::with_capacity(512);
        request::write(parts, request, route, &forwarding, has_body, &mut head);
        let exchange = Exchange {
            router,
            pool: router.pool_of(route_index),
            route,
            timeouts: self.timeouts,
            client: self.client,
            head: &head,
            idempotent: idempotent(&parts.method) && !has_body,
            to_head: parts.method == http::Method::HEAD,
            chunked: has_body && request.length.is_none(),
            max_body: route.and_then(|r| r.max_body),
        };
        let started = Instant::now();
        let answer = {
            let mut sent = pin!(exchange.run(body));
            let reset = poll_fn(|cx| match sent.as_mut().poll(cx) {
                Poll::Ready(answer) => Poll::Ready(Ok(answer)),
                Poll::Pending => respond.poll_reset(cx).map(|_| Err(())),
            })
            .await;
            match reset {
                Ok(answer) => answer,
                Err(()) => {
                    let record = Record {
                        status: 0,
                        server: None,
                        error_kind: None,
                        error: Some("reset by the client".into()),
                    };
                    return (record, StreamEnd::ResetByClient);
                }
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(refusal) => return self.refuse(respond, refusal),
        };
        if let Some(handles) = router.upstream_handles(&exchange.pool.name) {
            handles.duration.observe(started.elapsed().as_secs_f64());
        }
        self.relay(respond, answer).await
    }

    /// A route's fixed response or redirect, answered here.
    fn answer_itself(
        &self,
        route: &Route,
        request: &request::Request,
        parts: &http::request::Parts,
        respond: &mut SendResponse<Bytes>,
    ) -> Option<(Record, StreamEnd)> {
        if route.redirect_https && !self.router.https() {
            let target = format!(
                "https://{}{}",
                request.host,
                parts.uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let Ok(location) = http::HeaderValue::try_from(target) else {
                return Some(self.refuse(respond, Refusal::new(400, "bad_request", "bad host")));
            };
            let extra = [(http::header::LOCATION, location)];
            return Some(self.own_answer(respond, 308, &extra, Bytes::new(), None));
        }
        let status = route.status?;
        Some(self.own_answer(
            respond,
            status,
            &route.add_response,
            route.body.clone(),
            None,
        ))
    }

    /// An error answer of the proxy's own on this stream; the connection goes on.
    fn refuse(&self, respond: &mut SendResponse<Bytes>, refusal: Refusal) -> (Record, StreamEnd) {
        let extra: &[(http::HeaderName, http::HeaderValue)] = if refusal.status == 503 {
            &[(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            )]
        } else {
            &[]
        };
        let (mut record, end) =
            self.own_answer(respond, refusal.status, extra, Bytes::new(), refusal.server);
        record.error_kind = Some(refusal.kind);
        record.error = Some(refusal.error);
        (record, end)
    }

    fn own_answer(
        &self,
        respond: &mut SendResponse<Bytes>,
        status: u16,
        extra: &[(http::HeaderName, http::HeaderValue)],
        body: Bytes,
        server: Option<SocketAddr>,
    ) -> (Record, StreamEnd) {
        let mut response = http::Response::new(());
        *response.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        let fields = response.headers_mut();
        for (name, value) in extra {
            fields.append(name.clone(), value.clone());
        }
        fields.insert(http::header::CONTENT_LENGTH, body.len().into());
        if status >= 400 {
            fields.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("private, no-store"),
            );
        }
        let record = Record {
            status,
            server,
            error_kind: None,
            error: None,
        };
        let sent = match respond.send_response(response, body.is_empty()) {
            Ok(mut send) if !body.is_empty() => send.send_data(body, true),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => (record, StreamEnd::Answered),
            Err(_) => (
                Record {
                    status: 0,
                    ..record
                },
                StreamEnd::ResetByClient,
            ),
        }
    }

    /// Passes the response on, then keeps the server's connection if it can serve another
    /// request. A server that breaks off inside the body resets the stream (INTERNAL_ERROR):
    /// the head is out, nothing else can tell the client the body is not whole.
    async fn relay(
        &self,
        respond: &mut SendResponse<Bytes>,
        answer: Answer,
    ) -> (Record, StreamEnd) {
        let Answer {
            mut upstream,
            server,
            head,
            mut buf,
            _active,
        } = answer;
        let mut record = Record {
            status: head.status.as_u16(),
            server: Some(server),
            error_kind: None,
            error: None,
        };
        let mut response = http::Response::new(());
        *response.status_mut() = head.status;
        *response.headers_mut() = head.fields;
        // An empty body ends the stream with the head.
        let no_body = matches!(head.framing, Framing::None | Framing::Length(0));
        let mut send = match respond.send_response(response, no_body) {
            Ok(send) => send,
            Err(_) => {
                record.error = Some("reset by the client".into());
                return (record, StreamEnd::ResetByClient);
            }
        };
        if no_body {
            if head.keep_alive && buf.is_empty() {
                self.router.idle.put(server, upstream);
            }
            return (record, StreamEnd::Answered);
        }
        let mut to_client = ToClient {
            send: &mut send,
            wait: self.timeouts.client_send,
        };
        let relayed = match head.framing {
            Framing::Length(n) => {
                relay_length(
                    &mut to_client,
                    &mut upstream,
                    &mut buf,
                    n,
                    self.timeouts.response,
                )
                .await
            }
            Framing::Chunked => {
                relay_chunked(
                    &mut to_client,
                    &mut upstream,
                    &mut buf,
                    self.timeouts.response,
                )
                .await
            }
            _ => relay_until_close(
                &mut to_client,
                &mut upstream,
                &mut buf,
                self.timeouts.response,
            )
            .await
            .map(|()| false),
        };
        match relayed {
            Ok(reusable) => {
                if reusable && head.keep_alive && buf.is_empty() {
                    self.router.idle.put(server, upstream);
                }
                (record, StreamEnd::Answered)
            }
            Err(Broken::Client(e)) => {
                record.error = Some(format!("client: {e}"));
                (record, StreamEnd::ResetByClient)
            }
            Err(Broken::Server(e)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                record.error = Some(e);
                (record, StreamEnd::Answered)
            }
            Err(Broken::Timeout) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                record.error_kind = Some("timeout");
                record.error = Some("server stalled inside the body".into());
                (record, StreamEnd::Answered)
            }
        }
    }
}

/// The `X-Forwarded-For` or `Forwarded` fields the client sent, joined with `, `.
fn joined(parts: &http::request::Parts, name: &str) -> Option<String> {
    let mut values = parts.headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for value in values {
        out.push_str(", ");
        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    Some(out)
}

/// Why a response body could not be passed on whole.
enum Broken {
    Client(String),
    Server(String),
    Timeout,
}

/// The client's side of a stream: data goes out as its flow-control window allows (a client
/// that reads nothing holds no more than its window of ours), within `wait` of it taking
/// nothing.
struct ToClient<'s> {
    send: &'s mut SendStream<Bytes>,
    wait: Duration,
}

impl ToClient<'_> {
    async fn data(&mut self, mut data: Bytes, end: bool) -> Result<(), Broken> {
        if data.is_empty() {
            if end {
                return self.send.send_data(data, true).map_err(client_gone);
            }
            return Ok(());
        }
        self.send.reserve_capacity(data.len());
        while !data.is_empty() {
            let mut capacity = self.send.capacity();
            if capacity == 0 {
                let wait =
                    tokio::time::timeout(self.wait, poll_fn(|cx| self.send.poll_capacity(cx)));
                capacity = match wait.await {
                    Ok(Some(Ok(n))) => n,
                    Ok(Some(Err(e))) => return Err(client_gone(e)),
                    Ok(None) => return Err(Broken::Client("stream closed".into())),
                    Err(_) => {
                        return Err(Broken::Client(format!("not reading for {:?}", self.wait)))
                    }
                };
                if capacity == 0 {
                    continue;
                }
            }
            let part = data.split_to(capacity.min(data.len()));
            let last = end && data.is_empty();
            self.send.send_data(part, last).map_err(client_gone)?;
        }
        Ok(())
    }

    fn end(&mut self, trailers: http::HeaderMap) -> Result<(), Broken> {
        if trailers.is_empty() {
            self.send.send_data(Bytes::new(), true)
        } else {
            self.send.send_trailers(trailers)
        }
        .map_err(client_gone)
    }
}

fn client_gone(e: ::h2::Error) -> Broken {
    Broken::Client(e.to_string())
}

/// Reads what the server sends next (at least a byte, or 0 at its end) within `wait`; a
/// client that resets the stream meanwhile ends the wait.
async fn read_server(
    to_client: &mut ToClient<'_>,
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    wait: Duration,
) -> Result<usize, Broken> {
    buf.reserve(READ_SIZE);
    let mut read = pin!(tokio::time::timeout(wait, upstream.read_buf(buf)));
    poll_fn(|cx| {
        if let Poll::Ready(reset) = to_client.send.poll_reset(cx) {
            let why = reset.map_or_else(|e| e.to_string(), |reason| format!("reset: {reason}"));
            return Poll::Ready(Err(Broken::Client(why)));
        }
        read.as_mut().poll(cx).map(|read| match read {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(Broken::Server(e.to_string())),
            Err(_) => Err(Broken::Timeout),
        })
    })
    .await
}

/// A body of `left` bytes; whether the server's connection can go again.
async fn relay_length(
    to_client: &mut ToClient<'_>,
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    mut left: u64,
    wait: Duration,
) -> Result<bool, Broken> {
    loop {
        if !buf.is_empty() {
            let n = left.min(buf.len() as u64);
            left -= n;
            let data = buf.split_to(n as usize).freeze();
            to_client.data(data, left == 0).await?;
        }
        if left == 0 {
            return Ok(true);
        }
        if read_server(to_client, upstream, buf, wait).await? == 0 {
            return Err(Broken::Server("server closed inside the body".into()));
        }
    }
}

async fn relay_chunked(
    to_client: &mut ToClient<'_>,
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    wait: Duration,
) -> Result<bool, Broken> {
    let mut dechunker = Dechunker::new();
    loop {
        match dechunker.next(buf).map_err(|e| Broken::Server(e.into()))? {
            Piece::Data(data) => to_client.data(data, false).await?,
            Piece::End(trailers) => {
                to_client.end(trailers)?;
                return Ok(true);
            }
            Piece::More => {
                if read_server(to_client, upstream, buf, wait).await? == 0 {
                    return Err(Broken::Server("server closed inside the body".into()));
                }
            }
        }
    }
}

async fn relay_until_close(
    to_client: &mut ToClient<'_>,
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    wait: Duration,
) -> Result<(), Broken> {
    loop {
        if !buf.is_empty() {
            to_client.data(buf.split().freeze(), false).await?;
        }
        if read_server(to_client, upstream, buf, wait).await? == 0 {
            return to_client.data(Bytes::new(), true).await;
        }
    }
}

/// One request on its way to a server, up to the server's response head.
struct Exchange<'a> {
    router: &'a HttpRouter,
    pool: &'a Pool,
    route: Option<&'a Route>,
    timeouts: Timeouts,
    client: IpAddr,
    head: &'a [u8],
    /// May go again on another connection: nothing of it but the head was sent.
    idempotent: bool,
    to_head: bool,
    chunked: bool,
    max_body: Option<u64>,
}

/// Why sending a request failed: on a kept-alive connection the server may have closed it as
/// idle just as the request went out (`Closed`: may go again).
enum Failure {
    Closed(String),
    Broken(String),
    Timeout,
    Refused(Refusal),
}

impl Exchange<'_> {
    async fn run(&self, mut body: RecvStream) -> Result<Answer, Refusal> {
        let mut tried = Tried::new();
        loop {
            let Some((i, server)) = self.pool.pick(self.client, &tried) else {
                let (status, kind) = if tried.is_empty() {
                    (503, "no_server")
                } else {
                    (502, "dead_upstream")
                };
                let error = format!("no server of backend `{}` to try", self.pool.name);
                return Err(Refusal::new(status, kind, error));
            };
            tried.push(i);
            let active = self.pool.track(i);
            let mut pooled = self.router.idle.take(server);
            loop {
                let reused = pooled.is_some();
                let mut upstream = match pooled.take() {
                    Some(s) => s,
                    None => match self.connect(server).await {
                        Ok(s) => s,
                        Err(e) => {
                            self.pool.connect_failed(i, &e);
                            let retries_used = tried.len().saturating_sub(1) as u32;
                            if self.idempotent && retries_used < self.pool.retries() {
                                break;
                            }
                            let mut refusal = Refusal::new(502, "dead_upstream", e);
                            refusal.server = Some(server);
                            return Err(refusal);
                        }
                    },
                };
                let mut buf = BytesMut::new();
                match self.send(&mut upstream, &mut body, &mut buf).await {
                    Ok((head, n)) => {
                        if let Some(handles) = self.router.upstream_handles(&self.pool.name) {
                            if reused {
                                handles.reused.inc();
                            } else {
                                handles.fresh.inc();
                            }
                        }
                        buf.advance(n);
                        return Ok(Answer {
                            upstream,
                            server,
                            head,
                            buf,
                            _active: active,
                        });
                    }
                    Err(Failure::Closed(_)) if reused && self.idempotent => continue,
                    Err(Failure::Closed(e) | Failure::Broken(e)) => {
                        let mut refusal = Refusal::new(502, "dead_upstream", e);
                        refusal.server = Some(server);
                        return Err(refusal);
                    }
                    Err(Failure::Timeout) => {
                        let e = format!("no response within {:?}", self.timeouts.response);
                        let mut refusal = Refusal::new(504, "timeout", e);
                        refusal.server = Some(server);
                        return Err(refusal);
                    }
                    Err(Failure::Refused(mut refusal)) => {
                        refusal.server = Some(server);
                        return Err(refusal);
                    }
                }
            }
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

    /// Sends the head and the client's body as it comes, then reads the final response head.
    async fn send(
        &self,
        upstream: &mut TcpStream,
        body: &mut RecvStream,
        buf: &mut BytesMut,
    ) -> Result<(Head, usize), Failure> {
        let wait = self.timeouts.response;
        self.write(upstream, self.head, Failure::Closed).await?;
        let mut seen = 0u64;
        let mut streamed = false;
        while !body.is_end_stream() {
            let next = tokio::time::timeout(self.timeouts.client_body, body.data()).await;
            let chunk = match next {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Failure::Refused(Refusal::new(
                        400,
                        "bad_request",
                        e.to_string(),
                    )))
                }
                Err(_) => {
                    return Err(Failure::Refused(Refusal::new(
                        400,
                        "bad_request",
                        "client body timeout",
                    )))
                }
            };
            let _ = body.flow_control().release_capacity(chunk.len());
            seen += chunk.len() as u64;
            if self.max_body.is_some_and(|max| seen > max) {
                return Err(Failure::Refused(Refusal::new(
                    413,
                    "too_large",
                    "request body too large",
                )));
            }
            if chunk.is_empty() {
                continue;
            }
            streamed = true;
            if self.chunked {
                let size = format!("{:x}\r\n", chunk.len());
                self.write(upstream, size.as_bytes(), Failure::Broken)
                    .await?;
                self.write(upstream, &chunk, Failure::Broken).await?;
                self.write(upstream, b"\r\n", Failure::Broken).await?;
            } else {
                self.write(upstream, &chunk, Failure::Broken).await?;
            }
        }
        if self.chunked {
            self.write(upstream, b"0\r\n\r\n", Failure::Broken).await?;
        }
        let mut answered = false;
        loop {
            if !buf.is_empty() {
                match response::parse(buf, self.to_head, self.route) {
                    response::Parsed::Interim(n) => {
                        buf.advance(n);
                        continue;
                    }
                    response::Parsed::Final(head, n) => return Ok((head, n)),
                    response::Parsed::Partial if buf.len() < MAX_RESPONSE_HEAD => {}
                    response::Parsed::Partial => {
                        return Err(Failure::Broken("response head too large".into()))
                    }
                    response::Parsed::Broken(why) => return Err(Failure::Broken(why.into())),
                }
            }
            buf.reserve(READ_SIZE);
            match tokio::time::timeout(wait, upstream.read_buf(buf)).await {
                Ok(Ok(0)) if answered || streamed => {
                    return Err(Failure::Broken("closed before answering".into()))
                }
                Ok(Ok(0)) => return Err(Failure::Closed("closed before answering".into())),
                Ok(Ok(_)) => answered = true,
                Ok(Err(e)) if answered || streamed => return Err(Failure::Broken(e.to_string())),
                Ok(Err(e)) => return Err(Failure::Closed(e.to_string())),
                Err(_) => return Err(Failure::Timeout),
            }
        }
    }

    async fn write(
        &self,
        upstream: &mut TcpStream,
        bytes: &[u8],
        failed: fn(String) -> Failure,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(self.timeouts.response, upstream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(Failure::Timeout),
        }
    }
}
