//! A small HTTP/1.1 server for `GET /metrics` (and a daemon's `GET /status`), on its own address
//! so scraping never competes with the data path's listeners. Bounded like a data-path listener:
//! connections in all and per address, head size, the time to send a head, and a connection's
//! whole life, so a slow or flooding client cannot take the daemon's descriptors.

use crate::admission::{Admission, Limits};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A daemon's JSON description of what it is doing right now, served at `GET /status`.
pub trait StatusPage: Send + Sync + 'static {
    /// The page's body: one JSON document, made at each request.
    fn json(&self) -> String;
}

/// What the endpoint serves.
#[derive(Clone)]
pub struct Pages {
    /// What `GET /metrics` encodes.
    pub registry: Arc<Registry>,
    /// What `GET /status` shows; without one, `/status` is a 404.
    pub status: Option<Arc<dyn StatusPage>>,
}

/// A scraper keeps one connection, a person with curl a few more.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_CLIENT: usize = 8;
/// From the start of waiting for a request head (a kept-alive connection's idle time included)
/// to its end.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's whole life: a client that stops reading a large page is let go.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(60);
/// hyper's smallest read buffer, which bounds a request head; more is a 431.
const MAX_HEAD_BYTES: usize = 8192;
const MAX_HEADERS: usize = 32;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes `registry` in OpenMetrics when the scraper asks for it (Prometheus does), otherwise in
/// the Prometheus text format 0.0.4 that `curl`, `promtool` and older scrapers read.
pub fn encode(
    registry: &Registry,
    accept: Option<&str>,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut body = String::new();
    let wants_openmetrics = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_openmetrics {
        prometheus_client::encoding::text::encode(&mut body, registry)?;
        Ok((OPENMETRICS, body))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, registry)?;
        Ok((
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            body,
        ))
    }
}

/// The running metrics endpoint; stops accepting when dropped.
pub struct MetricsServer {
    address: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl MetricsServer {
    /// Serves `registry` on an already bound listener (binding first lets a reload that moves the
    /// endpoint fail before anything changes).
    pub fn serve(listener: TcpListener, pages: Pages) -> std::io::Result<Self> {
        let address = listener.local_addr()?;
        let accept_loop = tokio::spawn(accept_loop(listener, pages));
        Ok(Self {
            address,
            accept_loop,
        })
    }

    /// The address the endpoint listens on (the bound one, so port 0 is resolved).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(listener: TcpListener, pages: Pages) {
    let admission = Arc::new(Admission::default());
    let limits = Limits {
        total: MAX_CONNECTIONS,
        per_client: MAX_CONNECTIONS_PER_CLIENT,
        exempt: Vec::new(),
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(admitted) = admission.admit(peer.ip(), &limits) else {
            tracing::debug!(%peer, "metrics endpoint at its connection limit; closed");
            continue;
        };
        let pages = pages.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let service = hyper::service::service_fn(move |request| {
                let pages = pages.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&pages, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection ended with an error"),
                Err(_) => tracing::debug!(%peer, "metrics connection closed at its time limit"),
                Ok(Ok(())) => {}
            }
        });
    }
}

fn respond(pages: &Pages, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let status = pages.status.as_ref().filter(|_| path == "/status");
    if path != "/metrics" && status.is_none() {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if let Some(status) = status {
        let mut response = Response::new(Full::new(Bytes::from(status.json())));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    match encode(&pages.registry, accept) {
        Ok((content_type, body)) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode metrics\n",
        ),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
