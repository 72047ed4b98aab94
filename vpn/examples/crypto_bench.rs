//! ChaCha20-Poly1305 for WireGuard's transport data, three ways, in ns per packet and GB/s for
//! 64, 1420 and 65535-byte payloads: boringtun's `Tunn::encapsulate`/`decapsulate` on an
//! established pair of sessions (what lab-vpn calls per packet today), `ring`'s AEAD sealing and
//! opening in place directly (boringtun's own primitive: the difference is what its wrapper costs
//! on top), and RustCrypto's `chacha20poly1305`. Run by bench/vpn-crypto.sh on a release build.
//!
//! Each figure is the best of ROUNDS (default 5) interleaved rounds: on a shared machine another
//! process can only make a round slower, never faster.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use std::time::Instant;

/// WireGuard's data message header (type, receiver index, counter) and the Poly1305 tag.
const OVERHEAD: usize = 16 + 16;
/// Packets sealed before they are opened: enough that timing a batch costs nothing per packet.
const BATCH: usize = 64;
const SIZES: [usize; 3] = [64, 1420, 65535];
/// Bytes each measurement moves through the cipher, in PACKETS packets at least and at most.
const BYTES_PER_MEASUREMENT: usize = 128 << 20;
const PACKETS: std::ops::RangeInclusive<usize> = 2_000..=200_000;

/// Seal and open times of one option for one payload size, in ns per packet.
#[derive(Clone, Copy)]
struct Timing {
    seal: f64,
    open: f64,
}

impl Timing {
    const NONE: Self = Self {
        seal: f64::INFINITY,
        open: f64::INFINITY,
    };

    fn best(self, other: Self) -> Self {
        Self {
            seal: self.seal.min(other.seal),
            open: self.open.min(other.open),
        }
    }
}

/// An IPv4 packet of `size` bytes (header and pattern): boringtun checks the length field of
/// what it decrypts.
fn ip_packet(size: usize) -> Vec<u8> {
    let mut packet: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    packet[12..16].copy_from_slice(&[10, 77, 0, 1]);
    packet[16..20].copy_from_slice(&[10, 77, 0, 2]);
    packet
}

/// Two boringtun tunnels past a handshake: `a` sends, `b` receives.
fn established_pair() -> (Tunn, Tunn) {
    let (a_key, b_key) = (StaticSecret::from([1; 32]), StaticSecret::from([2; 32]));
    let (a_public, b_public) = (PublicKey::from(&a_key), PublicKey::from(&b_key));
    let mut a = Tunn::new(a_key, b_public, None, None, 1, None);
    let mut b = Tunn::new(b_key, a_public, None, None, 2, None);
    let (mut to_b, mut to_a) = (vec![0; 2048], vec![0; 2048]);
    let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut to_b, false) else {
        panic!("no handshake initiation");
    };
    let TunnResult::WriteToNetwork(response) = b.decapsulate(None, init, &mut to_a) else {
        panic!("no handshake response");
    };
    // The initiator answers the response with a keepalive: the first data packet, which is what
    // makes the responder's session usable.
    let mut scratch = vec![0; 2048];
    let TunnResult::WriteToNetwork(keepalive) = a.decapsulate(None, response, &mut scratch) else {
        panic!("the initiator did not complete the handshake");
    };
    assert!(matches!(
        b.decapsulate(None, keepalive, &mut to_b),
        TunnResult::Done
    ));
    (a, b)
}

/// Nanoseconds per packet of `work` run over `packets` packets.
fn ns_per_packet(packets: usize, work: impl FnOnce()) -> f64 {
    let start = Instant::now();
    work();
    start.elapsed().as_nanos() as f64 / packets as f64
}

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut nonce = [0; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

fn boringtun_round(pair: &mut (Tunn, Tunn), payload: &[u8], batches: usize) -> Timing {
    let (a, b) = pair;
    let mut sealed: Vec<Vec<u8>> = vec![vec![0; payload.len() + OVERHEAD]; BATCH];
    let mut opened = vec![0; payload.len() + OVERHEAD];
    let (mut seal, mut open) = (0.0, 0.0);
    for _ in 0..batches {
        seal += ns_per_packet(BATCH, || {
            for buffer in &mut sealed {
                match a.encapsulate(payload, buffer) {
                    TunnResult::WriteToNetwork(p) => assert_eq!(p.len(), buffer.len()),
                    other => panic!("encapsulate: {other:?}"),
                }
            }
        });
        open += ns_per_packet(BATCH, || {
            for buffer in &sealed {
                match b.decapsulate(None, buffer, &mut opened) {
                    TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p.len(), payload.len()),
                    other => panic!("decapsulate: {other:?}"),
                }
            }
        });
    }
    assert_eq!(&opened[..payload.len()], payload);
    Timing {
        seal: seal / batches as f64,
        open: open / batches as f64,
    }
}

