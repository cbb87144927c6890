"""
Master pubkey signing on real daemons: masters A and B keep different ``master.pem``
and get one signing key pair from the shipped example states (``ha.master_signing``
through ``examples/salt/ha/master.sls``, run by each master host's own minion as
``salt-call --local``, which writes the master's ``master.d`` next to it); the
failover minion gets ``verify_master_pubkey_sign`` and ``master_sign.pub`` from
``examples/salt/ha/minion.sls``. The states run before the daemons start (a fresh
setup); then the masters' inventories and the minion's ``ha.lint`` say "signing",
A is SIGKILLed and the minion answers through B.
"""

import logging
import pathlib
import time

import pytest
import yaml

import ha_key_model
import ha_keys
from tests.support import lab as lablib
from tests.support import state_lab

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

MINION = "ha-sign-minion"


def host_minion(factories, master):
    """
    The minion of a master's host, not started: its config file sits next to the
    master's (``conf/minion`` beside ``conf/master``, as ``/etc/salt/minion`` beside
    ``/etc/salt/master``), with a pki dir and cachedir of its own.
    """
    root = pathlib.Path(master.config["root_dir"])
    return factories.salt_minion_daemon(
        f"{master.id}-host",
        defaults={"root_dir": str(root)},
        overrides={"pki_dir": str(root / "pki-host"), "cachedir": str(root / "cache-host"), "file_client": "local"},
    )


def apply_local(minion, pillar, *args):
    """``salt-call --local`` of the example state tree with ``pillar``: the state returns by id."""
    ret = minion.salt_call_cli(timeout=120).run(
        "--local", f"--file-root={state_lab.STATE_TREE}", f"--pillar-root={pillar}", *args
    )
    assert ret.returncode == 0, ret.stdout[-3000:] + ret.stderr[-3000:]
    assert "PRIVATE KEY" not in ret.stdout
    return {item["__id__"]: item for item in state_lab.state_results(ret.data)}, ret.stdout


@pytest.fixture
def signing_lab(salt_factories, tmp_path):
    """Masters A and B with master keys of their own; a failover minion accepted on both; not started."""
    lab = lablib.Lab(salt_factories, tmp_path)
    lab.add_master("a", lablib.LOOPBACK_A, keypair=lablib.make_keypair(tmp_path / "a-own-key"))
    lab.add_master("b", lablib.LOOPBACK_B, keypair=lablib.make_keypair(tmp_path / "b-own-key"))
    lab.add_failover_minion(MINION)
    lab.hosts = {name: host_minion(salt_factories, master) for name, master in lab.masters.items()}
    return lab


def test_masters_with_different_keys_signed_by_the_states_fail_over(signing_lab, tmp_path):
    lab = signing_lab
    minion = lab.minions[MINION]
    pki = {name: pathlib.Path(master.config["pki_dir"]) for name, master in lab.masters.items()}
    assert ha_keys.fingerprint_file(pki["a"] / "master.pub") != ha_keys.fingerprint_file(pki["b"] / "master.pub")
    sign_pem, sign_pub = (path.read_text() for path in lablib.make_keypair(tmp_path / "signing", "master_sign"))
    fingerprint = ha_keys.fingerprint(sign_pub)

    # The masters: the signing pair and master_sign_pubkey, from pillar ha:master:signing.
    started = time.monotonic()
    for name, host in lab.hosts.items():
        master_pillar = {"pki_dir": str(pki[name]), "signing": {"private_key": sign_pem}}
        pillar = state_lab.pillar_root(tmp_path / f"pillar-{name}", {"ha": {"master": master_pillar}})
        results, _ = apply_local(host, pillar, "state.sls_id", "ha-master-signing", "ha.master")
        signing = results["ha-master-signing"]
        assert signing["result"] is True, signing
        assert signing["changes"]["master_sign.pub"]["new"] == fingerprint
        assert signing["changes"]["master_sign_pubkey"] == {"old": None, "new": True}
        dropin = pathlib.Path(lab.masters[name].config["conf_file"]).parent / "master.d" / "ha-signing.conf"
        assert yaml.safe_load(dropin.read_text()) == {"master_sign_pubkey": True}

    # The minion: verify_master_pubkey_sign and master_sign.pub, from pillar ha:minion.
    publish, ret_port = lab.ports
    minion_pillar = {
        "masters": list(lab.ips), "alive_interval": 2, "restart": False, "master_port": ret_port,
        "publish_port": publish, "verify_master_pubkey_sign": True, "master_sign_pub": sign_pub,
    }
    pillar = state_lab.pillar_root(tmp_path / "pillar-minion", {"ha": {"minion": minion_pillar}})
    results, _ = apply_local(minion, pillar, "state.apply", "ha.minion")
    failover = results["ha-minion-failover"]
    assert failover["result"] is True, failover
    assert failover["changes"]["master_sign.pub"]["new"] == fingerprint
    assert failover["changes"]["verify_master_pubkey_sign"] == {"old": None, "new": True}
    log.warning("signing set up by the states in %.1f s", time.monotonic() - started)

    with lablib.RunningDaemons(lablib.daemons(lab)):
        check_signing_then_fail_over(lab, pki, fingerprint)


def check_signing_then_fail_over(lab, pki, fingerprint):
    """The running lab: what salt-ha sees, then A killed and the minion answering through B."""
    minion = lab.minions[MINION]
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    assert lablib.answers_through(master_a, minion.id, 30) is not None, "no answer through A"

    # What salt-ha sees: the masters' inventories (their own salt-run) and the minion's lint.
    inventories = {}
    for name, master in lab.masters.items():
        ran = master.salt_run_cli(timeout=60).run("ha.local_inventory", "keys=False", "trees=False")
        assert ran.returncode == 0, ran.stderr[-2000:]
        inventories[name] = ran.data
    model = ha_key_model.master_key_model(inventories)
    assert (model["model"], model["signing_key"], model["problems"]) == ("signing", fingerprint, [])
    assert model["master_pub_shared"] is False
    lint = minion.salt_call_cli(timeout=60).run("--local", "ha.lint")
    (facts,) = [item["key_model"] for item in lint.data if item["id"] == "HA601"]
    assert facts["model"] == "signing" and facts["master_sign_pub_fingerprint"] == fingerprint
    assert not [item for item in lint.data if item["severity"] == "error"], lint.data
    assert ha_key_model.minion_key_problems(model, facts) == []

    killed = time.monotonic()
    lablib.kill(master_a)
    took = lablib.answers_through(master_b, minion.id, 30)
    assert took is not None, "no answer through B within 30 s of killing A"
    log.warning("A killed: the minion answered through B after %.2f s", time.monotonic() - killed)
    cached = pathlib.Path(minion.config["pki_dir"]) / ha_key_model.CACHED_MASTER_PUB
    assert ha_keys.fingerprint_file(cached) == ha_keys.fingerprint_file(pki["b"] / "master.pub")
