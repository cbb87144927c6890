"""
``ha.jobs`` on two real masters (127.0.0.1/.2, each with its own salt-api, peers of
each other) that share one job store: Salt's ``pgjsonb`` on a throwaway PostgreSQL
(:mod:`tests.support.postgres`; skipped, loudly, when none can run here). A return
stored once in the shared tables is read by both masters: ``ha.jobs`` must show it
once, with both masters, and must not name both as publishers.

Then a job published through the minion's master, that master frozen (the ``ha``
beacon moves the minion) or SIGKILLed while the job runs: the minion's ``ha_returns``
engine delivers the return to the other master, where ``jobs.lookup_jid`` (the shared
store) and ``ha.jobs jid=`` both show it.
"""

import contextlib
import secrets
import time

import pytest

from tests.support import api_lab, postgres
from tests.support import beacon_lab as blab
from tests.support import lab as lablib
from tests.support import returns_lab as rlab

pytestmark = pytest.mark.integration

MINION = "ha-jobs-shared-minion"
PEER_FUNCTIONS = ["ha.local_inventory", "ha.receive_keys", "ha.local_jobs"]


@pytest.fixture(scope="module")
def pg_server():
    with postgres.postgres_or_skip() as server:
        yield server


@pytest.fixture(scope="module")
def shared_lab(salt_factories, tmp_path_factory, pg_server):
    store = {
        "master_job_cache": "pgjsonb",
        "returner.pgjsonb.host": pg_server.host,
        "returner.pgjsonb.port": pg_server.port,
        "returner.pgjsonb.db": pg_server.dbname,
        "returner.pgjsonb.user": pg_server.user,
        "returner.pgjsonb.pass": pg_server.password,
        "returner.pgjsonb.connect_timeout": 5,
        "external_auth": {"sharedsecret": {api_lab.SYNC_USER: [{"@runner": PEER_FUNCTIONS}]}},
    }
    names_ips = [("a", lablib.LOOPBACK_A), ("b", lablib.LOOPBACK_B)]
    lab = api_lab.ApiLab(
        salt_factories, tmp_path_factory.mktemp("jobs-shared"), names_ips,
        extra_master_overrides={name: store for name, _ in names_ips},
    )
    for name in lab.masters:
        lab.add_api(name)
    # The engine delivers returns across a failover; the beacon leaves a hung master.
    lab.add_failover_minion(MINION, accept_on=("a", "b"), overrides={**rlab.ENGINE, **blab.beacon_overrides()})
    with lablib.RunningDaemons(api_lab.daemons(lab)):
        yield lab


def test_one_return_in_a_shared_store_is_shown_once_with_both_masters(shared_lab, pg_server):
    a, b = shared_lab.masters["a"], shared_lab.masters["b"]
    marker = f"shared-{secrets.token_hex(4)}"
    jid = rlab.publish_async(a, [MINION], "test.echo", marker)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not pg_server.query("SELECT id FROM salt_returns WHERE jid = %s", (jid,)):
        time.sleep(0.2)
    assert pg_server.query("SELECT id FROM salt_returns WHERE jid = %s", (jid,)) == [(MINION,)]

    report = rlab.salt_run(b, "ha.jobs", f"jid={jid}")
    assert {name: entry["answered"] for name, entry in report["masters"].items()} == {a.id: True, b.id: True}
    assert all(entry["returner"] == "pgjsonb" for entry in report["masters"].values())
    job = report["jobs"][jid]
    assert job["minions"] == {
        MINION: {"masters": [b.id, a.id], "success": True, "retcode": 0, "return": marker},
    }
    assert job["shared_store"] == sorted([a.id, b.id])
    # Salt saved the return's load over the publication (pgjsonb upserts at every return):
    # no master can say it published the job, and ha.jobs says why instead of guessing.
    assert job["published_by"] is None and job["missing"] is None
    assert "pgjsonb keeps the load of the latest return in place of the publication" in job["note"]
    assert job["fun"] == "test.echo"

    listing = rlab.salt_run(a, "ha.jobs", "hours=1")
    assert list(listing["jobs"]).count(jid) == 1
    assert list(listing["jobs"][jid]["minions"]) == [MINION]
    assert not [entry for entry in listing["jobs"].values() if str(entry["fun"]).startswith("runner.")]


def _job_across_a_fault(lab, event_listener, victim_name, survivor_name, fault):
    """
    A job published through ``victim`` (the minion's master), ``fault`` applied to it
    while the job runs, its return replayed to ``survivor``: found there by
    ``jobs.lookup_jid`` (the shared store) and by ``ha.jobs``.
    """
    victim, survivor = lab.masters[victim_name], lab.masters[survivor_name]
    assert lablib.answers_through(victim, MINION, 30) is not None
    jid = rlab.publish_async(victim, [MINION], "test.sleep", 5)
    time.sleep(1.5)
    faulted = time.time()
    with fault(victim):
        seen = rlab.wait_for_returns(event_listener, survivor, [(jid, MINION)], faulted, 30)
        [event] = seen[(jid, MINION)]
        assert event.data["ha_replay"]["from"] == victim.config["interface"]

        assert rlab.salt_run(survivor, "jobs.lookup_jid", jid) == {MINION: True}
        report = rlab.salt_run(survivor, "ha.jobs", f"jid={jid}")
        assert report["masters"][victim.id]["answered"] is False  # its salt-api is up, its master is not
        job = report["jobs"][jid]
        assert job["fun"] == "test.sleep"
        assert job["minions"][MINION]["return"] is True and survivor.id in job["minions"][MINION]["masters"]
        assert [(item["minion"], item["from"]) for item in job["replayed"]] == [(MINION, victim.config["interface"])]


@contextlib.contextmanager
def killed(master):
    lablib.kill(master)
    yield


def test_a_return_replayed_to_b_while_a_hangs_is_found_on_b(shared_lab, event_listener):
    _job_across_a_fault(shared_lab, event_listener, "a", "b", lablib.frozen)


def test_a_return_replayed_after_its_master_died_is_found_on_the_survivor(shared_lab, event_listener):
    # After the hang, the minion is on B: B is the one that dies now.
    _job_across_a_fault(shared_lab, event_listener, "b", "a", killed)
