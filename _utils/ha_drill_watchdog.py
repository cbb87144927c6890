"""
The freeze of a ``mode=hang`` drill, and the watchdog that always ends it.

A hang drill freezes one master for ``duration`` seconds: SIGSTOP to the
salt-master process and every descendant (its request server, workers, publisher,
engines), so that its TCP connections stay up and nothing answers, exactly what
a hung master does. The freeze is done, and undone, by a *watchdog*: a process of
its own (``python ha_drill_watchdog.py <state file>``), started in a new session
on the frozen master's host by :func:`schedule_freeze` (the receiving runner
``ha.local_drill action=freeze``). It is in no process group of salt-master nor of
the runner that started it, so the restore (SIGCONT to every process it stopped,
at ``thaw_at``) happens when the drilling ``salt-run`` dies, when the drilling
master is the frozen one, and when the runner that asked for the freeze is gone.
SIGTERM or SIGINT to the watchdog thaws at once (an operator's early restore).

The state file (``<cachedir>/ha_drill/freeze.json``, 0600, replaced atomically)
says ``scheduled``, ``frozen``, ``thawed`` or ``failed`` with the times and pids.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil

STATE_FILE = "freeze.json"
START_TIMEOUT = 5.0
STEP = 0.05
ACTIVE = ("scheduled", "frozen")
# salt-master, or a wrapper script named after it (salt-factories: cli_salt_master.py).
MASTER_COMMAND = re.compile(r"salt[-_]master")


def write_state(path, state):
    """Replace the state file atomically (temp file + rename, 0600)."""
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(state, handle, sort_keys=True)
    os.replace(temp, path)


def read_state(path):
    """The state file's content, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def is_active(state):
    """True while a watchdog of ``state`` is alive and has not thawed the master yet."""
    if not state or state.get("state") not in ACTIVE:
        return False
    pid = state.get("watchdog_pid")
    return isinstance(pid, int) and _alive(pid)


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def master_pid(pidfile=None):
    """
    The pid of the running salt-master: the one ``pidfile`` names, else the oldest
    salt-master among this process's ancestors (a runner called through salt-api
    runs in a process the master forked); ValueError when there is none.
    """
    if not pidfile:
        return ancestor_master_pid()
    try:
        with open(pidfile, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the salt-master pid from {pidfile!r}: {err}") from err
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error as err:
        raise ValueError(f"pid {pid} of {pidfile!r} is not running") from err
    if not MASTER_COMMAND.search(cmdline):
        raise ValueError(f"pid {pid} of {pidfile!r} is not a salt-master")
    return pid


def ancestor_master_pid():
    """The oldest ancestor of this process whose command line is a salt-master's; ValueError when none is."""
    found = None
    try:
        for process in psutil.Process().parents():
            if MASTER_COMMAND.search(" ".join(process.cmdline())):
                found = process.pid
    except psutil.Error as err:
        raise ValueError(f"cannot read this process's ancestors: {err}") from err
    if found is None:
        raise ValueError("no pidfile option, and this process does not run under a salt-master")
    return found


def schedule_freeze(state_path, drill_id, pid, freeze_at, thaw_at, python=sys.executable):
    """
    Start the watchdog for a freeze of salt-master ``pid`` from ``freeze_at`` to
    ``thaw_at`` (POSIX times) and wait until it has taken charge (bounded). Returns
    the state it wrote; raises RuntimeError when it did not start.
    """
    write_state(state_path, {"drill": drill_id, "master_pid": pid, "freeze_at": freeze_at, "thaw_at": thaw_at,
                             "state": "starting", "watchdog_pid": None})
    process = subprocess.Popen(  # noqa: S603  (our own script, no shell)
        [python, os.path.abspath(__file__), state_path],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = read_state(state_path) or {}
        if state.get("watchdog_pid") == process.pid and state.get("state") != "starting":
            return state
        if process.poll() is not None:
            break
        time.sleep(STEP)
    raise RuntimeError(f"the freeze watchdog did not start (exit code {process.poll()})")


def _tree(pid):
    """``pid`` and its descendants, this watchdog left out."""
    try:
        root = psutil.Process(pid)
        pids = [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []
    return [item for item in pids if item != os.getpid()]


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Watchdog:
    """The watchdog's run: wait, freeze, wait, thaw; a signal thaws at once."""

    def __init__(self, path):
        self.path = path
        self.state = read_state(path) or {}
        self.frozen = []
        self.stop_early = False

    def _record(self, **changes):
        self.state.update(changes)
        write_state(self.path, self.state)

    def _on_signal(self, _signum, _frame):
        self.stop_early = True

    def _sleep_until(self, when):
        while not self.stop_early and time.time() < when:
            time.sleep(min(STEP, max(0.0, when - time.time())))

    def run(self):
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self._record(state="scheduled", watchdog_pid=os.getpid())
        try:
            self._sleep_until(float(self.state["freeze_at"]))
            if self.stop_early:
                self._record(state="thawed", thawed_at=time.time(), stopped_early=True, frozen_pids=[])
                return 0
            self.frozen = _tree(int(self.state["master_pid"]))
            _signal_all(self.frozen, signal.SIGSTOP)
            self._record(state="frozen", frozen_at=time.time(), frozen_pids=self.frozen)
            self._sleep_until(float(self.state["thaw_at"]))
        finally:
            _signal_all(self.frozen, signal.SIGCONT)
        self._record(state="thawed", thawed_at=time.time(), stopped_early=self.stop_early)
        return 0


def main(argv):
    """``ha_drill_watchdog.py <state file>``: the watchdog's entry point."""
    if len(argv) != 2:
        print("usage: ha_drill_watchdog.py <state file>", file=sys.stderr)
        return 2
    try:
        return Watchdog(argv[1]).run()
    except Exception as err:  # pylint: disable=broad-except  (the state file tells what happened)
        state = read_state(argv[1]) or {}
        state.update(state="failed", error=f"{type(err).__name__}: {err}")
        write_state(argv[1], state)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
