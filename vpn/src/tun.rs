//! The virtual interface: a TUN device (`/dev/net/tun`, `IFF_NO_PI`) read and written in
//! batches. With offloads (`IFF_VNET_HDR`, TSO4/TSO6, and USO where the kernel has it, ≥ 6.2) one
//! read brings a TCP (or UDP) burst of up to 64 KiB that tun-rs splits into MTU-sized packets,
//! and packets of one flow are coalesced (GRO) before they are written: the kernel's stack then
//! handles one big segment where it would handle dozens.

use std::io;
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, VIRTIO_NET_HDR_LEN};

/// Largest IP packet the data path handles (the TUN MTU is far below it).
pub const MAX_PACKET: usize = 65535;

/// Packets taken from the device per batch (wireguard-go's batch size).
pub const BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;

/// Room kept for the packets one read may split into: a 64 KiB burst of 1420-byte packets is
/// 47; a batch stops reading once fewer slots than this are free.
const SPLIT_ROOM: usize = 64;

/// Where a packet written to the device starts in its buffer: room before it for the
/// virtio-net header the offloaded device expects.
pub const WRITE_OFFSET: usize = 16;

const _: () = assert!(WRITE_OFFSET >= VIRTIO_NET_HDR_LEN);

/// Which offloads the device runs with, as the kernel granted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// TCP segmentation offload: reads bring TCP bursts of up to 64 KiB; also receive
    /// coalescing of TCP packets written (both come with `IFF_VNET_HDR`).
    pub tso: bool,
    /// UDP segmentation offload (kernel ≥ 6.2): the same for UDP.
    pub uso: bool,
}

/// The gateway's TUN device, open for reading and writing packets.
pub struct Tun {
    device: AsyncDevice,
    /// The interface name.
    pub name: String,
    /// The offloads in effect.
    pub offloads: Offloads,
}

/// Buffers for reading batches from the device, reused from batch to batch.
pub struct ReadBatch {
    /// One read's raw bytes: the virtio-net header and a burst of up to 64 KiB.
    raw: Vec<u8>,
    packets: Vec<Vec<u8>>,
    lengths: Vec<usize>,
    count: usize,
}

impl Default for ReadBatch {
    fn default() -> Self {
        Self {
            raw: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            packets: (0..BATCH).map(|_| vec![0u8; MAX_PACKET]).collect(),
            lengths: vec![0; BATCH],
            count: 0,
        }
    }
}

impl ReadBatch {
    /// The packets of the last read, in the order the device gave them.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.packets
            .iter()
            .zip(&self.lengths)
            .take(self.count)
            .map(|(packet, length)| &packet[..*length])
    }

    /// How many packets the last read brought.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last read brought none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Packets to write to the device, each at [`WRITE_OFFSET`] in a buffer of its own (the
/// coalescing grows the first buffer of a flow by the others' payloads), the buffers kept from
/// batch to batch.
pub struct WriteBatch {
    buffers: Vec<Vec<u8>>,
    count: usize,
    gro: GROTable,
}

impl Default for WriteBatch {
    fn default() -> Self {
        Self {
            buffers: Vec::with_capacity(BATCH),
            count: 0,
            gro: GROTable::default(),
        }
    }
}

impl WriteBatch {
    /// The next free buffer, `room` bytes long after [`WRITE_OFFSET`], to write a packet into;
    /// [`commit`](Self::commit) keeps it.
    pub fn room(&mut self, room: usize) -> &mut [u8] {
        if self.count == self.buffers.len() {
            self.buffers
                .push(Vec::with_capacity(WRITE_OFFSET + MAX_PACKET));
        }
        let buffer = &mut self.buffers[self.count];
        buffer.resize(WRITE_OFFSET + room, 0);
        &mut buffer[WRITE_OFFSET..]
    }

    /// Keeps the packet of `length` bytes written at `start` of the last [`room`](Self::room).
    pub fn commit(&mut self, start: usize, length: usize) {
        let buffer = &mut self.buffers[self.count];
        if start != 0 {
            buffer.copy_within(
                WRITE_OFFSET + start..WRITE_OFFSET + start + length,
                WRITE_OFFSET,
            );
        }
        buffer.truncate(WRITE_OFFSET + length);
        self.count += 1;
    }

    /// Keeps a copy of `packet`.
    pub fn push(&mut self, packet: &[u8]) {
        self.room(packet.len()).copy_from_slice(packet);
        self.commit(0, packet.len());
    }

    /// How many packets wait.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Tun {
    /// Creates `name` with `mtu`, with offloads when `offload` asks for them and the kernel
    /// grants them (otherwise without, said once in the log). Not persistent: the kernel
    /// removes it when the daemon exits.
    pub fn create(name: &str, mtu: u16, offload: bool) -> io::Result<Self> {
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(name)
                .mtu(mtu)
                .packet_information(false)
                .offload(offload)
                .build_async()
        };
        let device = if offload {
            match build(true) {
                Ok(device) => device,
                Err(e) => {
                    tracing::warn!(interface = name, error = %e, "the kernel refused TUN offloads; running without them");
                    build(false)?
                }
            }
        } else {
            build(false)?
        };
        let offloads = Offloads {
            tso: device.tcp_gso(),
            uso: device.udp_gso(),
        };
        if offload && offloads.tso && !offloads.uso {
            tracing::info!(
                interface = name,
                "TUN offloads: TCP only (UDP segmentation needs Linux 6.2)"
            );
        }
        Ok(Self {
            device,
            name: name.to_owned(),
            offloads,
        })
    }

    /// Waits for packets and reads as many as are there, up to [`BATCH`]; an offloaded burst is
    /// split into MTU-sized packets.
    pub async fn read_batch(&self, batch: &mut ReadBatch) -> io::Result<()> {
        let ReadBatch {
            raw,
            packets,
            lengths,
            count,
        } = batch;
        *count = 0;
        while *count == 0 {
            match self.device.recv_multiple(raw, packets, lengths, 0).await {
                Ok(n) => *count = n,
                // The read succeeded but its burst could not be split (more segments than a
                // batch holds, or a header that makes no sense): that burst is lost, as a
                // full queue would lose it, and the device is fine.
                Err(e) if e.raw_os_error().is_none() => {
                    tracing::debug!(error = %e, "TUN burst dropped");
                }
                Err(e) => return Err(e),
            }
        }
        // A read without offloads brings one packet; with them, up to a burst.
        let room = if self.offloads.tso { SPLIT_ROOM } else { 1 };
        while *count + room <= packets.len() {
            match self.device.try_recv_multiple(
                raw,
                &mut packets[*count..],
                &mut lengths[*count..],
                0,
            ) {
                Ok(n) => *count += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "TUN read failed after a partial batch");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Writes the packets of `batch` to the device (towards the gateway's own stack and its
    /// networks), a flow's packets coalesced where offloads allow, and empties it.
    pub async fn write_batch(&self, batch: &mut WriteBatch) -> io::Result<()> {
        let WriteBatch {
            buffers,
            count,
            gro,
        } = batch;
        let result = self
            .device
            .send_multiple(gro, &mut buffers[..*count], WRITE_OFFSET)
            .await;
        *count = 0;
        result.map(|_| ())
    }
}
