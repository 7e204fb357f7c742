#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh TARGET SECONDS     TARGET: decode | core_handle
#
# - installs the nightly toolchain (rustup, minimal profile) and cargo-fuzz 0.13.2 (into
#   target/tools) on first use;
# - builds fuzz/ with debug assertions (overflow checks) and no sanitizer (the only unsafe code
#   of the project is the counting allocator, which forwards to the system allocator);
# - runs for SECONDS with the corpus in fuzz/corpus/TARGET (kept between runs, git-ignored);
# - a crash leaves its input in fuzz/artifacts/TARGET/: once fixed, copy it into
#   fuzz/regressions/TARGET/, which sim/tests/fuzz_targets.rs replays in CI;
# - prints libFuzzer's final stats (executions, coverage) and writes them to
#   results/fuzz-TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:?usage: scripts/fuzz.sh decode|core_handle SECONDS}"
seconds="${2:?usage: scripts/fuzz.sh decode|core_handle SECONDS}"
case "$target" in decode|core_handle) ;; *) echo "unknown target $target" >&2; exit 2 ;; esac

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (cargo-fuzz needs -Z flags)"
  rustup toolchain install nightly --profile minimal
fi
tools="$PWD/target/tools"
if [[ ! -x "$tools/bin/cargo-fuzz" ]]; then
  echo "== installing cargo-fuzz into $tools"
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools" --quiet
fi
export PATH="$tools/bin:$PATH"

mkdir -p "fuzz/corpus/$target" results
log="results/fuzz-$target.log"
echo "== fuzzing $target for $seconds s (log: $log)"
started=$(date +%s)
set +e
cargo +nightly fuzz run --sanitizer none --debug-assertions "$target" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
  > "$log" 2>&1
status=$?
set -e
elapsed=$(( $(date +%s) - started ))
grep -E '^(stat::|#[0-9]+.*(DONE|pulse))|==[0-9]+== ERROR|panicked|SUMMARY' "$log" | tail -15
echo "== $target: exit $status after ${elapsed} s; corpus $(ls "fuzz/corpus/$target" | wc -l) inputs"
exit "$status"
