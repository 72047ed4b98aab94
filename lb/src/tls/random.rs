//! Random bytes for rustls's handshakes (the server's random, session tickets' nonces and
//! ids), drawn from the kernel's generator a pool at a time rather than with a `getrandom`
//! call per value: about seven per TLS 1.3 handshake, each a system call costing more than
//! the hashing around it (as OpenSSL, whose generator runs in the process, makes none).
//! Every byte comes from the kernel and is handed out once; what was handed out is wiped from
//! the pool.

use rustls::crypto::{GetRandomFailed, SecureRandom};
use std::cell::RefCell;

/// Bytes drawn from the kernel at once: a couple of dozen handshakes' worth.
const POOL_SIZE: usize = 4096;

/// rustls's `SecureRandom` from a pool per thread.
#[derive(Debug)]
pub struct PooledRandom;

struct Pool {
    bytes: [u8; POOL_SIZE],
    /// The first `used` bytes were handed out (and wiped).
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            bytes: [0; POOL_SIZE],
            used: POOL_SIZE,
        })
    };
}

/// The kernel's generator, through ring as rustls's own provider calls it.
fn from_kernel(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
}

impl SecureRandom for PooledRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        if buf.len() > POOL_SIZE / 4 {
            return from_kernel(buf);
        }
        POOL.with_borrow_mut(|pool| {
            let mut out = buf;
            while !out.is_empty() {
                if pool.used == POOL_SIZE {
                    from_kernel(&mut pool.bytes)?;
                    pool.used = 0;
                }
                let n = out.len().min(POOL_SIZE - pool.used);
                let taken = &mut pool.bytes[pool.used..pool.used + n];
                out[..n].copy_from_slice(taken);
                taken.fill(0);
                pool.used += n;
                out = &mut out[n..];
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_bytes_are_handed_out_twice_across_refills() {
        // Enough 32-byte values to go through the pool several times, refills included, and
        // sizes that do not divide it (a value split across a refill).
        let mut seen = HashSet::new();
        for i in 0..2000 {
            let mut value = vec![0u8; if i % 3 == 0 { 36 } else { 32 }];
            PooledRandom.fill(&mut value).unwrap();
            assert!(seen.insert(value), "value {i} handed out before");
        }
    }

    #[test]
    fn handed_out_bytes_are_wiped_from_the_pool() {
        let mut value = [0u8; 64];
        PooledRandom.fill(&mut value).unwrap();
        POOL.with_borrow(|pool| {
            assert!(pool.used >= 64);
            assert!(pool.bytes[..pool.used].iter().all(|&b| b == 0));
            assert!(
                pool.bytes[pool.used..].iter().any(|&b| b != 0),
                "the rest is still random"
            );
        });
    }
}
