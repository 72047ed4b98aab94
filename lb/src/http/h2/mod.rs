//! The HTTP/2 path of `https` connections that chose h2 by ALPN (and of `http` connections
//! that start with the h2 preface, where `h2c` is on): the `h2` crate's connection, driven by
//! the connection's own task, with each stream a future beside it (no task per stream) that
//! proxies its request to an HTTP/1.1 server through the same routing, pool, kept-alive server
//! connections, forwarding fields, limits, counters and access log as the HTTP/1.1 path
//! ([`crate::http::h1`]).
//!
//! Defences: `max_header_list_size` bounds a header block across CONTINUATION frames; the
//! streams open at once are `h2_max_concurrent_streams`, and no more stream futures than that
//! run (past it new streams wait in the h2 layer, counted against the same limit, and one the
//! client resets there counts toward `max_pending_accept_reset_streams`); a client that resets
//! more streams than it lets finish is closed with ENHANCE_YOUR_CALM (CVE-2023-44487); the h2
//! layer answers SETTINGS and PING one at a time, reading no further while an answer waits, and
//! [`flood`] closes a client sending more frames that do no work (PING, SETTINGS, PRIORITY,
//! WINDOW_UPDATE, empty DATA...) than its requests and reads earn, with ENHANCE_YOUR_CALM too.

mod dechunk;
mod flood;
#[doc(hidden)]
pub mod fuzzing;
mod request;
mod response;
mod stream;

use crate::http::router::HttpRouter;
use ::h2::Reason;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use pingora_core::server::ShutdownWatch;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::pin;
use std::time::Duration;
use stream::{Connection, StreamEnd};
use tokio::io::{AsyncRead, AsyncWrite};

/// The connection's receive window: a client may have this much of its request bodies in
/// flight before we read them (RFC 9113's 64 KiB default holds one fast upload to a crawl).
const CONNECTION_WINDOW: u32 = 1 << 20;

/// Each stream's receive window.
const STREAM_WINDOW: u32 = 256 * 1024;

/// What each stream's response may hold in the h2 layer's send buffer beyond what the socket
/// took: a client that reads nothing, its windows wide open, holds this much of ours per stream
/// (the h2 crate's default, 400 KiB, is 51 MiB over 128 streams).
const SEND_BUFFER: usize = 64 * 1024;

/// The HPACK table the client may make us keep (the RFC's default).
const HEADER_TABLE_SIZE: u32 = 4096;

/// The smallest header list accepted by the h2 layer, whatever `max_header_bytes` says: a
/// request between the two gets our own counted 431, as an HTTP/1.1 one does.
const MIN_HEADER_LIST: u32 = 64 * 1024;

/// Streams reset by the client before their answer that a connection is allowed beyond the
/// ones it let finish.
const RESETS_ALLOWED: u64 = 100;

/// Streams the client may reset while they wait to be taken on.
const PENDING_RESETS_ALLOWED: usize = 20;

