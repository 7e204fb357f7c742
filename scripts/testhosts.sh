#!/usr/bin/env bash
# Test hosts for `sleepyseal cluster`: network namespaces on a bridge, each with its own address and
# its own sshd, so the deploy playbooks run over real SSH as they would on cloud hosts.
#
#   scripts/testhosts.sh up N        make hosts ss-h1..ss-hN (1 <= N <= 32) and the controller ss-ctl
#   scripts/testhosts.sh exec CMD... run CMD in the controller namespace (same user, directory, env)
#   scripts/testhosts.sh status      what is up
#   scripts/testhosts.sh down        stop the sshds, delete the namespaces (safe when nothing is up)
#
# Layout (all of it inside namespaces this script makes; nothing in the root namespace):
#   ss-net             holds the bridge ssbr0 and one veth end per host (no address of its own)
#   ss-ctl             the controller, 198.18.0.2/24; run Ansible here (`exec`)
#   ss-h<i>            host i, 198.18.0.<10+i>/24, sshd on port 22, inventory name ss-h<i>
# Files under target/testhosts/:
#   inventory.yml      Ansible inventory: every host in cores, drivers and loads
#   keys/              the client key (id_ed25519) and one host key per host: kept by `down`,
#                      so the next `up` is quick
#   run/               sshd configs, pid files and logs: removed by `down`
#
# Test hosts share this machine's filesystem, PID space and users: only the network is separate.
# A playbook's remote directories are therefore visible from every host and from the controller
# (the playbooks put <inventory_hostname> in every remote path, so hosts do not collide), and
# processes started "on" a host show in the machine's `ps`.
#
# Needs root (namespaces, sshd). Installs Debian's openssh-server when /usr/sbin/sshd is missing.
set -euo pipefail

readonly MAX_HOSTS=32
readonly NET_NS=ss-net
readonly CTL_NS=ss-ctl
readonly HOST_PREFIX=ss-h
readonly BRIDGE=ssbr0
readonly SUBNET_PREFIX=198.18.0
readonly CTL_ADDR=198.18.0.2
readonly SOCKET_BUFFER_BYTES=8388608
readonly SSHD_WAIT_S=15
readonly SSHD_STOP_WAIT_S=5
readonly APT_TIMEOUT_S=600

repo="$(cd "$(dirname "$0")/.." && pwd)"
state="$repo/target/testhosts"
keys="$state/keys"
run="$state/run"
inventory="$state/inventory.yml"

die() {
  echo "testhosts: $*" >&2
  exit 1
}

say() {
  echo "testhosts: $*" >&2
}

host_ns() { echo "$HOST_PREFIX$1"; }
host_addr() { echo "$SUBNET_PREFIX.$((10 + $1))"; }

ns_exists() { [[ -e "/run/netns/$1" ]]; }

# Runs a command in a namespace's network only (filesystem, mounts and PID space stay shared,
# unlike `ip netns exec`, which also remounts /sys).
in_ns() {
  local ns="$1"
  shift
  nsenter --net="/run/netns/$ns" -- "$@"
}

# Our namespaces that exist now, the host ones sorted by number.
our_host_namespaces() {
  local ns
  for ns in $(ip netns list | awk '{print $1}'); do
    [[ "$ns" =~ ^${HOST_PREFIX}[0-9]+$ ]] && echo "$ns"
  done | sort -V
}

require_root() {
  [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces and sshd)"
  command -v ip >/dev/null || die "no ip command (Debian: apt-get install iproute2)"
  command -v nsenter >/dev/null || die "no nsenter (Debian: apt-get install util-linux)"
}

