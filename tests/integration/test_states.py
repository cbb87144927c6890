"""
The ``ha`` states on real daemons, applied from the shipped examples.

1. A minion configured for master A only gets ``ha.minion_failover`` from pillar
   through ``state.apply`` (``test=True`` first, then for real, then again: no
   changes), is restarted, and survives SIGKILL of master A by answering through B.
2. Master B built with another key: a minion failing over to it cannot sign in;
   ``ha.master_keypair`` (the example ``ha.master`` state, key from pillar) fixes
   B's 3008-layout pki dir; after B restarts, a minion failing over from A (killed
   again) reaches B cleanly.

3. ``restart=True`` on a real minion: its return reaches master A, then the
   restart helper stops it and its ``minion_restart_command`` starts it again
   daemonized with the new drop-in; it then fails over to B when A is killed.

salt-factories runs minions in the foreground without a supervisor, so the lab
pillar sets ``restart: False``: test 1 restarts the minion itself, test 3 gives
it a ``minion_restart_command`` (``state_lab.set_daemon_restart_command``).
"""

import pathlib
import time

import pytest
import yaml

import ha_keys
from tests.support import lab as lablib
from tests.support import state_lab

pytestmark = pytest.mark.integration

DROPIN = "ha-failover.conf"


def only_result(data):
    (result,) = state_lab.state_results(data)
    return result


@pytest.fixture
def single_master_lab(salt_factories, tmp_path):
    """Masters A (serving the examples) and B; a minion configured for A only."""
    lab = lablib.Lab(salt_factories, tmp_path)
    minion_pillar = {"masters": list(lab.ips), "alive_interval": 2, "restart": False}
    pillar = state_lab.pillar_root(tmp_path / "pillar", {"ha": {"minion": minion_pillar}})
    lab.add_master("a", lablib.LOOPBACK_A, overrides=state_lab.example_roots(pillar))
    lab.add_master("b", lablib.LOOPBACK_B)
    state_lab.add_single_master_minion(lab, "ha-state-minion")
    with lablib.RunningDaemons(lablib.daemons(lab)):
        yield lab


def test_failover_from_pillar_then_master_a_killed_minion_answers_through_b(single_master_lab):
    lab = single_master_lab
    minion = lab.minions["ha-state-minion"]
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    dropin = state_lab.dropin_path(minion, DROPIN)
    cli = master_a.salt_cli(timeout=120)

    # restart=True cannot be honoured for a foreground minion without a supervisor:
    # refused before anything is written.
    refused = cli.run(
        "state.apply", "ha.minion", 'pillar={"ha": {"minion": {"restart": true}}}',
        minion_tgt=minion.id,
    )
    result = only_result(refused.data)
    assert result["result"] is False and "cannot restart the salt-minion" in result["comment"]
    assert not dropin.exists()

    predicted = cli.run("state.apply", "ha.minion", "test=True", minion_tgt=minion.id)
    assert predicted.returncode == 0, predicted.stdout
    result = only_result(predicted.data)
    assert result["result"] is None, result
    assert result["changes"]["master"] == {"old": None, "new": list(lab.ips)}
    assert not dropin.exists()

    applied = cli.run("state.apply", "ha.minion", minion_tgt=minion.id)
    assert applied.returncode == 0, applied.stdout
    result = only_result(applied.data)
    assert result["result"] is True, result
    assert result["changes"]["master_type"] == {"old": None, "new": "failover"}
    assert "restart required" in result["comment"]
    written = yaml.safe_load(dropin.read_text())
    assert (written["master"], written["master_type"]) == (list(lab.ips), "failover")

    again = cli.run("state.apply", "ha.minion", minion_tgt=minion.id)
    result = only_result(again.data)
    assert (result["result"], result["changes"]) == (True, {})

    lablib.terminate(minion)
    minion.start()
    assert lablib.answers_through(master_a, minion.id, 30) is not None, "no answer through A after restart"
    status = cli.run("ha.status", "timeout=2", minion_tgt=minion.id)
    assert status.data["total"] == 2 and status.data["connected"] == lablib.LOOPBACK_A, status.data

    lablib.kill(master_a)
    assert lablib.answers_through(master_b, minion.id, 30) is not None, "no answer through B within 30 s"


@pytest.fixture
def split_key_lab(salt_factories, tmp_path):
    """Master B built with a key of its own; a failover minion accepted on A and B."""
    lab = lablib.Lab(salt_factories, tmp_path)
    lab.add_master("a", lablib.LOOPBACK_A)
    lab.add_master("b", lablib.LOOPBACK_B, keypair=lablib.make_keypair(tmp_path / "b-own-key"))
    lab.add_failover_minion("ha-key-minion")
    with lablib.RunningDaemons(lablib.daemons(lab)):
        yield lab


