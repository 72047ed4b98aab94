//! Accepting connections on a listener's socket and handing them to its current proxy.
//!
//! The socket is ours, not pingora's `Service`'s: a reload keeps a socket whose address stays,
//! swaps the proxy behind it, and closes sockets whose listener went away, while every accepted
//! connection runs to its end under a task tracker the drain waits on.

use crate::http::listener::HttpApp;
use crate::l4::client_socket::ClientSocket;
use crate::l4::proxy::L4Proxy;
use crate::metrics::{ListenerMetrics, Refusal};
use crate::refusals::{Refusals, Refused};
use arc_swap::ArcSwap;
use lab_daemon::admission::{Admission, Limits, Over};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// What a listener does with its connections: splice them (L4) or speak HTTP (L7).
pub enum App {
    L4(Arc<L4Proxy>),
    Http(Arc<HttpApp>),
}

impl App {
    pub fn metrics(&self) -> &ListenerMetrics {
        match self {
            App::L4(p) => &p.metrics,
            App::Http(h) => &h.metrics,
        }
    }

    fn refusals(&self) -> &Refusals {
        match self {
            App::L4(p) => &p.refusals,
            App::Http(h) => &h.refusals,
        }
    }

    fn limits(&self) -> &Limits {
        match self {
            App::L4(p) => &p.limits,
            App::Http(h) => &h.limits,
        }
    }

    pub fn name(&self) -> &lab_daemon::Name {
        match self {
            App::L4(p) => &p.listener,
            App::Http(h) => &h.listener,
        }
    }
}

/// A bound socket with its accept loop.
pub struct ListenerSlot {
    pub address: SocketAddr,
    app: Arc<ArcSwap<App>>,
    stop: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Listens on `address` with `IP_FREEBIND`: an address not (yet) on any interface is bound all
/// the same, so the standby of a keepalived pair listens on the published addresses before it
/// holds them, and takes connections the moment they move to it.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    let listen = || -> std::io::Result<TcpListener> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        // As TcpListener::bind does: a restarted daemon rebinds over connections in TIME_WAIT.
        socket.set_reuse_address(true)?;
        match address {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        }
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        TcpListener::from_std(socket.into())
    };
    listen().map_err(|source| BindError { address, source })
}

/// tokio's TcpListener::bind's backlog.
const LISTEN_BACKLOG: i32 = 1024;

impl ListenerSlot {
    pub fn start(
        socket: TcpListener,
        address: SocketAddr,
        app: Arc<App>,
        connections: TaskTracker,
    ) -> Self {
        let app = Arc::new(ArcSwap::new(app));
        let (stop, stopped) = watch::channel(false);
        let accept_loop = tokio::spawn(accept_loop(socket, app.clone(), stopped, connections));
        Self {
            address,
            app,
            stop,
            accept_loop,
        }
    }

    /// New connections go to `app`; established ones keep theirs.
    pub fn replace_app(&self, app: Arc<App>) {
        self.app.store(app);
    }

    /// Closes the socket; established connections run on.
    pub async fn stop_accepting(self) {
        let _ = self.stop.send(true);
        let _ = self.accept_loop.await;
    }
}

async fn accept_loop(
    socket: TcpListener,
    app: Arc<ArcSwap<App>>,
    stop: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    let admission = Arc::new(Admission::default());
    // One wait for the stop for the loop's life, polled only when no connection is waiting: a
    // wait made anew per connection registered and unregistered itself in the watch's waiter
    // list each time (and an unbiased select drew a random number to pick the order). Under a
    // stream of connections that never lets the accept wait, the version check sees the stop.
    let mut stopping = stop.clone();
    let mut stopped = pin!(stopping.changed());
    loop {
        if stop.has_changed().unwrap_or(true) {
            break;
        }
        let accepted = tokio::select! {
            biased;
            accepted = socket.accept() => accepted,
            _ = &mut stopped => break,
        };
        let (tcp, client) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends return at once; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.load_full();
        app.metrics().accepted.inc();
        let guard = match admission.admit(client.ip(), app.limits()) {
            Ok(admitted) => admitted,
            Err(over) => {
                let (why, detail) = match over {
                    Over::Total => (Refusal::Limit, "max_connections reached"),
                    Over::PerClient => (Refusal::ClientLimit, "max_connections_per_client reached"),
                };
                app.refusals().refuse(Refused {
                    client,
                    why,
                    detail,
                    server_name: None,
                    started: Instant::now(),
                });
                drop(tcp);
                continue;
            }
        };
        let socket = match &*app {
            // Spliced: bytes pass the socket by, so it is set now.
            App::L4(_) => {
                let _ = tcp.set_nodelay(true);
                ClientSocket::new(tcp, client)
            }
            App::Http(_) => ClientSocket::with_nodelay_after_first_write(tcp, client),
        };
        let shutdown = stop.clone();
        // The socket is lent, not moved, to the HTTP path: moved into an async fn, it would
        // take room in this task twice more (a parameter and its local), for the connection's
        // life.
        let mut socket = Some(socket);
        connections.spawn(async move {
            // Held where it was captured (a `let` would copy it), to the connection's end.
            let _admitted = &guard;
            match &*app {
                App::L4(proxy) => {
                    if let Some(socket) = socket.take() {
                        let stream: Stream = Box::new(socket);
                        proxy.process_new(stream, &shutdown).await;
                    }
                }
                App::Http(http) => http.serve(&mut socket, &shutdown).await,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    #[tokio::test]
    async fn an_address_no_interface_holds_yet_is_bound() {
        // TEST-NET-3 is on no interface here, as the published addresses are on a pair's
        // standby; without IP_FREEBIND the bind fails with EADDRNOTAVAIL.
        let address: SocketAddr = "203.0.113.7:0".parse().unwrap();
        let listener = super::bind(address).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().ip(), address.ip());
    }
}
