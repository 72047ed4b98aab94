//! TUN → encrypt → UDP, a batch at a time.

use super::Drop;
use super::{Device, Outgoing};
use crate::tun::{BATCH, MAX_PACKET};
use boringtun::noise::{Tunn, TunnResult};
use std::sync::Arc;
use std::time::Duration;

/// Encryption adds 32 bytes; a handshake initiation is 148.
const OUT_BUFFER: usize = MAX_PACKET + 32;

/// Pause after a failed read (of the TUN device here, of the UDP socket inbound), and how many
/// failures in a row mean the device or socket is gone (deleted, or taken down by the kernel): a
/// second of nothing but errors. The loop then ends and the daemon, which watches it, exits to be
/// restarted with a new one.
pub(super) const RETRY: Duration = Duration::from_millis(100);
pub(super) const FAILURES_FOR_GOOD: u32 = 10;

pub async fn run(device: Arc<Device>) {
    let mut packets: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_PACKET]).collect();
    let mut lengths = vec![0usize; BATCH];
    let mut encrypted = vec![0u8; OUT_BUFFER];
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(BATCH);
    let mut failures = 0u32;
    loop {
        let count = match device.tun.read_batch(&mut packets, &mut lengths).await {
            Ok(count) => {
                failures = 0;
                count
            }
            Err(e) => {
                tracing::error!(interface = %device.interface, error = %e, "cannot read the TUN device");
                failures += 1;
                if failures >= FAILURES_FOR_GOOD {
                    return;
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let peers = device.peers.load();
        for (packet, length) in packets.iter().zip(&lengths).take(count) {
            let packet = &packet[..*length];
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
            let datagram = match peer.tunn().encapsulate(packet, &mut encrypted) {
                TunnResult::WriteToNetwork(datagram) => datagram.to_vec(),
                // Queued until the handshake it started completes.
                TunnResult::Done => continue,
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %peer.name, error = ?e, "cannot encrypt");
                    device.metrics.dropped(Drop::Encrypt);
                    continue;
                }
                TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => continue,
            };
            peer.count_sent(datagram.len());
            outgoing.push(Outgoing {
                destination: endpoint.address,
                local: endpoint.local,
                datagram,
            });
        }
        device.send_all(&mut outgoing).await;
    }
}
