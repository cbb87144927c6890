"""
Restarting a running salt-minion safely from a job it runs, for
``ha.minion_failover(restart=True)``.

Salt's own ``minion.restart`` kills the daemon from inside the job, before the job's
return is sent (in 3008 the return goes out through the daemon's main process), so
the master never gets it. Here :func:`restart_plan` chooses how to restart, in the
order ``minion.restart`` uses, and :func:`spawn_restart` launches the detached
program :mod:`ha_restart_helper`, which first waits until the job's process has
ended.

The helper is started by its file path (``<python> <path of ha_restart_helper.py>
<JSON plan>``): after a ``saltutil.sync_all`` the pack's utils are importable only
inside Salt's loader, after ``pip install`` only through the ``salt_ha`` package, but
in both cases the imported module's ``__file__`` is the file to run.
"""

import json
import os
import re
import subprocess
import sys

import psutil
import salt.utils.files
from salt.exceptions import CommandExecutionError

import ha_connection
import ha_restart_helper

SYSTEMD_UNIT = re.compile(r"/(salt-minion[\w@.-]*\.service)(?:/|$)")
STOP_SECONDS = 30


def systemd_unit(cgroup_text):
    """The ``salt-minion*.service`` unit named in a /proc/<pid>/cgroup text, or None."""
    for line in (cgroup_text or "").splitlines():
        match = SYSTEMD_UNIT.search(line.split(":", 2)[-1])
        if match:
            return match.group(1)
    return None


def restart_plan(pid, created, cmdline, cgroup_text, restart_command=None):
    """
    How to restart the salt-minion daemon ``pid`` safely, in the order
    ``minion.restart`` uses: ``minion_restart_command`` (stop the daemon, then run
    it), its systemd unit (``systemctl restart --no-block``), a daemonized minion
    (``-d``: stop it, then run its own command line again). Raises
    ``CommandExecutionError`` saying why when none applies (a foreground minion
    without a supervisor Salt knows about).

    Returns ``{"method", "daemon_pid", "command", "stop_pid", "stop_created",
    "stop_seconds"}`` (JSON-able; ``stop_pid`` None when nothing is to be stopped).
    """
    if restart_command:
        command = [restart_command] if isinstance(restart_command, str) else list(restart_command)
        method = "minion_restart_command"
        stop = True
    elif systemd_unit(cgroup_text):
        command = ["systemctl", "restart", "--no-block", systemd_unit(cgroup_text)]
        method = "systemd"
        stop = False
    elif "-d" in cmdline or "--daemon" in cmdline:
        command, method, stop = list(cmdline), "daemon command line", True
    else:
        raise CommandExecutionError(
            f"cannot restart the salt-minion (pid {pid}) safely: it is not a salt-minion "
            "systemd unit, not daemonized (-d) and minion_restart_command is not set; "
            "set minion_restart_command or restart it yourself"
        )
    return {
        "method": method,
        "daemon_pid": pid,
        "command": command,
        "stop_pid": pid if stop else None,
        "stop_created": created if stop else None,
        "stop_seconds": STOP_SECONDS,
    }


def daemon_restart_plan(pidfile, restart_command=None):
    """
    :func:`restart_plan` for the salt-minion daemon in ``pidfile``; None when no
    daemon runs (the new settings apply when it starts).
    """
    pid = ha_connection.read_pid(pidfile) if pidfile else None
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        cmdline, created = process.cmdline(), process.create_time()
    except psutil.Error as err:
        raise CommandExecutionError(f"cannot inspect the salt-minion pid {pid}: {err}") from err
    try:
        with salt.utils.files.fopen(f"/proc/{pid}/cgroup", "r") as handle:
            cgroup_text = handle.read()
    except OSError:
        cgroup_text = ""
    return restart_plan(pid, created, cmdline, cgroup_text, restart_command)


def helper_command(payload):
    """The command line that runs :mod:`ha_restart_helper` with ``payload`` (JSON-able)."""
    return [sys.executable, os.path.abspath(ha_restart_helper.__file__), json.dumps(payload)]


def spawn_restart(plan, wait_pid, wait_seconds, delay):
    """
    Launch the detached restart helper (own session, no stdio) and return its pid.
    It waits for ``wait_pid`` (the process running the state, so that its return
    reaches the master first; bounded by ``wait_seconds``), then ``delay`` seconds,
    then restarts as ``plan`` (:func:`restart_plan`) says.
    """
    payload = {**plan, "wait_pid": wait_pid, "wait_seconds": wait_seconds, "delay": delay}
    helper = subprocess.Popen(  # pylint: disable=consider-using-with  (detached: never waited for)
        helper_command(payload),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd="/",
    )
    return helper.pid
