#!/usr/bin/env bash
# The one gate, locally and in CI: formatting, lints as errors, the sans-IO rule for core/, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

echo "== core stays sans-IO (no async runtime, no sockets in its dependency tree)"
forbidden='^(tokio|quinn|quinn-proto|mio|async-std|smol|socket2|hyper)$'
if cargo tree -p sleepyseal-core -e normal --prefix none --format '{p}' --locked \
    | awk '{print $1}' | grep -Eq "$forbidden"; then
  echo "core/ depends on an async runtime or socket crate:" >&2
  cargo tree -p sleepyseal-core -e normal --prefix none --format '{p}' | grep -E "^(tokio|quinn|mio|async-std|smol|socket2|hyper) " >&2
  exit 1
fi
# And no direct clock or socket use in core's source (time comes in as `now`).
if grep -rnE 'std::net|SystemTime|Instant::now|std::time::Instant|tokio' core/src; then
  echo "core/src reads a clock or touches sockets" >&2
  exit 1
fi

# unsafe_code is denied workspace-wide; the counting allocator of the fuzz targets is the one
# module allowed to implement an unsafe trait.
if grep -rln 'allow(unsafe_code)' --include='*.rs' core net driver sim bench | grep -vx 'sim/src/fuzz/alloc.rs'; then
  echo "unsafe code allowed outside sim/src/fuzz/alloc.rs" >&2
  exit 1
fi

echo "== the node binary links no planted fault (no dependency on sleepyseal-sim, no mutants feature)"
if cargo tree -p sleepyseal-bench -e normal,features --prefix none --locked \
    | grep -Eq '^sleepyseal-sim |feature "mutants"'; then
  echo "sleepyseal-bench (the node binary) depends on sleepyseal-sim or a mutants feature" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== the built node binaries carry no planted fault (marker: sim/src/planted.rs MARKER)"
# Every planted fault names the marker, so it is in a binary exactly when a fault is linked into
# it. The simulator's own binary must carry it (else the search below proves nothing); no
# `sleepyseal` binary built in target/ may.
marker=$(sed -n 's/^pub const MARKER: &str = "\(.*\)";$/\1/p' sim/src/planted.rs)
[[ -n "$marker" ]] || { echo "no MARKER in sim/src/planted.rs" >&2; exit 1; }
target_dir="${CARGO_TARGET_DIR:-target}"
grep -qaF "$marker" "$target_dir/debug/sleepyseal-sim" \
  || { echo "the marker is missing from $target_dir/debug/sleepyseal-sim: the search is blind" >&2; exit 1; }
found=0
for binary in "$target_dir"/*/sleepyseal; do
  [[ -f "$binary" ]] || continue
  if grep -qaF "$marker" "$binary"; then
    echo "$binary contains planted-fault code" >&2
    found=1
  else
    echo "   $binary: clean"
  fi
done
[[ "$found" == 0 ]] || exit 1

echo "== check.sh passed in $(( $(date +%s) - started )) s"
