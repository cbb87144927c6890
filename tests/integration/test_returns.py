"""
The ``ha_returns`` engine on real daemons: masters A (127.0.0.1) and B (127.0.0.2),
failover minions with the engine.

- A SIGKILLed while a job runs: its return reaches B, once, marked ``ha_replay``;
  ``jobs.lookup_jid`` on B finds it; ``ha.returns`` on the minion lists it as replayed.
- A frozen while a job runs (the ``ha`` beacon moves the minion): the same.
- Several jobs on several minions across one SIGKILL: every return reaches B and is
  in its job cache (a replay B failed to store, Salt's local_cache race on jobs it
  did not publish, is sent again and may show twice on its bus); with no failover,
  exactly one return per job reaches A and nothing is replayed.
- That race, made certain: B's job cache left as one of its workers leaves it
  between writing a job's ``.load.p`` and its ``.minions.p``; the replay B fails to
  store is sent again until B stores it.
- A minion restarted while it holds an undelivered return (no master reachable)
  delivers it after the restart.
- A corrupt and a foreign ledger file are skipped with findings, a valid one beside
  them is replayed; a return is never replayed to a master the minion is not
  connected to, even when the bus claims it connected there.
"""

import json
import os
import time
import uuid

import pytest
import salt.payload
import salt.utils.jid

from tests.support import beacon_lab as blab
from tests.support import lab as lablib
from tests.support import returns_lab as rlab

pytestmark = pytest.mark.integration

SLEEP = 5  # seconds a job runs; the fault comes while it runs
FAULT_AFTER = 1.5
DELIVERY_BOUND = 30  # seconds after the fault by which every return must be on B


@pytest.fixture
def kill_lab(salt_factories, tmp_path):
    lab = rlab.start_lab(salt_factories, tmp_path, ["ret-kill"])
    with lablib.RunningDaemons(lablib.daemons(lab)):
        yield lab


@pytest.fixture
def hang_lab(salt_factories, tmp_path):
    lab = rlab.start_lab(salt_factories, tmp_path, ["ret-hang"], minion_overrides=blab.beacon_overrides())
    with lablib.RunningDaemons(lablib.daemons(lab)):
        yield lab


def _connected_to_a(lab, minion_ids):
    for minion_id in minion_ids:
        assert lablib.answers_through(lab.masters["a"], minion_id, 30) is not None, f"{minion_id} not on A"


def _assert_replayed_once(seen, master_name):
    for (jid, minion), events in seen.items():
        assert len(events) == 1, f"{minion} job {jid}: {len(events)} returns on {master_name}"
        assert events[0].data["ha_replay"]["from"] == lablib.LOOPBACK_A, events[0].data


def test_killed_master_mid_job_return_reaches_b(kill_lab, event_listener):
    master_a, master_b = kill_lab.masters["a"], kill_lab.masters["b"]
    minion = kill_lab.minions["ret-kill"]
    _connected_to_a(kill_lab, [minion.id])
    jid = rlab.publish_async(master_a, [minion.id], "test.sleep", SLEEP)
    time.sleep(FAULT_AFTER)
    killed = blab.utc_now()
    lablib.kill(master_a)

    seen = rlab.wait_for_returns(event_listener, master_b, [(jid, minion.id)], killed, DELIVERY_BOUND)
    _assert_replayed_once(seen, "B")
    event = seen[(jid, minion.id)][0]
    assert event.data["return"] is True and event.data["fun"] == "test.sleep"
    print(f"\nreturn on B {blab.seconds_after(event, killed):.2f} s after A was killed (job ends at +{SLEEP - FAULT_AFTER:g} s)")

    lookup = master_b.salt_run_cli(timeout=60).run("jobs.lookup_jid", jid)
    assert lookup.data == {minion.id: True}, lookup.stdout
    report = rlab.salt_call(minion, "ha.returns")
    assert report["enabled"] is True and report["pending"] == [], report
    replayed = [item for item in report["replayed"] if item["jid"] == jid]
    assert replayed and replayed[0]["to"] == lablib.LOOPBACK_B and replayed[0]["master"] == lablib.LOOPBACK_A


def test_frozen_master_mid_job_return_reaches_b(hang_lab, event_listener):
    master_a, master_b = hang_lab.masters["a"], hang_lab.masters["b"]
    minion = hang_lab.minions["ret-hang"]
    _connected_to_a(hang_lab, [minion.id])
    jid = rlab.publish_async(master_a, [minion.id], "test.sleep", SLEEP)
    time.sleep(FAULT_AFTER)
    frozen = blab.utc_now()
    with lablib.frozen(master_a):
        seen = rlab.wait_for_returns(event_listener, master_b, [(jid, minion.id)], frozen, DELIVERY_BOUND)
        _assert_replayed_once(seen, "B")
        print(f"\nreturn on B {blab.seconds_after(seen[(jid, minion.id)][0], frozen):.2f} s after A froze")
        lookup = master_b.salt_run_cli(timeout=60).run("jobs.lookup_jid", jid)
        assert lookup.data == {minion.id: True}, lookup.stdout


