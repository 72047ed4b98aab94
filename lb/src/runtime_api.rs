//! The runtime API (HAProxy's is the model): a Unix socket at `[runtime] socket` through which
//! `lab-lb ctl` lists servers, drains, disables and enables them and sets their weights. What
//! it sets lives in the servers' states, which reloads carry over for the servers that stay.
//!
//! One request per connection: a line (`servers`, `drain web/10.0.0.1:80`, `weight … 3`), and
//! an answer of `ok` or `error: <why>` on the first line, the rest being the listing; the daemon
//! closes the connection after it.

use crate::backend::pool::{AdminState, Pool};
use crate::clock;
use crate::http::idle::IdleConnections;
use arc_swap::ArcSwap;
use lab_daemon::control::{self, LineError};
use nix::unistd::Gid;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// Longest request line: a command, a backend name, an address and a weight fit many times.
pub const MAX_REQUEST: usize = 1024;
/// A request must arrive and its answer be taken within this, or the connection is closed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 16;
/// The answers are a line per server: a generous bound on what a client reads.
const MAX_ANSWER: u64 = 16 << 20;

/// What the API acts on: the running configuration's backends and the HTTP listeners' idle
/// server connections; replaced on every reload.
#[derive(Default)]
pub struct Targets {
    current: ArcSwap<Running>,
}

#[derive(Default)]
struct Running {
    pools: Vec<Arc<Pool>>,
    idle: Vec<Arc<IdleConnections>>,
}

impl Targets {
    /// Makes the API act on `pools` (in lb.toml's order) and the idle pools `idle`.
    pub fn update(&self, pools: Vec<Arc<Pool>>, idle: Vec<Arc<IdleConnections>>) {
        self.current.store(Arc::new(Running { pools, idle }));
    }
}

