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