MINIONS = ["ret-many-1", "ret-many-2", "ret-many-3"]


@pytest.fixture
def many_lab(salt_factories, tmp_path):
    lab = rlab.start_lab(salt_factories, tmp_path, MINIONS)
    with lablib.RunningDaemons(lablib.daemons(lab)):
        yield lab


def test_no_failover_one_return_per_job_then_none_lost_across_a_kill(many_lab, event_listener):
    master_a, master_b = many_lab.masters["a"], many_lab.masters["b"]
    _connected_to_a(many_lab, MINIONS)

    quiet = blab.utc_now()
    quick = [rlab.publish_async(master_a, MINIONS, "test.arg", n) for n in range(3)]
    expected = [(jid, minion) for jid in quick for minion in MINIONS]
    seen = rlab.wait_for_returns(event_listener, master_a, expected, quiet, 30)
    time.sleep(2)  # a duplicate would come within the engine's grace; look again after it
    seen = rlab.returns_seen(event_listener, master_a, expected, quiet)
    for pair, events in seen.items():
        assert len(events) == 1, f"{pair}: {len(events)} returns with no failover"
        assert "ha_replay" not in events[0].data
    for minion in MINIONS:
        assert rlab.salt_call(many_lab.minions[minion], "ha.returns")["counts"]["replayed"] == 0

    slow = [rlab.publish_async(master_a, MINIONS, "test.sleep", SLEEP + n) for n in range(3)]
    time.sleep(FAULT_AFTER)
    killed = blab.utc_now()
    lablib.kill(master_a)
    expected = [(jid, minion) for jid in slow for minion in MINIONS]
    seen = rlab.wait_for_returns(event_listener, master_b, expected, killed, DELIVERY_BOUND + 3)
    missing = [pair for pair, events in seen.items() if not events]
    assert not missing, f"returns lost across the failover: {missing}"
    for events in seen.values():
        assert all(event.data["ha_replay"]["from"] == lablib.LOOPBACK_A for event in events), events
    for jid in slow:  # in B's job cache, not only on its bus (a replay B failed to store is sent again)
        _wait_for_lookup(master_b, jid, dict.fromkeys(MINIONS, True), DELIVERY_BOUND)


def _wait_for_lookup(master, jid, expected, seconds):
    """Bounded: until ``jobs.lookup_jid`` on ``master`` gives ``expected``."""
    deadline = time.monotonic() + seconds
    while True:
        found = master.salt_run_cli(timeout=60).run("jobs.lookup_jid", jid).data
        if found == expected or time.monotonic() >= deadline:
            assert found == expected, f"job {jid} on {master.id}: {found}"
            return
        time.sleep(1)


def _half_written_job(master, jid, fun, minion_id):
    """
    ``master``'s job cache for ``jid`` as a worker storing the job's first return
    leaves it between ``.load.p`` and ``.minions.p`` (Salt's ``local_cache.save_load``);
    the path to the missing ``.minions.p``.
    """
    job_dir = salt.utils.jid.jid_dir(jid, os.path.join(master.config["cachedir"], "jobs"), master.config["hash_type"])
    os.makedirs(job_dir)
    with open(os.path.join(job_dir, ".load.p"), "wb") as handle:
        salt.payload.dump({"jid": jid, "fun": fun, "tgt": minion_id, "tgt_type": "glob", "id": minion_id}, handle)
    return os.path.join(job_dir, ".minions.p")


def test_a_replay_b_failed_to_store_is_sent_again_until_b_stores_it(kill_lab, event_listener):
    master_a, master_b = kill_lab.masters["a"], kill_lab.masters["b"]
    minion = kill_lab.minions["ret-kill"]
    _connected_to_a(kill_lab, [minion.id])
    jid = rlab.publish_async(master_a, [minion.id], "test.sleep", SLEEP)
    minions_file = _half_written_job(master_b, jid, "test.sleep", minion.id)
    time.sleep(FAULT_AFTER)
    killed = blab.utc_now()
    lablib.kill(master_a)

    # B fires each replay's event before its store raises; the engine sends it again (2 s later).
    pair = (jid, minion.id)
    deadline = time.monotonic() + DELIVERY_BOUND
    while len(rlab.returns_seen(event_listener, master_b, [pair], killed)[pair]) < 2:
        assert time.monotonic() < deadline, "the replay B failed to store was not sent again"
        time.sleep(0.25)
    assert any(item["jid"] == jid for item in rlab.salt_call(minion, "ha.returns")["pending"])

    with open(minions_file, "wb") as handle:  # the other worker finishes its write
        salt.payload.dump([minion.id], handle)
    _wait_for_lookup(master_b, jid, {minion.id: True}, DELIVERY_BOUND)
    report = rlab.salt_call(minion, "ha.returns")
    assert not any(item["jid"] == jid for item in report["pending"]), report["pending"]
    [replayed] = [item for item in report["replayed"] if item["jid"] == jid]
    assert replayed["to"] == lablib.LOOPBACK_B and replayed["attempts"] >= 2, replayed