/// The socket being served; removed when dropped.
pub struct RuntimeApi {
    /// `[runtime] socket`.
    pub path: PathBuf,
    /// `[runtime] socket_group`, resolved; read by every connection, changed by reloads.
    group: Arc<ArcSwap<Option<Gid>>>,
    task: JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves `targets` on `path` (0600, or 0660 and `group`'s); refuses when another process
    /// serves it.
    pub fn start(path: &Path, group: Option<Gid>, targets: Arc<Targets>) -> std::io::Result<Self> {
        let listener = control::bind(path, group)?;
        let group = Arc::new(ArcSwap::from_pointee(group));
        let allowed = group.clone();
        let task = tokio::spawn(control::serve(listener, MAX_CONNECTIONS, move |stream| {
            let targets = targets.clone();
            let group = **allowed.load();
            async move {
                let served =
                    tokio::time::timeout(REQUEST_TIMEOUT, connection(stream, group, &targets));
                if served.await.is_err() {
                    tracing::debug!("runtime API: request not complete in time, connection closed");
                }
            }
        }));
        Ok(Self {
            path: path.to_owned(),
            group,
            task,
        })
    }

    /// Gives the socket to `group` (0660), or back to its owner alone (0600), for the
    /// connections to come.
    pub fn set_group(&self, group: Option<Gid>) -> std::io::Result<()> {
        if **self.group.load() == group {
            return Ok(());
        }
        control::set_access(&self.path, group)?;
        self.group.store(Arc::new(group));
        Ok(())
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn connection(mut stream: UnixStream, group: Option<Gid>, targets: &Targets) {
    // The line is read (bounded) before the peer is judged, so a refused client gets its
    // answer rather than a reset for the bytes left unread.
    let (read, _) = stream.split();
    let mut reader = BufReader::new(read);
    let mut budget = MAX_REQUEST;
    let line = control::read_line(&mut reader, MAX_REQUEST, &mut budget).await;
    let answer = if !control::peer_is_allowed(&stream, group) {
        let uid = stream
            .peer_cred()
            .map_or_else(|_| "unknown".to_owned(), |c| c.uid().to_string());
        let who = match group {
            Some(gid) => format!("neither root, the daemon's user nor in group {gid}"),
            None => "neither root nor the daemon's user".to_owned(),
        };
        tracing::warn!(uid, "runtime API: client refused: {who}");
        format!("error: permission denied: uid {uid} is {who}\n")
    } else {
        match line {
            Ok(line) => match execute(&line, &targets.current.load()) {
                Ok(text) => format!("ok\n{text}"),
                Err(why) => format!("error: {why}\n"),
            },
            Err(LineError::Closed) => return,
            Err(LineError::TooLong) => {
                format!("error: request longer than {MAX_REQUEST} bytes\n")
            }
            Err(LineError::NotUtf8) => "error: request is not UTF-8\n".to_owned(),
        }
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Runs one request line against `running`: the listing, or why it was refused.
fn execute(line: &str, running: &Running) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["servers"] => Ok(listing(running, |_, _| true)),
        ["show", server] => {
            let (pool, i) = find(running, server)?;
            Ok(listing(running, |p, j| Arc::ptr_eq(p, pool) && j == i))
        }
        ["drain", server] => admin(running, server, AdminState::Drain),
        ["disable", server] => admin(running, server, AdminState::Disabled),
        ["enable", server] => admin(running, server, AdminState::Ready),
        ["weight", server, weight] => {
            let weight: u32 = weight
                .parse()
                .ok()
                .filter(|w| *w <= crate::config::Server::MAX_WEIGHT)
                .ok_or_else(|| {
                    format!(
                        "weight `{weight}` is not a whole number from 0 to {}",
                        crate::config::Server::MAX_WEIGHT
                    )
                })?;
            let (pool, i) = find(running, server)?;
            pool.set_weight(i, weight);
            tracing::info!(backend = %pool.name, server = %server, weight, "runtime API: weight set");
            Ok(String::new())
        }
        _ => Err(format!(
            "unknown request `{line}`: servers, show|drain|disable|enable BACKEND/SERVER, weight BACKEND/SERVER N"
        )),
    }
}

fn admin(running: &Running, server: &str, state: AdminState) -> Result<String, String> {
    let (pool, i) = find(running, server)?;
    pool.set_admin(i, state);
    let mut closed = 0;
    if state == AdminState::Disabled {
        if let Some(address) = pool.server_refs().get(i).map(|s| s.address) {
            closed = running.idle.iter().map(|idle| idle.close(address)).sum();
        }
    }
    tracing::info!(
        backend = %pool.name,
        server = %server,
        state = state.as_str(),
        idle_closed = closed,
        "runtime API: server state set"
    );
    Ok(String::new())
}

/// The pool and index of `BACKEND/SERVER`, or a message naming what is not there.
fn find<'a>(running: &'a Running, name: &str) -> Result<(&'a Arc<Pool>, usize), String> {
    let (backend, server) = name
        .split_once('/')
        .ok_or_else(|| format!("`{name}` is not BACKEND/SERVER (web/10.10.2.21:80)"))?;
    let pool = running
        .pools
        .iter()
        .find(|p| p.name.as_str() == backend)
        .ok_or_else(|| {
            let known: Vec<&str> = running.pools.iter().map(|p| p.name.as_str()).collect();
            format!(
                "no backend `{backend}` in the running configuration (backends: {})",
                known.join(", ")
            )
        })?;
    let address: SocketAddr = server
        .parse()
        .map_err(|_| format!("`{server}` is not a server address (IP:PORT, as in lb.toml)"))?;
    let i = pool.position(address).ok_or_else(|| {
        let known: Vec<String> = pool
            .server_refs()
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        format!(
            "backend `{backend}` has no server `{server}` (servers: {})",
            known.join(", ")
        )
    })?;
    Ok((pool, i))
}

/// One line per server for which `wanted` is true, under a header: columns split on
/// whitespace, for `awk` as for eyes.
fn listing(running: &Running, wanted: impl Fn(&Arc<Pool>, usize) -> bool) -> String {
    let now = clock::now_ms();
    let mut out = String::from("backend server state health active weight\n");
    for pool in &running.pools {
        for (i, server) in pool.server_refs().iter().enumerate() {
            if !wanted(pool, i) {
                continue;
            }
            let health = if !server.state.is_healthy() {
                "down"
            } else if server.state.is_held(now) {
                "held"
            } else {
                "up"
            };
            let active = server.state.active();
            let _ = writeln!(
                out,
                "{} {} {} {health} {active} {}",
                pool.name,
                server.address,
                shown_state(server.state.admin(), active),
                server.weight
            );
        }
    }
    out
}

/// The admin state as shown: a drained server whose last connection or request finished is
/// `drained`, what a script waits for before stopping the server.
pub fn shown_state(admin: AdminState, active: usize) -> &'static str {
    match admin {
        AdminState::Drain if active == 0 => "drained",
        AdminState::Drain => "draining",
        other => other.as_str(),
    }
}

/// What `lab-lb ctl` got wrong or was told.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The socket could not be reached.
    #[error("cannot reach the runtime API at {path}: {source} (is lab-lb running with `[runtime] socket` set, and are you root?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed half-way.
    #[error("runtime API at {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon refused the request; its words.
    #[error("{0}")]
    Refused(String),
}

/// Sends `request` to the runtime API at `socket`; the answer's body on `ok`.
pub fn request(socket: &Path, request: &str) -> Result<String, CtlError> {
    let io = |source| CtlError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| CtlError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(io)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .map_err(io)?;
    match answer.split_once('\n') {
        Some(("ok", body)) => Ok(body.to_owned()),
        Some((line, _)) => Err(CtlError::Refused(
            line.strip_prefix("error: ").unwrap_or(line).to_owned(),
        )),
        None => Err(CtlError::Refused(format!(
            "the daemon closed the connection without an answer{}",
            if answer.is_empty() { "" } else { " line" }
        ))),
    }
}

/// Asks for `server` until it is `drained` (its last connection or request finished), at most
/// `timeout`.
pub fn wait_drained(socket: &Path, server: &str, timeout: Duration) -> Result<(), CtlError> {
    let started = std::time::Instant::now();
    loop {
        let listing = request(socket, &format!("show {server}"))?;
        let row: Vec<&str> = listing
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let state = row.get(2).copied().unwrap_or("unknown");
        let active = row.get(4).copied().unwrap_or("?");
        match state {
            "drained" => return Ok(()),
            "disabled" if active == "0" => return Ok(()),
            "draining" | "disabled" if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(100));
            }
            "draining" | "disabled" => {
                return Err(CtlError::Refused(format!(
                    "{server} is still {state} with {active} active after {timeout:?}"
                )))
            }
            _ => {
                return Err(CtlError::Refused(format!(
                    "{server} is {state}, not drained: `lab-lb ctl drain {server}` first"
                )))
            }
        }
    }
}
