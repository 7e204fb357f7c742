#!/usr/bin/env bash
# Planted faults (the negative controls' known bugs, sim/src/planted.rs) must never reach the
# `sleepyseal` binary that runs cores and drivers. Called by scripts/check.sh:
#
#   scripts/check-planted.sh deps       sleepyseal-bench depends on neither sleepyseal-sim nor a
#                                       feature called "mutants" (before building)
#   scripts/check-planted.sh binaries   no built `sleepyseal` binary carries the planted-fault
#                                       marker, and `sleepyseal-sim` does (after building)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
deps)
  echo "== the node binary links no planted fault (no dependency on sleepyseal-sim, no mutants feature)"
  if cargo tree -p sleepyseal-bench -e normal,features --prefix none --locked \
      | grep -Eq '^sleepyseal-sim |feature "mutants"'; then
    echo "sleepyseal-bench (the node binary) depends on sleepyseal-sim or a mutants feature" >&2
    exit 1
  fi
  ;;
binaries)
  echo "== the built node binaries carry no planted fault (marker: sim/src/planted.rs MARKER)"
  # Every planted fault names the marker, so it is in a binary exactly when a fault is linked into
  # it. The simulator's own binary must carry it (else the search below proves nothing); no
  # `sleepyseal` binary built in target/ may.
  marker=$(sed -n 's/^pub const MARKER: &str = "\(.*\)";$/\1/p' sim/src/planted.rs)
  [[ -n "$marker" ]] || { echo "no MARKER in sim/src/planted.rs" >&2; exit 1; }
  target_dir="${CARGO_TARGET_DIR:-target}"
  sims=0
  for binary in "$target_dir"/*/sleepyseal-sim; do
    [[ -f "$binary" ]] || continue
    grep -qaF "$marker" "$binary" \
      || { echo "the marker is missing from $binary: the search is blind" >&2; exit 1; }
    echo "   $binary: carries the marker (as it must)"
    sims=$((sims + 1))
  done
  [[ "$sims" -gt 0 ]] || { echo "no sleepyseal-sim binary built to check the search against" >&2; exit 1; }
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
  ;;
*)
  echo "usage: scripts/check-planted.sh deps|binaries" >&2
  exit 2
  ;;
esac
