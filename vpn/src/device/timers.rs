//! Every 250 ms, each peer's timers (handshake retries, keepalives, session expiry); every
//! second, the handshake rate limiter's count.

use super::Device;
use crate::conn::Datagrams;
use boringtun::noise::TunnResult;
use std::sync::Arc;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(250);
const TICKS_PER_SECOND: u32 = 4;

pub async fn run(device: Arc<Device>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buffer = vec![0u8; 256];
    let mut outgoing = Datagrams::default();
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        if ticks % TICKS_PER_SECOND == 0 {
            device.limiter.reset_count();
        }
        let peers = device.peers.load();
        for peer in peers.by_key.values() {
            let Some(endpoint) = peer.endpoint() else {
                continue;
            };
            if let TunnResult::WriteToNetwork(datagram) = peer.tunn().update_timers(&mut buffer) {
                peer.count_sent(datagram.len());
                outgoing.push(endpoint.address, endpoint.local, datagram);
            }
        }
        device.send_all(&mut outgoing).await;
    }
}
