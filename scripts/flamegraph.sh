#!/usr/bin/env bash
# Profiles a `sleepyseal local` run and renders a flamegraph of every process it starts.
#
#   scripts/flamegraph.sh [--name NAME] [sleepyseal local flags...]
#
# - builds the `profiling` profile (release + debug info) with frame pointers, in its own target
#   directory so the normal build is not invalidated;
# - installs inferno (the flamegraph renderer) into target/tools on first use;
# - records with `perf record -e cpu-clock -g` (software clock: works where hardware counters do
#   not), following the harness and all its child processes;
# - writes flamegraphs/NAME.svg (default NAME: local) and flamegraphs/NAME.txt (the command, the
#   commit, the machine, and the harness summary).
set -euo pipefail
cd "$(dirname "$0")/.."

name=local
if [[ "${1:-}" == "--name" ]]; then
  name="$2"
  shift 2
fi

command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }

tools="$PWD/target/tools"
scripts/inferno.sh --install

echo "== building with frame pointers (target/flamegraph)"
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/flamegraph \
  cargo build --profile profiling --locked --quiet -p sleepyseal-bench
bin=target/flamegraph/profiling/sleepyseal

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== recording: sleepyseal local $*"
perf record -e cpu-clock -F 499 -g -o "$work/perf.data" -- \
  "$bin" local --out "$work/run" "$@" | tee "$work/summary.txt"

echo "== rendering"
perf script -i "$work/perf.data" 2>/dev/null \
  | "$tools/bin/inferno-collapse-perf" --all >"$work/folded.txt"
mkdir -p flamegraphs
"$tools/bin/inferno-flamegraph" --title "sleepyseal local $*" --width 1600 \
  <"$work/folded.txt" >"flamegraphs/$name.svg"
set +o pipefail # `head` closes the pipe early on purpose
{
  echo "command:  scripts/flamegraph.sh --name $name $*"
  echo "commit:   $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')"
  echo "machine:  $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "recorded: perf record -e cpu-clock -F 499 -g (frame pointers), all processes of the run"
  echo
  echo "Top 25 functions by self time (share of all samples):"
  awk '{n=$NF; $NF=""; k=split($0,f,";"); s[f[k]]+=n; t+=n} END {for (x in s) printf "%6.2f%%  %s\n", 100*s[x]/t, x}' \
    "$work/folded.txt" | sort -rn | head -25
  echo
  echo "Share of samples per thread name:"
  awk '{n=$NF; split($0,f,";"); c[f[1]]+=n; t+=n} END {for (x in c) printf "%6.2f%%  %s\n", 100*c[x]/t, x}' \
    "$work/folded.txt" | sort -rn | head -15
  echo
  echo "Inclusive share of samples whose stack contains:"
  for pattern in 'curve25519|ed25519' 'blake3' 'aes_gcm|chacha' 'quinn' \
      'sendmsg|recvmsg|sendmmsg|recvmmsg|udp_' 'fdatasync|fsync|sync_data|sync_all' \
      'memmove|memcpy' 'malloc|free|realloc' 'finish_task_switch|futex_wait' \
      'Core::handle' 'tusk' 'wal-compact' 'verify_many'; do
    awk -v p="$pattern" '{n=$NF; t+=n; if ($0 ~ p) m+=n} END {printf "%6.2f%%  %s\n", 100*m/t, p}' \
      "$work/folded.txt"
  done
  echo
  cat "$work/summary.txt"
} >"flamegraphs/$name.txt"
cp "$work/folded.txt" "target/flamegraph/$name.folded"
echo "== wrote flamegraphs/$name.svg and flamegraphs/$name.txt (stacks: target/flamegraph/$name.folded)"
