//! What an `http` or `https` listener does with an accepted connection: on `https` first the
//! TLS handshake (ours, with the SNI resolver); then HTTP/1.1 goes our own path
//! ([`crate::http::h1`]) until a request needs more, and that request and the rest of the
//! connection go to pingora's session machinery; h2 (and h2c by prior knowledge where `h2c` is
//! on) goes our own h2 path ([`crate::http::h2`]) unless a backend of the listener is reached
//! over TLS or h2, which pingora's carries. All with the same [`HttpRouter`].

use crate::http::h1::{self as http1, Served};
use crate::http::h2 as http2;
use crate::http::idle::MAX_IDLE_PER_SERVER;
use crate::http::metrics::HttpMetrics;
use crate::http::pingora::SharedRouter;
use crate::http::router::HttpRouter;
use crate::l4::client_socket::ClientSocket;
use crate::metrics::ListenerMetrics;
use crate::refusals::Refusals;
use crate::tls::stream::{tls_version, TlsClient};
use bytes::BytesMut;
use lab_daemon::Name;
use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use prometheus_client::metrics::counter::Counter;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub struct HttpApp {
    pub listener: Name,
    router: Arc<HttpRouter>,
    proxy: Arc<HttpProxy<SharedRouter>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    hello_timeout: Duration,
    pub metrics: ListenerMetrics,
    http_metrics: HttpMetrics,
    /// Successful handshakes by version (TLS 1.3, 1.2), each counter resolved at its first.
    handshakes_ok: [OnceLock<Counter>; 2],
    pub limits: lab_daemon::admission::Limits,
    pub refusals: Refusals,
}

impl HttpApp {
    pub fn new(
        router: HttpRouter,
        tls: Option<Arc<rustls::ServerConfig>>,
        hello_timeout: Duration,
        metrics: ListenerMetrics,
        http_metrics: HttpMetrics,
        limits: lab_daemon::admission::Limits,
    ) -> Self {
        let listener = router.listener.clone();
        let conf = ServerConf {
            // Retries are decided per request in `fail_to_connect`; this only bounds them.
            max_retries: 16,
            // One LRU for all servers. pingora's default (128) is below the requests one h2
            // client has in flight (h2load -c16 -m16: 256): each request past it connected
            // anew and its connection was closed after, a fifth of the CPU per request.
            // As many as our HTTP/1.1 path keeps per server.
            upstream_keepalive_pool_size: router.server_count().max(1) * MAX_IDLE_PER_SERVER,
            ..ServerConf::default()
        };
        let router = Arc::new(router);
        let mut proxy = pingora_proxy::http_proxy(&Arc::new(conf), SharedRouter(router.clone()));
        // An h2 connection with no stream open is idle as an HTTP/1.1 one between requests is;
        // pingora would otherwise hold it open for good.
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(router.timeouts().keepalive);
        proxy.server_options = Some(options);
        Self {
            refusals: Refusals::new(listener.clone(), metrics.clone()),
            listener,
            router,
            proxy: Arc::new(proxy),
            tls,
            hello_timeout,
            metrics,
            http_metrics,
            handshakes_ok: Default::default(),
            limits,
        }
    }

    /// Counts a successful handshake of `version`.
    fn handshake_ok(&self, version: &'static str) {
        let slot = match version {
            "TLSv1.3" => &self.handshakes_ok[0],
            "TLSv1.2" => &self.handshakes_ok[1],
            _ => {
                return self
                    .http_metrics
                    .handshake(self.listener.as_str(), version, "ok")
            }
        };
        slot.get_or_init(|| {
            self.http_metrics
                .handshake_counter(self.listener.as_str(), version, "ok")
        })
        .inc();
    }

    /// Our HTTP/1.1 path on `stream`, until `until` for the first request; what it read of a
    /// request it hands over, or None when the connection is done.
    async fn serve_http1<S: http1::ClientStream>(
        &self,
        stream: &mut S,
        peer: SocketAddr,
        mut until: tokio::time::Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<BytesMut> {
        self.metrics.active.inc();
        let handed_over = loop {
            // Quiet, the connection holds this wait alone; the path's state (kilobytes, boxed)
            // is made when a request comes and given back when it has idled a while.
            if !http1::until_readable(stream, until, shutdown).await {
                break None;
            }
            match Box::pin(http1::serve(
                &self.router,
                stream,
                peer.ip(),
                until,
                shutdown,
            ))
            .await
            {
                Served::Idle(keepalive_until) => until = keepalive_until,
                Served::HandOver(read) => break Some(read),
                Served::Closed => break None,
                // Boxed: inline, the tunnel's state would size every connection's task.
                Served::Tunnel(tunnel) => {
                    Box::pin(tunnel.run(&self.router, stream)).await;
                    break None;
                }
            }
        };
        self.metrics.active.dec();
        handed_over
    }

    /// Our h2 path on `stream`, when every backend of the listener is plain HTTP/1.1; the
    /// stream back when the connection is pingora's.
    async fn serve_h2<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: SocketAddr,
        shutdown: &ShutdownWatch,
    ) -> Option<S> {
        if !self.router.every_upstream_plain() {
            tracing::debug!(listener = %self.listener, client = %peer, "h2 connection to pingora's session: a backend is reached over TLS or h2");
            return Some(stream);
        }
        self.metrics.active.inc();
        // Boxed: inline, the h2 connection's state would size every connection's task.
        Box::pin(http2::serve(&self.router, stream, peer.ip(), shutdown)).await;
        self.metrics.active.dec();
        None
    }

