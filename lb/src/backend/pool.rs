//! A backend as it runs: its servers, their passive health, the balancing algorithm, and
//! connecting to one server with bounded retries.

use crate::backend::balance::{self, Balance, Candidate};
use crate::clock;
use crate::config::Backend;
use crate::metrics::{LbMetrics, ServerMetrics};
use arc_swap::ArcSwap;
use lab_daemon::Name;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
    /// [`AdminState`] as set through the runtime API: read on every pick, so an atomic.
    admin: AtomicU8,
    /// The runtime API's weight; [`NO_WEIGHT`] while lb.toml's applies.
    weight: AtomicU32,
}

/// [`ServerState::weight`] when the runtime API has not set one.
const NO_WEIGHT: u32 = u32::MAX;

/// What an operator made of a server through the runtime API (HAProxy's admin states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Takes new connections and requests when healthy.
    Ready,
    /// No new connections or requests; those open finish.
    Drain,
    /// As drained, and its idle kept-alive connections closed.
    Disabled,
}

impl AdminState {
    /// As `lab-lb ctl servers` and `/status` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Disabled => "disabled",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => AdminState::Drain,
            2 => AdminState::Disabled,
            _ => AdminState::Ready,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Disabled => 2,
        }
    }
}

impl Default for ServerState {
    fn default() -> Self {
        Self {
            active: Arc::default(),
            held_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            admin: AtomicU8::new(AdminState::Ready.to_u8()),
            weight: AtomicU32::new(NO_WEIGHT),
        }
    }
}

impl ServerState {
    /// Takes new connections: ready, and up.
    pub fn available(&self, now: u64) -> bool {
        self.admin() == AdminState::Ready && self.is_up(now)
    }

    /// Healthy and not held down after a failed connect: what `server_up` says, whatever the
    /// runtime API made of the server (a drained server is not a down one to alert on).
    pub fn is_up(&self, now: u64) -> bool {
        self.is_healthy() && !self.is_held(now)
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin(&self, state: AdminState) {
        self.admin.store(state.to_u8(), Ordering::Relaxed);
    }

    /// The runtime API's weight, if it set one.
    pub fn weight_override(&self) -> Option<u32> {
        let weight = self.weight.load(Ordering::Relaxed);
        (weight != NO_WEIGHT).then_some(weight)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
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
            .set(i64::from(self.state.is_up(clock::now_ms())));
    }
}

impl ServerMetrics {
    /// Makes the admin state's gauges say what `state` says now.
    fn show_admin(&self, state: &ServerState, weight: u32) {
        let admin = state.admin();
        self.draining.set(i64::from(admin == AdminState::Drain));
        self.disabled.set(i64::from(admin == AdminState::Disabled));
        self.weight.set(i64::from(weight));
    }
}

/// The servers as the balancer sees them, and the balancer: replaced together when the runtime
/// API changes a weight (the weighted algorithms precompute from the weights).
struct Balancing {
    candidates: Vec<Candidate>,
    balance: Box<dyn Balance>,
}

pub struct Pool {
    pub name: Name,
    pub algorithm: crate::config::BalanceAlgorithm,
    /// Header sent to servers before the client's bytes.
    pub proxy_protocol: Option<crate::config::ProxyProtocolVersion>,
    balancing: ArcSwap<Balancing>,
    servers: Vec<Server>,
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
    /// A server new to a running daemon (`reloading`) starts down when the backend checks its
    /// servers, and takes traffic once `rise` checks passed: a node joining the cluster shows in
    /// the balancer when it is healthy, not when lb.toml names it. At start, servers are up until
    /// their checks say otherwise, so a restarted balancer serves at once.
    pub fn new(
        backend: &Backend,
        states: &mut ServerStates,
        metrics: &LbMetrics,
        reloading: bool,
    ) -> Self {
        let mut candidates = Vec::with_capacity(backend.servers.len());
        let mut servers = Vec::with_capacity(backend.servers.len());
        let starts_down = reloading && backend.health_check.is_some();
        for server in &backend.servers {
            let state = states
                .entry((backend.name.clone(), server.address))
                .or_insert_with(|| {
                    let state = ServerState::default();
                    state.set_healthy(!starts_down);
                    Arc::new(state)
                })
                .clone();
            let weight = state.weight_override().unwrap_or(server.weight);
            candidates.push(Candidate::with_counter(
                server.address,
                weight,
                state.active.clone(),
            ));
            let server_metrics = metrics.server(backend.name.as_str(), &server.address.to_string());
            server_metrics
                .up
                .set(i64::from(state.is_up(clock::now_ms())));
            server_metrics.show_admin(&state, weight);
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
            balancing: ArcSwap::from_pointee(Balancing {
                candidates,
                balance,
            }),
            servers,
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
            let balancing = self.balancing.load();
            let Some(i) = balancing
                .balance
                .pick(client, &balancing.candidates, &eligible)
            else {
                break;
            };
            tried.push(i);
            let server = &self.servers[i];
            let address = balancing.candidates[i].address;
            drop(balancing);
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
        let balancing = self.balancing.load();
        let i = balancing
            .balance
            .pick(client, &balancing.candidates, &eligible)?;
        Some((i, balancing.candidates[i].address))
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
            server = %self.balancing.load().candidates[i].address,
            error = %error,
            hold = ?self.failure_hold,
            "server failed to connect; holding it down"
        );
    }

    pub fn server_refs(&self) -> Vec<ServerRef> {
        self.balancing
            .load()
            .candidates
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

    /// Index of the server at `address`.
    pub fn position(&self, address: SocketAddr) -> Option<usize> {
        self.balancing
            .load()
            .candidates
            .iter()
            .position(|c| c.address == address)
    }

    /// Puts server `i` in `state`; its gauges follow at once.
    pub fn set_admin(&self, i: usize, state: AdminState) {
        let Some(server) = self.servers.get(i) else {
            return;
        };
        server.state.set_admin(state);
        let balancing = self.balancing.load();
        let weight = balancing.candidates.get(i).map_or(0, |c| c.weight);
        server.metrics.show_admin(&server.state, weight);
    }

    /// Gives server `i` `weight` from now on (and after reloads while the server stays): the
    /// balancer is rebuilt with it, and swapped in whole so a pick sees the old or the new.
    pub fn set_weight(&self, i: usize, weight: u32) {
        let Some(server) = self.servers.get(i) else {
            return;
        };
        server.state.weight.store(weight, Ordering::Relaxed);
        // rcu: two clients setting weights of one backend at once both get theirs.
        self.balancing.rcu(|old| {
            let candidates: Vec<Candidate> = old
                .candidates
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    Candidate::with_counter(
                        c.address,
                        if j == i { weight } else { c.weight },
                        c.active.clone(),
                    )
                })
                .collect();
            let balance = balance::build(self.algorithm, &candidates);
            Balancing {
                candidates,
                balance,
            }
        });
        server.metrics.show_admin(&server.state, weight);
    }

    /// Refreshes `server_up` for servers whose hold has run out.
    pub fn refresh_health_metrics(&self) {
        let now = clock::now_ms();
        for server in &self.servers {
            server.metrics.up.set(i64::from(server.state.is_up(now)));
        }
    }
}
