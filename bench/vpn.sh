#!/usr/bin/env bash
# lab-vpn against wireguard-go, side by side in one run: two namespaces joined by a veth pair,
# a WireGuard tunnel between them, for
#   lab-vpn <-> lab-vpn, wireguard-go <-> wireguard-go, lab-vpn -> wireguard-go,
# and the bare veth as the ceiling, each round measuring:
#   TCP 1 stream and TCP 4 streams (iperf3 -P 4), Gbit/s;
#   UDP (iperf3 -u -b 0, 1400-byte IP datagrams): the rate received and the loss;
#   ping latency p50/p99 (100 a second) under the 4-stream load;
#   CPU seconds per gigabit of each daemon over the 1-stream run (utime + stime, /proc/PID/stat),
#     sender/receiver: the figure the other work on the machine does not move;
#   over the same run, the TCP sender's retransmitted segments (iperf3's count) and the datagrams
#     the kernel dropped for a full UDP receive buffer in either namespace (UdpRcvbufErrors): what
#     says whether the stream is held back by losses in the tunnel rather than by CPU;
#   for lab-vpn and wireguard-go, the 1-stream rate while the receiving side is flooded with
#     handshake initiations with a valid mac1 (bench/handshake-flood.py, FLOOD_PPS a second:
#     cookie replies engaged), as % of the quiet rate of the same round.
# Medians of ROUNDS interleaved rounds, and ratios ours/wireguard-go. Last line, machine-readable
# (TCP 1 stream):
#   RESULT vpn ours/wireguard-go=<ratio> ours_gbps=<x> veth_gbps=<y>
# A fifth row runs lab-vpn with `udp_receive_buffer = BUFFERED` (bytes, default 3 MiB; 0 skips
# the row): what a larger socket buffer trades, throughput for latency under load.
# DAEMON_CORES=1 gives each daemon one core (a's on core 0, b's on core 1, with taskset) instead
# of both: how far each makes use of a second core.
# PROFILE=1 also records each lab-vpn daemon with perf over the 1-stream run of the last round
# (and the receiver over the flooded run) and prints where its CPU time goes (symbols at or above PROFILE_MIN percent, default 1).
# Bounded: each iperf3 run lasts IPERF_SECONDS (default 5); a round is about 100 s, the default
# 3 rounds about 5 minutes. Needs root (namespaces); everything it creates is removed on exit,
# the machine's own namespace is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-5}
FLOOD_PPS=${FLOOD_PPS:-20000}
BUFFERED=${BUFFERED:-3145728}
export WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1

declare -A needs=([iperf3]=iperf3 [wireguard-go]=wireguard-go [wg]=wireguard-tools [ip]=iproute2 [python3]=python3)
[[ -z ${PROFILE:-} ]] || needs[perf]=linux-perf
source scripts/install-needs.sh
install_needs needs
# What each side's daemon is started under: a core of its own with DAEMON_CORES=1 (word-split
# where used), else nothing.
declare -A on_core=([a]="" [b]="")
if [[ ${DAEMON_CORES:-2} == 1 ]]; then
  on_core=([a]="taskset -c 0" [b]="taskset -c 1")
fi
# cpu_ticks, TICKS_PER_SECOND.
source bench/process.sh

# VPN=PATH benchmarks that binary instead (an older build, for an A/B run).
if [[ -z ${VPN:-} ]]; then
  cargo build --release -q -p lab-vpn
  VPN=${CARGO_TARGET_DIR:-$PWD/target}/release/lab-vpn
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
  [[ -z ${iperf_server:-} ]] || kill "$iperf_server" 2>/dev/null || true
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

# start_ours SIDE NS OWN_TUNNEL PEER_SIDE PEER_UNDERLAY PEER_TUNNEL [EXTRA_INTERFACE_LINE]
start_ours() {
  local side=$1 ns=$2 own=$3 peer=$4 peer_underlay=$5 peer_tunnel=$6 extra=${7:-}
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
$extra
[[peer]]
name = "$peer"
public_key = "$(cat "$work/$peer.pub")"
allowed_ips = ["$peer_tunnel/32"]
endpoint = "$peer_underlay:$port"
CONF
  ip netns exec "$ns" ${on_core[$side]} "$VPN" run --config "$work/$side.toml" 2>>"$work/$side.log" & pids+=($!)
  wait_socket "bv$side$id"
}

start_buffered() { start_ours "$@" "udp_receive_buffer = $BUFFERED"; }

