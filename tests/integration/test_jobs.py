"""
``ha.jobs`` against three real masters (127.0.0.1/.2/.3, each with its own salt-api,
master c over TLS) that are each other's peers, and one failover minion
``[A, B]`` whose key is accepted on A and B. Every master keeps Salt's default job
cache (``local_cache``, its own).

The minion runs with ``multiprocessing: False``: its job threads share the main
process's options, so a job published through A that is still running when A is
SIGKILLed (with its salt-api: host A is gone) returns to B after the minion fails over, with no salt-ha engine
involved (with Salt's default ``multiprocessing: True`` that return is dropped,
see SALT-NOTES.md). That is the real "return on B only" case. The test that kills
A runs last; each test also runs alone.
"""

import pathlib
import secrets
import time

import pytest
import salt.utils.jid

from tests.support import api_lab
from tests.support import lab as lablib
from tests.support import returns_lab as rlab

pytestmark = pytest.mark.integration

MINION = "ha-jobs-minion"
PEER_FUNCTIONS = ["ha.local_inventory", "ha.receive_keys", "ha.local_jobs"]


@pytest.fixture(scope="module")
def jobs_lab(salt_factories, tmp_path_factory):
    names_ips = [("a", lablib.LOOPBACK_A), ("b", lablib.LOOPBACK_B), ("c", api_lab.LOOPBACK_C)]
    # Peers may call ha.local_jobs (the lab's default grants only the key-sync functions).
    auth = {"external_auth": {"sharedsecret": {api_lab.SYNC_USER: [{"@runner": PEER_FUNCTIONS}]}}}
    lab = api_lab.ApiLab(
        salt_factories, tmp_path_factory.mktemp("jobs"), names_ips, tls=("c",),
        extra_master_overrides={name: auth for name, _ in names_ips},
    )
    for name in lab.masters:
        lab.add_api(name)
    lab.add_failover_minion(
        MINION, accept_on=("a", "b"),
        overrides={"master": [lablib.LOOPBACK_A, lablib.LOOPBACK_B], "multiprocessing": False},
    )
    with lablib.RunningDaemons(api_lab.daemons(lab)):
        yield lab


def stored_return(master, jid):
    """The file Salt's local_cache writes when ``master`` stores the minion's return of ``jid``."""
    jobs = pathlib.Path(master.config["cachedir"]) / "jobs"
    return pathlib.Path(salt.utils.jid.jid_dir(jid, str(jobs), master.config["hash_type"])) / MINION / "return.p"


def test_where_is_my_job_answered_from_another_master(jobs_lab):
    a, b, c = (jobs_lab.masters[name] for name in "abc")
    marker = f"ha-jobs-{secrets.token_hex(4)}"
    jid = rlab.publish_async(a, [MINION], "test.echo", marker)
    lablib.wait_for(stored_return(a, jid).is_file, 30, f"the return of {jid} stored on A")

    report = rlab.salt_run(b, "ha.jobs", f"jid={jid}")
    assert {name: entry["answered"] for name, entry in report["masters"].items()} == {a.id: True, b.id: True, c.id: True}
    job = report["jobs"][jid]
    assert job["published_by"] == [a.id]
    assert (job["fun"], job["arg"], job["tgt"], job["tgt_type"]) == ("test.echo", [marker], MINION, "glob")
    assert job["minions"] == {MINION: {"masters": [a.id], "success": True, "retcode": 0, "return": marker}}
    assert job["missing"] == [] and job["note"] is None and job["replayed"] == []
    assert report["findings"] == []

    listing = rlab.salt_run(c, "ha.jobs", "hours=1")  # through c's own view and its TLS peer calls
    assert listing["jobs"][jid]["published_by"] == [a.id]
    assert listing["jobs"][jid]["minions"] == {MINION: {"masters": [a.id], "success": True, "retcode": 0}}
    assert not [name for name in listing["jobs"] if listing["jobs"][name]["fun"].startswith("runner.")]


def test_a_return_that_lands_on_b_after_a_is_killed(jobs_lab):
    a, b, c = (jobs_lab.masters[name] for name in "abc")
    minion = jobs_lab.minions[MINION]
    running = pathlib.Path(minion.config["cachedir"]) / "proc"
    jid = rlab.publish_async(a, [MINION], "test.sleep", "6")
    lablib.wait_for(lambda: (running / jid).is_file(), 20, f"job {jid} running on the minion")
    lablib.kill(a)  # host A is gone: its master and its salt-api
    lablib.kill(jobs_lab.apis["a"])
    lablib.wait_for(stored_return(b, jid).is_file, 40, f"the return of {jid} stored on B")
    assert not stored_return(a, jid).exists()

    started = time.monotonic()
    report = rlab.salt_run(c, "ha.jobs", f"jid={jid}")
    elapsed = time.monotonic() - started
    assert report["masters"][a.id]["answered"] is False and "unreachable" in report["masters"][a.id]["error"]
    assert report["masters"][b.id]["answered"] is True and report["masters"][c.id]["answered"] is True
    job = report["jobs"][jid]
    assert job["published_by"] is None and job["missing"] is None
    assert job["fun"] == "test.sleep" and job["tgt"] is None
    assert job["minions"] == {MINION: {"masters": [b.id], "success": True, "retcode": 0, "return": True}}
    assert job["note"].startswith("no reachable master holds the publication of this job; not answering: ha-master-a")
    assert {finding["message"].split(":")[0] for finding in report["findings"]} >= {a.id + " did not answer", "test.sleep"}
    assert elapsed < 30, elapsed

    # B's own view: a job it never published, read although Salt's get_load fails on it
    local = rlab.salt_run(b, "ha.local_jobs", f"jid={jid}")["jobs"][jid]
    assert local["published_here"] is False and local["returns"][MINION]["return"] is True
