//! Copying bytes both ways between client and server until either side is done, with an idle
//! timeout and live byte counters.

use bytes::{Buf, BytesMut};
use prometheus_client::metrics::counter::Counter;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// How a spliced connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both sides closed their halves.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A read or write failed (reset, broken pipe).
    Error,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::Idle => "idle_timeout",
            Ending::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Spliced {
    pub from_client: u64,
    pub to_client: u64,
    pub ending: Ending,
}

/// A stream that counts what is read from it, and bumps a shared activity count that the idle
/// watcher compares over time (cheaper than reading the clock on every read).
struct Metered<'a, S> {
    inner: &'a mut S,
    read: Counter,
    total: u64,
    activity: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.read.inc_by(n);
            self.total += n;
            // Only this task writes it: a load and a store, no locked instruction.
            let seen = self.activity.load(Ordering::Relaxed);
            self.activity.store(seen.wrapping_add(1), Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Bytes moved per read in each direction. tokio's default (8 KiB) costs bulk transfers a
/// third of their throughput in system calls; 64 KiB matches a loopback or LAN window's worth.
const COPY_BUFFER: usize = 64 * 1024;

/// Where a direction is: copying, shutting the writer's side after the reader's end, done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Flow {
    #[default]
    Copying,
    ShuttingDown,
    Done,
}

/// One direction of the splice. Reads land on the stack and go straight on to the writer; only
/// what the writer cannot take yet is kept, in a buffer that is given back once the reader has
/// nothing more. An idle connection (thousands of them behind the Kubernetes API) so holds no
/// buffer at all, where two 64 KiB buffers per connection held a few thousand of them to a
/// 512 MiB container; a bulk transfer keeps its buffer, and 64 KiB reads, while it flows.
#[derive(Debug, Default)]
struct Direction {
    /// Bytes read and not yet written; `None` while the writer keeps up.
    waiting: Option<BytesMut>,
    read_done: bool,
    need_flush: bool,
    flow: Flow,
}

impl Direction {
    /// Copies until the reader's end has reached the writer, then shuts the writer's side (the
    /// other direction goes on).
    fn poll_transfer<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            match self.flow {
                Flow::Copying => {
                    ready!(self.poll_copy(cx, reader.as_mut(), writer.as_mut()))?;
                    self.flow = Flow::ShuttingDown;
                }
                Flow::ShuttingDown => {
                    ready!(writer.as_mut().poll_shutdown(cx))?;
                    self.flow = Flow::Done;
                }
                Flow::Done => return Poll::Ready(Ok(())),
            }
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if let Some(waiting) = self.waiting.as_mut() {
                while !waiting.is_empty() {
                    match writer.as_mut().poll_write(cx, waiting) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                        Poll::Ready(Ok(n)) => {
                            waiting.advance(n);
                            self.need_flush = true;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            // Read ahead while the writer is busy, as far as the buffer goes.
                            if !self.read_done && waiting.capacity() > waiting.len() {
                                if let Poll::Ready(n) = poll_read_buf(reader.as_mut(), cx, waiting)
                                {
                                    self.read_done = n? == 0;
                                }
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                self.waiting = None;
                return Poll::Ready(Ok(()));
            }
            let read = match self.waiting.as_mut() {
                Some(waiting) => {
                    // Empty: back to its whole capacity (no copy, nothing is in it).
                    waiting.clear();
                    waiting.reserve(COPY_BUFFER);
                    poll_read_buf(reader.as_mut(), cx, waiting)
                }
                None => self.poll_read_through(cx, reader.as_mut(), writer.as_mut()),
            };
            match read {
                Poll::Ready(Ok(0)) => self.read_done = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The reader has nothing more for now: the buffer, empty, goes back.
                    self.waiting = None;
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads into a buffer on the stack and writes what was read on at once; what the writer
    /// does not take is kept in `waiting`. The bytes read, 0 at the reader's end.
    fn poll_read_through<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<usize>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let mut stack = [MaybeUninit::<u8>::uninit(); COPY_BUFFER];
        let mut read = ReadBuf::uninit(&mut stack);
        ready!(reader.poll_read(cx, &mut read))?;
        let read = read.filled();
        let mut written = 0;
        while written < read.len() {
            match writer.as_mut().poll_write(cx, &read[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(write_zero())),
                Poll::Ready(Ok(n)) => {
                    written += n;
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let mut waiting = BytesMut::with_capacity(COPY_BUFFER);
                    waiting.extend_from_slice(&read[written..]);
                    self.waiting = Some(waiting);
                    break;
                }
            }
        }
        Poll::Ready(Ok(read.len()))
    }
}

fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "write zero byte into writer")
}

/// Both directions until both are done, or until either fails; buffers only while bytes wait
/// (see [`Direction`]), so a quiet tunnel holds none.
pub async fn copy_both_ways<C, S>(client: &mut C, server: &mut S) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut to_server, mut to_client) = (Direction::default(), Direction::default());
    poll_fn(|cx| {
        let up = to_server.poll_transfer(cx, Pin::new(&mut *client), Pin::new(&mut *server))?;
        let down = to_client.poll_transfer(cx, Pin::new(&mut *server), Pin::new(&mut *client))?;
        ready!(up);
        ready!(down);
        Poll::Ready(Ok(()))
    })
    .await
}

/// Quarters of the idle timeout: a connection is closed after between 1 and 1.25 times the
/// timeout without a byte either way.
const IDLE_CHECKS: u32 = 4;