def test_master_keypair_makes_a_master_with_another_key_a_failover_target(split_key_lab, tmp_path):
    lab = split_key_lab
    minion = lab.minions["ha-key-minion"]
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    pki = pathlib.Path(master_b.config["pki_dir"])
    shared_pem, shared_pub = (path.read_text() for path in lab.keypair)
    assert (pki / "master.pem").is_symlink()  # Salt 3008 layout after the first start
    assert ha_keys.fingerprint_file(pki / "master.pub") != ha_keys.fingerprint(shared_pub)

    lablib.kill(master_a)
    assert lablib.answers_through(master_b, minion.id, 10) is None, "B answered with another key"

    master_pillar = {"pki_dir": str(pki), "private_key": shared_pem, "public_key": shared_pub}
    pillar = state_lab.pillar_root(tmp_path / "pillar", {"ha": {"master": master_pillar}})
    ret = minion.salt_call_cli(timeout=120).run(
        "--local",
        f"--file-root={state_lab.STATE_TREE}",
        f"--pillar-root={pillar}",
        "state.apply",
        "ha.master",
    )
    assert ret.returncode == 0, ret.stdout[-3000:]
    results = {item["__id__"]: item for item in state_lab.state_results(ret.data)}
    keypair = results["ha-master-keypair"]
    assert keypair["result"] is True, keypair
    assert keypair["changes"]["master.pub"]["new"] == ha_keys.fingerprint(shared_pub)
    assert results["ha-master-config"]["result"] is True
    assert "PRIVATE KEY" not in ret.stdout and shared_pem.splitlines()[1] not in ret.stdout
    assert (pki / "master.pem").is_symlink()
    assert ha_keys.fingerprint_file(pki / "master.pub") == ha_keys.fingerprint(shared_pub)

    # The stuck minion keeps B's old key in memory: start over with A up, then kill A again.
    lablib.terminate(master_b)
    master_b.start()
    master_a.start()
    lablib.terminate(minion)
    minion.start()
    assert lablib.answers_through(master_a, minion.id, 30) is not None, "no answer through A after restart"
    lablib.kill(master_a)
    assert lablib.answers_through(master_b, minion.id, 30) is not None, "no failover to B after the key fix"


@pytest.fixture
def restartable_minion_lab(salt_factories, tmp_path):
    """
    As ``single_master_lab``, but the minion has a ``minion_restart_command`` that
    starts it again daemonized (``-d``), so ``restart=True`` can really restart it.
    The daemonized minion is not tracked by salt-factories: stopped here by its pid.
    """
    lab = lablib.Lab(salt_factories, tmp_path)
    minion_pillar = {"masters": list(lab.ips), "alive_interval": 2, "restart": False}
    pillar = state_lab.pillar_root(tmp_path / "pillar", {"ha": {"minion": minion_pillar}})
    lab.add_master("a", lablib.LOOPBACK_A, overrides=state_lab.example_roots(pillar))
    lab.add_master("b", lablib.LOOPBACK_B)
    minion = state_lab.add_single_master_minion(lab, "ha-rst-minion")
    state_lab.set_daemon_restart_command(minion)
    foreground_pid = None
    try:
        with lablib.RunningDaemons(lablib.daemons(lab)):
            foreground_pid = minion.pid
            yield lab
    finally:
        # A restart still under way when a test fails may start the daemon late:
        # give it a bounded moment (no wait when it already runs), then stop it by pid.
        deadline = time.monotonic() + 10
        pid = state_lab.pidfile_pid(minion)
        while pid in (None, foreground_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            pid = state_lab.pidfile_pid(minion)
        if pid not in (None, foreground_pid):
            state_lab.stop_pid_tree(pid, seconds=0)  # the test is over: no SIGTERM stop to wait for


def test_restart_true_restarts_a_real_minion_which_then_fails_over(restartable_minion_lab):
    lab = restartable_minion_lab
    minion = lab.minions["ha-rst-minion"]
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    dropin = state_lab.dropin_path(minion, DROPIN)
    cli = master_a.salt_cli(timeout=120)
    old_pid = state_lab.pidfile_pid(minion)
    assert old_pid == minion.pid, (old_pid, minion.pid)

    applied = cli.run(
        "state.apply", "ha.minion", 'pillar={"ha": {"minion": {"restart": true}}}',
        minion_tgt=minion.id,
    )
    assert applied.returncode == 0, applied.stdout
    result = only_result(applied.data)  # the return reached master A before the restart
    assert result["result"] is True, result
    assert "restarts in the background (minion_restart_command" in result["comment"], result
    assert yaml.safe_load(dropin.read_text())["master_type"] == "failover"

    # The new daemon writes its pidfile before it is connected: a job published before
    # then is missed, so each ha.status gets a short salt --timeout of its own.
    status_cli = master_a.salt_cli(timeout=10)
    deadline = time.monotonic() + 60
    new_pid = status = None
    while time.monotonic() < deadline:
        minion.is_running()  # reaps the stopped foreground minion (see state_lab)
        new_pid = state_lab.pidfile_pid(minion)
        if new_pid not in (None, old_pid):
            ret = status_cli.run("ha.status", "timeout=2", minion_tgt=minion.id)
            status = ret.data if ret.returncode == 0 else None
            if isinstance(status, dict) and status.get("total") == 2:
                break
        time.sleep(0.2)
    assert new_pid not in (None, old_pid), f"pidfile still holds {new_pid} (old {old_pid})"
    assert not minion.is_running(), "the foreground minion was not stopped"
    assert isinstance(status, dict) and status.get("total") == 2, status
    assert status["connected"] == lablib.LOOPBACK_A, status

    lablib.kill(master_a)
    assert lablib.answers_through(master_b, minion.id, 30) is not None, "no answer through B within 30 s"