install_sshd() {
  [[ -x /usr/sbin/sshd ]] && return 0
  say "installing openssh-server (apt-get)"
  # Keep the package's maintainer scripts from starting a system sshd in the root namespace.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
  fi
  local rc=0
  { timeout "$APT_TIMEOUT_S" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT_S" \
      apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; } || rc=$?
  if [[ "$made_policy" == 1 ]]; then rm -f "$policy"; fi
  [[ "$rc" == 0 ]] || die "apt-get install openssh-server failed (exit $rc)"
  [[ -x /usr/sbin/sshd ]] || die "openssh-server installed but /usr/sbin/sshd is missing"
}

make_keys() {
  local n="$1" i
  mkdir -p "$keys"
  chmod 0700 "$state" "$keys"
  [[ -f "$keys/id_ed25519" ]] ||
    ssh-keygen -q -t ed25519 -N '' -C sleepyseal-testhosts -f "$keys/id_ed25519"
  cp "$keys/id_ed25519.pub" "$keys/authorized_keys"
  chmod 0600 "$keys/authorized_keys"
  for i in $(seq 1 "$n"); do
    [[ -f "$keys/host-$i" ]] || ssh-keygen -q -t ed25519 -N '' -C "ss-h$i" -f "$keys/host-$i"
  done
}

make_network() {
  local n="$1" i ns
  ip netns add "$NET_NS"
  ip -n "$NET_NS" link set lo up
  ip -n "$NET_NS" link add "$BRIDGE" type bridge
  ip -n "$NET_NS" link set "$BRIDGE" up
  attach "$CTL_NS" ctl "$CTL_ADDR"
  for i in $(seq 1 "$n"); do
    attach "$(host_ns "$i")" "h$i" "$(host_addr "$i")"
  done
  raise_socket_buffers
}

# QUIC wants large UDP buffers. Kernels that namespace net.core.[rw]mem_max let each namespace raise
# them; others (6.18 here) show the root namespace's value read-only, which this script leaves
# alone (it changes nothing outside its namespaces). Best effort either way.
raise_socket_buffers() {
  local ns key value
  for ns in "$CTL_NS" $(our_host_namespaces); do
    for key in rmem_max wmem_max; do
      value="$(in_ns "$ns" cat "/proc/sys/net/core/$key")"
      ((value >= SOCKET_BUFFER_BYTES)) && continue
      if ! in_ns "$ns" sh -c "echo $SOCKET_BUFFER_BYTES > /proc/sys/net/core/$key" 2>/dev/null; then
        say "net.core.$key is not per-namespace here (read-only in $ns): left at $value"
        return 0
      fi
    done
  done
}

# attach NS TAG ADDR: makes namespace NS with eth0 = ADDR/24, its peer v-TAG on the bridge.
attach() {
  local ns="$1" tag="$2" addr="$3"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$NET_NS" link add "v-$tag" type veth peer name eth0 netns "$ns"
  ip -n "$NET_NS" link set "v-$tag" master "$BRIDGE" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
}

write_sshd_config() {
  local i="$1"
  cat >"$run/sshd-$i.conf" <<EOF
# sshd of test host ss-h$i, written by scripts/testhosts.sh
ListenAddress $(host_addr "$i"):22
HostKey $keys/host-$i
PidFile $run/sshd-$i.pid
AuthorizedKeysFile $keys/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
# The keys live in the checkout, which may sit below a world-writable directory (a clone in /tmp):
# sshd's ownership check of every parent directory would refuse them. Throwaway test hosts only.
StrictModes no
# Ansible opens many sessions at once (forks, ControlMaster channels).
MaxStartups 100:30:200
MaxSessions 64
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

start_sshds() {
  local n="$1" i
  mkdir -p "$run" /run/sshd
  for i in $(seq 1 "$n"); do
    write_sshd_config "$i"
    /usr/sbin/sshd -t -f "$run/sshd-$i.conf" || die "sshd rejects $run/sshd-$i.conf"
    in_ns "$(host_ns "$i")" /usr/sbin/sshd -f "$run/sshd-$i.conf" -E "$run/sshd-$i.log" ||
      die "sshd of ss-h$i did not start (see $run/sshd-$i.log)"
  done
}

# Bounded: every sshd must accept our key within SSHD_WAIT_S.
wait_sshds() {
  local n="$1" i deadline=$((SECONDS + SSHD_WAIT_S))
  for i in $(seq 1 "$n"); do
    until in_ns "$CTL_NS" ssh -q -i "$keys/id_ed25519" -o BatchMode=yes -o ConnectTimeout=2 \
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      "root@$(host_addr "$i")" true 2>/dev/null; do
      ((SECONDS < deadline)) || die "sshd of ss-h$i ($(host_addr "$i")) did not answer within ${SSHD_WAIT_S}s (see $run/sshd-$i.log)"
      sleep 0.2
    done
  done
}

write_inventory() {
  local n="$1" i group
  {
    echo "# Test hosts of scripts/testhosts.sh (up $n). Run Ansible from the controller namespace:"
    echo "#   scripts/testhosts.sh exec scripts/ansible.sh ansible-playbook -i $inventory ..."
    echo "all:"
    echo "  vars:"
    echo "    ansible_user: root"
    echo "    ansible_ssh_private_key_file: $keys/id_ed25519"
    echo "    ansible_python_interpreter: /usr/bin/python3"
    echo "    # Throwaway hosts whose keys change with every checkout: no host-key prompts."
    echo "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    echo "  hosts:"
    for i in $(seq 1 "$n"); do
      echo "    $(host_ns "$i"):"
      echo "      ansible_host: $(host_addr "$i")"
    done
    echo "  children:"
    for group in cores drivers loads; do
      echo "    $group:"
      echo "      hosts:"
      for i in $(seq 1 "$n"); do
        echo "        $(host_ns "$i"):"
      done
    done
  } >"$inventory.tmp"
  mv "$inventory.tmp" "$inventory"
}

# Pids of a process's descendants (by parent pid, never by name), deepest last.
descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$child"
    descendants "$child"
  done
}

# Stops the sshd whose pid file is $1, with its sessions, if that pid still is our sshd.
stop_sshd() {
  local pidfile="$1" conf pid pids deadline
  conf="${pidfile%.pid}.conf"
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" != /usr/sbin/sshd ]] ||
    ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$conf"; then
    return 0 # exited, or the pid now belongs to another process
  fi
  pids="$pid $(descendants "$pid" | tr '\n' ' ')"
  # shellcheck disable=SC2086 # word splitting of the pid list is intended
  kill -TERM $pids 2>/dev/null || true
  deadline=$((SECONDS + SSHD_STOP_WAIT_S))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  say "stopped sshd $(basename "$pidfile" .pid) (pid $pid)"
}

# Processes still inside our namespaces (started by playbooks or `exec`): reported, not killed,
# since this script did not start them.
report_leftovers() {
  local ns pids
  for ns in "$CTL_NS" $(our_host_namespaces); do
    ns_exists "$ns" || continue
    pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
    [[ -z "${pids// /}" ]] && continue
    say "warning: processes still in $ns (their namespace lives on until they exit): $pids"
    # shellcheck disable=SC2086
    ps -o pid=,args= -p $pids >&2 || true
  done
}

cmd_down() {
  local pidfile ns
  if [[ -d "$run" ]]; then
    for pidfile in "$run"/sshd-*.pid; do
      if [[ -e "$pidfile" ]]; then stop_sshd "$pidfile"; fi
    done
  fi
  report_leftovers
  for ns in $(our_host_namespaces) "$CTL_NS" "$NET_NS"; do
    ns_exists "$ns" || continue
    ip netns del "$ns" || die "could not delete namespace $ns"
    say "deleted namespace $ns"
  done
  rm -rf "$run" "$inventory" "$inventory.tmp"
  say "down (kept the SSH keys in $keys)"
}

# How many hosts are up with a live sshd each, or nothing when the set is incomplete.
hosts_up() {
  local namespaces count=0 ns i pid
  namespaces="$(our_host_namespaces)"
  [[ -n "$namespaces" ]] && ns_exists "$CTL_NS" && ns_exists "$NET_NS" || return 0
  for ns in $namespaces; do
    count=$((count + 1))
    i="${ns#"$HOST_PREFIX"}"
    [[ "$i" == "$count" ]] || return 0
    pid="$(cat "$run/sshd-$i.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ && "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == /usr/sbin/sshd ]] || return 0
  done
  [[ -f "$inventory" ]] && echo "$count"
}

cmd_up() {
  local n="${1:-}"
  if [[ ! "$n" =~ ^[0-9]{1,3}$ ]] || ((10#$n < 1 || 10#$n > MAX_HOSTS)); then
    die "up N: N must be 1..$MAX_HOSTS (got '${n}')"
  fi
  n=$((10#$n))
  require_root
  if [[ "$(hosts_up)" == "$n" ]]; then
    say "already up: $n hosts; inventory $inventory"
    return 0
  fi
  if [[ -n "$(our_host_namespaces)" ]] || ns_exists "$CTL_NS" || ns_exists "$NET_NS" || [[ -d "$run" ]]; then
    say "another set of test hosts is (partly) up: recreating"
    cmd_down
  fi
  install_sshd
  make_keys "$n"
  make_network "$n"
  start_sshds "$n"
  wait_sshds "$n"
  write_inventory "$n"
  say "up: $n hosts ss-h1..ss-h$n ($(host_addr 1)..$(host_addr "$n")), controller $CTL_NS ($CTL_ADDR)"
  say "inventory: $inventory"
}

cmd_status() {
  local ns i pid sshd n
  if ! ns_exists "$CTL_NS" && [[ -z "$(our_host_namespaces)" ]] && ! ns_exists "$NET_NS"; then
    echo "down"
    return 0
  fi
  n="$(hosts_up)"
  echo "controller: $CTL_NS $(ns_exists "$CTL_NS" && echo "$CTL_ADDR" || echo missing)"
  for ns in $(our_host_namespaces); do
    i="${ns#"$HOST_PREFIX"}"
    pid="$(cat "$run/sshd-$i.pid" 2>/dev/null || true)"
    sshd="no sshd"
    if [[ "$pid" =~ ^[0-9]+$ && "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == /usr/sbin/sshd ]]; then
      sshd="sshd pid $pid"
    fi
    echo "host: $ns $(host_addr "$i") $sshd"
  done
  if [[ -n "$n" ]]; then
    echo "up: $n hosts; inventory $inventory"
  else
    echo "incomplete: run 'scripts/testhosts.sh up N' to recreate or 'down' to clean up"
  fi
}

cmd_exec() {
  [[ $# -ge 1 ]] || die "exec CMD...: no command"
  ns_exists "$CTL_NS" || die "the controller namespace $CTL_NS is not up (scripts/testhosts.sh up N)"
  [[ "$(id -u)" == 0 ]] || die "needs root (nsenter)"
  exec nsenter --net="/run/netns/$CTL_NS" -- "$@"
}

case "${1:-}" in
  up) cmd_up "${2:-}" ;;
  down)
    require_root
    cmd_down
    ;;
  status) cmd_status ;;
  exec)
    shift
    cmd_exec "$@"
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
