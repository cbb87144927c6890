"""
``ha.local_jobs`` / ``ha.jobs`` through Salt's loader, against real ``local_cache``
job caches in tmp_path, written the way a master writes them: the publication
through ``local_cache.save_load`` with its minion list (as ``_prep_pub`` does),
returns through ``salt.utils.job.store_job`` (as ``_return`` does), a return for a
jid the master never published included, and one replayed by ``ha_returns``
(its load marked ``ha_replay``, with ``tgt``/``tgt_type``, as that engine sends it).
"""

import os
import types

import pytest
import salt.loader
import salt.utils.jid
import salt.utils.job
from salt.exceptions import CommandExecutionError

import ha_jobs

MINIONS = ("web1", "web2", "web3")


@pytest.fixture(scope="module")
def master_config(salt_factories):
    return salt_factories.salt_master_daemon("ha-functional-jobs-master").config.copy()


def master_options(master_config, root, master_id, cachedir=None):
    """A master's options with its own pki dir (MINIONS accepted) and job cache under ``root``."""
    pki = root / f"pki-{master_id}"
    for folder in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        os.makedirs(pki / folder)
    for minion in MINIONS:
        (pki / "minions" / minion).write_text("not read here")
    cache = cachedir or root / f"cache-{master_id}"
    os.makedirs(cache / "proc", exist_ok=True)
    return dict(master_config, id=master_id, pki_dir=str(pki), cachedir=str(cache), ha={}, master_job_cache="local_cache")


class Master:
    """One master's loaded returners and runners, and the writes a real master makes to its job cache."""

    def __init__(self, opts):
        self.opts = opts
        self.returners = salt.loader.returners(opts, {})
        self.runners = salt.loader.runner(opts, utils=salt.loader.utils(opts))
        self.runners.pack["__jid_event__"] = types.SimpleNamespace(fire_event=lambda data, tag: None)

    def publish(self, fun, tgt, minions, arg=()):
        """What ``_prep_jid`` and ``_prep_pub`` store for a publication; the jid."""
        jid = self.returners["local_cache.prep_jid"](nocache=False, passed_jid=None)
        load = {"cmd": "publish", "tgt": tgt, "fun": fun, "arg": list(arg), "tgt_type": "glob", "ret": "",
                "jid": jid, "user": "root", "kwargs": {"show_jid": False}}
        self.returners["local_cache.save_load"](jid, load, list(minions))
        return jid

    def runner_job(self, fun):
        """What a ``salt-run`` (RunnerClient) stores for a runner job of this master."""
        jid = salt.utils.jid.gen_jid(self.opts)
        load = {"id": self.opts["id"], "tgt": self.opts["id"], "jid": jid,
                "return": {"fun": f"runner.{fun}", "jid": jid, "user": "root", "fun_args": [], "return": {}}}
        salt.utils.job.store_job(self.opts, load, mminion=types.SimpleNamespace(returners=self.returners))
        return jid

    def receive(self, minion, jid, fun, ret=True, success=True, retcode=0, **extra):
        """What ``_return`` stores for a minion's return (Salt's own store_job)."""
        load = {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": ret,
                "retcode": retcode, "success": success, **extra}
        salt.utils.job.store_job(self.opts, load, mminion=types.SimpleNamespace(returners=self.returners))


@pytest.fixture
def masters(master_config, tmp_path):
    return {name: Master(master_options(master_config, tmp_path, name)) for name in ("ha-a", "ha-b")}


def test_every_jobs_function_has_a_cli_example(masters):
    runners = masters["ha-a"].runners
    for name in ("ha.jobs", "ha.local_jobs"):
        assert "CLI Example:" in runners[name].__doc__, name


def test_a_master_that_never_stored_a_job_has_none(masters):
    a = masters["ha-a"]
    assert not os.path.exists(os.path.join(a.opts["cachedir"], "jobs"))  # Salt's get_jids would raise here
    answer = a.runners["ha.local_jobs"]()
    assert (answer["jobs"], answer["total"], answer["returner"]) == ({}, 0, "local_cache")
    assert a.runners["ha.jobs"]()["jobs"] == {}


def test_local_jobs_reads_a_real_local_cache(masters):
    a = masters["ha-a"]
    jid = a.publish("test.ping", "web*", MINIONS)
    a.receive("web1", jid, "test.ping")
    a.receive("web2", jid, "test.ping", ret=False, success=False, retcode=1)
    a.runner_job("ha.local_jobs")  # a runner job of this master: stored, never listed
    answer = a.runners["ha.local_jobs"]()
    assert list(answer["jobs"]) == [jid] and answer["ignored"] >= 1
    entry = answer["jobs"][jid]
    assert entry["published_here"] is True and entry["expected"] == list(MINIONS)
    assert (entry["fun"], entry["tgt"], entry["tgt_type"], entry["user"]) == ("test.ping", "web*", "glob", "root")
    assert entry["returns"] == {"web1": {"success": True, "retcode": 0}, "web2": {"success": False, "retcode": 1}}
    one = a.runners["ha.local_jobs"](jid=jid)["jobs"][jid]
    assert one["returns"]["web2"] == {"success": False, "retcode": 1, "return": False}


