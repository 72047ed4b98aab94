//! The UDP side: one socket, read in batches with `recvmmsg` (and GRO where the kernel offers
//! it), each datagram with the local address it arrived on, so replies leave from that address
//! (the gateway container has two networks); written in batches too, runs of datagrams to one
//! peer going out as one UDP GSO send.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams (or GRO bundles) taken per wake-up.
pub const BATCH: usize = 32;
/// Room for a GRO bundle of 64 KiB.
const BUFFER: usize = 65536;

/// The gateway's UDP socket, with what quinn-udp knows of its offloads (GRO, GSO).
pub struct Conn {
    socket: UdpSocket,
    state: UdpSocketState,
    /// The receive buffer the socket was made with, as the kernel counts it: the system's
    /// default (`net.core.rmem_default`, which the daemon cannot read under `ProcSubset=pid`).
    default_receive_buffer: usize,
}

/// A datagram to send: where, from which local address, and where its bytes are in the
/// [`Datagrams`] that holds it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The peer's endpoint.
    pub destination: SocketAddr,
    /// The gateway's address to send from (the one the peer last reached); `None` lets the
    /// kernel pick.
    pub local: Option<IpAddr>,
    bytes: Range<usize>,
}

/// Datagrams to send, in order, their bytes one after the other in one buffer kept from batch
/// to batch: a run to one peer is already the contiguous buffer one GSO send takes.
#[derive(Default)]
pub struct Datagrams {
    bytes: Vec<u8>,
    used: usize,
    list: Vec<Outgoing>,
}

impl Datagrams {
    /// Room for a datagram of up to `size` bytes after the last one;
    /// [`commit`](Self::commit) keeps what was written there.
    pub fn room(&mut self, size: usize) -> &mut [u8] {
        if self.bytes.len() < self.used + size {
            self.bytes.resize(self.used + size, 0);
        }
        &mut self.bytes[self.used..self.used + size]
    }

    /// Keeps the first `length` bytes of the last [`room`](Self::room) as a datagram for
    /// `destination`, sent from `local`.
    pub fn commit(&mut self, destination: SocketAddr, local: Option<IpAddr>, length: usize) {
        let start = self.used;
        self.used += length;
        self.list.push(Outgoing {
            destination,
            local,
            bytes: start..self.used,
        });
    }

    /// Keeps a copy of `datagram` for `destination`, sent from `local`.
    pub fn push(&mut self, destination: SocketAddr, local: Option<IpAddr>, datagram: &[u8]) {
        self.room(datagram.len()).copy_from_slice(datagram);
        self.commit(destination, local, datagram.len());
    }

    /// How many datagrams wait.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Forgets every datagram, keeping the buffer.
    pub fn clear(&mut self) {
        self.list.clear();
        self.used = 0;
    }

    fn contents(&self, outgoing: &Outgoing) -> &[u8] {
        &self.bytes[outgoing.bytes.clone()]
    }
}

/// The receive side of the socket, as the kernel counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveStats {
    /// The receive buffer as the kernel counts it: the most bytes of queued datagrams (their
    /// bookkeeping included) it holds, twice what was asked with `SO_RCVBUF`.
    pub buffer: usize,
    /// Datagrams dropped because the buffer was full, since the socket was made.
    pub drops: u64,
}

/// The most bytes one GSO send carries (the UDP length limit, with room for headers).
const MAX_GSO_BYTES: usize = 65000;

/// One received datagram: where it came from and which local address it reached.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// The sender's address and port.
    pub source: SocketAddr,
    /// The gateway's address it was sent to, when the kernel said.
    pub local: Option<IpAddr>,
}

/// Buffers for one `recvmmsg`: [`BATCH`] datagrams (or GRO bundles) of up to 64 KiB each.
pub struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buffers: (0..BATCH).map(|_| vec![0u8; BUFFER]).collect(),
            metas: vec![RecvMeta::default(); BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Every datagram of the batch, GRO bundles split at their stride.
    pub fn datagrams(&self) -> impl Iterator<Item = (Received, &[u8])> {
        self.metas[..self.count]
            .iter()
            .zip(&self.buffers)
            .flat_map(|(meta, buffer)| {
                let received = Received {
                    source: meta.addr,
                    local: meta.dst_ip,
                };
                let stride = meta.stride.max(1);
                buffer[..meta.len]
                    .chunks(stride)
                    .map(move |chunk| (received, chunk))
            })
    }
}

