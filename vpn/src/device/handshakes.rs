//! Handshake messages on their own task, queue and budget: the inbound loop only queues them
//! (a copy of at most 148 bytes, no crypto), so a flood of initiations, even with a valid mac1,
//! costs the data path little; here the MAC checks, cookie replies and Diffie-Hellman run at
//! most [`BUDGET`] messages per [`WINDOW`], and what the queue cannot hold is dropped before
//! any work (counted `under_load`), as wireguard-go drops past its handshake queue.

use super::{Device, Drop};
use crate::conn::{Datagrams, Received};
use crate::tun::{WriteBatch, MAX_PACKET};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Handshake messages waiting (wireguard-go's `QueueHandshakeSize`).
const QUEUE: usize = 1024;
/// Messages handled before replies are sent.
const BATCH: usize = 64;
/// At most this many messages per [`WINDOW`]: about 12 800 a second, a few percent of a core
/// for cookie replies, far more than the handshakes of any real set of peers.
const BUDGET: usize = 256;
const WINDOW: Duration = Duration::from_millis(20);

/// The longest handshake message (an initiation).
const LONGEST: usize = 148;

/// A handshake message as it arrived.
pub struct Message {
    received: Received,
    length: usize,
    bytes: [u8; LONGEST],
}

/// Whether `datagram` goes to the handshake task: an initiation or a response, by its type
/// and length (anything else of those types is malformed, refused by the inbound loop).
pub fn is_handshake(datagram: &[u8]) -> bool {
    matches!(
        (datagram.first(), datagram.len()),
        (Some(1), LONGEST) | (Some(2), 92)
    )
}

/// The inbound loop's end of the queue.
pub struct Queue(mpsc::Sender<Message>);

impl Queue {
    /// Queues `datagram`, or drops it (counted) when the queue is full.
    pub fn push(&self, device: &Device, received: Received, datagram: &[u8]) {
        let mut bytes = [0u8; LONGEST];
        bytes[..datagram.len()].copy_from_slice(datagram);
        let message = Message {
            received,
            length: datagram.len(),
            bytes,
        };
        if self.0.try_send(message).is_err() {
            device.metrics.dropped(Drop::UnderLoad);
        }
    }
}

/// A queue and the receiving end its task takes.
pub fn queue() -> (Queue, mpsc::Receiver<Message>) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    (Queue(sender), receiver)
}

/// Handles queued handshake messages until the inbound loop (the sender) ends.
pub async fn run(device: Arc<Device>, mut queue: mpsc::Receiver<Message>) {
    let mut scratch = vec![0u8; MAX_PACKET];
    let mut replies = Datagrams::default();
    let mut to_tun = WriteBatch::default();
    let mut window = Instant::now();
    let mut spent = 0;
    while let Some(first) = queue.recv().await {
        let peers = device.peers.load();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(message) = next.take() {
            device.handle(
                &peers,
                message.received,
                &message.bytes[..message.length],
                &mut scratch,
                &mut replies,
                &mut to_tun,
            );
            handled += 1;
            if handled < BATCH {
                next = queue.try_recv().ok();
            }
        }
        device.send_all(&mut replies).await;
        // Packets a completed handshake released, should a session deliver any.
        device.write_to_tun(&mut to_tun).await;
        if window.elapsed() >= WINDOW {
            window = Instant::now();
            spent = 0;
        }
        spent += handled;
        if spent >= BUDGET {
            tokio::time::sleep_until(window + WINDOW).await;
            window = Instant::now();
            spent = 0;
        }
    }
}