/// Resolves once `activity` has not moved for `idle`.
async fn idle_for(activity: &AtomicU64, idle: Duration) {
    let step = idle / IDLE_CHECKS;
    let mut quiet = 0;
    loop {
        let seen = activity.load(Ordering::Relaxed);
        tokio::time::sleep(step).await;
        if activity.load(Ordering::Relaxed) == seen {
            quiet += 1;
            if quiet >= IDLE_CHECKS {
                return;
            }
        } else {
            quiet = 0;
        }
    }
}

/// Splices `client` and `server`; `received`/`sent` count bytes from and to the client.
pub async fn splice<C, S>(
    client: &mut C,
    server: &mut S,
    idle: Duration,
    received: Counter,
    sent: Counter,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let activity = AtomicU64::new(0);
    let mut client = Metered {
        inner: client,
        read: received,
        total: 0,
        activity: &activity,
    };
    let mut server = Metered {
        inner: server,
        read: sent,
        total: 0,
        activity: &activity,
    };
    let ending = tokio::select! {
        copied = copy_both_ways(&mut client, &mut server) => match copied {
            Ok(_) => Ending::Closed,
            Err(_) => Ending::Error,
        },
        () = idle_for(&activity, idle) => Ending::Idle,
    };
    Spliced {
        from_client: client.total,
        to_client: server.total,
        ending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_counts() {
        let (mut client_far, mut client_near) = tokio::io::duplex(1024);
        let (mut server_near, mut server_far) = tokio::io::duplex(1024);
        let (received, sent) = (Counter::default(), Counter::default());
        let splicing = tokio::spawn({
            let (received, sent) = (received.clone(), sent.clone());
            async move {
                splice(
                    &mut client_near,
                    &mut server_near,
                    Duration::from_secs(5),
                    received,
                    sent,
                )
                .await
            }
        });
        client_far.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        server_far.read_exact(&mut buf).await.unwrap();
        server_far.write_all(b"world!").await.unwrap();
        let mut buf = [0u8; 6];
        client_far.read_exact(&mut buf).await.unwrap();
        drop(client_far);
        drop(server_far);
        let done = splicing.await.unwrap();
        assert_eq!((done.from_client, done.to_client), (5, 6));
        assert_eq!((received.get(), sent.get()), (5, 6));
    }

    /// Reads `stream` to its end.
    async fn read_all(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        all
    }

    #[tokio::test]
    async fn bulk_both_ways_through_slow_writers_arrives_whole_and_in_order() {
        // Pipes far smaller than a read: most reads leave bytes the writer cannot take yet.
        let (client_far, mut client_near) = tokio::io::duplex(4096);
        let (mut server_near, server_far) = tokio::io::duplex(4096);
        let up: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
        let (received, sent) = (Counter::default(), Counter::default());
        let splicing = tokio::spawn({
            let (received, sent) = (received.clone(), sent.clone());
            async move {
                splice(
                    &mut client_near,
                    &mut server_near,
                    Duration::from_secs(5),
                    received,
                    sent,
                )
                .await
            }
        });
        let (client_read, mut client_write) = tokio::io::split(client_far);
        let (server_read, mut server_write) = tokio::io::split(server_far);
        let sending_up = tokio::spawn({
            let up = up.clone();
            async move {
                client_write.write_all(&up).await.unwrap();
                client_write.shutdown().await.unwrap();
            }
        });
        let sending_down = tokio::spawn({
            let down = down.clone();
            async move {
                server_write.write_all(&down).await.unwrap();
                server_write.shutdown().await.unwrap();
            }
        });
        let (at_server, at_client) = tokio::join!(read_all(server_read), read_all(client_read));
        sending_up.await.unwrap();
        sending_down.await.unwrap();
        assert!(
            at_server == up,
            "the server got {} bytes, not what was sent",
            at_server.len()
        );
        assert!(
            at_client == down,
            "the client got {} bytes, not what was sent",
            at_client.len()
        );
        let done = splicing.await.unwrap();
        assert_eq!(done.ending, Ending::Closed);
        assert_eq!((done.from_client, done.to_client), (1_000_000, 1_500_000));
        assert_eq!((received.get(), sent.get()), (1_000_000, 1_500_000));
    }

    #[tokio::test]
    async fn a_client_that_is_done_sending_still_gets_the_answer() {
        let (client_far, mut client_near) = tokio::io::duplex(1024);
        let (mut server_near, server_far) = tokio::io::duplex(1024);
        let splicing = tokio::spawn(async move {
            splice(
                &mut client_near,
                &mut server_near,
                Duration::from_secs(5),
                Counter::default(),
                Counter::default(),
            )
            .await
        });
        let (client_read, mut client_write) = tokio::io::split(client_far);
        let (server_read, mut server_write) = tokio::io::split(server_far);
        client_write.write_all(b"request").await.unwrap();
        client_write.shutdown().await.unwrap();
        // The server sees the client's end (read to the end returns), and answers after it.
        assert_eq!(read_all(server_read).await, b"request");
        server_write.write_all(b"response").await.unwrap();
        server_write.shutdown().await.unwrap();
        assert_eq!(read_all(client_read).await, b"response");
        let done = splicing.await.unwrap();
        assert_eq!(done.ending, Ending::Closed);
        assert_eq!((done.from_client, done.to_client), (7, 8));
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (_client_far, mut client_near) = tokio::io::duplex(64);
        let (mut server_near, _server_far) = tokio::io::duplex(64);
        let done = splice(
            &mut client_near,
            &mut server_near,
            Duration::from_millis(50),
            Counter::default(),
            Counter::default(),
        )
        .await;
        assert_eq!(done.ending, Ending::Idle);
    }
}