impl Conn {
    /// A non-blocking socket bound to `address`, set up by quinn-udp (each datagram's local
    /// address, GRO and GSO where the kernel has them).
    pub fn bind(address: SocketAddr) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        let default_receive_buffer =
            nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::RcvBuf)?;
        let state = UdpSocketState::new((&socket).into())?;
        let socket = UdpSocket::from_std(socket)?;
        Ok(Self {
            socket,
            state,
            default_receive_buffer,
        })
    }

    /// Gives the socket back the receive buffer it was made with (the system's default).
    pub fn restore_default_receive_buffer(&self) -> io::Result<()> {
        // The kernel keeps twice what is asked (its bookkeeping share included); the default
        // it starts a socket with is that count already.
        self.set_receive_buffer(self.default_receive_buffer / 2)
            .map(|_| ())
    }

    /// Asks for `bytes` of kernel receive buffer: past `net.core.rmem_max` where the daemon may
    /// (CAP_NET_ADMIN in the host's namespace), else as far as that limit allows. Returns what
    /// the kernel granted, in the same unit (it reports twice that, its bookkeeping included).
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<usize> {
        use nix::sys::socket::{getsockopt, setsockopt, sockopt};
        setsockopt(&self.socket, sockopt::RcvBufForce, &bytes)
            .or_else(|_| setsockopt(&self.socket, sockopt::RcvBuf, &bytes))?;
        Ok(getsockopt(&self.socket, sockopt::RcvBuf)? / 2)
    }

    /// What the kernel says of the socket's receive side: its buffer and the datagrams it
    /// dropped for a full one.
    pub fn receive_stats(&self) -> io::Result<ReceiveStats> {
        use nix::sys::socket::{getsockopt, sockopt};
        let buffer = getsockopt(&self.socket, sockopt::RcvBuf)?;
        let local = self.socket.local_addr()?;
        let drops = crate::sock_diag::udp_drops(local.port(), local.is_ipv6())?;
        Ok(ReceiveStats { buffer, drops })
    }

    /// The address bound (its port resolved when `bind` asked for 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits for datagrams and fills `batch` with as many as one `recvmmsg` returns.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        let RecvBatch {
            buffers,
            metas,
            count,
        } = batch;
        *count = self
            .socket
            .async_io(Interest::READABLE, || {
                let mut slices: Vec<IoSliceMut<'_>> =
                    buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                self.state.recv((&self.socket).into(), &mut slices, metas)
            })
            .await?;
        Ok(())
    }

    /// Sends `datagrams` in order. A run of datagrams to the same peer from the same address,
    /// of one size (the last may be shorter), goes out as one GSO send, straight from the
    /// buffer; where the kernel or device refuses GSO, quinn-udp turns it off and the run is
    /// sent datagram by datagram.
    pub async fn send_batch(&self, datagrams: &Datagrams) {
        let outgoing = &datagrams.list;
        let max_segments = self.state.max_gso_segments();
        let mut start = 0;
        while start < outgoing.len() {
            let first = &outgoing[start];
            let size = first.bytes.len();
            let mut end = start + 1;
            let mut bytes = size;
            while end < outgoing.len() && end - start < max_segments {
                let next = &outgoing[end];
                let len = next.bytes.len();
                if next.destination != first.destination
                    || next.local != first.local
                    || len > size
                    || len == 0
                    || bytes + len > MAX_GSO_BYTES
                {
                    break;
                }
                end += 1;
                bytes += len;
                if len < size {
                    break; // only the last segment may be shorter
                }
            }
            let run = &outgoing[start..end];
            let sent = if run.len() > 1 {
                let joined = &datagrams.bytes[first.bytes.start..run[run.len() - 1].bytes.end];
                self.send(first.destination, first.local, joined, Some(size))
                    .await
            } else {
                Err(io::ErrorKind::Unsupported.into())
            };
            if sent.is_err() {
                for out in run {
                    if let Err(e) = self
                        .send(out.destination, out.local, datagrams.contents(out), None)
                        .await
                    {
                        tracing::debug!(destination = %out.destination, error = %e, "send failed");
                    }
                }
            }
            start = end;
        }
    }

    /// Sends `contents` to `destination`, from `local` when known; as GSO segments of
    /// `segment_size` when given.
    async fn send(
        &self,
        destination: SocketAddr,
        local: Option<IpAddr>,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: local,
        };
        self.socket
            .async_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_sysctl(name: &str) -> io::Result<usize> {
        let text = std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))?;
        text.trim()
            .parse()
            .map_err(|_| io::Error::other(format!("net.core.{name} is not a size: {text:?}")))
    }

    #[tokio::test]
    async fn the_receive_buffer_is_what_was_asked_or_the_systems_limit() {
        let conn = Conn::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let made_with = conn.receive_stats().unwrap().buffer;
        assert_eq!(made_with, core_sysctl("rmem_default").unwrap());
        let asked = 3 << 20;
        let granted = conn.set_receive_buffer(asked).unwrap();
        // Root may go past net.core.rmem_max; anyone else gets up to it.
        let expected = if nix::unistd::geteuid().is_root() {
            asked
        } else {
            asked.min(core_sysctl("rmem_max").unwrap())
        };
        assert_eq!(granted, expected);
        let stats = conn.receive_stats().unwrap();
        assert_eq!((stats.buffer, stats.drops), (2 * expected, 0));
        // And back, as a reload removing the setting does.
        conn.restore_default_receive_buffer().unwrap();
        let default = core_sysctl("rmem_default").unwrap();
        assert_eq!(conn.receive_stats().unwrap().buffer, default);
    }
}
