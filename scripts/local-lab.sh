#!/usr/bin/env bash
# Brings up the lab of configs/lab.toml (or the lab.toml given) in network namespaces on this
# machine: installs what it needs, builds the three programs, then runs
#   lab-bootstrap up --local --connect <lab.toml>
# Extra arguments go to `up` (e.g. --name NAME). Needs root for the namespaces (uses sudo).
# Remove it with: sudo target/debug/lab-bootstrap down --local [--name NAME]
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A needs=(
  [cmake]=cmake                    # pingora's libz-ng-sys, for the build
  [ip]=iproute2
  [nft]=nftables                   # the host's table inet lab
  [dnsmasq]=dnsmasq-base           # one DHCP server per lab bridge
  [udhcpc]=udhcpc                  # the machines' DHCP clients
  [sysctl]=procps
  [curl]=curl                      # for the commands `up` suggests
  [wireguard-go]=wireguard-go      # the admin client of --connect
  [wg]=wireguard-tools
)
source scripts/install-needs.sh
install_needs needs

cargo build -q -p lab-bootstrap -p lab-lb -p lab-vpn
lab=configs/lab.toml
if [[ $# -gt 0 && $1 != -* ]]; then lab=$1; shift; fi
if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
exec "${sudo[@]}" target/debug/lab-bootstrap up --local --connect "$@" "$lab"
