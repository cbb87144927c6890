"""
The detached program that restarts a salt-minion once the job that asked for it has
ended (``ha.minion_failover(restart=True)``, planned and launched by :mod:`ha_restart`).

Run as ``<python> <path of this file> <JSON plan>``, in its own session without
stdio, by the Python that runs Salt. It imports only the standard library and
psutil (a Salt dependency), so it runs the same whether the pack was synced to
``extmods`` or pip-installed. The plan is :func:`ha_restart.restart_plan`'s dict plus
``wait_pid``, ``wait_seconds`` and ``delay``.

Exit codes: 0 restarted (the command was started), 2 the daemon did not stop within
``stop_seconds`` (nothing started), 3 the pid belongs to another process by now
(nothing stopped, nothing started), 64 the plan cannot be read.
"""

import json
import subprocess
import sys
import time

import psutil

POLL_SECONDS = 0.2
EXIT_NOT_STOPPED = 2
EXIT_PID_REUSED = 3
EXIT_BAD_PLAN = 64


def running(pid):
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid, seconds):
    """Wait (at most ``seconds``) until ``pid`` is gone; whether it is."""
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return not running(pid)


def stop_daemon(pid, created, seconds):
    """
    SIGTERM the daemon ``pid`` if it is still the process started at ``created``,
    then wait for it: the exit code to end with, or None when it is gone.
    """
    try:
        daemon = psutil.Process(pid)
        if daemon.create_time() != created:
            return EXIT_PID_REUSED
        daemon.terminate()
    except psutil.NoSuchProcess:
        pass
    return None if wait_gone(pid, seconds) else EXIT_NOT_STOPPED


def restart(plan):
    """Carry out ``plan``: wait for the job, wait ``delay``, stop the daemon if planned, run the command."""
    if plan["wait_pid"]:
        wait_gone(plan["wait_pid"], plan["wait_seconds"])
    time.sleep(plan["delay"])
    if plan["stop_pid"]:
        code = stop_daemon(plan["stop_pid"], plan["stop_created"], plan["stop_seconds"])
        if code is not None:
            return code
    subprocess.Popen(  # pylint: disable=consider-using-with  (detached: never waited for)
        plan["command"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
    )
    return 0


def main(argv=None):
    """Entry point: ``argv[1]`` is the JSON plan. Returns the exit code."""
    argv = sys.argv if argv is None else argv
    try:
        plan = json.loads(argv[1])
    except (IndexError, ValueError):
        return EXIT_BAD_PLAN
    return restart(plan)


if __name__ == "__main__":
    sys.exit(main())
