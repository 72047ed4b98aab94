#!/usr/bin/env bash
# Runs every fuzz target (or the one named) for a bounded time each, coverage-guided with
# cargo-fuzz and libFuzzer on the nightly toolchain; prints the executions per target and fails
# if any target crashed (the input is left in fuzz/artifacts/<target>/ to add as a regression).
#
#   scripts/fuzz.sh            every target, 60 s each
#   scripts/fuzz.sh 10         every target, 10 s each
#   scripts/fuzz.sh 300 sni    one target, 5 minutes
#
# The checked-in seeds (fuzz/corpus/<target>/) are read, never written: what a run finds goes
# to a temporary corpus, removed at the end (KEEP_CORPUS=1 leaves it and says where). Builds in
# $FUZZ_TARGET_DIR (default fuzz/target): the sanitizer flags differ from the workspace's, so
# sharing its target directory would rebuild both.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
only=${2:-}
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET]" >&2; exit 64; }

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}

mapfile -t targets < <(cargo +nightly fuzz list)
if [[ -n "$only" ]]; then
  printf '%s\n' "${targets[@]}" | grep -qx "$only" || { echo "no target $only; there are: ${targets[*]}" >&2; exit 64; }
  targets=("$only")
fi

# --debug-assertions: overflow checks and debug_assert! on, as in the tests.
cargo +nightly fuzz build --debug-assertions $only

work=$(mktemp -d)
logs=$(mktemp -d)
if [[ "${KEEP_CORPUS:-}" == 1 ]]; then
  echo "grown corpora in $work"
else
  trap 'rm -rf "$work" "$logs"' EXIT
fi

failed=()
declare -A runs
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "fuzz/artifacts/$target"
  echo "== $target (${seconds}s)"
  # The grown corpus first: libFuzzer writes new inputs to the first directory only.
  if cargo +nightly fuzz run --debug-assertions "$target" "$work/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$logs/$target" 2>&1; then
    :
  else
    failed+=("$target")
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact' "$logs/$target" | head -20 || true
  fi
  runs[$target]=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$logs/$target" | grep -oE '[0-9]+$' | tail -1)
  rmdir "fuzz/artifacts/$target" 2>/dev/null || true
  echo "   ${runs[$target]:-?} executions"
done

echo "== executions in ${seconds}s per target"
for target in "${targets[@]}"; do
  printf '%-16s %s\n' "$target" "${runs[$target]:-?}"
done
if ((${#failed[@]})); then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
