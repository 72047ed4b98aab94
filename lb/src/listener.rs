//! Accepting connections on a listener's socket and handing them to its current proxy.
//!
//! The socket is ours, not pingora's `Service`'s: a reload keeps a socket whose address stays,
//! swaps the proxy behind it, and closes sockets whose listener went away, while every accepted
//! connection runs to its end under a task tracker the drain waits on.

use crate::client_socket::ClientSocket;
use crate::metrics::Refusal;
use crate::proxy::L4Proxy;
use arc_swap::ArcSwap;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// A bound socket with its accept loop.
pub struct ListenerSlot {
    pub address: SocketAddr,
    app: Arc<ArcSwap<L4Proxy>>,
    stop: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

impl ListenerSlot {
    pub fn start(
        socket: TcpListener,
        address: SocketAddr,
        app: Arc<L4Proxy>,
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
    pub fn replace_app(&self, app: Arc<L4Proxy>) {
        self.app.store(app);
    }

    /// Closes the socket; established connections run on.
    pub async fn stop_accepting(self) {
        let _ = self.stop.send(true);
        let _ = self.accept_loop.await;
    }
}

/// Decrements the listener's open-connection count when a connection ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    socket: TcpListener,
    app: Arc<ArcSwap<L4Proxy>>,
    mut stop: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.changed() => break,
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
        let proxy = app.load_full();
        proxy.metrics.accepted.inc();
        if let Some(limit) = proxy.max_connections {
            if open.load(Ordering::Relaxed) >= limit {
                proxy.refuse_client(client, Refusal::Limit, "max_connections reached");
                drop(tcp);
                continue;
            }
        }
        open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(open.clone());
        let _ = tcp.set_nodelay(true);
        let stream: Stream = Box::new(ClientSocket::new(tcp, client));
        let shutdown = stop.clone();
        connections.spawn(async move {
            let _guard = guard;
            proxy.process_new(stream, &shutdown).await;
        });
    }
}