/// How long a connection told to go away waits for the client's last streams to begin, once
/// its own are done.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How long the GOAWAY of a connection being closed may take to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves the h2 connection `io` of `client` until it ends; in-flight streams finish after a
/// shutdown.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    router: &HttpRouter,
    io: S,
    client: IpAddr,
    shutdown: &ShutdownWatch,
) {
    let timeouts = router.timeouts();
    let max_streams = router.h2_max_streams();
    let mut builder = ::h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(max_streams)
        .max_header_list_size(header_list_size(router.max_header_bytes()))
        .max_send_buffer_size(SEND_BUFFER)
        .header_table_size(HEADER_TABLE_SIZE)
        .max_pending_accept_reset_streams(PENDING_RESETS_ALLOWED);
    let (io, trip) = flood::Watched::new(io);
    let handshake = builder.handshake::<flood::Watched<S>, Bytes>(io);
    let mut connection = match tokio::time::timeout(timeouts.client_body, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!(client = %client, error = %e, "h2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    tracing::debug!(client = %client, "h2 connection on our own path");
    let shared = Connection {
        router,
        client,
        client_name: router.client_name(client),
        timeouts,
    };
    let mut streams = Streams(None);
    let mut watched = shutdown.clone();
    let mut stopping = pin!(watched.changed());
    let mut draining = false;
    if *shutdown.borrow() {
        connection.graceful_shutdown();
        draining = true;
    }
    let quiet = |draining: bool| {
        if draining {
            DRAIN_GRACE
        } else {
            timeouts.keepalive
        }
    };
    let idle = tokio::time::sleep(quiet(draining));
    let mut idle = pin!(idle);
    let mut closing = false;
    let (mut resets, mut answered) = (0u64, 0u64);
    loop {
        let full = streams.len() >= max_streams as usize;
        tokio::select! {
            biased;
            Some(end) = streams.next(), if !streams.is_empty() => {
                match end {
                    StreamEnd::Answered => answered += 1,
                    StreamEnd::ResetByClient => resets += 1,
                }
                if !closing && resets > answered + RESETS_ALLOWED {
                    tracing::info!(
                        listener = %router.listener,
                        client = %client,
                        resets,
                        answered,
                        "h2 client resets streams faster than it lets them finish: closed"
                    );
                    router.h2_calmed("rapid_reset");
                    connection.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                    closing = true;
                    idle.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                if streams.is_empty() && !closing {
                    idle.as_mut().reset(tokio::time::Instant::now() + quiet(draining));
                }
            }
            () = poll_fn(|cx| trip.poll_tripped(cx)), if !closing => {
                tracing::info!(
                    listener = %router.listener,
                    client = %client,
                    "h2 client sends frames that do no work faster than its requests earn them: closed"
                );
                router.h2_calmed("flood");
                connection.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                closing = true;
                idle.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            // At the stream limit the connection is driven without taking new streams on.
            accepted = poll_fn(|cx| {
                if full {
                    connection.poll_closed(cx).map(|closed| closed.err().map(Err))
                } else {
                    connection.poll_accept(cx)
                }
            }) => match accepted {
                Some(Ok((request, respond))) => streams.push(shared.serve(request, respond)),
                Some(Err(e)) => {
                    tracing::debug!(client = %client, error = %e, "h2 connection ended");
                    if e.is_go_away()
                        && e.is_library()
                        && e.reason() == Some(Reason::ENHANCE_YOUR_CALM)
                    {
                        // One of the h2 layer's own limits (resets of streams not yet taken
                        // on, empty DATA frames, malformed requests) closed it.
                        router.h2_calmed("h2");
                    }
                    break;
                }
                None => break,
            },
            _ = &mut stopping, if !draining => {
                draining = true;
                connection.graceful_shutdown();
                if streams.is_empty() && !closing {
                    idle.as_mut().reset(tokio::time::Instant::now() + DRAIN_GRACE);
                }
            }
            _ = &mut idle, if streams.is_empty() || closing => {
                if closing {
                    break;
                }
                // Idle (or drained): nothing is in flight, so nothing is cut short.
                connection.abrupt_shutdown(Reason::NO_ERROR);
                closing = true;
                idle.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
        }
    }
    // Streams still running are cut short with the connection.
    drop(streams);
    let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| connection.poll_closed(cx))).await;
}

/// A connection's stream futures, holding no room while there are none: an empty
/// `FuturesUnordered` still holds a task the size of one stream's future (3.4 KB), which an
/// idle connection would carry for its life.
struct Streams<F>(Option<FuturesUnordered<F>>);

impl<F: Future> Streams<F> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, stream: F) {
        self.0
            .get_or_insert_with(FuturesUnordered::new)
            .push(stream);
    }

    /// The next stream's end (cancel-safe: nothing is taken until one has ended).
    async fn next(&mut self) -> Option<F::Output> {
        let streams = self.0.as_mut()?;
        let end = streams.next().await;
        if streams.is_empty() {
            self.0 = None;
        }
        end
    }
}

/// The h2 layer's header list limit (RFC 9113 §6.5.2: names, values and 32 bytes per field):
/// above `max_header_bytes`, whose own check answers 431 on the stream.
fn header_list_size(max_header_bytes: usize) -> u32 {
    let over = (max_header_bytes as u64).saturating_mul(2);
    u32::try_from(over).unwrap_or(u32::MAX).max(MIN_HEADER_LIST)
}

/// The client preface of h2 by prior knowledge, as far as the HTTP/1.1 parser reads before it
/// refuses it.
pub(crate) const PRIOR_KNOWLEDGE: &[u8] = b"PRI * HTTP/2";

/// Whether `bytes` (the start of a connection) begin an h2 client preface.
pub(crate) fn starts_h2(bytes: &[u8]) -> bool {
    bytes.starts_with(PRIOR_KNOWLEDGE)
}

#[cfg(test)]
mod tests {
    use super::Streams;

    #[tokio::test]
    async fn a_connections_streams_hold_nothing_once_all_have_ended() {
        let mut streams = Streams(None);
        assert!(streams.0.is_none(), "nothing made before a stream");
        streams.push(std::future::ready(1));
        streams.push(std::future::ready(2));
        assert_eq!(streams.len(), 2);
        let mut ended = vec![streams.next().await, streams.next().await];
        ended.sort();
        assert_eq!(ended, [Some(1), Some(2)]);
        assert!(streams.0.is_none(), "given back once the last has ended");
        assert_eq!(streams.next().await, None);
        streams.push(std::future::ready(3));
        assert_eq!(streams.next().await, Some(3));
    }
}