fn ring_round(counter: &mut u64, payload: &[u8], batches: usize) -> Timing {
    use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[9; 32]).unwrap());
    let mut buffers: Vec<Vec<u8>> = vec![payload.to_vec(); BATCH];
    let mut tags: Vec<Option<Tag>> = vec![None; BATCH];
    let (mut seal, mut open) = (0.0, 0.0);
    for _ in 0..batches {
        let first = *counter;
        seal += ns_per_packet(BATCH, || {
            for (i, (buffer, tag)) in buffers.iter_mut().zip(&mut tags).enumerate() {
                let nonce = Nonce::assume_unique_for_key(nonce_bytes(first + i as u64));
                *tag = Some(
                    key.seal_in_place_separate_tag(nonce, Aad::empty(), buffer)
                        .unwrap(),
                );
            }
        });
        open += ns_per_packet(BATCH, || {
            for (i, (buffer, tag)) in buffers.iter_mut().zip(&tags).enumerate() {
                let nonce = Nonce::assume_unique_for_key(nonce_bytes(first + i as u64));
                let tag = tag.expect("sealed above");
                key.open_in_place_separate_tag(nonce, Aad::empty(), tag, buffer, 0..)
                    .unwrap();
            }
        });
        *counter += BATCH as u64;
    }
    assert_eq!(buffers[0], payload);
    Timing {
        seal: seal / batches as f64,
        open: open / batches as f64,
    }
}

fn rustcrypto_round(counter: &mut u64, payload: &[u8], batches: usize) -> Timing {
    use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
    let cipher = ChaCha20Poly1305::new(&[9; 32].into());
    let mut buffers: Vec<Vec<u8>> = vec![payload.to_vec(); BATCH];
    let mut tags = vec![Tag::default(); BATCH];
    let (mut seal, mut open) = (0.0, 0.0);
    for _ in 0..batches {
        let first = *counter;
        seal += ns_per_packet(BATCH, || {
            for (i, (buffer, tag)) in buffers.iter_mut().zip(&mut tags).enumerate() {
                let nonce = Nonce::from(nonce_bytes(first + i as u64));
                *tag = cipher
                    .encrypt_in_place_detached(&nonce, &[], buffer)
                    .unwrap();
            }
        });
        open += ns_per_packet(BATCH, || {
            for (i, (buffer, tag)) in buffers.iter_mut().zip(&tags).enumerate() {
                let nonce = Nonce::from(nonce_bytes(first + i as u64));
                cipher
                    .decrypt_in_place_detached(&nonce, &[], buffer, tag)
                    .unwrap();
            }
        });
        *counter += BATCH as u64;
    }
    assert_eq!(buffers[0], payload);
    Timing {
        seal: seal / batches as f64,
        open: open / batches as f64,
    }
}

/// ring and RustCrypto must produce the same ciphertext and tag: the figures compare one
/// algorithm, not two.
fn same_cipher(payload: &[u8]) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[5; 32]).unwrap());
    let mut by_ring = payload.to_vec();
    let ring_tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes(42)),
            Aad::empty(),
            &mut by_ring,
        )
        .unwrap();
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[5; 32].into());
    let mut by_rustcrypto = payload.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&nonce_bytes(42).into(), &[], &mut by_rustcrypto)
        .unwrap();
    assert!(by_ring == by_rustcrypto && ring_tag.as_ref() == tag.as_slice());
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(1);
    let options = [
        "boringtun Tunn",
        "ring in place",
        "RustCrypto chacha20poly1305",
    ];
    println!(
        "ChaCha20-Poly1305 transport data, best of {rounds} rounds; seal = encrypt (+ header for boringtun), open = decrypt"
    );
    println!(
        "{:>7}  {:<28} {:>12} {:>9} {:>12} {:>9}",
        "payload", "option", "seal ns/pkt", "GB/s", "open ns/pkt", "GB/s"
    );
    let mut pair = established_pair();
    let (mut ring_counter, mut rustcrypto_counter) = (0, 0);
    for size in SIZES {
        let payload = ip_packet(size);
        same_cipher(&payload);
        let packets = (BYTES_PER_MEASUREMENT / size).clamp(*PACKETS.start(), *PACKETS.end());
        let batches = packets.div_ceil(BATCH);
        let mut best = [Timing::NONE; 3];
        for _ in 0..rounds {
            best[0] = best[0].best(boringtun_round(&mut pair, &payload, batches));
            best[1] = best[1].best(ring_round(&mut ring_counter, &payload, batches));
            best[2] = best[2].best(rustcrypto_round(&mut rustcrypto_counter, &payload, batches));
        }
        for (option, timing) in options.iter().zip(best) {
            println!(
                "{size:>7}  {option:<28} {:>12.0} {:>9.2} {:>12.0} {:>9.2}",
                timing.seal,
                size as f64 / timing.seal,
                timing.open,
                size as f64 / timing.open,
            );
        }
        let (fastest, timing) = options
            .iter()
            .zip(best)
            .min_by(|(_, a), (_, b)| (a.seal + a.open).total_cmp(&(b.seal + b.open)))
            .expect("three options");
        println!(
            "{size:>7}  fastest (seal + open): {fastest}, {:.0} ns/pkt",
            timing.seal + timing.open
        );
    }
}
