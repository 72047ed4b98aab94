#!/usr/bin/env bash
# ChaCha20-Poly1305 for lab-vpn's transport data, three ways: boringtun's Tunn::encapsulate /
# decapsulate on an established pair of sessions (what lab-vpn calls today), ring's AEAD in place
# directly (boringtun's own primitive: the difference is its wrapper's cost), and RustCrypto's
# chacha20poly1305. Prints ns/packet and GB/s for 64, 1420 and 65535-byte payloads, sealing and
# opening, best of ROUNDS (default 5), and which option is fastest at each size.
# Source: vpn/examples/crypto_bench.rs. One core, about half a minute after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

# CRYPTO_BENCH=PATH runs that binary instead (an older build, for an A/B run).
if [[ -z ${CRYPTO_BENCH:-} ]]; then
  cargo build --release -q --locked --workspace --example crypto_bench
  CRYPTO_BENCH=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/crypto_bench
fi
"$CRYPTO_BENCH"
