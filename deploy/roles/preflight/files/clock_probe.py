"""Reads a host's clock between two readings of the controller's clock, several times.

    clock_probe.py PROBES TIMEOUT_S SSH_JSON

Runs on the controller. Opens one SSH session to the host in which a shell answers
each line it reads with its clock; each probe is then one write and one read on that session: one
network round trip, no process started on either side. Prints a JSON list of
{"controller_before_ns", "time_ns", "controller_after_ns"}, one per probe; the host read its clock
between the two controller readings of the same probe. Exits non-zero, with the reason on stderr,
when the session fails or an answer does not come within TIMEOUT_S.

SSH_JSON says how to reach the host, from the inventory as Ansible would: {"argv": [ssh and its
options], "shell_args": [option strings such as ansible_ssh_common_args, split like a shell
would], "host": the address}.
"""

import json
import shlex
import signal
import subprocess
import sys
import time

# bash's $EPOCHREALTIME (5.0 and later) reads the clock without starting a process; date otherwise.
REMOTE = (
    "exec bash -c 'while read -r _; do t=$EPOCHREALTIME; "
    'if [ -n "$t" ]; then echo "$t"; else date +%s.%N; fi; done\''
)


def to_ns(reading: str) -> int:
    """'SECONDS.FRACTION' (either decimal mark) to integer nanoseconds."""
    seconds, _, fraction = reading.strip().replace(",", ".").partition(".")
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


def on_timeout(_signum, _frame):
    sys.exit("clock probe: no answer in time")


def main() -> None:
    probes, timeout_s, spec = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    ssh = list(spec["argv"])
    for options in spec["shell_args"]:
        ssh += shlex.split(options)
    ssh.append(spec["host"])
    signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(timeout_s)
    session = subprocess.Popen(
        ssh + [REMOTE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    readings = []
    for _ in range(probes):
        before = time.time_ns()
        session.stdin.write("\n")
        session.stdin.flush()
        line = session.stdout.readline()
        after = time.time_ns()
        if not line:
            session.kill()
            sys.exit(f"clock probe: the session ended: {session.stderr.read().strip()}")
        readings.append(
            {"controller_before_ns": before, "time_ns": to_ns(line), "controller_after_ns": after}
        )
    session.stdin.close()
    session.wait()
    print(json.dumps(readings))


if __name__ == "__main__":
    main()