def test_restarted_minion_delivers_the_return_it_held(salt_factories, tmp_path, event_listener):
    lab = rlab.start_lab(salt_factories, tmp_path, ["ret-restart"])
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    minion = lab.minions["ret-restart"]
    with lablib.RunningDaemons([master_a, minion], graceful=True):  # the minion's stop is the scenario
        _connected_to_a(lab, [minion.id])
        jid = rlab.publish_async(master_a, [minion.id], "test.sleep", 2)
        time.sleep(0.5)
        lablib.kill(master_a)  # B is not running: the minion has nowhere to go
        pending = _wait_for_pending(minion, jid, seconds=20)
        assert pending, f"job {jid} never reached the ledger"
    # The minion is stopped now, holding the return; it comes back with only B up
    # (salt-factories would wait for its start event on A, the master it was made from).
    minion.get_check_events = lambda: iter([(master_b.id, f"salt/minion/{minion.id}/start")])
    with lablib.RunningDaemons([master_b]):
        started = blab.utc_now()
        with lablib.RunningDaemons([minion]):
            seen = rlab.wait_for_returns(event_listener, master_b, [(jid, minion.id)], started, DELIVERY_BOUND)
            _assert_replayed_once(seen, "B")
            assert rlab.salt_call(minion, "ha.returns")["pending"] == []


def _wait_for_pending(minion, jid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pending = rlab.salt_call(minion, "ha.returns")["pending"]
        if any(item["jid"] == jid for item in pending):
            return pending
        time.sleep(0.5)
    return None


def test_bad_ledger_files_are_skipped_and_no_replay_goes_to_a_master_not_connected(
    salt_factories, tmp_path, event_listener
):
    lab = rlab.start_lab(salt_factories, tmp_path, ["ret-ledger"])
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    minion = lab.minions["ret-ledger"]
    pending_dir = os.path.join(rlab.ledger_dir(minion), "pending")
    os.makedirs(pending_dir, mode=0o700)
    valid = _ledger_entry(minion.id, master="127.0.0.9")
    foreign = _ledger_entry("someone-else", master="127.0.0.9")
    _write(pending_dir, valid["key"], salt.payload.dumps(valid))
    _write(pending_dir, foreign["key"], salt.payload.dumps(foreign))
    _write(pending_dir, uuid.uuid4().hex, b"\x00 not msgpack \xff" * 3)
    started = blab.utc_now()
    with lablib.RunningDaemons(lablib.daemons(lab)):
        _connected_to_a(lab, [minion.id])
        # The valid entry is replayed to the master the minion is connected to (A).
        seen = rlab.wait_for_returns(event_listener, master_a, [(valid["load"]["jid"], minion.id)], started, 30)
        assert len(seen[(valid["load"]["jid"], minion.id)]) == 1
        report = rlab.salt_call(minion, "ha.returns")
        reasons = sorted(finding["reason"].split(":")[0].split(" (")[0] for finding in report["findings"])
        assert len(report["findings"]) == 2, report["findings"]
        assert any("another minion" in finding["reason"] for finding in report["findings"]), reasons
        assert any(finding["reason"].startswith("corrupt") for finding in report["findings"]), reasons

        # The bus claims the minion connected to B (it is on A) and a return comes in
        # tagged for a master it is not on: the replay goes to A, never to B.
        claimed = blab.utc_now()
        load = rlab.fake_return_load(minion.id)
        _fire(minion, {"master": lablib.LOOPBACK_B}, "__master_connected")
        _fire(minion, load, f"__master_req_channel_payload/{uuid.uuid4()}/127.0.0.9")
        seen = rlab.wait_for_returns(event_listener, master_a, [(load["jid"], minion.id)], claimed, 30)
        assert len(seen[(load["jid"], minion.id)]) == 1
        assert rlab.returns_seen(event_listener, master_b, [(load["jid"], minion.id)], claimed)[
            (load["jid"], minion.id)
        ] == []


def _ledger_entry(minion_id, master):
    load = rlab.fake_return_load(minion_id)
    key = uuid.uuid4().hex
    return {
        "format": "salt-ha-return/1", "key": key, "request_id": str(uuid.uuid4()), "minion": minion_id,
        "master": master, "seen": time.time(), "load": load, "attempts": 0, "reason": "test",
    }


def _write(folder, key, data):
    with open(os.path.join(folder, f"{key}.ret"), "wb") as handle:
        handle.write(data)


def _fire(minion, data, tag):
    ret = minion.salt_call_cli(timeout=60).run("--local", "event.fire", json.dumps(data), tag)
    assert ret.returncode == 0 and ret.data is True, ret.stderr[-1000:]
