//! A backend as it runs: its servers, their passive health, the balancing algorithm, and
//! connecting to one server with bounded retries.

use crate::backend::balance::{self, Balance, Candidate};
use crate::clock;
use crate::config::Backend;
use crate::metrics::{LbMetrics, ServerMetrics};
use lab_daemon::Name;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The servers (indices) a request has been sent to so far: one, or a few after retries, kept
/// inline rather than allocated for every request.
pub type Tried = smallvec::SmallVec<[usize; 4]>;

/// State of one server that outlives a reload: load, and when a failed server may be tried again.
#[derive(Debug)]
pub struct ServerState {
    pub active: Arc<AtomicUsize>,
    /// `clock::now_ms()` until which the server gets no new connections; 0 when never held.
    held_until: AtomicU64,
    /// What the active health check last decided; true for servers without checks.
    healthy: AtomicBool,
}

impl Default for ServerState {
    fn default() -> Self {
        Self {
            active: Arc::default(),
            held_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

impl ServerState {
    /// Takes new connections: healthy and not held down after a failed connect.
    pub fn available(&self, now: u64) -> bool {
        self.is_healthy() && !self.is_held(now)
    }

    /// Held down after a failed connect.
    pub fn is_held(&self, now: u64) -> bool {
        self.held_until.load(Ordering::Relaxed) > now
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    fn hold(&self, until: u64) {
        self.held_until.fetch_max(until, Ordering::Relaxed);
    }
}

/// Server states by (backend, address), carried from one configuration to the next.
pub type ServerStates = HashMap<(Name, SocketAddr), Arc<ServerState>>;

struct Server {
    state: Arc<ServerState>,
    metrics: ServerMetrics,
}

/// What a health checker needs of one server.
#[derive(Clone)]
pub struct ServerRef {
    pub address: SocketAddr,
    pub weight: u32,
    pub state: Arc<ServerState>,
    pub metrics: ServerMetrics,
}

impl ServerRef {
    /// Makes `server_up` say what the state says now.
    pub fn refresh_up(&self) {
        self.metrics
            .up
            .set(i64::from(self.state.available(clock::now_ms())));
    }
}

pub struct Pool {
    pub name: Name,
    pub algorithm: crate::config::BalanceAlgorithm,
    /// Header sent to servers before the client's bytes.
    pub proxy_protocol: Option<crate::config::ProxyProtocolVersion>,
    candidates: Vec<Candidate>,
    servers: Vec<Server>,
    balance: Box<dyn Balance>,
    connect_timeout: Duration,
    retries: u32,
    failure_hold: Duration,
}

/// A connection to a server, counted as active until dropped.
pub struct Upstream {
    pub stream: TcpStream,
    pub server: SocketAddr,
    _active: ActiveGuard,
}

/// A connection or request counted as active on its server until dropped.
pub struct ActiveGuard {
    counter: Arc<AtomicUsize>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no server of backend `{0}` is up")]
    NoServerUp(Name),
    #[error("every server tried in backend `{backend}` failed; last: {last}")]
    AllFailed { backend: Name, last: String },
}

impl Pool {
    /// Builds the runtime of `backend`, reusing the states in `states` for servers it had before.
    pub fn new(backend: &Backend, states: &mut ServerStates, metrics: &LbMetrics) -> Self {
        let mut candidates = Vec::with_capacity(backend.servers.len());
        let mut servers = Vec::with_capacity(backend.servers.len());
        for server in &backend.servers {
            let state = states
                .entry((backend.name.clone(), server.address))
                .or_default()
                .clone();
            candidates.push(Candidate::with_counter(
                server.address,
                server.weight,
                state.active.clone(),
            ));
            let server_metrics = metrics.server(backend.name.as_str(), &server.address.to_string());
            server_metrics
                .up
                .set(i64::from(state.available(clock::now_ms())));
            servers.push(Server {
                state,
                metrics: server_metrics,
            });
        }
        let balance = balance::build(backend.balance, &candidates);
        Self {
            name: backend.name.clone(),
            algorithm: backend.balance,
            proxy_protocol: backend.proxy_protocol,
            candidates,
            servers,
            balance,
            connect_timeout: backend.connect_timeout,
            retries: backend.retries,
            failure_hold: backend.failure_hold,
        }
    }

    /// Connects to a server for `client`: the one the algorithm picks among those up; on failure
    /// that server is held down and the next is tried, at most `retries` more times.
    pub async fn connect(&self, client: IpAddr) -> Result<Upstream, ConnectError> {
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = None;
        for _ in 0..=self.retries {
            let now = clock::now_ms();
            let eligible = |i: usize| !tried.contains(&i) && self.servers[i].state.available(now);
            let Some(i) = self.balance.pick(client, &self.candidates, &eligible) else {
                break;
            };
            tried.push(i);
            let server = &self.servers[i];
            let address = self.candidates[i].address;
            // Counted before connecting so concurrent picks see the load on the way.
            let Some(guard) = self.track(i) else {
                break;
            };
            let attempt =
                tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await;
            let error = match attempt {
                Ok(Ok(stream)) => {
                    // Small request/response exchanges must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return Ok(Upstream {
                        stream,
                        server: address,
                        _active: guard,
                    });
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.connect_timeout),
            };
            drop(guard);
            server.metrics.connect_failures.inc();
            server.metrics.up.set(0);
            server
                .state
                .hold(clock::now_ms() + clock::ms(self.failure_hold));
            tracing::warn!(
                backend = %self.name,
                server = %address,
                error = %error,
                hold = ?self.failure_hold,
                "server failed to connect; holding it down"
            );
            last_error = Some(error);
        }
        Err(match last_error {
            None => ConnectError::NoServerUp(self.name.clone()),
            Some(last) => ConnectError::AllFailed {
                backend: self.name.clone(),
                last,
            },
        })
    }

    /// For the HTTP proxies, which keep server connections alive themselves: the server the
    /// algorithm picks for `client` among those up and not in `tried`, and its index.
    pub fn pick(&self, client: IpAddr, tried: &Tried) -> Option<(usize, SocketAddr)> {
        let now = clock::now_ms();
        let eligible = |i: usize| !tried.contains(&i) && self.servers[i].state.available(now);
        let i = self.balance.pick(client, &self.candidates, &eligible)?;
        Some((i, self.candidates[i].address))
    }

    /// Counts a request on server `i` as active (least-connections sees it) until dropped.
    pub fn track(&self, i: usize) -> Option<ActiveGuard> {
        let server = self.servers.get(i)?;
        server.state.active.fetch_add(1, Ordering::Relaxed);
        server.metrics.active.inc();
        Some(ActiveGuard {
            counter: server.state.active.clone(),
            gauge: server.metrics.active.clone(),
        })
    }

    /// How many servers the backend has, up or not.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Further servers a request may try after a connect failure.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Server `i` failed to connect: it gets no new requests for the failure hold.
    pub fn connect_failed(&self, i: usize, error: &str) {
        let Some(server) = self.servers.get(i) else {
            return;
        };
        server.metrics.connect_failures.inc();
        server.metrics.up.set(0);
        server
            .state
            .hold(clock::now_ms() + clock::ms(self.failure_hold));
        tracing::warn!(
            backend = %self.name,
            server = %self.candidates[i].address,
            error = %error,
            hold = ?self.failure_hold,
            "server failed to connect; holding it down"
        );
    }

    pub fn server_refs(&self) -> Vec<ServerRef> {
        self.candidates
            .iter()
            .zip(&self.servers)
            .map(|(candidate, server)| ServerRef {
                address: candidate.address,
                weight: candidate.weight,
                state: server.state.clone(),
                metrics: server.metrics.clone(),
            })
            .collect()
    }

    /// Refreshes `server_up` for servers whose hold has run out.
    pub fn refresh_health_metrics(&self) {
        let now = clock::now_ms();
        for server in &self.servers {
            server
                .metrics
                .up
                .set(i64::from(server.state.available(now)));
        }
    }
}
