"""
Support for the ``ha`` state integration tests, on top of :mod:`tests.support.lab`.

The examples are used as they ship: master A serves ``examples/salt`` as its
file_roots and a pillar root made of ``examples/pillar`` plus one ``lab.sls``
that overrides only what the lab must (loopback masters, no self-restart).
"""

import pathlib
import shutil
import sys

import psutil
import yaml

from tests.support import lab as lablib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
STATE_TREE = EXAMPLES / "salt"


def pillar_root(folder, lab_pillar):
    """``examples/pillar`` copied to ``folder``, with ``lab.sls`` (``lab_pillar``) merged last."""
    folder = pathlib.Path(folder)
    shutil.copytree(EXAMPLES / "pillar", folder)
    (folder / "lab.sls").write_text(yaml.safe_dump(lab_pillar, default_flow_style=False))
    top = yaml.safe_load((folder / "top.sls").read_text())
    top["base"]["*"].append("lab")
    (folder / "top.sls").write_text(yaml.safe_dump(top, default_flow_style=False))
    return folder


def example_roots(pillar_folder):
    """Master options serving the example state tree and ``pillar_folder``."""
    return {
        "file_roots": {"base": [str(STATE_TREE)]},
        "pillar_roots": {"base": [str(pillar_folder)]},
    }


def add_single_master_minion(lab, minion_id, accept_on=("a", "b"), overrides=None):
    """A minion configured for master A only (plain ``master: <A>``), not started."""
    publish, ret = lab.ports
    options = {"master": lablib.LOOPBACK_A, "master_port": ret, "publish_port": publish}
    options.update(overrides or {})
    factory = lab.masters["a"].salt_minion_daemon(minion_id, overrides=options)
    lab.seed_minion_key(factory, accept_on)
    for name in accept_on:
        lab.keys.allow(lab.masters[name].id, minion_id)
    lab.minions[minion_id] = factory
    return factory


def dropin_path(minion, filename):
    """Where a ``minion.d`` drop-in of this minion factory lives."""
    return pathlib.Path(minion.config["conf_file"]).parent / "minion.d" / filename


def state_results(data):
    """The state returns of a ``state.apply``/``state.sls`` return, in run order."""
    assert isinstance(data, dict), data
    return sorted(data.values(), key=lambda item: item.get("__run_num__", 0))


RESTART_COMMAND_DROPIN = "lab-restart-command.conf"

EXEC_WHEN_REAPED = pathlib.Path(__file__).resolve().parent / "exec_when_reaped.py"


def set_daemon_restart_command(minion, reap_wait=30):
    """
    Give a (not started) minion factory a ``minion_restart_command`` (in a
    ``minion.d`` drop-in) that starts the same minion again daemonized (``-d``
    writes the pidfile), once the stopped one has been reaped (see
    :mod:`tests.support.exec_when_reaped`; the test must keep polling ``minion.is_running()``).
    salt-factories runs minions in the foreground with ``--disable-keepalive``,
    which ``ha.minion_failover`` cannot restart otherwise.
    """
    pidfile = pathlib.Path(minion.config["pidfile"])
    responsibility = pidfile.parent / f"process_responsibility_{pidfile.name}"
    daemon = [str(part) for part in minion.cmdline("-d")]
    command = [sys.executable, str(EXEC_WHEN_REAPED), str(responsibility), str(reap_wait), *daemon]
    path = dropin_path(minion, RESTART_COMMAND_DROPIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"minion_restart_command": command}, default_flow_style=False))
    return command


def pidfile_pid(minion):
    """The pid in the minion's pidfile if that process is alive, else None."""
    try:
        pid = int(pathlib.Path(minion.config["pidfile"]).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return pid


def stop_pid_tree(pid, seconds=30):
    """
    Stop one daemon by pid (one not tracked by salt-factories): SIGTERM it, wait
    (bounded, ``seconds``; 0: no wait), then SIGKILL it and whatever of its process
    tree (listed before the SIGTERM, matched by start time) is still there. Returns
    the pids it found.
    """
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    try:
        root.terminate()
    except psutil.NoSuchProcess:
        pass
    _gone, alive = psutil.wait_procs(tree, timeout=seconds)
    for process in alive:  # psutil.Process checks the start time: no reused pid is hit
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return [process.pid for process in tree]