    /// The TLS handshake on `socket`, done by `until`: the connection once it is done, None
    /// when it failed.
    async fn handshake(
        &self,
        config: &Arc<rustls::ServerConfig>,
        socket: ClientSocket,
        until: tokio::time::Instant,
    ) -> Option<Box<TlsClient>> {
        let peer = socket.peer;
        let failed = |e: std::io::Error| {
            self.http_metrics
                .handshake(self.listener.as_str(), tls_version(None), "failed");
            if let Some(unlogged) = self.refusals.within_budget() {
                tracing::info!(listener = %self.listener, client = %peer, error = %e, unlogged, "TLS handshake failed");
            }
        };
        let mut tls = match TlsClient::new(socket, config.clone()) {
            Ok(tls) => Box::new(tls),
            Err(e) => {
                failed(e);
                return None;
            }
        };
        match tokio::time::timeout_at(until, tls.handshake()).await {
            Ok(Ok(())) => {
                self.handshake_ok(tls.version());
                Some(tls)
            }
            Ok(Err(e)) => {
                failed(e);
                None
            }
            Err(_) => {
                self.http_metrics
                    .handshake(self.listener.as_str(), tls_version(None), "timeout");
                None
            }
        }
    }

    /// Serves the connection on `socket` (taken from it when it leaves for pingora's session or
    /// TLS) to its end. What is inline here sizes every connection's task for its life, idle
    /// ones' included: the waits for a client's bytes, and boxes for the rest.
    pub async fn serve(&self, socket: &mut Option<ClientSocket>, shutdown: &ShutdownWatch) {
        let Some(plain) = socket.as_mut() else {
            return;
        };
        let peer = plain.peer;
        let accepted = tokio::time::Instant::now();
        match &self.tls {
            None => {
                let until = accepted + self.router.timeouts().keepalive;
                let Some(read) = self.serve_http1(plain, peer, until, shutdown).await else {
                    return;
                };
                let Some(socket) = socket.take() else {
                    return;
                };
                Box::pin(self.serve_plain_handed_over(socket, read, shutdown)).await
            }
            Some(config) => {
                // Nothing made for a client that has not said hello yet.
                let hello_until = accepted + self.hello_timeout;
                if !http1::until_readable(plain, hello_until, shutdown).await {
                    return;
                }
                let Some(socket) = socket.take() else {
                    return;
                };
                let Some(tls) = Box::pin(self.handshake(config, socket, hello_until)).await else {
                    return;
                };
                Box::pin(self.serve_tls(tls, shutdown)).await
            }
        }
    }

    /// A plain connection our HTTP/1.1 path handed over, `read` its bytes not yet handled: h2
    /// by prior knowledge where `h2c` is on, pingora's session otherwise.
    async fn serve_plain_handed_over(
        &self,
        mut socket: ClientSocket,
        read: BytesMut,
        shutdown: &ShutdownWatch,
    ) {
        let peer = socket.peer;
        let prior_knowledge = self.router.h2c() && http2::starts_h2(&read);
        socket.replay(read);
        if prior_knowledge && self.serve_h2(&mut socket, peer, shutdown).await.is_none() {
            return;
        }
        // Header and body of a response in one write (pingora flushes at the end).
        // Under TLS, rustls and h2 gather writes themselves.
        socket.buffer_writes();
        self.serve_pingora(Box::new(socket), shutdown).await
    }

    /// A connection after its TLS handshake: our h2 or HTTP/1.1 path, then pingora's session
    /// for what they hand over.
    async fn serve_tls(&self, mut tls: Box<TlsClient>, shutdown: &ShutdownWatch) {
        let peer = tls.peer();
        if tls.is_h2() {
            if self.serve_h2(&mut *tls, peer, shutdown).await.is_none() {
                return;
            }
        } else {
            let until = tokio::time::Instant::now() + self.router.timeouts().keepalive;
            let Some(read) = self.serve_http1(&mut *tls, peer, until, shutdown).await else {
                return;
            };
            tls.replay(read);
        }
        self.serve_pingora(tls, shutdown).await
    }

    async fn serve_pingora(&self, stream: Stream, shutdown: &ShutdownWatch) {
        self.metrics.active.inc();
        // Boxed: inline, pingora's session future (kilobytes) would size every connection's
        // task, though most connections never leave our HTTP/1.1 path.
        let _ = Box::pin(self.proxy.process_new(stream, shutdown)).await;
        self.metrics.active.dec();
    }
}
