"""
A real Salt 3008.4 master cluster on loopback: masters A (127.0.0.1) and B
(127.0.0.2) with ``cluster_id``, ``cluster_peers``, ``cluster_secret``, an explicit
``id`` and one shared ``cluster_pki_dir``; a minion with ``master: [A, B]`` whose
key is accepted in ``cluster_pki_dir`` only. No balancer (none on loopback): the
minion's failover list stands in for it.

Shown with the real daemons: the cluster forms (Raft voters A and B), a job
published through B reaches the minion connected to A, the runner's ``ha.lint``
finds no error in this cluster's configuration, salt-ha reads the minion keys from
``cluster_pki_dir`` (B's own ``pki_dir`` holds none), a frozen cluster master still
accepts TCP connections (what a balancer's TCP check sees) while it answers
nothing, and a minion fails over from a killed cluster master to the other one
although each master has its own ``master.pem`` (minions trust ``cluster.pub``).
"""

import logging
import pathlib
import time

import pytest
import salt.crypt

import ha_endpoints
import ha_probe
from tests.support import lab as lablib

log = logging.getLogger(__name__)

MINION = "cluster-minion"
CLUSTER_ID = "ha_cluster"


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    """``(A, B, minion, cluster_pki_dir)``, all running."""
    root = tmp_path_factory.mktemp("cluster")
    ips = (lablib.LOOPBACK_A, lablib.LOOPBACK_B)
    ports = lablib.shared_ports(ips)
    pool_port = lablib.free_port(ips)
    cluster_pki = root / "cluster-pki"
    (cluster_pki / "peers").mkdir(parents=True)
    masters = [
        salt_factories.salt_master_daemon(
            ip,
            overrides={
                **lablib.master_overrides(ip, ports),
                "id": ip,
                "cluster_id": CLUSTER_ID,
                "cluster_peers": [other for other in ips if other != ip],
                "cluster_pki_dir": str(cluster_pki),
                "cluster_pool_port": pool_port,
                "cluster_secret": "salt-ha-lab-cluster-secret",
            },
        )
        for ip in ips
    ]
    minion = masters[0].salt_minion_daemon(MINION, overrides=lablib.minion_failover_overrides(ips, ports, 2))
    minion_pki = pathlib.Path(minion.config["pki_dir"])
    minion_pki.mkdir(parents=True, exist_ok=True)
    salt.crypt.write_keys(str(minion_pki), "minion", 2048)
    (cluster_pki / "minions").mkdir()
    (cluster_pki / "minions" / MINION).write_bytes((minion_pki / "minion.pub").read_bytes())
    # One by one: two cluster masters started at once may leave the cluster without a
    # session key for the minion ("Master did not return a session key": 1 of 3 runs).
    with lablib.RunningDaemons([*masters, minion], one_by_one=True):
        yield masters[0], masters[1], minion, cluster_pki


def test_the_cluster_forms_and_a_job_through_b_reaches_a_minion_on_a(cluster):
    a, b, _, _ = cluster
    for master in (a, b):
        ret = master.salt_run_cli(timeout=30).run("cluster.members")
        assert ret.returncode == 0, ret
        assert ret.data["voters"] == ["127.0.0.1", "127.0.0.2"], ret.data
    assert lablib.answers_through(a, MINION, 30) is not None
    assert lablib.answers_through(b, MINION, 30) is not None  # the minion is connected to A


def test_ha_lint_finds_no_error_in_this_cluster(cluster):
    a, _, _, _ = cluster
    ret = a.salt_run_cli(timeout=60).run("ha.lint", "peers=False")
    assert ret.returncode == 0, ret
    findings = {item["id"]: item for item in ret.data}
    assert not [item for item in ret.data if item["severity"] == "error"], ret.data
    # one host: the shared folders are on a local filesystem; no health engine; the two cluster infos
    assert set(findings) <= {"HA712", "HA714", "HA721", "HA722"}, ret.data
    assert {"HA721", "HA722"} <= set(findings)


def test_keys_are_read_from_cluster_pki_dir(cluster):
    _, b, _, cluster_pki = cluster
    ret = b.salt_run_cli(timeout=60).run("ha.local_inventory", "trees=False")
    assert ret.returncode == 0, ret
    assert MINION in ret.data["keys"]["accepted"]
    assert not (pathlib.Path(b.config["pki_dir"]) / "minions" / MINION).exists()
    ret = b.salt_run_cli(timeout=60).run("ha.sync_keys", "test=True")
    assert ret.returncode == 0, ret
    assert ret.data["key_store"]["pki_dir"] == str(cluster_pki)
    assert ret.data["key_store"]["option"] == "cluster_pki_dir"


def test_both_masters_serve_the_one_cluster_key(cluster):
    """Their master.pem differ, but minions get cluster.pub from both: no master key drift."""
    a, b, _, _ = cluster
    served = [
        master.salt_run_cli(timeout=60).run("ha.local_inventory", "keys=False", "trees=False").data["master_pub_fingerprint"]
        for master in (a, b)
    ]
    own = [(pathlib.Path(master.config["pki_dir"]) / "master.pub").read_text() for master in (a, b)]
    assert own[0] != own[1]
    assert served[0] == served[1] is not None


def test_a_frozen_cluster_master_passes_a_tcp_check_and_answers_nothing(cluster):
    a, _, _, _ = cluster
    endpoint = ha_endpoints.endpoint_for(
        a.config["interface"], {"master_port": a.config["ret_port"], "publish_port": a.config["publish_port"]}
    )
    with lablib.frozen(a):
        tcp_open = ha_probe.tcp_port_open(a.config["interface"], a.config["ret_port"], 2)
        probe = ha_probe.probe_endpoint(endpoint, 2)
    assert tcp_open is True
    assert probe["up"] is False, probe


def test_the_minion_fails_over_from_a_killed_cluster_master(cluster):
    a, b, minion, _ = cluster
    # no shared master key pair: minions of a cluster trust the shared cluster.pub
    own_keys = [pathlib.Path(master.config["pki_dir"], "master.pub").read_bytes() for master in (a, b)]
    assert own_keys[0] != own_keys[1]
    assert connected_master(minion) == a.config["interface"]
    lablib.kill(a)
    started = time.monotonic()
    took = lablib.answers_through(b, MINION, 40)
    log.info("failover to B after %.1f s", time.monotonic() - started)
    assert took is not None, "the minion did not answer through B within 40 s"
    assert connected_master(minion) == b.config["interface"]


def connected_master(minion):
    """The master the minion daemon is connected to (``ha.status``, read from its sockets)."""
    ret = minion.salt_call_cli(timeout=30).run("--local", "ha.status", "timeout=2")
    assert ret.returncode == 0, ret
    return ret.data["connected"]
