"""
Exec a command once a given process has been reaped: the lab's ``minion_restart_command``
(see :func:`tests.support.state_lab.set_daemon_restart_command`).

Salt refuses to start while the process in ``run/process_responsibility_minion.pid``
exists, and a zombie exists: the foreground minion stopped by the restart helper
stays a zombie until salt-factories (its parent, in the pytest process) reaps it,
whereas a daemon's parent (init, systemd) reaps at once. So this waits (bounded)
until that process is gone, then execs the command.

Run by path: ``<python> exec_when_reaped.py <responsibility file> <seconds> <command...>``.
"""

import json
import os
import sys
import time

import psutil


def responsible_pid(path):
    """The pid recorded in Salt's process responsibility file, or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            pid = json.load(handle).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def main(argv):
    """Wait (at most ``argv[2]`` seconds) for the pid in ``argv[1]`` to be gone, then exec ``argv[3:]``."""
    path, seconds, command = argv[1], float(argv[2]), argv[3:]
    pid = responsible_pid(path)
    deadline = time.monotonic() + seconds
    while pid is not None and psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
