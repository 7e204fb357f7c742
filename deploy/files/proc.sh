# proc.sh: the host side of the start, collect, stop and fetch roles. The roles run it as
# `bash -s -- SUBCOMMAND RUN_DIR ARGS...` with this text on stdin: one round trip per task, no file
# left on the host, and the failure output shows the arguments, not the script.
#
#   launch RUN_DIR DELAY_S [NAME PROGRAM ARGC ARG...]...   start processes, check them after DELAY_S
#   ready RUN_DIR NAME GUARD_S ARG...                       run `./sleepyseal ARG...`, must exit 0
#   wait-exit RUN_DIR TIMEOUT_S NAME...                     wait until the named processes exited
#   after RUN_DIR NAME STDOUT_PATH TIMEOUT_S PROGRAM ARG... run a post-processing command
#   stop RUN_DIR GRACE_S                                    SIGTERM, then SIGKILL, every process ours
#   pack RUN_DIR                                            tar logs/ results/ metrics/ for fetching
#
# Processes are named by the files `launch` writes in <run dir>/pids/:
#   <name>.pid    the pid
#   <name>.start  its start time (clock ticks since boot, /proc/<pid>/stat field 22): with the pid,
#                 it names the process even after the pid is reused
#   <name>.exe    the program it was started with (for the record: the run dir's sleepyseal binary,
#                 or for a process with "exec" the program found on PATH)
# A process is ours while its pid and start time match: the kernel sets the start time at fork and
# no exec changes it, so it stays ours through nohup, setsid and any wrapper that execs the real
# program, however long those take. No process is ever looked up by name or by program. Each runs in the run dir; stdout goes to
# results/<name>.out, stderr to logs/<name>.log. stdin is not read beyond this script's text.
set -uo pipefail

die() {
  echo "$*"
  exit 1
}

# proc_fields PID: prints "STATE STARTTIME" from /proc/PID/stat, or fails when there is no PID.
proc_fields() {
  local stat rest fields
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # The command name (field 2) may hold spaces and parentheses: read after its last ')'.
  rest="${stat##*) }"
  read -r -a fields <<<"$rest"
  echo "${fields[0]} ${fields[19]}"
}

# proc_pid NAME: prints the pid recorded for NAME, or fails.
proc_pid() {
  local pid
  pid="$(cat "pids/$1.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  echo "$pid"
}

