#!/usr/bin/env bash
# Runs one of inferno's tools (the flamegraph renderer), installing it into target/tools on first
# use:  scripts/inferno.sh collapse-perf|flamegraph [ARGS...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=0.12.8
tools="$root/target/tools"
tool="${1:?usage: scripts/inferno.sh collapse-perf|flamegraph [ARGS...]}"
shift
if [[ ! -x "$tools/bin/inferno-$tool" ]] || ! grep -qx "$version" "$tools/inferno.version" 2>/dev/null; then
  echo "== installing inferno $version into $tools" >&2
  cargo install inferno --version "$version" --locked --root "$tools" --quiet >&2
  echo "$version" >"$tools/inferno.version"
fi
exec "$tools/bin/inferno-$tool" "$@"
