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

scripts/check-planted.sh deps

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

scripts/check-planted.sh binaries

echo "== check.sh passed in $(( $(date +%s) - started )) s"
