//! A client's frames counted as they are read, before the h2 layer acts on them. Frames that
//! ask for no request work (PING, SETTINGS, PRIORITY, WINDOW_UPDATE, RST_STREAM, DATA and
//! CONTINUATION without content, frame types h2 ignores) each cost the daemon a parse and
//! often an answer; the h2 layer bounds the memory they take (one PONG or SETTINGS ack waits,
//! reading stops meanwhile) but not how many come (CVE-2019-9512 ping, -9515 settings, -9518
//! empty frames, -9513 PRIORITY floods, WINDOW_UPDATE floods). A connection may send a fixed
//! allowance of them plus what its real work earns (its requests, the bytes it is sent, the
//! time it is open); past that it is tripped: nothing more of it is read, and the connection's
//! loop closes it with ENHANCE_YOUR_CALM.

use futures_util::task::AtomicWaker;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The frames that do no work a connection may always send: a browser's opening SETTINGS,
/// WINDOW_UPDATE and PRIORITY frames, and its PINGs, are a few dozen.
const IDLE_ALLOWED: u64 = 1000;

/// Frames that do no work each request earns (its PRIORITY, a reset, a PING to measure it).
const IDLE_PER_REQUEST: u64 = 8;

/// Bytes sent to the client that earn one such frame: a reader acknowledges what it reads with
/// WINDOW_UPDATEs (at most two, stream and connection, per 16 KiB DATA frame) and may measure
/// the bandwidth with a PING per burst.
const BYTES_PER_IDLE: u64 = 4096;

/// Such frames each second the connection is open earns (keep-alive PINGs).
const IDLE_PER_SECOND: u64 = 50;

/// The client preface (RFC 9113 §3.4), read before the first frame.
const PREFACE_LEN: usize = 24;

const FRAME_HEAD: usize = 9;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PUSH_PROMISE: u8 = 5;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;

/// Whether a connection's client has sent more frames that do no work than it earned; the
/// connection's loop waits on it.
#[derive(Debug, Default)]
pub(super) struct Trip {
    tripped: AtomicBool,
    waker: AtomicWaker,
}

impl Trip {
    fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the client has been tripped.
    pub(super) fn poll_tripped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.tripped.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.tripped.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// What a frame asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Nothing a request needs.
    Idle,
    /// A request's header block.
    Request,
    /// A request's content, or the end of the connection.
    Other,
}

/// The frame a head announces, by what it asks; `Err` for a padded DATA frame whose pad
/// length (its first payload byte) says whether it carries data.
fn work(kind: u8, flags: u8, len: usize) -> Result<Work, ()> {
    Ok(match kind {
        DATA if flags & END_STREAM != 0 => Work::Other,
        DATA if len == 0 => Work::Idle,
        DATA if flags & PADDED != 0 => return Err(()),
        DATA => Work::Other,
        HEADERS if len == 0 => Work::Idle,
        HEADERS => Work::Request,
        CONTINUATION if len == 0 => Work::Idle,
        CONTINUATION | PUSH_PROMISE | GOAWAY => Work::Other,
        _ => Work::Idle,
    })
}

/// Where the reading of the client's bytes is.
#[derive(Debug)]
enum At {
    Preface(usize),
    /// Within a frame head, this much of it read.
    Head(usize),
    /// A padded DATA frame's pad length byte is next; the frame's length.
    PadLength(usize),
    /// Within a payload, this much of it left.
    Payload(usize),
}

/// The client's frames so far, and what they earned.
#[derive(Debug)]
struct Count {
    at: At,
    head: [u8; FRAME_HEAD],
    idle: u64,
    requests: u64,
    sent: u64,
    opened: Instant,
}

impl Count {
    fn new() -> Self {
        Self {
            at: At::Preface(PREFACE_LEN),
            head: [0; FRAME_HEAD],
            idle: 0,
            requests: 0,
            sent: 0,
            opened: Instant::now(),
        }
    }

