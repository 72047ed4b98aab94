#!/usr/bin/env bash
# lab-vpn against wireguard-go, side by side in one run: two namespaces joined by a veth pair,
# a WireGuard tunnel between them, iperf3 TCP through the tunnel for
#   lab-vpn ↔ lab-vpn, wireguard-go ↔ wireguard-go, lab-vpn ↔ wireguard-go,
# and over the bare veth as the ceiling. Prints Gbit/s (median of ROUNDS interleaved rounds)
# and ratios. Last line, machine-readable:
#   RESULT vpn ours/wireguard-go=<ratio> ours_gbps=<x> veth_gbps=<y>
# Bounded: each iperf3 run lasts IPERF_SECONDS (default 5); 3 rounds x 4 targets ≈ 1.5 minutes.
# Needs root (namespaces); everything it creates is removed on exit, the machine's own
# namespace is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-5}
export WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1

declare -A needs=([iperf3]=iperf3 [wireguard-go]=wireguard-go [wg]=wireguard-tools [ip]=iproute2 [python3]=python3)
source scripts/install-needs.sh
install_needs needs

# VPN=PATH benchmarks that binary instead (an older build, for an A/B run).
if [[ -z ${VPN:-} ]]; then
  cargo build --release -q -p lab-vpn
  VPN=$PWD/target/release/lab-vpn
fi

work=$(mktemp -d)
id=$$
ns_a=labb-$id-a
ns_b=labb-$id-b
underlay_a=192.0.2.1
underlay_b=192.0.2.2
tunnel_a=10.77.0.1
tunnel_b=10.77.0.2
port=51820
pids=()

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_all
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  rm -f /var/run/wireguard/bva"$id".sock /var/run/wireguard/bvb"$id".sock
  [[ -n ${KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns_a"
ip netns add "$ns_b"
in_a() { ip netns exec "$ns_a" "$@"; }
in_b() { ip netns exec "$ns_b" "$@"; }
in_a ip link set lo up
in_b ip link set lo up
# Created inside a, one end moved to b: the root namespace never sees the pair.
in_a ip link add veth-a type veth peer name veth-b
in_a ip link set veth-b netns "$ns_b"
in_a ip address add "$underlay_a/24" dev veth-a
in_b ip address add "$underlay_b/24" dev veth-b
in_a ip link set veth-a up
in_b ip link set veth-b up

umask 077
for side in a b; do
  wg genkey > "$work/$side.key"
  wg pubkey < "$work/$side.key" > "$work/$side.pub"
done

# start_ours SIDE NS OWN_TUNNEL PEER_SIDE PEER_UNDERLAY PEER_TUNNEL
start_ours() {
  local side=$1 ns=$2 own=$3 peer=$4 peer_underlay=$5 peer_tunnel=$6
  cat > "$work/$side.toml" <<CONF
[log]
level = "warn"
[metrics]
listen = "127.0.0.1:9586"
[interface]
name = "bv$side$id"
private_key_file = "$work/$side.key"
listen_port = $port
address = ["$own/24"]
reach = ["10.78.0.0/24"]
[[peer]]
name = "$peer"
public_key = "$(cat "$work/$peer.pub")"
allowed_ips = ["$peer_tunnel/32"]
endpoint = "$peer_underlay:$port"
CONF
  ip netns exec "$ns" "$VPN" run --config "$work/$side.toml" 2>>"$work/$side.log" & pids+=($!)
  wait_socket "bv$side$id"
}

# start_go SIDE NS OWN_TUNNEL PEER_SIDE PEER_UNDERLAY PEER_TUNNEL
start_go() {
  local side=$1 ns=$2 own=$3 peer=$4 peer_underlay=$5 peer_tunnel=$6
  local name=bv$side$id
  ip netns exec "$ns" wireguard-go -f "$name" >>"$work/$side.log" 2>&1 & pids+=($!)
  wait_socket "$name"
  ip netns exec "$ns" wg set "$name" listen-port "$port" private-key "$work/$side.key" \
    peer "$(cat "$work/$peer.pub")" endpoint "$peer_underlay:$port" allowed-ips "$peer_tunnel/32"
  ip netns exec "$ns" ip address add "$own/24" dev "$name"
  ip netns exec "$ns" ip link set "$name" mtu 1420 up
}

wait_socket() {
  for _ in $(seq 100); do [[ -S /var/run/wireguard/$1.sock ]] && return 0; sleep 0.05; done
  echo "no control socket for $1 (logs in $work)" >&2; KEEP=1; exit 1
}

# iperf3 from a to TARGET; prints Gbit/s.
measure() {
  local target=$1
  for _ in $(seq 50); do in_a ping -c 1 -W 1 -q "$target" >/dev/null 2>&1 && break; done
  in_a iperf3 -c "$target" -t "$IPERF_SECONDS" -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

in_b iperf3 -s >/dev/null 2>&1 &
iperf_server=$!

declare -A results
run_pair() {
  local label=$1 kind_a=$2 kind_b=$3
  "start_$kind_a" a "$ns_a" "$tunnel_a" b "$underlay_b" "$tunnel_b"
  "start_$kind_b" b "$ns_b" "$tunnel_b" a "$underlay_a" "$tunnel_a"
  results[$label]+="$(measure "$tunnel_b") "
  stop_all
}

for round in $(seq "$ROUNDS"); do
  results[veth]+="$(measure "$underlay_b") "
  run_pair ours ours ours
  run_pair wireguard-go go go
  run_pair mixed ours go
  echo "round $round: veth ${results[veth]} | lab-vpn ${results[ours]} | wireguard-go ${results[wireguard-go]} | mixed ${results[mixed]}" >&2
done
kill "$iperf_server" 2>/dev/null || true

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
veth=$(median "${results[veth]}")
ours=$(median "${results[ours]}")
go=$(median "${results[wireguard-go]}")
mixed=$(median "${results[mixed]}")
ratio() { python3 -c "print('%.2f' % ($1 / $2 if $2 else 0))"; }

printf '%-28s %8s %10s\n' "iperf3 TCP, ${IPERF_SECONDS}s x $ROUNDS" "Gbit/s" "vs wg-go"
printf '%-28s %8s %10s\n' "veth (ceiling)" "$veth" "-"
printf '%-28s %8s %10s\n' "lab-vpn <-> lab-vpn" "$ours" "$(ratio "$ours" "$go")"
printf '%-28s %8s %10s\n' "wireguard-go <-> wireguard-go" "$go" "1.00"
printf '%-28s %8s %10s\n' "lab-vpn -> wireguard-go" "$mixed" "$(ratio "$mixed" "$go")"
echo "RESULT vpn ours/wireguard-go=$(ratio "$ours" "$go") ours_gbps=$ours veth_gbps=$veth"
