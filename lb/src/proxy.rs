//! The L4 proxy, as a pingora [`ServerApp`]: pick a backend (by SNI for `tls-passthrough`),
//! connect to one of its servers, splice, log one line.

use crate::metrics::{ListenerMetrics, Refusal};
use crate::pool::Pool;
use crate::sni::{parse_client_hello, Hello, SniPattern};
use crate::splice::{splice, Spliced};
use async_trait::async_trait;
use lab_daemon::Name;
use pingora_core::apps::ServerApp;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where a listener's connections go; replaced whole on reload.
pub struct Routing {
    pub default: Arc<Pool>,
    /// `tls-passthrough`: (pattern, backend), first match wins.
    pub by_sni: Vec<(SniPattern, Arc<Pool>)>,
    pub passthrough: bool,
    pub idle_timeout: Duration,
    pub hello_timeout: Duration,
}

impl Routing {
    fn pool_for(&self, server_name: Option<&str>) -> &Arc<Pool> {
        server_name
            .and_then(|name| {
                self.by_sni
                    .iter()
                    .find(|(pattern, _)| pattern.matches(name))
                    .map(|(_, pool)| pool)
            })
            .unwrap_or(&self.default)
    }
}

/// One listener's proxy. A reload builds a new one; connections keep the one they started with.
pub struct L4Proxy {
    pub listener: Name,
    pub routing: Routing,
    pub metrics: ListenerMetrics,
    pub connector: Arc<TransportConnector>,
    /// Connections open at once before new ones are refused.
    pub max_connections: Option<usize>,
}

/// Facts about one connection, for its access-log line.
struct Connection {
    client: SocketAddr,
    started: Instant,
    server_name: Option<String>,
}

impl L4Proxy {
    fn client_address(stream: &Stream) -> SocketAddr {
        stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()))
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// Reads until the ClientHello is complete; returns the bytes read (to forward untouched)
    /// and the server name.
    async fn read_hello(
        client: &mut Stream,
        timeout: Duration,
    ) -> Result<(Vec<u8>, Option<String>), &'static str> {
        let mut received = Vec::with_capacity(1024);
        let read = async {
            let mut chunk = [0u8; 4096];
            loop {
                match parse_client_hello(&received) {
                    Hello::Complete { server_name } => return Ok(server_name),
                    Hello::Invalid(reason) => return Err(reason),
                    Hello::NeedMore => {}
                }
                match client.read(&mut chunk).await {
                    Ok(0) => return Err("client closed before its ClientHello was complete"),
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                    Err(_) => return Err("client connection failed during the ClientHello"),
                }
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(server_name)) => Ok((received, server_name)),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err("no complete ClientHello in time"),
        }
    }

    async fn serve(&self, mut client: Stream) {
        let routing = &self.routing;
        let mut connection = Connection {
            client: Self::client_address(&client),
            started: Instant::now(),
            server_name: None,
        };
        let mut first_bytes = Vec::new();
        if routing.passthrough {
            match Self::read_hello(&mut client, routing.hello_timeout).await {
                Ok((bytes, server_name)) => {
                    first_bytes = bytes;
                    connection.server_name = server_name;
                }
                Err(reason) => {
                    self.refuse(&connection, Refusal::BadHello, reason);
                    return;
                }
            }
        }
        let pool = routing.pool_for(connection.server_name.as_deref());
        let client_ip: IpAddr = connection.client.ip();
        let mut upstream = match pool.connect(client_ip, &self.connector).await {
            Ok(upstream) => upstream,
            Err(e) => {
                self.refuse(&connection, Refusal::NoServer, &e.to_string());
                return;
            }
        };
        if !first_bytes.is_empty() {
            let forwarded = async {
                upstream.stream.write_all(&first_bytes).await?;
                upstream.stream.flush().await
            };
            if let Err(e) = forwarded.await {
                self.log(
                    &connection,
                    Some(upstream.server),
                    pool,
                    None,
                    &format!("error: {e}"),
                );
                return;
            }
            self.metrics.received_bytes.inc_by(first_bytes.len() as u64);
        }
        let spliced = splice(
            &mut client,
            &mut upstream.stream,
            routing.idle_timeout,
            self.metrics.received_bytes.clone(),
            self.metrics.sent_bytes.clone(),
        )
        .await;
        let spliced = Spliced {
            from_client: spliced.from_client + first_bytes.len() as u64,
            ..spliced
        };
        self.metrics
            .duration
            .observe(connection.started.elapsed().as_secs_f64());
        self.log(
            &connection,
            Some(upstream.server),
            pool,
            Some(spliced),
            spliced.ending.as_str(),
        );
    }

    /// Counts and logs a connection closed before reaching a server (also used by the accept
    /// loop for the connection limit).
    pub fn refuse_client(&self, client: SocketAddr, why: Refusal, detail: &str) {
        let connection = Connection {
            client,
            started: Instant::now(),
            server_name: None,
        };
        self.refuse(&connection, why, detail);
    }

    fn refuse(&self, connection: &Connection, why: Refusal, detail: &str) {
        self.metrics.refused(why);
        tracing::info!(
            target: "access",
            client = %connection.client,
            listener = %self.listener,
            sni = %connection.server_name.as_deref().unwrap_or("-"),
            outcome = %why.as_str(),
            %detail,
            duration_ms = connection.started.elapsed().as_millis() as u64,
            "refused"
        );
    }

    fn log(
        &self,
        connection: &Connection,
        server: Option<SocketAddr>,
        pool: &Pool,
        spliced: Option<Spliced>,
        outcome: &str,
    ) {
        let (from_client, to_client) = spliced.map_or((0, 0), |s| (s.from_client, s.to_client));
        tracing::info!(
            target: "access",
            client = %connection.client,
            listener = %self.listener,
            sni = %connection.server_name.as_deref().unwrap_or("-"),
            backend = %pool.name,
            server = %server.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            bytes_from_client = from_client,
            bytes_to_client = to_client,
            duration_ms = connection.started.elapsed().as_millis() as u64,
            %outcome,
            "connection"
        );
    }
}

#[async_trait]
impl ServerApp for L4Proxy {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A draining listener lets its established connections finish on their own: the
        // shutdown signal stops accepting, not splicing.
        self.metrics.active.inc();
        self.serve(session).await;
        self.metrics.active.dec();
        None
    }
}
