"""
Unit tests for ha_restart and ha_restart_helper: how a running salt-minion is
restarted after ``ha.minion_failover(restart=True)``, and the detached helper run
by its file path (real processes, stopped by pid).
"""

import json
import pathlib
import subprocess
import sys
import time

import pytest
from salt.exceptions import CommandExecutionError

import ha_restart
import ha_restart_helper


@pytest.mark.parametrize(
    "cgroup,unit",
    [
        ("0::/system.slice/salt-minion.service\n", "salt-minion.service"),
        ("1:name=systemd:/system.slice/salt-minion@edge.service/x\n", "salt-minion@edge.service"),
        ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
        ("0::/system.slice/docker.service\n", None),
        ("0::/\n", None),
        ("", None),
    ],
)
def test_systemd_unit_only_of_a_salt_minion_service(cgroup, unit):
    assert ha_restart.systemd_unit(cgroup) == unit


def test_restart_plan_prefers_minion_restart_command_then_systemd_then_daemon_argv():
    argv = ["/usr/bin/salt-minion", "-d", "-c", "/etc/salt"]
    unit = "0::/system.slice/salt-minion.service\n"
    by_command = ha_restart.restart_plan(10, 1.5, argv, unit, ["/usr/bin/salt-minion", "-d"])
    assert by_command["method"] == "minion_restart_command"
    assert (by_command["stop_pid"], by_command["stop_created"]) == (10, 1.5)
    by_systemd = ha_restart.restart_plan(10, 1.5, argv, unit)
    assert by_systemd["command"] == ["systemctl", "restart", "--no-block", "salt-minion.service"]
    assert by_systemd["stop_pid"] is None
    by_argv = ha_restart.restart_plan(10, 1.5, argv, "0::/\n")
    assert (by_argv["method"], by_argv["command"], by_argv["stop_pid"]) == (
        "daemon command line", argv, 10,
    )


def test_restart_plan_refuses_a_foreground_minion_without_a_known_supervisor():
    argv = ["/usr/bin/salt-minion", "-c", "/etc/salt", "--disable-keepalive"]
    with pytest.raises(CommandExecutionError, match="cannot restart the salt-minion .pid 10. safely"):
        ha_restart.restart_plan(10, 1.5, argv, "0::/\n")


def test_no_restart_plan_without_a_running_daemon(tmp_path):
    assert ha_restart.daemon_restart_plan(str(tmp_path / "missing.pid")) is None


def test_restart_helper_waits_for_the_job_process_then_runs_the_command(tmp_path):
    marker = tmp_path / "ran"
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        plan = {
            "method": "minion_restart_command",
            "command": ["/bin/sh", "-c", f"echo ran > {marker}"],
            "stop_pid": None,
            "stop_created": None,
            "stop_seconds": 5,
        }
        ha_restart.spawn_restart(plan, wait_pid=job.pid, wait_seconds=30, delay=0)
        time.sleep(1.5)
        assert not marker.exists()  # the job (the state's process) still runs
    finally:
        job.kill()
        job.wait()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == "ran\n"


def test_restart_helper_never_stops_a_process_that_reused_the_pid(tmp_path):
    marker = tmp_path / "ran"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        plan = ha_restart.restart_plan(other.pid, 12345.0, ["salt-minion", "-d"], "", ["/bin/sh", "-c", f"touch {marker}"])
        ha_restart.spawn_restart(plan, wait_pid=None, wait_seconds=0, delay=0)
        time.sleep(2)
        assert other.poll() is None and not marker.exists()
    finally:
        other.kill()
        other.wait()


# --- the helper is a real module, run by its file path -----------------------------------


def helper_plan(command, **changes):
    plan = {
        "method": "minion_restart_command", "daemon_pid": None, "command": command,
        "stop_pid": None, "stop_created": None, "stop_seconds": 5,
        "wait_pid": None, "wait_seconds": 0, "delay": 0,
    }
    return {**plan, **changes}


def test_the_helper_is_launched_by_its_absolute_file_path_with_salts_python():
    command = ha_restart.helper_command({"delay": 0})
    assert command[:2] == [sys.executable, ha_restart_helper.__file__]
    assert command[1].endswith("ha_restart_helper.py") and command[1].startswith("/")
    assert json.loads(command[2]) == {"delay": 0}


def test_the_helper_runs_from_a_copy_anywhere_without_the_pack_on_the_path(tmp_path):
    """As after saltutil.sync_all (extmods/utils) or pip install: it needs only its own file."""
    folder = tmp_path / "extmods" / "utils"
    folder.mkdir(parents=True)
    copy = folder / "ha_restart_helper.py"
    copy.write_bytes(pathlib.Path(ha_restart_helper.__file__).read_bytes())
    marker = tmp_path / "ran"
    plan = helper_plan(["/bin/sh", "-c", f"echo ran > {marker}"])
    done = subprocess.run(
        [sys.executable, str(copy), json.dumps(plan)],
        env={"PATH": "/usr/bin:/bin"}, cwd="/", timeout=30, check=False,
    )
    assert done.returncode == 0
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.read_text() == "ran\n"


def test_the_helper_imports_only_the_standard_library_and_psutil():
    source = pathlib.Path(ha_restart_helper.__file__).read_text(encoding="utf-8")
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported == {"json", "subprocess", "sys", "time", "psutil"}


@pytest.mark.parametrize("argv", [["helper"], ["helper", "not json"]])
def test_the_helper_refuses_a_plan_it_cannot_read(argv):
    assert ha_restart_helper.main(argv) == ha_restart_helper.EXIT_BAD_PLAN


def test_the_helper_starts_nothing_when_the_daemon_does_not_stop(tmp_path):
    marker = tmp_path / "ran"
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"])
    try:
        time.sleep(0.5)  # the SIGTERM handler is in place
        created = ha_restart_helper.psutil.Process(stubborn.pid).create_time()
        plan = helper_plan(["/bin/sh", "-c", f"touch {marker}"], stop_pid=stubborn.pid, stop_created=created, stop_seconds=1)
        assert ha_restart_helper.restart(plan) == ha_restart_helper.EXIT_NOT_STOPPED
        assert stubborn.poll() is None and not marker.exists()
    finally:
        stubborn.kill()
        stubborn.wait()