# proc_alive PID STATE: the process has a thread left. A thread group leader that exited shows as a
# zombie while its other threads still run (a process in exit_group waiting on a thread in a system
# call): that process is still there.
proc_alive() {
  local tasks
  [[ -n "$2" ]] || return 1
  [[ "$2" != Z && "$2" != X ]] && return 0
  tasks=(/proc/"$1"/task/*)
  [[ -e "${tasks[0]}" && ${#tasks[@]} -gt 1 ]]
}

# proc_is_our_fork NAME: the process recorded for NAME is alive and is the one `launch` forked:
# same pid and start time. Without a recorded start time (the process was gone before `launch`
# could read it), nothing is ours.
proc_is_our_fork() {
  local pid state start
  pid="$(proc_pid "$1")" || return 1
  [[ -f "pids/$1.start" ]] || return 1
  read -r state start <<<"$(proc_fields "$pid")" || return 1
  proc_alive "$pid" "$state" && [[ "$(cat "pids/$1.start")" == "$start" ]]
}

# proc_state NAME: prints one of
#   running PID   alive and our fork (whatever it runs now): ours to stop
#   exited PID    gone (or the pid now names another process): never signalled
#   none          no pid file
proc_state() {
  local pid
  if ! pid="$(proc_pid "$1")"; then
    echo none
  elif proc_is_our_fork "$1"; then
    echo "running $pid"
  else
    echo "exited $pid"
  fi
}

# log_tail NAME: the last lines of a process's stderr and stdout, for failure messages.
log_tail() {
  local file
  for file in "logs/$1.log" "results/$1.out"; do
    [[ -s "$file" ]] || continue
    echo "--- last lines of $file:"
    tail -n 30 "$file"
  done
}

# resolve_pid_refs NAME ARG...: prints each ARG as a NUL-terminated record, with every
# @PID:<other>@ replaced by the pid of <other>, another process of this run dir (errors on stderr).
resolve_pid_refs() {
  local name="$1" arg ref ref_pid
  shift
  for arg in "$@"; do
    while [[ "$arg" == *@PID:*@* ]]; do
      ref="${arg#*@PID:}"
      ref="${ref%%@*}"
      if [[ ! "$ref" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
        echo "$name: bad pid reference in '$arg'" >&2
        return 1
      fi
      if ! ref_pid="$(proc_pid "$ref")"; then
        echo "$name: '$arg' names $ref, which has no pid file here" >&2
        return 1
      fi
      arg="${arg//@PID:$ref@/$ref_pid}"
    done
    printf '%s\0' "$arg"
  done
}

# start_one NAME PROGRAM ARG...: forks one process, detached, and records it in pids/.
start_one() {
  local name="$1" program="$2" found pid fields
  local -a args
  shift 2
  [[ ! -e "pids/$name.pid" ]] || die "$name was already started here (pids/$name.pid): stop the run first"
  if [[ -z "$program" ]]; then
    program="$(pwd -P)/sleepyseal"
  else
    found="$(type -P "$program")" || die "$name: $program is not on PATH ($PATH)"
    program="$(readlink -f "$found")"
  fi
  mapfile -d '' args < <(resolve_pid_refs "$name" "$@")
  [[ ${#args[@]} == "$#" ]] || die "$name: could not resolve its arguments"
  # setsid: its own session, so the end of the SSH session does not signal it (nohup covers
  # SIGHUP too); no job control here, so setsid execs in place and $! is the process itself.
  nohup setsid "$program" "${args[@]}" </dev/null >"results/$name.out" 2>"logs/$name.log" &
  pid=$!
  echo "$pid" >"pids/$name.pid"
  echo "$program" >"pids/$name.exe"
  # Read at once: the kernel cannot reuse the pid before this shell reaps the child. If it is
  # already gone (reaped), no start time is written and the alive check reports it.
  if fields="$(proc_fields "$pid")"; then
    echo "${fields#* }" >"pids/$name.start"
  fi
  echo "$name: started, pid $pid: $program ${args[*]}"
}

cmd_launch() {
  local delay_s="$1" name program argc failed=0 pid
  local -a names=()
  shift
  # Many connections per process: take the hard limit of open files where the soft one is lower.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  while [[ $# -gt 0 ]]; do
    [[ $# -ge 3 ]] || die "launch: truncated process list"
    name="$1" program="$2" argc="$3"
    shift 3
    [[ "$argc" =~ ^[0-9]+$ && $# -ge "$argc" ]] || die "launch: bad argument count for $name"
    start_one "$name" "$program" "${@:1:argc}" || exit 1
    shift "$argc"
    names+=("$name")
  done
  sleep "$delay_s"
  for name in "${names[@]}"; do
    if proc_is_our_fork "$name"; then
      echo "$name: running"
    else
      echo "$name: exited within ${delay_s}s of its start"
      log_tail "$name"
      failed=1
    fi
  done
  return "$failed"
}

cmd_ready() {
  local name="$1" guard_s="$2" rc out
  shift 2
  out="results/$name.ready.out"
  timeout -k 5 "$guard_s" ./sleepyseal "$@" >"$out" 2>&1
  rc=$?
  if [[ "$rc" != 0 ]]; then
    echo "ready command of $name failed (exit $rc): ./sleepyseal $*"
    echo "--- its output:"
    tail -n 30 "$out"
    log_tail "$name"
    return 1
  fi
  echo "$name is ready"
}

cmd_wait_exit() {
  local timeout_s="$1" deadline name
  local -a running
  shift
  deadline=$((SECONDS + timeout_s))
  while :; do
    running=()
    for name in "$@"; do
      [[ "$(proc_state "$name")" == running* ]] && running+=("$name")
    done
    if [[ ${#running[@]} == 0 ]]; then
      echo "exited: $*"
      return 0
    fi
    ((SECONDS < deadline)) || die "still running after ${timeout_s}s: ${running[*]}"
    sleep 0.2
  done
}

cmd_after() {
  local name="$1" stdout_path="$2" timeout_s="$3" rc
  shift 3
  mkdir -p "$(dirname "$stdout_path")"
  timeout -k 5 "$timeout_s" "$@" >"$stdout_path" 2>"logs/$name.after.log"
  rc=$?
  if [[ "$rc" != 0 ]]; then
    echo "after command of $name failed (exit $rc): $*"
    tail -n 30 "logs/$name.after.log"
    return 1
  fi
  echo "$name: wrote $stdout_path ($(wc -c <"$stdout_path") bytes)"
}

# stop GRACE_S: SIGTERM to every process still ours, up to GRACE_S for all of them to exit, then
# SIGKILL (after checking again that the pid is still ours). One line per process.
cmd_stop() {
  local grace_s="$1" pidfile name state pid deadline
  local -a names=() signalled=()
  for pidfile in pids/*.pid; do
    [[ -e "$pidfile" ]] && names+=("$(basename "$pidfile" .pid)")
  done
  [[ ${#names[@]} -gt 0 ]] || echo "nothing to stop: no pid files in $PWD/pids"
  for name in "${names[@]}"; do
    read -r state pid <<<"$(proc_state "$name")"
    case "$state" in
      running) kill -TERM "$pid" 2>/dev/null && signalled+=("$name") ;;
      exited) echo "$name: pid $pid had already exited" ;;
      *) ;;
    esac
  done
  # SECONDS counts whole seconds: one more makes the grace at least grace_s.
  deadline=$((SECONDS + grace_s + 1))
  for name in "${signalled[@]}"; do
    while [[ "$(proc_state "$name")" == running* ]] && ((SECONDS < deadline)); do sleep 0.1; done
    read -r state pid <<<"$(proc_state "$name")"
    if [[ "$state" != running ]]; then
      echo "$name: pid $pid stopped (SIGTERM)"
      continue
    fi
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 50); do
      [[ "$(proc_state "$name")" == running* ]] || break
      sleep 0.1
    done
    echo "$name: pid $pid killed (SIGKILL after ${grace_s}s)"
  done
}

cmd_pack() {
  local dir
  local -a dirs=()
  for dir in logs results metrics; do
    [[ -d "$dir" ]] && dirs+=("$dir")
  done
  [[ ${#dirs[@]} -gt 0 ]] || {
    echo "nothing to fetch: no logs, results or metrics in $PWD"
    return 0
  }
  tar -czf fetch.tar.gz "${dirs[@]}" || die "tar of ${dirs[*]} in $PWD failed"
  echo packed
}

main() {
  local subcommand="${1:-}" run_dir="${2:-}"
  [[ $# -ge 2 ]] || die "usage: proc.sh SUBCOMMAND RUN_DIR ARGS..."
  # This script arrived on stdin and has been read whole: what it runs gets no stdin.
  exec </dev/null
  shift 2
  if [[ ! -d "$run_dir" ]]; then
    case "$subcommand" in
      stop) echo "nothing to stop: no $run_dir" && return 0 ;;
      pack) echo "nothing to fetch: no $run_dir" && return 0 ;;
      *) die "no run directory $run_dir (was prepare.yml run?)" ;;
    esac
  fi
  cd "$run_dir" || die "cannot enter $run_dir"
  case "$subcommand" in
    launch) cmd_launch "$@" ;;
    ready) cmd_ready "$@" ;;
    wait-exit) cmd_wait_exit "$@" ;;
    after) cmd_after "$@" ;;
    stop) cmd_stop "$@" ;;
    pack) cmd_pack ;;
    *) die "unknown subcommand $subcommand" ;;
  esac
}

main "$@"