# start_go SIDE NS OWN_TUNNEL PEER_SIDE PEER_UNDERLAY PEER_TUNNEL
start_go() {
  local side=$1 ns=$2 own=$3 peer=$4 peer_underlay=$5 peer_tunnel=$6
  local name=bv$side$id
  ip netns exec "$ns" ${on_core[$side]} wireguard-go -f "$name" >>"$work/$side.log" 2>&1 & pids+=($!)
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

# The pids of the daemons of the pair running now: a's, then b's.
daemons=()

wait_tunnel() {
  for _ in $(seq 50); do in_a ping -c 1 -W 1 -q "$1" >/dev/null 2>&1 && return 0; done
  echo "no ping through the tunnel to $1 (logs in $work)" >&2; KEEP=1; exit 1
}

# iperf3 from a to TARGET with extra arguments; prints its JSON.
iperf() {
  local target=$1; shift
  in_a timeout $((IPERF_SECONDS + 20)) iperf3 -c "$target" -t "$IPERF_SECONDS" -J "$@" 2>/dev/null
}

# Datagrams both namespaces' kernels dropped so far for a full UDP receive buffer (absolute
# counters, -s: nstat's history file is shared by all namespaces, so it is neither read nor written).
rcvbuf_drops() {
  { in_a nstat -asz UdpRcvbufErrors Udp6RcvbufErrors; in_b nstat -asz UdpRcvbufErrors Udp6RcvbufErrors; } |
    awk '/RcvbufErrors/ { n += $2 } END { print n + 0 }'
}

# TCP, one stream, to TARGET: prints Gbit/s, with daemons running each one's CPU seconds per
# gigabit carried (a's, b's), then the segments TCP retransmitted and the datagrams dropped for a
# full UDP receive buffer meanwhile.
tcp1() {
  local target=$1 before=() after=() drops_before
  for p in "${daemons[@]}"; do before+=("$(cpu_ticks "$p")"); done
  drops_before=$(rcvbuf_drops)
  iperf "$target" >"$work/iperf.json" || true
  for p in "${daemons[@]}"; do after+=("$(cpu_ticks "$p")"); done
  python3 - "$work/iperf.json" "$TICKS_PER_SECOND" "${before[*]}" "${after[*]}" \
    "$(($(rcvbuf_drops) - drops_before))" <<'PY'
import json, sys
end = json.load(open(sys.argv[1]))["end"]
received = end["sum_received"]
gbit = received["bytes"] * 8 / 1e9
ticks, before, after = int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
cpu = ["%.2f" % ((int(b) - int(a)) / ticks / gbit) for a, b in zip(before, after)]
print("%.3f" % (received["bits_per_second"] / 1e9), *(cpu or ["-", "-"]),
      end["sum_sent"].get("retransmits", "-"), sys.argv[5])
PY
}

# TCP, four streams, to TARGET, with ping 100 times a second alongside: prints Gbit/s and the
# round-trip p50 and p99 in ms.
tcp4_ping() {
  local target=$1
  in_a ping -i 0.01 -c $(((IPERF_SECONDS - 1) * 100)) -W 1 "$target" >"$work/ping" 2>&1 &
  local ping_pid=$!
  iperf "$target" -P 4 >"$work/iperf.json" || true
  wait "$ping_pid" || true
  python3 - "$work/iperf.json" "$work/ping" <<'PY'
import json, re, statistics, sys
gbps = json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9
times = sorted(float(t) for t in re.findall(r"time=([0-9.]+) ms", open(sys.argv[2]).read()))
if len(times) < 2:
    print("%.3f - -" % gbps)
else:
    q = statistics.quantiles(times, n=100, method="inclusive")
    print("%.3f %.3f %.3f" % (gbps, q[49], q[98]))
PY
}

# UDP to TARGET, unlimited rate, 1372-byte payloads (1400-byte IP datagrams, under the tunnel's
# 1420 MTU: 1400-byte payloads would be fragmented): prints the Gbit/s received and the loss %.
udp() {
  iperf "$1" -u -b 0 -l 1372 | python3 -c '
import json, sys
end = json.load(sys.stdin)["end"]["sum_received"]
print("%.3f %.2f" % (end["bits_per_second"] / 1e9, end["lost_percent"]))'
}

# TCP, one stream, to TARGET while b's WireGuard port is flooded with handshake initiations
# (what the flood saw goes to $work/flood-LABEL.log; it outlasts iperf3, so its CPU time can be
# read after): prints Gbit/s, the share of a core the
# flooder took and the receiving daemon's CPU seconds per gigabit meanwhile (the flooder shares
# the two cores: what it takes is not the daemon's doing).
flooded() {
  local target=$1 label=$2
  in_a python3 bench/handshake-flood.py "$underlay_b:$port" "$(cat "$work/b.pub")" \
    "$FLOOD_PPS" $((IPERF_SECONDS + 4)) 2>>"$work/flood-$label.log" &
  local flood_pid=$!
  sleep 1
  local receiver=${daemons[1]} flooder_before receiver_before
  flooder_before=$(cpu_ticks "$flood_pid"); receiver_before=$(cpu_ticks "$receiver")
  local recorder=
  if [[ -n ${PROFILE:-} && $label == ours ]]; then
    recorder=$(perf_record "$receiver" "$work/perf-flooded.data")
  fi
  iperf "$target" >"$work/iperf.json" || true
  [[ -z $recorder ]] || perf_stop "$recorder"
  python3 - "$work/iperf.json" "$TICKS_PER_SECOND" "$IPERF_SECONDS" \
    "$(($(cpu_ticks "$flood_pid") - flooder_before))" "$(($(cpu_ticks "$receiver") - receiver_before))" <<'PY'
import json, sys
end = json.load(open(sys.argv[1]))["end"]["sum_received"]
ticks, seconds, flooder, receiver = (int(a) for a in sys.argv[2:])
gbit = end["bytes"] * 8 / 1e9
print("%.3f %.0f %.2f" % (end["bits_per_second"] / 1e9, 100 * flooder / ticks / seconds,
                          receiver / ticks / gbit if gbit else 0))
PY
  wait "$flood_pid" || true
}

# Started with `ip netns exec` itself, not the in_b function: `$!` is then iperf3's own pid
# (a function in the background is a subshell, whose end leaves iperf3 running).
ip netns exec "$ns_b" iperf3 -s >/dev/null 2>&1 &
iperf_server=$!

# results[LABEL:METRIC]: the values of the rounds, space-separated.
declare -A results
add() { results[$1:$2]+="$3 "; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^-\?$' | sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "-") }'; }
m() { median "${results[$1:$2]:-}"; }

# Every measurement on TARGET for LABEL; FLOOD=1 adds the flooded run.
measure_all() {
  local label=$1 target=$2 flood=${3:-0} r
  wait_tunnel "$target"
  local recorders=()
  if [[ -n ${PROFILE:-} && $label == ours ]]; then
    recorders=("$(perf_record "${daemons[0]}" "$work/perf-a.data")" "$(perf_record "${daemons[1]}" "$work/perf-b.data")")
  fi
  read -r -a r <<<"$(tcp1 "$target")"
  for p in "${recorders[@]}"; do perf_stop "$p"; done
  add "$label" tcp1 "${r[0]}"; add "$label" cpu_a "${r[1]}"; add "$label" cpu_b "${r[2]}"
  add "$label" retr "${r[3]}"; add "$label" drops "${r[4]}"
  read -r -a r <<<"$(tcp4_ping "$target")"
  add "$label" tcp4 "${r[0]}"; add "$label" p50 "${r[1]}"; add "$label" p99 "${r[2]}"
  read -r -a r <<<"$(udp "$target")"
  add "$label" udp "${r[0]}"; add "$label" loss "${r[1]}"
  if [[ $flood == 1 ]]; then
    local quiet under
    read -r under r[0] r[1] <<<"$(flooded "$target" "$label")"
    add "$label" flooder_cpu "${r[0]}"; add "$label" flooded_cpu_b "${r[1]}"
    quiet=$(awk '{ print $NF }' <<<"${results[$label:tcp1]}")
    add "$label" flood "$(python3 -c "print('%.0f' % (100 * $under / $quiet if $quiet else 0))")"
  fi
}

run_pair() {
  local label=$1 kind_a=$2 kind_b=$3 flood=$4
  "start_$kind_a" a "$ns_a" "$tunnel_a" b "$underlay_b" "$tunnel_b"
  "start_$kind_b" b "$ns_b" "$tunnel_b" a "$underlay_a" "$tunnel_a"
  daemons=("${pids[@]}")
  measure_all "$label" "$tunnel_b" "$flood"
  stop_all
  daemons=()
}

for round in $(seq "$ROUNDS"); do
  measure_all veth "$underlay_b"
  run_pair ours ours ours 1
  run_pair wireguard-go go go 1
  run_pair mixed ours go 0
  [[ $BUFFERED == 0 ]] || run_pair buffered buffered buffered 0
  echo "round $round TCP 1 stream: veth ${results[veth:tcp1]}| lab-vpn ${results[ours:tcp1]}| wireguard-go ${results[wireguard-go:tcp1]}| mixed ${results[mixed:tcp1]}| buffered ${results[buffered:tcp1]:-}" >&2
done
kill "$iperf_server" 2>/dev/null || true
for label in ours wireguard-go; do
  if [[ -s $work/flood-$label.log ]]; then
    echo "flood against $label, last round: $(tail -n 1 "$work/flood-$label.log")" >&2
    echo "  medians: the flooder took $(m "$label" flooder_cpu)% of a core; the receiver $(m "$label" flooded_cpu_b) s/Gbit flooded, $(m "$label" cpu_b) quiet" >&2
  fi
done

if [[ -n ${PROFILE:-} ]]; then
  perf_top "$work/perf-a.data" "lab-vpn a (sender), TCP x1, last round"
  perf_top "$work/perf-b.data" "lab-vpn b (receiver), TCP x1, last round"
  perf_top "$work/perf-flooded.data" "lab-vpn b (receiver) under the handshake flood, TCP x1, last round"
fi

ratio() { python3 -c "
a, b = '$1', '$2'
try: print('%.2f' % (float(a) / float(b)))
except (ValueError, ZeroDivisionError): print('-')"; }

row() {
  local label=$1 name=$2
  printf '%-30s %6s %6s %6s %6s %7s %7s %7s %7s %7s %7s %7s\n' "$name" \
    "$(m "$label" tcp1)" "$(m "$label" tcp4)" "$(m "$label" udp)" "$(m "$label" loss)" \
    "$(m "$label" p50)" "$(m "$label" p99)" "$(m "$label" cpu_a)" "$(m "$label" cpu_b)" "$(m "$label" flood)" \
    "$(m "$label" retr)" "$(m "$label" drops)"
}
echo "${IPERF_SECONDS}s runs, medians of $ROUNDS interleaved rounds, daemons on ${DAEMON_CORES:-2} core(s) each. Gbit/s; UDP: received, loss %;"
echo "ping ms under TCP x4; CPU s/Gbit over TCP x1 (sender a, receiver b); flood: TCP x1 under"
echo "$FLOOD_PPS handshake initiations/s with a valid mac1, % of quiet; over TCP x1: segments"
echo "retransmitted, datagrams dropped for a full UDP receive buffer (both namespaces)"
printf '%-30s %6s %6s %6s %6s %7s %7s %7s %7s %7s %7s %7s\n' "" "TCPx1" "TCPx4" "UDP" "loss%" \
  "p50" "p99" "cpu_a" "cpu_b" "flood%" "retr" "drops"
row veth "veth (ceiling)"
row ours "lab-vpn <-> lab-vpn"
row wireguard-go "wireguard-go <-> wireguard-go"
row mixed "lab-vpn -> wireguard-go"
[[ $BUFFERED == 0 ]] || row buffered "lab-vpn, $((BUFFERED >> 10)) KiB rcvbuf"
ratios=()
for metric in tcp1 tcp4 udp loss p50 p99 cpu_a cpu_b flood retr drops; do
  ratios+=("$(ratio "$(m ours "$metric")" "$(m wireguard-go "$metric")")")
done
printf '%-30s %6s %6s %6s %6s %7s %7s %7s %7s %7s %7s %7s\n' "ours/wireguard-go" "${ratios[@]}"
ours=$(m ours tcp1)
echo "TCP x1 vs veth: lab-vpn $(ratio "$ours" "$(m veth tcp1)"), wireguard-go $(ratio "$(m wireguard-go tcp1)" "$(m veth tcp1)")$(
  [[ $BUFFERED == 0 ]] || echo ", lab-vpn with the larger buffer $(ratio "$(m buffered tcp1)" "$(m veth tcp1)") ($(ratio "$(m buffered tcp1)" "$(m wireguard-go tcp1)")x wireguard-go)")"
echo "RESULT vpn ours/wireguard-go=$(ratio "$ours" "$(m wireguard-go tcp1)") ours_gbps=$ours veth_gbps=$(m veth tcp1)"
