//! The UDP side: one socket, read in batches with `recvmmsg` (and GRO where the kernel offers
//! it), each datagram with the local address it arrived on, so replies leave from that address
//! (the gateway container has two networks).

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams (or GRO bundles) taken per wake-up.
pub const BATCH: usize = 32;
/// Room for a GRO bundle of 64 KiB.
const BUFFER: usize = 65536;

pub struct Conn {
    socket: UdpSocket,
    state: UdpSocketState,
}

/// One received datagram: where it came from and which local address it reached.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub source: SocketAddr,
    pub local: Option<IpAddr>,
}

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
    pub fn bind(address: SocketAddr) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let socket = UdpSocket::from_std(socket)?;
        Ok(Self { socket, state })
    }

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

    /// Sends one datagram to `destination`, from `local` when known.
    pub async fn send(
        &self,
        destination: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents: datagram,
            segment_size: None,
            src_ip: local,
        };
        self.socket
            .async_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            })
            .await
    }
}
