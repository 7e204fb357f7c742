#!/usr/bin/env bash
# Runs a tool of a pinned ansible-core, installing it into a virtual environment on first use.
#
#   scripts/ansible.sh ansible-playbook ARGS...   run a tool from the venv (any ansible* program)
#   scripts/ansible.sh --install                  install only; print the venv's bin directory
#
# - The venv lives in target/tools/ansible-venv; a stamp file there names the installed version, so
#   later calls only compare the stamp and exec (no network, no pip): this is what lets the tools run
#   inside a network namespace without internet after one install outside it.
# - ANSIBLE_CONFIG defaults to deploy/ansible.cfg (Ansible ignores an ansible.cfg in the working
#   directory when that directory is world-writable, and the harness may run from anywhere).
# - Installation is serialised with flock, so two harness runs starting together do not race.
# - Python: $SLEEPYSEAL_PYTHON or python3, 3.11 or newer (what ansible-core 2.19 needs on the
#   controller). Hosts need only /usr/bin/python3 3.8 or newer.
set -euo pipefail

readonly ANSIBLE_CORE_VERSION=2.19.14
readonly PIP_TIMEOUT_S=600

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/target/tools/ansible-venv"
stamp="$venv/.sleepyseal-stamp"
python="${SLEEPYSEAL_PYTHON:-python3}"

die() {
  echo "scripts/ansible.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The stamp names the pinned version and the interpreter the venv was made from: a change of
# either (a new pin, another python) reinstalls.
wanted_stamp() {
  echo "ansible-core==$ANSIBLE_CORE_VERSION python=$(command -v "$python")"
}

installed() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$(wanted_stamp)" && -x "$venv/bin/ansible-playbook" ]]
}

check_python() {
  command -v "$python" >/dev/null ||
    die "no $python on PATH (Debian: apt-get install python3 python3-venv)"
  "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
    die "$python is $("$python" -V 2>&1); ansible-core $ANSIBLE_CORE_VERSION needs 3.11 or newer"
  "$python" -c 'import venv, ensurepip' 2>/dev/null ||
    die "$python lacks the venv/ensurepip modules (Debian: apt-get install python3-venv)"
}

install() {
  installed && return 0
  check_python
  mkdir -p "$(dirname "$venv")"
  exec 9>"$(dirname "$venv")/.ansible-venv.lock"
  flock -w "$PIP_TIMEOUT_S" 9 || die "another install holds $(dirname "$venv")/.ansible-venv.lock"
  if installed; then
    return 0
  fi
  echo "scripts/ansible.sh: installing ansible-core $ANSIBLE_CORE_VERSION into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv" || die "python -m venv $venv failed (Debian: apt-get install python3-venv)"
  if ! timeout "$PIP_TIMEOUT_S" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "ansible-core==$ANSIBLE_CORE_VERSION" >&2; then
    rm -rf "$venv"
    die "pip install ansible-core==$ANSIBLE_CORE_VERSION failed (no network to PyPI? run it once outside the namespace)"
  fi
  wanted_stamp >"$stamp"
}

[[ $# -ge 1 ]] || usage
case "$1" in
  --install)
    install
    echo "$venv/bin"
    exit 0
    ;;
  -h | --help) usage ;;
  ansible | ansible-*) ;;
  *) die "unknown tool '$1' (expected ansible, ansible-playbook, ansible-inventory, ... or --install)" ;;
esac

tool="$1"
shift
installed || install
[[ -x "$venv/bin/$tool" ]] || die "$tool is not a program of ansible-core (not in $venv/bin)"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$repo/deploy/ansible.cfg}"
# ansible-core refuses to run under a non-UTF-8 locale.
if ! "$venv/bin/python" -c 'import locale, sys; sys.exit(0 if locale.getpreferredencoding(False).lower() in ("utf-8", "utf8") else 1)' 2>/dev/null; then
  export LC_ALL=C.UTF-8
fi
exec "$venv/bin/$tool" "$@"
