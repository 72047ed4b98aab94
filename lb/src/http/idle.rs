//! Kept-alive upstream connections between requests, per server: taken by the next request to
//! the same server, most recently used first (warm, and the least likely to have been closed by
//! the server), dropped when idle too long.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// At most this many idle connections per server; more are closed.
pub const MAX_IDLE_PER_SERVER: usize = 256;

/// A connection idle longer is closed rather than reused: below the common server defaults
/// (nginx 75 s, HAProxy and Envoy 60 s … Apache 5 s is handled by the retry on a closed one).
pub const MAX_IDLE: Duration = Duration::from_secs(55);

pub struct IdleConnections {
    // Looked up twice per request: foldhash, not SipHash (keys are our own config's servers).
    by_server: Mutex<foldhash::HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
    max_idle: Duration,
}

impl Default for IdleConnections {
    fn default() -> Self {
        Self::with_max_idle(MAX_IDLE)
    }
}

impl IdleConnections {
    pub fn with_max_idle(max_idle: Duration) -> Self {
        Self {
            by_server: Mutex::default(),
            max_idle,
        }
    }

    /// A kept-alive connection to `server` that still looks open.
    pub fn take(&self, server: SocketAddr) -> Option<TcpStream> {
        let now = Instant::now();
        loop {
            let (stream, since) = {
                let mut by_server = self.by_server.lock().ok()?;
                by_server.get_mut(&server)?.pop()?
            };
            if now.duration_since(since) < self.max_idle && !closed_by_server(&stream) {
                return Some(stream);
            }
        }
    }

    /// Keeps `stream` for the next request to `server`.
    pub fn put(&self, server: SocketAddr, stream: TcpStream) {
        let Ok(mut by_server) = self.by_server.lock() else {
            return;
        };
        let idle = by_server.entry(server).or_default();
        let now = Instant::now();
        // The oldest sit at the bottom, where a busy server's takes never reach: close those
        // idle too long here, or they would linger (half-closed by the server) for good.
        let stale = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= self.max_idle)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE_PER_SERVER {
            idle.push((stream, now));
        }
    }
}

impl IdleConnections {
    /// Closes every idle connection to `server` (disabled through the runtime API: it must see
    /// none of ours left open); returns how many.
    pub fn close(&self, server: SocketAddr) -> usize {
        let Ok(mut by_server) = self.by_server.lock() else {
            return 0;
        };
        by_server.remove(&server).map_or(0, |idle| idle.len())
    }
}

/// An idle connection becomes readable only when the server closed it (or broke protocol by
/// sending unasked): the reactor's readiness says so without a system call. One closed in the
/// last instant is caught by the retry on a reused connection.
fn closed_by_server(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(stream.poll_read_ready(&mut cx), Poll::Ready(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let idle = IdleConnections::default();

        let open = TcpStream::connect(server).await.unwrap();
        let (_kept, _) = listener.accept().await.unwrap();
        idle.put(server, open);
        assert!(idle.take(server).is_some(), "an open connection is reused");

        let closing = TcpStream::connect(server).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        accepted.shutdown().await.unwrap();
        drop(accepted);
        // Once the reactor has seen the FIN (as it has by the time a busy proxy reuses it).
        tokio::time::timeout(Duration::from_secs(5), closing.readable())
            .await
            .unwrap()
            .unwrap();
        idle.put(server, closing);
        assert!(idle.take(server).is_none(), "a closed one is dropped");
    }

    #[tokio::test]
    async fn connections_idle_too_long_are_closed_even_under_newer_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let idle = IdleConnections::with_max_idle(Duration::from_millis(100));
        let old = TcpStream::connect(server).await.unwrap();
        let (mut old_accepted, _) = listener.accept().await.unwrap();
        idle.put(server, old);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let new = TcpStream::connect(server).await.unwrap();
        let (_new_accepted, _) = listener.accept().await.unwrap();
        idle.put(server, new);
        // The old one was closed when the new one came in: its server side reads the end.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut old_accepted, &mut byte),
        )
        .await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        assert!(idle.take(server).is_some(), "the new one is kept");
        assert!(idle.take(server).is_none(), "and only it");
    }
}