    /// Counts the frames in `bytes`, the next the client sent; once the client is over its
    /// allowance, where in `bytes` the frame that put it over begins (0 if in an earlier read).
    fn read(&mut self, bytes: &[u8]) -> Option<usize> {
        let all = bytes.len();
        let mut bytes = bytes;
        while !bytes.is_empty() {
            match self.at {
                At::Preface(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.at = if n == left {
                        At::Head(0)
                    } else {
                        At::Preface(left - n)
                    };
                }
                At::Head(have) => {
                    let n = (FRAME_HEAD - have).min(bytes.len());
                    self.head[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have + n < FRAME_HEAD {
                        self.at = At::Head(have + n);
                        continue;
                    }
                    let [l0, l1, l2, kind, flags, ..] = self.head;
                    let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                    let over = match work(kind, flags, len) {
                        Ok(work) => {
                            self.at = At::Payload(len);
                            self.counted(work)
                        }
                        Err(()) => {
                            self.at = At::PadLength(len);
                            false
                        }
                    };
                    if over {
                        return Some((all - bytes.len()).saturating_sub(FRAME_HEAD));
                    }
                }
                At::PadLength(len) => {
                    let padding = usize::from(bytes[0]);
                    self.at = At::Payload(len - 1);
                    bytes = &bytes[1..];
                    let work = if len <= 1 + padding {
                        Work::Idle
                    } else {
                        Work::Other
                    };
                    if self.counted(work) {
                        return Some((all - bytes.len()).saturating_sub(FRAME_HEAD + 1));
                    }
                }
                At::Payload(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.at = if n == left {
                        At::Head(0)
                    } else {
                        At::Payload(left - n)
                    };
                }
            }
        }
        None
    }

    /// Counts a frame; whether the client is now over its allowance.
    fn counted(&mut self, work: Work) -> bool {
        match work {
            Work::Idle => {
                self.idle += 1;
                return self.over();
            }
            Work::Request => self.requests += 1,
            Work::Other => {}
        }
        false
    }

    fn over(&self) -> bool {
        let earned = IDLE_ALLOWED
            .saturating_add(self.requests.saturating_mul(IDLE_PER_REQUEST))
            .saturating_add(self.sent / BYTES_PER_IDLE);
        // The clock is read only once the cheaper allowances are spent.
        self.idle > earned
            && self.idle > earned.saturating_add(self.opened.elapsed().as_secs() * IDLE_PER_SECOND)
    }
}

/// A client connection whose frames are counted as the h2 layer reads them.
pub(super) struct Watched<S> {
    io: S,
    count: Count,
    trip: Arc<Trip>,
}

impl<S> Watched<S> {
    /// `io`, watched; the [`Trip`] says when its client is over its allowance.
    pub(super) fn new(io: S) -> (Self, Arc<Trip>) {
        let trip = Arc::new(Trip::default());
        let watched = Self {
            io,
            count: Count::new(),
            trip: trip.clone(),
        };
        (watched, trip)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A tripped client is read no further: the connection only sends its GOAWAY now.
        if this.trip.tripped.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(over) = this.count.read(&buf.filled()[before..]) {
            // The frames past the allowance never reach the h2 layer.
            buf.set_filled(before + over);
            this.trip.trip();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.count.sent += n as u64;
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            this.count.sent += n as u64;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `wire` one byte at a time; the idle frames and requests counted.
    fn counted(wire: &[u8]) -> (u64, u64) {
        let mut count = Count::new();
        for b in wire {
            count.read(std::slice::from_ref(b));
        }
        (count.idle, count.requests)
    }

    #[test]
    fn frames_are_told_apart_across_reads() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(4, 0, &[0; 6])); // SETTINGS
        wire.extend(frame(6, 0, &[0; 8])); // PING
        wire.extend(frame(HEADERS, 4, b"\x82\x86\x84")); // a request
        wire.extend(frame(DATA, 0, &[])); // empty DATA
        wire.extend(frame(DATA, PADDED, &[3, 0, 0, 0])); // only padding
        wire.extend(frame(DATA, PADDED, &[1, b'x', 0])); // a byte of data
        wire.extend(frame(DATA, END_STREAM, &[])); // the end of a body
        wire.extend(frame(CONTINUATION, 0, &[])); // empty CONTINUATION
        wire.extend(frame(0x20, 0, &[0; 100])); // an unknown type
        assert_eq!(counted(&wire), (6, 1));
    }

    #[test]
    fn a_flood_is_over_once_its_allowance_is_spent_and_work_earns_more() {
        let mut count = Count::new();
        let ping = frame(6, 0, &[0; 8]);
        let mut wire = PREFACE.to_vec();
        wire.extend(ping.repeat(IDLE_ALLOWED as usize));
        assert_eq!(count.read(&wire), None);
        count.sent += 10 * BYTES_PER_IDLE;
        assert_eq!(count.read(&ping.repeat(10)), None);
        assert_eq!(count.read(&frame(HEADERS, 4, b"\x82")), None);
        assert_eq!(count.read(&ping.repeat(IDLE_PER_REQUEST as usize)), None);
        // The read is cut where the frame past the allowance begins.
        let data = frame(DATA, 0, b"x");
        assert_eq!(
            count.read(&[&data[..], &ping[..], &data[..]].concat()),
            Some(data.len())
        );
    }
}
