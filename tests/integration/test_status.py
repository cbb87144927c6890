"""``salt-call ha.status`` against real masters: both up, one frozen, one killed."""

import time

import pytest

from tests.support import lab as lablib

pytestmark = pytest.mark.integration

TIMEOUT = 2


@pytest.fixture(autouse=True)
def lab_as_started(ha_lab):
    """The killing test runs last; run in another order, the tests after it get the lab back as it started."""
    lablib.bring_back(ha_lab)


def ha_status(minion, *args, timeout=60):
    ret = minion.salt_call_cli(timeout=timeout).run("ha.status", f"timeout={TIMEOUT}", *args)
    assert ret.returncode == 0, ret.stderr[-3000:] + ret.stdout[-2000:]
    return ret.data


def by_master(status):
    return {entry["master"]: entry for entry in status["masters"]}


def test_both_masters_up_and_connected_a(ha_lab):
    minion = ha_lab.minions["ha-minion-1"]
    status = ha_status(minion)
    masters = by_master(status)
    assert status["total"] == 2
    assert status["up"] == 2, status
    assert status["connected"] == lablib.LOOPBACK_A
    assert masters[lablib.LOOPBACK_A]["connected"] is True
    assert masters[lablib.LOOPBACK_B]["connected"] is False
    for entry in masters.values():
        assert entry["up"] is True
        assert entry["error"] is None
        assert 0 < entry["latency_ms"] < 1000
        assert entry["ret_port"] == ha_lab.ports[1]
        assert entry["publish_port"] == ha_lab.ports[0]
    assert status["failover_ready"] is True
    assert not [f for f in status["findings"] if f["severity"] == "error"]


def test_status_inside_the_daemon_knows_its_master(ha_lab):
    minion = ha_lab.minions["ha-minion-1"]
    ret = ha_lab.masters["a"].salt_cli(timeout=60).run(
        "ha.status", f"timeout={TIMEOUT}", minion_tgt=minion.id
    )
    assert ret.returncode == 0, ret.stderr
    assert ret.data["connected"] == lablib.LOOPBACK_A
    assert ret.data["up"] == 2


def test_check_ok_through_the_cli_with_retcode_passthrough(ha_lab):
    minion = ha_lab.minions["ha-minion-1"]
    ret = minion.salt_call_cli(timeout=60).run(
        "--local", "--retcode-passthrough", "ha.check", f"timeout={TIMEOUT}"
    )
    assert ret.returncode == 0, ret.stdout
    assert ret.data.startswith("SALT-HA OK - all masters answer: 2/2 masters up, connected 127.0.0.1")


def test_connected_master_frozen_is_critical(ha_lab):
    minion = ha_lab.minions["ha-minion-1"]
    master_a = ha_lab.masters["a"]
    with lablib.frozen(master_a):
        ret = minion.salt_call_cli(timeout=60).run(
            "--local", "--retcode-passthrough", "ha.check", f"timeout={TIMEOUT}"
        )
    assert ret.returncode == 2, ret.stdout
    assert ret.data.startswith("SALT-HA CRITICAL - connected master 127.0.0.1 does not answer")


def test_frozen_master_b_is_down_within_about_one_timeout(ha_lab):
    minion = ha_lab.minions["ha-minion-1"]
    master_b = ha_lab.masters["b"]
    with lablib.frozen(master_b):
        started = time.monotonic()
        ret = minion.salt_call_cli(timeout=60).run("--local", "ha.status", f"timeout={TIMEOUT}")
        elapsed = time.monotonic() - started
    assert ret.returncode == 0, ret.stderr[-3000:] + ret.stdout[-2000:]
    masters = by_master(ret.data)
    frozen = masters[lablib.LOOPBACK_B]
    assert frozen["up"] is False
    assert frozen["publish_port_open"] is True  # TCP still accepted: only the ping tells
    assert "no answer" in frozen["error"]
    assert masters[lablib.LOOPBACK_A]["up"] is True
    assert ret.data["connected"] == lablib.LOOPBACK_A
    # salt-call itself costs a few seconds; the probes add about one timeout.
    assert elapsed < TIMEOUT + 10, elapsed


def test_killed_master_a_minion_answers_through_b(ha_lab):
    minion = ha_lab.minions["ha-minion-1"]
    master_a, master_b = ha_lab.masters["a"], ha_lab.masters["b"]
    assert ha_status(minion)["connected"] == lablib.LOOPBACK_A
    lablib.kill(master_a)
    answered = lablib.answers_through(master_b, minion.id, seconds=30)
    assert answered is not None, "minion did not answer through master B within 30 s"
    status = ha_status(minion, "--local")
    masters = by_master(status)
    assert status["connected"] == lablib.LOOPBACK_B
    assert masters[lablib.LOOPBACK_A]["up"] is False
    assert masters[lablib.LOOPBACK_B]["up"] is True
    assert masters[lablib.LOOPBACK_B]["connected"] is True
    metrics = minion.salt_call_cli(timeout=60).run("--local", "ha.metrics", f"timeout={TIMEOUT}")
    assert f'salt_ha_master_connected{{master="{lablib.LOOPBACK_B}"}} 1.0' in metrics.data
    assert f'salt_ha_master_up{{master="{lablib.LOOPBACK_A}"}} 0.0' in metrics.data
