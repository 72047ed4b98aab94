# Sourced by the benchmarks (from the repository root): what a process, with its children,
# holds and has used.
# A process and its children (nginx's workers).
process_tree() { echo "$1" $(pgrep -P "$1" || true); }
# Resident KB of a process and its children.
rss_kb() {
  local pid total=0 kb
  for pid in $(process_tree "$1"); do
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + kb))
  done
  echo "$total"
}
# CPU time (clock ticks, user + system) a process and its children (nginx's workers) have used.
cpu_ticks() {
  local pid total=0 t
  for pid in $(process_tree "$1"); do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
TICKS_PER_SECOND=$(getconf CLK_TCK)

# perf_record PID FILE: samples PID's CPU time into FILE until sent SIGINT (perf_stop); prints
# the recorder's pid. Needs `perf` (Debian: linux-perf).
perf_record() {
  # Its output away from the caller's: called as $(perf_record …), which waits for it to close.
  perf record -q -F 1999 -p "$1" -o "$2" >/dev/null 2>&1 &
  echo $!
}
perf_stop() { kill -INT "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# perf_top FILE TITLE: the symbols taking at least PROFILE_MIN (default 1) % of FILE's samples,
# self time, to stderr.
perf_top() {
  [[ -s $1 ]] || return 0
  echo "$2: % of its CPU samples, self" >&2
  perf report -i "$1" --no-children --sort comm,sym --percent-limit "${PROFILE_MIN:-1}" \
    --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >&2 || true
}
