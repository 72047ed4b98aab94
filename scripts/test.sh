#!/usr/bin/env bash
# Runs every check the project has: formatting, clippy with -D warnings, and all tests.
# Installs what the suite needs first (only what is missing), so it works on a new machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the suite (and pingora's build) needs, by the command that proves each present.
declare -A needs=(
  [cmake]=cmake                    # pingora's libz-ng-sys
  [promtool]=prometheus            # `promtool check metrics`, `check config`/`rules`, `test rules`
  [cloud-init]=cloud-init          # `cloud-init schema` on the manager's user-data
  # journal-remote and the uploader, run with the rendered commands (not on the PATH)
  [/lib/systemd/systemd-journal-remote]=systemd-journal-remote
  [systemd-socket-activate]=systemd # the socket the manager's journal-remote is activated on
  [systemd-analyze]=systemd        # `systemd-analyze verify` on the units
  [curl]=curl                      # real HTTP client in the daemon tests
  [nginx]=nginx-light              # real backends behind lab-lb
  [openssl]=openssl
  [ip]=iproute2                    # also `ss`: connections a server has from lab-lb
  [setpriv]=util-linux             # a client run as `nobody` against lab-lb's runtime API
  [ping]=iputils-ping              # reachability through the tunnel
  [wireguard-go]=wireguard-go      # the peer lab-vpn is tested against
  [wg]=wireguard-tools
  [dnsmasq]=dnsmasq-base           # the DHCP server lab-bootstrap renders for (no system service)
  [udhcpc]=udhcpc                  # real DHCP clients that must get their reservation
  [nft]=nftables                   # the rendered ruleset, loaded in a namespace router
  [busybox]=busybox                # `nc` for the firewall matrix
  [h2load]=nghttp2-client          # HTTP/2 load through lab-lb's https listener
  [wrk]=wrk                        # HTTP keep-alive load in the lab-lb tests and bench
  [python3]=python3                # scripts/check-import-cycles.py
  [shellcheck]=shellcheck          # the manager's first-boot script
  [keepalived]=keepalived          # the lb and vpn pairs: `keepalived -t`, failover in the local lab
)
source scripts/install-needs.sh
install_needs needs

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== no import circles"
python3 scripts/check-import-cycles.py
# The fuzz crate is a workspace of its own (nightly): its lock file must follow the crates it
# fuzzes, or scripts/fuzz.sh fails on the next run.
echo "== fuzz/Cargo.lock up to date"
(cd fuzz && cargo metadata --locked --format-version 1 >/dev/null)
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
