#!/usr/bin/env bash
# Fuzz smoke run (CI): build every target without a sanitizer (stable Rust), then run each one
# for FUZZ_SECONDS (30) from its committed seed corpus. A crash fails the run and leaves the
# input in fuzz/artifacts/<target>/. Long runs: see RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-30}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
start=$(date +%s)
cargo fuzz build -s none
echo "fuzz: built in $(( $(date +%s) - start )) s"
for target in $(cargo fuzz list); do
  work="$(mktemp -d)"
  cp corpus/"$target"/seed-* "$work"/ 2>/dev/null || true
  t0=$(date +%s)
  # -timeout: one input taking longer than 10 s is a hang, reported like a crash.
  status=0
  cargo fuzz run -s none "$target" "$work" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$work.log" 2>&1 || status=$?
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$work.log" || true
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$work.log" >&2
    echo "fuzz: $target FAILED (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  rm -f "$work.log"
  echo "fuzz: $target ok in $(( $(date +%s) - t0 )) s"
done
echo "fuzz: smoke run done in $(( $(date +%s) - start )) s"
