#!/usr/bin/env bash
# Runs one of inferno's tools (the flamegraph renderer), installing it into target/tools on first
# use:  scripts/inferno.sh collapse-perf|flamegraph [ARGS...]
#       scripts/inferno.sh --install     (just install; needs crates.io, so run it outside a
#                                         test-host namespace before `cluster --flamegraph`)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=0.12.8
tools="$root/target/tools"
tool="${1:?usage: scripts/inferno.sh collapse-perf|flamegraph|--install [ARGS...]}"
shift
if [[ ! -x "$tools/bin/inferno-flamegraph" ]] || ! grep -qx "$version" "$tools/inferno.version" 2>/dev/null; then
  echo "== installing inferno $version into $tools" >&2
  cargo install inferno --version "$version" --locked --root "$tools" --quiet >&2
  echo "$version" >"$tools/inferno.version"
fi
[[ "$tool" == "--install" ]] && exit 0
exec "$tools/bin/inferno-$tool" "$@"
