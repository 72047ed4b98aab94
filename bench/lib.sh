# Sourced by the lab-lb benchmarks (from the repository root): installs the packages of the
# associative array `needs`, builds lab-lb in release mode ($LB, unless LB names a binary),
# makes a work directory ($work) removed on exit with every process in `pids` (KEEP=1 keeps it),
# and gives free_port/wait_port.
source scripts/install-needs.sh
install_needs needs

# LB=PATH benchmarks that binary instead (an older build, for an A/B run).
if [[ -z ${LB:-} ]]; then
  cargo build --release -q -p lab-lb
  LB=target/release/lab-lb
fi

# The ratios only mean something on an otherwise idle machine: a process busy on one of the two
# cores takes CPU from wrk and the backend, which favours the proxy with the least CPU per
# request. Warn (on stderr, before the results) when the machine is busy before we start.
busy_before_start() {
  python3 - <<'PY' >&2
import time
def ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]
t0, i0 = ticks(); time.sleep(2); t1, i1 = ticks()
busy = 100.0 * (1 - (i1 - i0) / max(t1 - t0, 1))
if busy > 10:
    import subprocess
    top = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True,
                         text=True).stdout.splitlines()[1:4]
    print(f"WARNING: {busy:.0f} % of the CPU was busy before the benchmark started; the "
          f"results are not comparable to an idle machine's. Busiest: "
          + "; ".join(" ".join(t.split()) for t in top))
PY
}
busy_before_start

# Where the processes run (PIN=1, the default, on a machine with two or more cores): the proxy
# under test alone on the last core, the load generator and the backend on the others, the same
# for every proxy. Unpinned (PIN=0), the scheduler moves the three between the cores and the
# requests/s measure the machine's sharing as much as the proxy: the proxy with the least CPU per
# request leaves wrk and the backend the most.
last_core=$(( $(nproc) - 1 ))
if [[ ${PIN:-1} == 1 && $last_core -ge 1 ]]; then
  on_proxy_core=(taskset -c "$last_core")
  load_cores=0; [[ $last_core -gt 1 ]] && load_cores="0-$((last_core - 1))"
  on_load_cores=(taskset -c "$load_cores")
  placement="proxy pinned to core $last_core, load generator and backend on core(s) $load_cores"
else
  on_proxy_core=()
  on_load_cores=()
  placement="unpinned (PIN=0)"
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1 (logs in $work)" >&2; KEEP=1; exit 1; }
# process_tree, rss_kb, cpu_ticks, TICKS_PER_SECOND.
source bench/process.sh

ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}'; }
# CPU microseconds per request from clock ticks before and after a load of N requests: what
# the target's process (with its children) spent, whatever the machine's other work.
us_per_request() { python3 -c "print('%.1f' % (($2 - $1) * 1e6 / $TICKS_PER_SECOND / max($3, 1)))"; }
# wrk against PORT (or a URL: https), the target's process PID: requests/s, p99 (ms) and CPU
# us/request; extra arguments go to wrk.
wrk_load() {
  local url=$1 target_pid=$2; shift 2
  local out before
  [[ $url == *://* ]] || url="http://127.0.0.1:$url/"
  before=$(cpu_ticks "$target_pid")
  out=$("${on_load_cores[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
  echo "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" \
    "$(awk '$1 == "99%" {print $2}' <<<"$out" | ms)" \
    "$(us_per_request "$before" "$(cpu_ticks "$target_pid")" "$(awk '/requests in/ {print $1}' <<<"$out")")"
}
median() { python3 -c 'import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 3))' "$@"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