def test_a_return_for_a_jid_never_published_here_is_a_received_job(masters):
    a, b = masters["ha-a"], masters["ha-b"]
    jid = a.publish("test.sleep", "web*", MINIONS, arg=[5])
    b.receive("web1", jid, "test.sleep")  # the minion failed over to B and returned there
    entry = b.runners["ha.local_jobs"](jid=jid)["jobs"][jid]
    assert entry["published_here"] is False and entry["expected"] is None and entry["replay"] is None
    assert entry["fun"] == "test.sleep" and entry["tgt"] is None
    assert entry["returns"] == {"web1": {"success": True, "retcode": 0, "return": True}}
    # Salt's own reader fails on that load (no minion list): the listing still shows it
    with pytest.raises(CommandExecutionError, match=r"\.minions\.p does not exist"):
        b.returners["local_cache.get_load"](jid)
    assert b.runners["ha.local_jobs"]()["jobs"][jid]["returns"] == {"web1": {"success": True, "retcode": 0}}


def test_a_replayed_return_on_b_with_the_publisher_alive_and_dead(masters):
    a, b = masters["ha-a"], masters["ha-b"]
    jid = a.publish("state.apply", "web*", MINIONS)
    a.receive("web1", jid, "state.apply")
    mark = {"from": "ha-a", "reason": "ha-a did not answer within 30 s"}
    b.receive("web2", jid, "state.apply", ha_replay=mark, tgt="web2", tgt_type="glob")
    view_b = b.runners["ha.local_jobs"]()
    assert view_b["jobs"][jid]["replay"] == {**mark, "minion": "web2"}
    # local_cache lists the replaying minion as the load's target: never taken as "expected"
    assert view_b["jobs"][jid]["expected"] is None

    alive = ha_jobs.merge_jobs({"ha-b": view_b, "ha-a": a.runners["ha.local_jobs"]()}, {}, master="ha-b")
    job = alive["jobs"][jid]
    assert job["published_by"] == ["ha-a"] and job["tgt"] == "web*"
    assert {minion: entry["masters"] for minion, entry in job["minions"].items()} == {"web1": ["ha-a"], "web2": ["ha-b"]}
    assert job["missing"] == ["web3"]
    assert job["replayed"] == [{"master": "ha-b", **mark, "minion": "web2"}]

    dead = ha_jobs.merge_jobs({"ha-b": view_b}, {"ha-a": "peer ha-a (http://127.0.0.1:1): unreachable"}, master="ha-b")
    job = dead["jobs"][jid]
    assert job["published_by"] is None and job["missing"] is None
    assert job["minions"] == {"web2": {"masters": ["ha-b"], "success": True, "retcode": 0}}
    assert "the ha_returns replay names ha-a as its publisher" in job["note"]
    assert dead["masters"]["ha-a"]["answered"] is False


def test_masters_sharing_one_local_cache_count_each_return_once(master_config, tmp_path):
    shared = tmp_path / "shared-cache"
    a = Master(master_options(master_config, tmp_path, "ha-a", cachedir=shared))
    b = Master(master_options(master_config, tmp_path, "ha-b", cachedir=shared))
    jid = a.publish("test.ping", "web*", MINIONS)
    a.receive("web1", jid, "test.ping")
    b.receive("web2", jid, "test.ping")  # landed through B, into the same store
    views = {"ha-b": b.runners["ha.local_jobs"](jid=jid), "ha-a": a.runners["ha.local_jobs"](jid=jid)}
    report = ha_jobs.merge_jobs(views, {}, jid=jid, master="ha-b")
    job = report["jobs"][jid]
    assert list(job["minions"]) == ["web1", "web2"]
    assert all(entry["masters"] == ["ha-b", "ha-a"] for entry in job["minions"].values())
    assert job["published_by"] is None and job["shared_store"] == ["ha-a", "ha-b"]
    assert "does not record which master published the job" in job["note"]
    assert job["missing"] == ["web3"]


def test_ha_jobs_without_peers_and_with_a_dead_one(masters):
    a = masters["ha-a"]
    jid = a.publish("test.ping", "web1", ["web1"])
    a.receive("web1", jid, "test.ping")
    report = a.runners["ha.jobs"](jid=int(jid))  # the CLI hands a jid over as a number
    assert report["masters"] == {"ha-a": {"answered": True, "error": None, "returner": "local_cache", "listed": 1,
                                          "total": 1, "left_out": 0}}
    assert report["jobs"][jid]["minions"]["web1"] == {"masters": ["ha-a"], "success": True, "retcode": 0,
                                                      "return": True}
    assert report["findings"] == []
    a.opts["ha"] = {"peers": {"ha-dead": {"url": "http://127.0.0.1:9", "username": "u", "password": "pw-9", "timeout": 1}}}
    report = a.runners["ha.jobs"](hours=1)
    assert report["jobs"][jid]["published_by"] == ["ha-a"]
    assert report["masters"]["ha-dead"]["answered"] is False and "pw-9" not in str(report)


def test_old_jobs_are_outside_the_window(masters):
    a = masters["ha-a"]
    old = "20200101000000000000"
    a.returners["local_cache.prep_jid"](passed_jid=old)
    a.returners["local_cache.save_load"](old, {"fun": "test.ping", "tgt": "web1", "tgt_type": "glob", "jid": old}, ["web1"])
    new = a.publish("test.ping", "web1", ["web1"])
    assert list(a.runners["ha.local_jobs"](hours=1)["jobs"]) == [new]
    assert old in a.runners["ha.local_jobs"](jid=old)["jobs"]
    assert salt.utils.jid.is_jid(new)
