//! TUN → encrypt → UDP, a batch at a time.

use super::{Device, Direction, Drop};
use crate::conn::Datagrams;
use crate::tun::ReadBatch;
use boringtun::noise::{Tunn, TunnResult};
use std::sync::Arc;
use std::time::Duration;

/// Room a packet needs beyond its own length: encryption adds 32 bytes, and a packet with no
/// session yet is answered by a handshake initiation, 148 bytes.
const OVERHEAD: usize = 148;

/// Pause after a failed read (of the TUN device here, of the UDP socket inbound), and how many
/// failures in a row mean the device or socket is gone (deleted, or taken down by the kernel): a
/// second of nothing but errors. The loop then ends and the daemon, which watches it, exits to be
/// restarted with a new one.
const RETRY: Duration = Duration::from_millis(100);
const FAILURES_FOR_GOOD: u32 = 10;

/// Failed reads in a row, of the TUN device or the UDP socket.
#[derive(Default)]
pub(super) struct Failures(u32);

impl Failures {
    /// Counts a failed read and pauses before the next; false when the device or socket is
    /// gone for good and the loop must end.
    pub(super) async fn retry(&mut self) -> bool {
        self.0 += 1;
        if self.0 >= FAILURES_FOR_GOOD {
            return false;
        }
        tokio::time::sleep(RETRY).await;
        true
    }

    /// A read succeeded.
    pub(super) fn reset(&mut self) {
        self.0 = 0;
    }
}

pub async fn run(device: Arc<Device>) {
    let mut batch = ReadBatch::default();
    let mut outgoing = Datagrams::default();
    let mut failures = Failures::default();
    loop {
        if let Err(e) = device.tun.read_batch(&mut batch).await {
            tracing::error!(interface = %device.interface, error = %e, "cannot read the TUN device");
            if !failures.retry().await {
                return;
            }
            continue;
        }
        failures.reset();
        device.metrics.batch(Direction::Outbound, batch.len());
        let peers = device.peers.load();
        for packet in batch.packets() {
            let Some(destination) = Tunn::dst_address(packet) else {
                device.metrics.dropped(Drop::NotIp);
                continue;
            };
            let Some(peer) = peers.routes.longest_match(destination) else {
                device.metrics.dropped(Drop::NoRoute);
                continue;
            };
            let Some(endpoint) = peer.endpoint() else {
                device.metrics.dropped(Drop::NoEndpoint);
                continue;
            };
            let room = outgoing.room(packet.len() + OVERHEAD);
            let length = match peer.tunn().encapsulate(packet, room) {
                TunnResult::WriteToNetwork(datagram) => datagram.len(),
                // Queued until the handshake it started completes.
                TunnResult::Done => continue,
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %peer.name, error = ?e, "cannot encrypt");
                    device.metrics.dropped(Drop::Encrypt);
                    continue;
                }
                TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => continue,
            };
            peer.count_sent(length);
            outgoing.commit(endpoint.address, endpoint.local, length);
        }
        device.send_all(&mut outgoing).await;
    }
}
