"""
The returns guard of the ``ha_returns`` engine against a real ledger in tmp_path, a
fake clock and a fake ``locate``: what it writes, what it fires, what it forgets.
"""

import logging
import os
import re
import stat
import uuid

import pytest
import salt.payload
from salt.exceptions import SaltInvocationError

import ha_ledger
import ha_returns

MINION = "web1"
JID = "20240101120000123456"
NOW = 1_700_000_000.0
REPLAY_TAG = re.compile(r"^__master_req_channel_payload/(?P<request_id>[^/]+)/(?P<master>[^/]+)$")


class Clock:
    """A clock the test advances."""

    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Locate:
    """The masters the minion daemon is connected to: ``master``, or ``masters`` when set (multi-master)."""

    def __init__(self, master):
        self.master = master
        self.masters = None
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.masters is not None:
            return list(self.masters)
        return [self.master] if self.master else []


def job_load(jid=JID, minion=MINION, **extra):
    return {
        "cmd": "_return", "id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True,
        "retcode": 0, "success": True, **extra,
    }


def make_guard(ledger_dir, clock, locate, minion=MINION, **options):
    config = ha_returns.engine_config({"directory": str(ledger_dir), **options}, {"id": minion})
    return ha_returns.ReturnGuard(minion, ha_ledger.Ledger(ledger_dir, minion), config, locate, clock=clock)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def locate():
    return Locate("m1")


@pytest.fixture
def ledger_dir(tmp_path):
    return tmp_path / "cache" / "ha_returns"


@pytest.fixture
def guard(ledger_dir, clock, locate):
    return make_guard(ledger_dir, clock, locate)


# --- what the engine does with the guard (_engines/ha_returns.py) ------------------


def payload(guard, request_id, master, load=None):
    load = job_load() if load is None else load
    guard.on_event(f"{ha_returns.PAYLOAD_TAG}{request_id}/{master}", load)
    return load


def answer(guard, request_id, data=None):
    guard.on_event(f"{ha_returns.ANSWER_TAG}{request_id}", {"ret": True} if data is None else data)


def connect(guard, master):
    guard.on_event(ha_returns.CONNECTED_TAG, {"master": master})


def step(guard, locate):
    """
    One turn of the engine's loop: the replays it fires. Each is fed back to the
    guard, as the engine hears its own events on the minion's bus.
    """
    fired = guard.due_replays(1.0)
    for tag, load in fired:
        guard.on_event(tag, load)
    return fired


def request_of(tag):
    return REPLAY_TAG.match(tag)["request_id"]


def on_disk(ledger_dir, minion=MINION):
    entries, findings = ha_ledger.Ledger(ledger_dir, minion).load()
    assert findings == []
    return entries


def history(ledger_dir):
    return ha_ledger.Ledger(ledger_dir, MINION).read_history()


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def nothing_fired_for(guard, locate, clock, seconds=200, every=0.5):
    """Run the loop for ``seconds`` of fake time; every replay it fired."""
    fired = []
    for _ in range(int(seconds / every)):
        clock.advance(every)
        fired += step(guard, locate)
    return fired


# --- nothing fails: nothing changes ----------------------------------------------


@pytest.mark.parametrize("told", [True, False], ids=["connected event seen", "no connected event"])
@pytest.mark.parametrize("delay", [0, 0.5, 1.0, 3, 34.9], ids=lambda delay: f"answered after {delay} s")
@pytest.mark.parametrize("ret", [None, {"jid": JID}], ids=["stored (salt answers None)", "any other answer"])
def test_a_delivered_return_leaves_no_trace(guard, locate, clock, ledger_dir, told, delay, ret):
    if told:
        connect(guard, "m1")
    payload(guard, "r1", "m1")
    clock.advance(delay)
    assert step(guard, locate) == []
    answer(guard, "r1", {"ret": ret})
    assert nothing_fired_for(guard, locate, clock) == []
    assert guard.in_flight == guard.undelivered == guard.replays == {}
    assert guard.hint == "m1"
    if delay < 1.0:
        assert not os.path.exists(ledger_dir)  # not one write
    else:
        assert on_disk(ledger_dir) == []  # written after grace, removed on its answer
    assert not os.path.exists(os.path.join(ledger_dir, "history.p"))


def test_many_delivered_returns_fire_nothing(guard, locate, clock, ledger_dir):
    connect(guard, "m1")
    for number in range(20):
        payload(guard, f"r{number}", "m1", job_load(jid=f"{JID[:-2]}{number:02d}"))
        clock.advance(0.3)
        assert step(guard, locate) == []
        answer(guard, f"r{number}")
    assert nothing_fired_for(guard, locate, clock) == []
    assert on_disk(ledger_dir) == []


# --- undelivered ---------------------------------------------------------------------


def test_a_return_tagged_for_a_left_master_is_undelivered_at_once(guard, locate, clock, ledger_dir):
    connect(guard, "m1")
    connect(guard, "m2")  # failover
    locate.master = "m2"
    original = job_load()
    snapshot = dict(original)
    payload(guard, "r1", "m1", original)
    assert guard.in_flight == {}
    [entry] = on_disk(ledger_dir)  # before any tick
    path = ha_ledger.Ledger(ledger_dir, MINION).path_for(entry["key"])
    assert mode_of(path) == 0o600
    assert mode_of(os.path.dirname(path)) == 0o700
    assert mode_of(ledger_dir) == 0o700
    assert entry["master"] == "m1" and entry["minion"] == MINION and entry["request_id"] == "r1"
    assert entry["seen"] == NOW and entry["load"] == original
    assert entry["reason"] == "the minion moved from m1 to m2 before it returned"

    [(tag, load)] = step(guard, locate)
    match = REPLAY_TAG.match(tag)
    assert match["master"] == "m2"
    assert str(uuid.UUID(match["request_id"], version=4)) == match["request_id"] != "r1"
    assert load == {**original, "tgt": MINION, "tgt_type": "glob",
                    "ha_replay": {"from": "m1", "reason": "the minion moved from m1 to m2 before it returned"}}
    assert original == snapshot  # the original load is not changed
    assert guard.in_flight == {}  # its own replay on the bus is not taken for a new return


def test_a_return_tagged_for_a_left_master_waits_while_no_master_is_connected(guard, locate, clock, ledger_dir):
    connect(guard, "m2")
    locate.master = None
    payload(guard, "r1", "m1")
    assert guard.undelivered == {} and not os.path.exists(ledger_dir)
    clock.advance(1.0)
    assert step(guard, locate) == []
    assert [entry.get("reason") for entry in on_disk(ledger_dir)] == [None]  # kept, not judged
    locate.master = "m2"
    clock.advance(0.2)
    [(tag, _load)] = step(guard, locate)
    assert REPLAY_TAG.match(tag)["master"] == "m2"


@pytest.mark.parametrize(
    "original,added",
    [
        (job_load(), {"tgt": MINION, "tgt_type": "glob"}),
        (job_load(tgt="web*", tgt_type="glob"), {}),
        (job_load(tgt=["web1", "web2"], tgt_type="list"), {}),
        (job_load(tgt="G@os:Debian", tgt_type="compound"), {}),
    ],
    ids=["no target", "glob target", "list target", "compound target"],
)
def test_replay_load_adds_only_what_a_new_master_needs(original, added):
    load = ha_returns.replay_load(original, MINION, "m1", "why")
    assert load == {**original, **added, "ha_replay": {"from": "m1", "reason": "why"}}
    assert all(load[key] == value for key, value in original.items())
    assert "ha_replay" not in original


def test_a_signed_return_is_replayed_unchanged(guard, locate, clock, ledger_dir):
    connect(guard, "m2")
    locate.master = "m2"
    original = job_load(sig=b"\xff\xfe\x00signature")
    payload(guard, "r1", "m1", original)
    [(_tag, load)] = step(guard, locate)
    assert load == original
    assert "ha_replay" not in load and "tgt" not in load
    # and after a restart, from the ledger
    restarted = make_guard(ledger_dir, clock, locate)
    restarted.restore()
    [(_tag, load)] = step(restarted, locate)
    assert load == original


@pytest.mark.parametrize(
    "data,why",
    [
        ({"ret": None, "error": "timeout"}, "m1 did not take it (timeout)"),
        ({"error": "Request timed out"}, "m1 did not take it (Request timed out)"),
        ({"ret": ""}, "m1 did not take it (its request server failed to store it)"),
        ({"ret": False}, "m1 did not take it (its request server dropped it (signature check))"),
    ],
    ids=["salt timeout", "error only", "store failed", "signature dropped"],
)
def test_an_error_answer_is_undelivered(guard, locate, clock, ledger_dir, data, why):
    connect(guard, "m1")
    payload(guard, "r1", "m1")
    answer(guard, "r1", data)
    assert [entry["reason"] for entry in on_disk(ledger_dir)] == [why]
    [(tag, load)] = step(guard, locate)
    assert REPLAY_TAG.match(tag)["master"] == "m1"
    assert load["ha_replay"] == {"from": "m1", "reason": why}


UNANSWERED = [
    # (id, connected master, seconds unanswered, on disk, undelivered reason or None)
    ("before grace", "m1", 0.99, False, None),
    ("at grace, same master", "m1", 1.0, True, None),
    ("past grace, same master", "m1", 20, True, None),
    ("past grace, no master", None, 20, True, None),
    ("just before answer_timeout", "m1", 34.9, True, None),
    ("at answer_timeout", "m1", 35, True, "no answer from the minion's main process in 35 s"),
    ("past answer_timeout, no master", None, 50, True, "no answer from the minion's main process in 50 s"),
    ("past grace, moved", "m2", 1.0, True, "the minion moved from m1 to m2 before it returned"),
]


@pytest.mark.parametrize("master,seconds,written,why", [case[1:] for case in UNANSWERED],
                         ids=[case[0] for case in UNANSWERED])
def test_an_unanswered_return(guard, locate, clock, ledger_dir, master, seconds, written, why):
    locate.master = master
    payload(guard, "r1", "m1")
    clock.advance(seconds)
    fired = step(guard, locate)
    entries = on_disk(ledger_dir) if written else []
    assert os.path.exists(ledger_dir) == written
    assert [entry.get("reason") for entry in entries] == ([why] if written else [])
    if why is None:
        assert list(guard.in_flight) == ["r1"] and guard.undelivered == {} and fired == []
    else:
        assert guard.in_flight == {} and len(guard.undelivered) == 1
        assert len(fired) == (0 if master is None else 1)


def test_a_return_caught_in_a_change_of_master_is_undelivered_after_grace(guard, locate, clock, ledger_dir):
    """Handed over, then the minion switched (and came back to the return's master): Salt answers nothing."""
    connect(guard, "m2")
    payload(guard, "r1", "m1")  # m1 != the hint: judged at once, but the daemon is on m1 already
    clock.advance(0.25)
    connect(guard, "m1")
    clock.advance(0.5)
    assert step(guard, locate) == []  # within grace
    clock.advance(0.25)
    [(tag, load)] = step(guard, locate)
    assert REPLAY_TAG.match(tag)["master"] == "m1" and load["jid"] == JID
    [entry] = on_disk(ledger_dir)
    assert entry["reason"] == "the minion connected to m1 while sending it (Salt drops a return caught in a change of master)"


def test_a_connection_before_the_return_changes_nothing(guard, locate, clock, ledger_dir):
    connect(guard, "m1")
    clock.advance(0.5)
    payload(guard, "r1", "m1")
    clock.advance(5)
    assert step(guard, locate) == [] and list(guard.in_flight) == ["r1"]
    answer(guard, "r1", {"ret": None})
    assert on_disk(ledger_dir) == [] and guard.undelivered == {}


def test_a_return_persisted_after_grace_is_judged_once(guard, locate, clock, ledger_dir):
    payload(guard, "r1", "m1")
    clock.advance(1.5)
    step(guard, locate)
    [first] = on_disk(ledger_dir)
    mtime = os.stat(ha_ledger.Ledger(ledger_dir, MINION).path_for(first["key"])).st_mtime_ns
    for _ in range(5):
        clock.advance(1)
        assert step(guard, locate) == []
    assert os.stat(ha_ledger.Ledger(ledger_dir, MINION).path_for(first["key"])).st_mtime_ns == mtime  # not rewritten


def test_answer_timeout_follows_salts_retry_budget(ledger_dir, clock, locate):
    config = ha_returns.engine_config(
        {"directory": str(ledger_dir)}, {"return_retry_timer_max": 20, "return_retry_tries": 2}
    )
    guard = ha_returns.ReturnGuard(MINION, ha_ledger.Ledger(ledger_dir, MINION), config, locate, clock=clock)
    payload(guard, "r1", "m1")
    clock.advance(44.75)
    assert step(guard, locate) == []
    clock.advance(0.25)
    assert len(step(guard, locate)) == 1


# --- replays ----------------------------------------------------------------------


def undelivered_one(guard, locate, clock, original=None):
    """A return skipped by a failover m1 -> m2, and its first replay fired: ``(entry key, replay tag)``."""
    connect(guard, "m2")
    locate.master = "m2"
    payload(guard, "r1", "m1", original)
    [key] = guard.undelivered
    [(tag, _load)] = step(guard, locate)
    return key, tag


def test_a_replay_answered_is_removed_and_recorded(guard, locate, clock, ledger_dir, caplog):
    _key, tag = undelivered_one(guard, locate, clock)
    clock.advance(0.25)
    with caplog.at_level(logging.WARNING, logger="ha_returns"):
        answer(guard, request_of(tag), {"ret": {"jid": JID}})
    assert guard.undelivered == guard.replays == {}
    assert on_disk(ledger_dir) == []
    stored = history(ledger_dir)
    assert stored["counts"] == {"replayed": 1, "dropped": 0}
    assert stored["replayed"] == [{
        "jid": JID, "fun": "test.ping", "master": "m1", "why": "the minion moved from m1 to m2 before it returned",
        "seen": NOW, "attempts": 1, "to": "m2", "at": NOW + 0.25, "answer_seconds": 0.25,
    }]
    assert any(f"delivered the return of job {JID} (published by m1) to m2" in record.getMessage()
               for record in caplog.records)
    assert nothing_fired_for(guard, locate, clock) == []


@pytest.mark.parametrize(
    "retry_max,delays",
    [(60.0, [2, 4, 8, 16, 32, 60, 60]), (5.0, [2, 4, 5, 5]), (0.5, [0.5, 0.5])],
    ids=["default", "retry_max 5", "retry_max 0.5"],
)
def test_a_replay_answered_with_an_error_backs_off(ledger_dir, clock, locate, retry_max, delays):
    guard = make_guard(ledger_dir, clock, locate, retry_max=retry_max)
    key, tag = undelivered_one(guard, locate, clock)
    for attempt, delay in enumerate(delays, start=1):
        answer(guard, request_of(tag), {"ret": None, "error": "timeout"})
        entry = guard.undelivered[key]
        assert entry["attempts"] == attempt
        assert entry["next_try"] == pytest.approx(clock() + delay)
        assert [stored["attempts"] for stored in on_disk(ledger_dir)] == [attempt]  # persisted
        clock.advance(delay - 0.25)
        assert step(guard, locate) == []  # not before its time
        clock.advance(0.25)
        [(tag, _load)] = step(guard, locate)
    assert guard.undelivered[key]["attempts"] == len(delays) + 1


def test_a_replay_the_master_failed_to_store_is_sent_again_until_stored(guard, locate, clock, ledger_dir, caplog):
    """Salt's local_cache race on a job another master published (saltstack/salt#68508): the answer is ""."""
    key, tag = undelivered_one(guard, locate, clock)
    with caplog.at_level(logging.WARNING, logger="ha_returns"):
        answer(guard, request_of(tag), {"ret": ""})
    assert any("did not take the replay (its request server failed to store it); next try in 2 s" in record.getMessage()
               for record in caplog.records)
    assert [stored["attempts"] for stored in on_disk(ledger_dir)] == [1]
    clock.advance(1.9)
    assert step(guard, locate) == []
    clock.advance(0.1)
    [(retry_tag, load)] = step(guard, locate)
    assert load["jid"] == JID and guard.undelivered[key]["attempts"] == 2
    answer(guard, request_of(retry_tag), {"ret": None})
    assert guard.undelivered == guard.replays == {} and on_disk(ledger_dir) == []
    assert history(ledger_dir)["replayed"][0]["attempts"] == 2


@pytest.mark.parametrize(
    "answer_data,why",
    [({"ret": None}, None), ({"ret": True}, None), ({"ret": {"jid": JID}}, None), ({"ret": 0}, None),
     ({"ret": ""}, "its request server failed to store it"),
     ({"ret": False}, "its request server dropped it (signature check)"),
     ({"error": "timeout"}, "timeout"), ({"ret": None, "error": "timeout"}, "timeout")],
)
def test_refusal_reads_the_request_servers_answer(answer_data, why):
    assert ha_returns.refusal(answer_data) == why


def test_an_unanswered_replay_is_retried(guard, locate, clock, ledger_dir, caplog):
    key, tag = undelivered_one(guard, locate, clock)
    clock.advance(9.75)
    assert step(guard, locate) == []
    assert list(guard.replays) == [request_of(tag)]
    clock.advance(0.25)  # replay_timeout
    with caplog.at_level(logging.WARNING, logger="ha_returns"):
        assert step(guard, locate) == []  # backing off 2 s
    assert guard.replays == {}
    assert any("no answer to the replay to m2; next try in 2 s" in record.getMessage() for record in caplog.records)
    assert [stored["attempts"] for stored in on_disk(ledger_dir)] == [1]
    clock.advance(2)
    [(retry_tag, _load)] = step(guard, locate)
    assert request_of(retry_tag) != request_of(tag)
    assert guard.undelivered[key]["attempts"] == 2
    answer(guard, request_of(retry_tag))
    assert on_disk(ledger_dir) == [] and history(ledger_dir)["replayed"][0]["attempts"] == 2


def test_due_says_when_the_clock_work_would_act(guard, locate, clock, ledger_dir):
    # The engine reads queued events before its clock work only when that work would
    # act (each read of the minion's bus costs about 0.4 ms of CPU: bench/returns.py).
    payload(guard, "r1", "m1")
    assert guard.busy() and not guard.due()  # a fresh return: nothing to judge yet
    clock.advance(1.0)  # grace
    assert guard.due()
    answer(guard, "r1")
    assert not guard.busy() and not guard.due()
    key, tag = undelivered_one(guard, locate, clock)
    assert not guard.due()  # its replay is out, answered or timed out later
    clock.advance(10.0)  # replay_timeout
    assert guard.due()
    assert step(guard, locate) == []  # backing off 2 s
    assert not guard.due()
    clock.advance(2)
    assert guard.due() and guard.undelivered[key]["next_try"] <= clock()
    [(retry_tag, _load)] = step(guard, locate)
    assert request_of(retry_tag) != request_of(tag) and not guard.due()


def test_due_returns_are_replayed_oldest_first(guard, locate, clock):
    connect(guard, "m2")
    locate.master = None
    payload(guard, "r1", "m1", job_load(jid="1"))  # judged when its answer_timeout passes
    clock.advance(10)
    payload(guard, "r2", "m1", job_load(jid="2"))
    answer(guard, "r2", {"error": "timeout"})  # judged first
    clock.advance(30)
    assert step(guard, locate) == []
    locate.master = "m2"
    clock.advance(1)
    assert [load["jid"] for _tag, load in step(guard, locate)] == ["1", "2"]


# --- late answers -----------------------------------------------------------------


def test_a_late_answer_before_the_replay_forgets_the_return(guard, locate, clock, ledger_dir):
    locate.master = None  # no master to replay to: the return waits
    payload(guard, "r1", "m1")
    clock.advance(35)
    assert step(guard, locate) == []
    assert len(guard.undelivered) == 1 and len(on_disk(ledger_dir)) == 1
    answer(guard, "r1")  # Salt's own send got through after all
    assert guard.undelivered == {} and on_disk(ledger_dir) == []
    locate.master = "m1"
    assert nothing_fired_for(guard, locate, clock) == []
    assert history(ledger_dir)["counts"] == {"replayed": 0, "dropped": 0}


def test_a_late_error_answer_changes_nothing(guard, locate, clock, ledger_dir):
    locate.master = None
    payload(guard, "r1", "m1")
    clock.advance(35)
    step(guard, locate)
    answer(guard, "r1", {"ret": None, "error": "timeout"})
    assert len(guard.undelivered) == 1 and len(on_disk(ledger_dir)) == 1


def test_a_late_answer_after_the_replay_is_only_logged(guard, locate, clock, ledger_dir, caplog):
    locate.master = "m1"
    payload(guard, "r1", "m1")
    clock.advance(35)
    [(tag, _load)] = step(guard, locate)
    with caplog.at_level(logging.INFO, logger="ha_returns"):
        answer(guard, "r1")
    assert any(f"job {JID} reached m1 late; its replay may arrive twice" in record.getMessage()
               for record in caplog.records)
    assert len(guard.undelivered) == 1 and len(on_disk(ledger_dir)) == 1  # the replay decides
    answer(guard, request_of(tag))
    assert guard.undelivered == {} and on_disk(ledger_dir) == []
    assert history(ledger_dir)["counts"]["replayed"] == 1


def test_an_answer_to_an_unknown_request_is_ignored(guard, locate, clock, ledger_dir):
    answer(guard, "never-seen")
    answer(guard, "never-seen", {"error": "timeout"})
    assert guard.in_flight == guard.undelivered == guard.replays == {}
    assert not os.path.exists(ledger_dir)


# --- master events ------------------------------------------------------------------


def test_a_master_connecting_replays_at_once(guard, locate, clock):
    key, tag = undelivered_one(guard, locate, clock)
    for _ in range(3):
        answer(guard, request_of(tag), {"error": "timeout"})
        clock.advance(guard.undelivered[key]["next_try"] - clock())
        [(tag, _load)] = step(guard, locate)
    answer(guard, request_of(tag), {"error": "timeout"})
    assert guard.undelivered[key]["next_try"] == clock() + 16
    locate.master = "m3"
    connect(guard, "m3")
    assert guard.undelivered[key]["next_try"] == 0
    assert guard.hint == "m3"
    [(tag, _load)] = step(guard, locate)  # no wait
    assert REPLAY_TAG.match(tag)["master"] == "m3"


@pytest.mark.parametrize(
    "events,hint",
    [
        ([("__master_connected", {"master": "m1"})], "m1"),
        ([("__master_connected", {"master": "m1"}), ("__master_disconnected", {"master": "m1"})], None),
        ([("__master_connected", {"master": "m1"}), ("__master_disconnected", {"master": "m2"})], "m1"),
        ([("__master_connected", {"master": "m1"}), ("__master_disconnected", {})], "m1"),
        ([("__master_connected", {"master": "m1"}), ("__master_connected", {"master": "m2"})], "m2"),
        ([("__master_connected", {"master": 5})], None),
        ([("__master_connected", {})], None),
        ([("__master_connected", None)], None),
        ([("__master_connected", {"master": "m1"}), ("__master_failback", {"master": "m2"})], "m1"),
    ],
    ids=["connected", "disconnected", "other disconnected", "disconnected without master", "reconnected",
         "master not text", "no master", "no data", "failback is not a connection"],
)
def test_master_events_set_the_hint(guard, events, hint):
    for tag, data in events:
        guard.on_event(tag, data)
    assert guard.hint == hint


def test_the_hint_is_preferred_among_several_connected_masters(guard, locate, clock):
    locate.masters = ["m2", "m3"]
    connect(guard, "m3")
    payload(guard, "r1", "m1")
    [(tag, _load)] = step(guard, locate)
    assert REPLAY_TAG.match(tag)["master"] == "m3"
    guard.on_event(ha_returns.DISCONNECTED_TAG, {"master": "m3"})
    payload(guard, "r2", "m1", job_load(jid="20240101120000999999"))
    clock.advance(2)
    [(tag, _load)] = step(guard, locate)
    assert REPLAY_TAG.match(tag)["master"] == "m2"


def test_a_return_of_another_connected_master_is_not_replayed(guard, locate, clock, ledger_dir):
    """Multi-master (hot) minions are connected to several masters: a return tagged for any of them is theirs."""
    locate.masters = ["m1", "m2"]
    connect(guard, "m1")
    request = "r-multi"
    payload(guard, request, "m2")
    clock.advance(2)
    assert step(guard, locate) == []
    answer(guard, request)
    assert nothing_fired_for(guard, locate, clock) == []
    assert on_disk(ledger_dir) == []


# --- ignored events ---------------------------------------------------------------

IGNORED = [
    ("payload not a dict", "__master_req_channel_payload/r1/m1", ["_return"]),
    ("payload None", "__master_req_channel_payload/r1/m1", None),
    ("payload text", "__master_req_channel_payload/r1/m1", "cmd: _return"),
    ("payload bytes", "__master_req_channel_payload/r1/m1", b"\x81"),
    ("another minion", "__master_req_channel_payload/r1/m1", job_load(minion="db1")),
    ("no id", "__master_req_channel_payload/r1/m1", {"cmd": "_return", "jid": JID}),
    ("an event", "__master_req_channel_payload/r1/m1", {"cmd": "_minion_event", "id": MINION, "events": []}),
    ("a syndic return", "__master_req_channel_payload/r1/m1", {**job_load(), "cmd": "_syndic_return"}),
    ("no cmd", "__master_req_channel_payload/r1/m1", {"id": MINION, "jid": JID}),
    ("answer not a dict", "__master_req_channel_return/r1", [1]),
    ("tag not text", None, job_load()),
    ("tag bytes", b"__master_req_channel_payload/r1/m1", job_load()),
    ("tag number", 5, {}),
    ("job event", f"salt/job/{JID}/ret/{MINION}", job_load()),
    ("similar tag", "__master_req_channel_payloads/r1/m1", job_load()),
]


@pytest.mark.parametrize("tag,data", [case[1:] for case in IGNORED], ids=[case[0] for case in IGNORED])
def test_events_that_are_not_our_returns_are_ignored(guard, locate, clock, ledger_dir, tag, data):
    connect(guard, "m2")
    locate.master = "m2"  # a return for m1 now would be undelivered at once
    guard.on_event(tag, data)
    assert guard.in_flight == guard.undelivered == guard.replays == {}
    assert nothing_fired_for(guard, locate, clock, seconds=60) == []
    assert not os.path.exists(ledger_dir)


# --- restart ------------------------------------------------------------------------


def test_a_restart_replays_what_was_pending(ledger_dir, clock, locate):
    before = make_guard(ledger_dir, clock, locate)
    connect(before, "m1")
    payload(before, "r1", "m1", job_load(jid="1"))
    answer(before, "r1", {"error": "timeout"})  # undelivered, replay in flight at the restart
    step(before, locate)
    clock.advance(1)
    payload(before, "r2", "m1", job_load(jid="2"))
    answer(before, "r2", {"error": "timeout"})  # undelivered, replay failed: backing off
    [(tag, _load)] = step(before, locate)
    answer(before, request_of(tag), {"error": "timeout"})  # next try in 2 s
    clock.advance(0.5)
    payload(before, "r3", "m1", job_load(jid="3"))  # unanswered past grace: on disk
    clock.advance(1)
    step(before, locate)
    payload(before, "r4", "m1", job_load(jid="4"))  # unanswered, flushed at shutdown
    payload(before, "r5", "m1", job_load(jid="5"))
    answer(before, "r5")  # delivered: not in the ledger
    before.flush()
    assert sorted(entry["load"]["jid"] for entry in on_disk(ledger_dir)) == ["1", "2", "3", "4"]

    clock.advance(5)
    locate.master = "m2"  # the minion came back on another master
    after = make_guard(ledger_dir, clock, locate)
    assert after.restore() == []
    fired = step(after, locate)
    assert [load["jid"] for _tag, load in fired] == ["1", "2", "3", "4"]  # oldest first, at once
    assert {REPLAY_TAG.match(tag)["master"] for tag, _load in fired} == {"m2"}
    assert [entry["attempts"] for entry in sorted(after.undelivered.values(), key=lambda entry: entry["seen"])] == [
        2, 2, 1, 1  # every attempt is on disk, the one in flight at the restart too
    ]
    for tag, _load in fired:
        answer(after, request_of(tag))
    assert on_disk(ledger_dir) == []
    assert history(ledger_dir)["counts"]["replayed"] == 4


def test_a_restart_enforces_the_bounds(ledger_dir, clock, locate, caplog):
    before = make_guard(ledger_dir, clock, locate, max_age=60)
    payload(before, "r1", "m1", job_load(jid="1"))
    clock.advance(30)
    payload(before, "r2", "m1", job_load(jid="2"))
    before.flush()
    clock.advance(31)
    after = make_guard(ledger_dir, clock, locate, max_age=60)
    with caplog.at_level(logging.WARNING):
        after.restore()
    assert [entry["load"]["jid"] for entry in after.undelivered.values()] == ["2"]
    assert [item["jid"] for item in history(ledger_dir)["dropped"]] == ["1"]
    assert any("job 1" in record.getMessage() and "older than max_age (60 s)" in record.getMessage()
               for record in caplog.records)


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content)


def stored_entry(number, minion=MINION, **changes):
    key = f"{number:032x}"
    entry = {"format": ha_ledger.FORMAT, "key": key, "request_id": f"r{number}", "minion": minion, "master": "m1",
             "seen": NOW, "load": job_load(jid=str(number), minion=minion), "attempts": 0}
    entry.update(changes)
    return key, salt.payload.dumps(entry)


BAD_FILES = [
    # (id, file name, content, reason)
    ("corrupt", f"{1:032x}.ret", b"\x93\x01\x02", "corrupt"),
    ("not msgpack", f"{2:032x}.ret", b"master: m1\n", "corrupt"),
    ("wrong format", f"{3:032x}.ret", stored_entry(3, format="salt-ha-return/0")[1], "not a salt-ha return"),
    ("foreign", f"{4:032x}.ret", stored_entry(4, minion="db1")[1], "another minion ('db1')"),
    ("bad name", "job.ret", stored_entry(5)[1], "not a ledger entry name"),
    ("renamed", f"{6:032x}.ret", stored_entry(7)[1], "its key or time does not match its name"),
]


def test_a_restart_skips_every_bad_file_and_names_it(ledger_dir, clock, locate, caplog):
    pending = os.path.join(ledger_dir, "pending")
    for _id, name, content, _reason in BAD_FILES:
        write(os.path.join(pending, name), content)
    write(os.path.join(pending, f".{9:032x}.ret.abcd.tmp"), b"\x93half")  # an interrupted write
    key, content = stored_entry(8)
    write(os.path.join(pending, f"{key}.ret"), content)
    guard = make_guard(ledger_dir, clock, locate)
    with caplog.at_level(logging.WARNING, logger="ha_returns"):
        findings = guard.restore()
    assert guard.findings == findings
    assert {finding["path"]: finding["reason"] for finding in findings}.keys() == {
        os.path.join(pending, name) for _id, name, _content, _reason in BAD_FILES
    }
    for _id, name, _content, reason in BAD_FILES:
        path = os.path.join(pending, name)
        [finding] = [finding for finding in findings if finding["path"] == path]
        assert reason in finding["reason"]
        assert any(path in record.getMessage() and reason in record.getMessage() for record in caplog.records)
        assert os.path.exists(path)  # left for the operator
    assert list(guard.undelivered) == [key]
    fired = step(guard, locate)
    assert [load["jid"] for _tag, load in fired] == ["8"]
    assert nothing_fired_for(guard, locate, clock, seconds=5) == []


def test_a_restart_on_an_empty_ledger_does_nothing(ledger_dir, clock, locate):
    guard = make_guard(ledger_dir, clock, locate)
    assert guard.restore() == []
    assert nothing_fired_for(guard, locate, clock, seconds=5) == []
    assert not os.path.exists(ledger_dir)


# --- bounds -------------------------------------------------------------------------


def test_enforce_bounds_drops_what_is_too_old(ledger_dir, clock, locate, caplog):
    guard = make_guard(ledger_dir, clock, locate, max_age=60)
    locate.master = None  # nowhere to replay: the returns wait
    for number in range(3):
        payload(guard, f"r{number}", "m1", job_load(jid=str(number)))
        answer(guard, f"r{number}", {"error": "timeout"})
        clock.advance(20)
    step(guard, locate)
    clock.advance(1)  # jid 0 is 61 s old, jid 1 41 s
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ha_ledger"):
        dropped = guard.enforce_bounds()
    assert [entry["load"]["jid"] for entry in dropped] == ["0"]
    assert sorted(entry["load"]["jid"] for entry in guard.undelivered.values()) == ["1", "2"]
    assert sorted(entry["load"]["jid"] for entry in on_disk(ledger_dir)) == ["1", "2"]
    stored = history(ledger_dir)
    assert stored["counts"] == {"replayed": 0, "dropped": 1}
    assert stored["dropped"][0]["jid"] == "0" and stored["dropped"][0]["reason"] == "older than max_age (60 s)"
    assert [record.getMessage() for record in caplog.records] == [
        "salt-ha returns: dropping the undelivered return of job 0 (published by m1): older than max_age (60 s)"
    ]


def test_enforce_bounds_drops_the_oldest_over_max_bytes(ledger_dir, clock, locate, caplog):
    guard = make_guard(ledger_dir, clock, locate, max_bytes=1024 * 1024)
    locate.master = None
    big = "x" * 400_000
    payload(guard, "r0", "m1", job_load(jid="0", **{"return": big}))  # the oldest, judged last
    clock.advance(10)
    for number in (1, 2):
        payload(guard, f"r{number}", "m1", job_load(jid=str(number), **{"return": big}))
        answer(guard, f"r{number}", {"error": "timeout"})
    clock.advance(30)
    step(guard, locate)  # jid 0: its answer_timeout passed
    assert [entry["load"]["jid"] for entry in guard.undelivered.values()] == ["1", "2", "0"]
    with caplog.at_level(logging.WARNING, logger="ha_ledger"):
        dropped = guard.enforce_bounds()
    assert [entry["load"]["jid"] for entry in dropped] == ["0"]
    assert sorted(entry["load"]["jid"] for entry in on_disk(ledger_dir)) == ["1", "2"]
    assert history(ledger_dir)["dropped"][0]["reason"] == "ledger over max_bytes (1048576 bytes)"
    assert any("job 0" in record.getMessage() for record in caplog.records)


def test_enforce_bounds_spares_a_replay_in_flight(ledger_dir, clock, locate):
    guard = make_guard(ledger_dir, clock, locate, max_age=60)
    key, _tag = undelivered_one(guard, locate, clock)
    clock.advance(100)  # far past max_age, its replay still unanswered
    assert guard.enforce_bounds() == []
    assert list(guard.undelivered) == [key]


def test_the_history_is_capped(ledger_dir, clock, locate):
    ledger = ha_ledger.Ledger(ledger_dir, MINION)
    ledger.ensure()
    with open(ledger.history_path, "wb") as handle:  # a full history, newest first
        handle.write(salt.payload.dumps({
            "format": ha_ledger.HISTORY_FORMAT, "dropped": [], "counts": {"replayed": ha_ledger.HISTORY_KEPT},
            "replayed": [{"jid": f"old{number}"} for number in reversed(range(ha_ledger.HISTORY_KEPT))],
        }))
    guard = make_guard(ledger_dir, clock, locate)
    connect(guard, "m2")
    locate.master = "m2"
    for number in range(3):
        payload(guard, f"r{number}", "m1", job_load(jid=str(number)))
        for tag, _load in step(guard, locate):
            answer(guard, request_of(tag))
    stored = history(ledger_dir)
    assert len(stored["replayed"]) == ha_ledger.HISTORY_KEPT
    assert [item["jid"] for item in stored["replayed"][:4]] == ["2", "1", "0", f"old{ha_ledger.HISTORY_KEPT - 1}"]
    assert stored["replayed"][-1]["jid"] == "old3"
    assert stored["counts"]["replayed"] == ha_ledger.HISTORY_KEPT + 3


# --- a ledger that cannot be written ---------------------------------------------------


def test_a_ledger_that_cannot_be_written_still_replays(tmp_path, clock, locate, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    guard = make_guard(blocked, clock, locate)
    connect(guard, "m2")
    locate.master = "m2"
    with caplog.at_level(logging.WARNING):
        payload(guard, "r1", "m1")
        [(tag, _load)] = step(guard, locate)
        answer(guard, request_of(tag))
    assert guard.undelivered == {}
    assert any(record.levelno == logging.ERROR and "kept in memory only" in record.getMessage()
               for record in caplog.records)
    assert blocked.read_text() == "x"


# --- engine_config / configured_options ------------------------------------------------

MIB = 1024 * 1024
BAD_OPTIONS = [
    # (option, value, words of the message)
    ("max_age", True, "not a whole number"),
    ("max_age", "86400", "not a whole number"),
    ("max_age", 86400.0, "not a whole number"),
    ("max_age", 59, "60-2592000"),
    ("max_age", 30 * 86400 + 1, "60-2592000"),
    ("max_age", -1, "not a whole number"),
    ("max_age", None, "not a whole number"),
    ("max_age", [60], "not a whole number"),
    ("max_bytes", 0, "not a whole number"),
    ("max_bytes", MIB - 1, "not a whole number"),
    ("max_bytes", ha_returns.MAX_BYTES_LIMIT + 1, "not a whole number"),
    ("max_bytes", False, "not a whole number"),
    ("max_bytes", "100M", "not a whole number"),
    ("grace", 0, "out of range"),
    ("grace", -1, "out of range"),
    ("grace", 61, "out of range"),
    ("grace", float("nan"), "out of range"),
    ("grace", float("inf"), "out of range"),
    ("grace", True, "not a number of seconds"),
    ("grace", "soon", "not a number of seconds"),
    ("grace", None, "not a number of seconds"),
    ("grace", {"s": 1}, "not a number of seconds"),
    ("retry_max", 0, "out of range"),
    ("retry_max", 3601, "out of range"),
    ("retry_max", False, "not a number of seconds"),
    ("replay_timeout", 0, "out of range"),
    ("replay_timeout", 301, "out of range"),
    ("replay_timeout", True, "not a number of seconds"),
    ("replay_timeout", [], "not a number of seconds"),
    ("answer_timeout", 0, "out of range"),
    ("answer_timeout", -5, "out of range"),
    ("answer_timeout", 301, "out of range"),
    ("answer_timeout", True, "not a number of seconds"),
    ("answer_timeout", "later", "not a number of seconds"),
    ("directory", "relative/ledger", "not an absolute path"),
    ("directory", "ledger", "not an absolute path"),
    ("directory", "~/ledger", "not an absolute path"),
    ("directory", 5, "not an absolute path"),
    ("directory", ["/var/cache"], "not an absolute path"),
    ("directory", True, "not an absolute path"),
]


@pytest.mark.parametrize("option,value,words", BAD_OPTIONS, ids=[f"{case[0]}={case[1]!r}" for case in BAD_OPTIONS])
def test_engine_config_names_every_bad_value(option, value, words):
    with pytest.raises(SaltInvocationError) as err:
        ha_returns.engine_config({option: value}, {"cachedir": "/var/cache/salt/minion"})
    message = str(err.value)
    assert f"ha_returns {option} {value!r}" in message
    assert words in message


@pytest.mark.parametrize(
    "options,shown",
    [
        ({"grace_period": 1}, "'grace_period'"),
        ({"max_age": 60, "maxage": 60, "Grace": 1}, "'Grace', 'maxage'"),
        ({"engine_module": "ha_returns"}, "'engine_module'"),
        ({1: "x", "y": 2}, "1, 'y'"),
    ],
    ids=["one", "several", "engine_module", "keys of mixed types"],
)
def test_engine_config_refuses_unknown_options(options, shown):
    with pytest.raises(SaltInvocationError, match="ha_returns has no option") as err:
        ha_returns.engine_config(options, {})
    assert shown in str(err.value)


@pytest.mark.parametrize("options", [["grace"], "grace", 5, ("grace", 1)], ids=repr)
def test_engine_config_refuses_options_that_are_not_a_mapping(options):
    with pytest.raises(SaltInvocationError, match="are not a mapping") as err:
        ha_returns.engine_config(options, {})
    assert repr(options) in str(err.value)


@pytest.mark.parametrize("options", [None, {}, [], ""], ids=repr)
def test_engine_config_defaults(options):
    assert ha_returns.engine_config(options, {"cachedir": "/var/cache/salt/minion"}) == {
        "max_age": 86400, "max_bytes": 100 * MIB, "grace": 1.0, "answer_timeout": 35.0, "retry_max": 60.0,
        "replay_timeout": 10.0, "directory": "/var/cache/salt/minion/ha_returns",
    }


def test_engine_config_takes_good_values_in_their_canonical_type():
    options = {"max_age": 60, "max_bytes": MIB, "grace": "0.5", "answer_timeout": 12, "retry_max": 3600,
               "replay_timeout": "300", "directory": "/srv/ledger"}
    before = dict(options)
    config = ha_returns.engine_config(options, {})
    assert config == {"max_age": 60, "max_bytes": MIB, "grace": 0.5, "answer_timeout": 12.0, "retry_max": 3600.0,
                      "replay_timeout": 300.0, "directory": "/srv/ledger"}
    assert options == before


@pytest.mark.parametrize(
    "opts,answer_timeout",
    [
        ({}, 35.0),
        ({"return_retry_timer": 5, "return_retry_timer_max": 10, "return_retry_tries": 3}, 35.0),
        ({"return_retry_timer": 7}, 26.0),
        ({"return_retry_timer": 7, "return_retry_timer_max": 0}, 26.0),
        ({"return_retry_timer_max": 20, "return_retry_tries": 5}, 105.0),
        ({"return_retry_tries": 1}, 15.0),
        ({"return_retry_tries": 0}, 35.0),
        ({"return_retry_timer_max": 60, "return_retry_tries": 10}, 605.0),  # Salt's budget is not capped
        ({"return_retry_timer_max": "ten"}, 35.0),
        ({"return_retry_tries": [3]}, 35.0),
        ({"return_retry_timer_max": -10}, 35.0),
    ],
    ids=["salt defaults unset", "salt defaults", "timer only", "timer_max 0", "timer_max x tries", "one try",
         "tries 0", "beyond 300 s", "timer not a number", "tries not a number", "negative timer"],
)
def test_answer_timeout_defaults_to_salts_retry_budget_plus_5(opts, answer_timeout):
    assert ha_returns.engine_config({}, opts)["answer_timeout"] == answer_timeout


@pytest.mark.parametrize(
    "cachedir,directory",
    [("/var/cache/salt/minion", "/var/cache/salt/minion/ha_returns"),
     ("/var/cache/salt/minion/", "/var/cache/salt/minion/ha_returns"),
     (None, "/var/cache/salt/minion/ha_returns"),
     ("/tmp/m", "/tmp/m/ha_returns")],
    ids=repr,
)
def test_the_default_directory_is_under_the_cachedir(cachedir, directory):
    assert ha_returns.engine_config({}, {"cachedir": cachedir})["directory"] == directory


def test_a_relative_cachedir_is_refused():
    with pytest.raises(SaltInvocationError, match="ha_returns directory 'cache/ha_returns' is not an absolute path"):
        ha_returns.engine_config({}, {"cachedir": "cache"})


@pytest.mark.parametrize(
    "engines,options",
    [
        (None, None),
        ([], None),
        ({}, None),
        (["webhook"], None),
        ([{"webhook": {"port": 8080}}], None),
        (["ha_returns"], {}),
        (["webhook", "ha_returns"], {}),
        ([{"ha_returns": None}], {}),
        ([{"ha_returns": {}}], {}),
        ([{"ha_returns": {"grace": 2}}], {"grace": 2}),
        (["webhook", {"ha_returns": {"grace": 2, "max_age": 600}}], {"grace": 2, "max_age": 600}),
        ({"ha_returns": {"grace": 2}, "webhook": {}}, {"grace": 2}),
        ({"ha_returns": None}, {}),
        ("ha_returns", None),  # Salt iterates a bare string by character: no engine starts
        ([{"ha_returns": "grace"}], "grace"),  # handed on for engine_config to refuse
    ],
    ids=["none", "empty list", "empty dict", "another engine", "another engine with options", "bare name",
         "bare name after another", "None options", "empty options", "options", "options after another",
         "dict form", "dict form, None options", "bare string", "options not a mapping"],
)
def test_configured_options(engines, options):
    assert ha_returns.configured_options({"engines": engines}) == options


def test_configured_options_are_a_copy():
    opts = {"engines": [{"ha_returns": {"grace": 2}}]}
    ha_returns.configured_options(opts)["grace"] = 9
    assert opts["engines"][0]["ha_returns"] == {"grace": 2}


def test_configured_options_that_are_not_a_mapping_are_refused_by_engine_config():
    options = ha_returns.configured_options({"engines": [{"ha_returns": "grace"}]})
    with pytest.raises(SaltInvocationError, match="ha_returns options 'grace' are not a mapping"):
        ha_returns.engine_config(options, {})


# --- connected_masters: the publish connections of the minion's main process ----------


def test_connected_masters_reads_the_publish_port_of_the_main_process_only():
    import socket

    with socket.socket() as publisher, socket.socket() as other:
        publisher.bind(("127.0.0.1", 0))
        publisher.listen(1)
        other.bind(("127.0.0.2", 0))
        other.listen(1)
        port = publisher.getsockname()[1]
        opts = {"master": ["127.0.0.2", "127.0.0.1"], "publish_port": port, "master_port": other.getsockname()[1]}
        assert ha_returns.connected_masters(opts, os.getpid()) == []
        with socket.create_connection(("127.0.0.2", other.getsockname()[1])):  # a ret-port connection: not "connected"
            assert ha_returns.connected_masters(opts, os.getpid()) == []
        with socket.create_connection(("127.0.0.1", port)):
            assert ha_returns.connected_masters(opts, os.getpid()) == ["127.0.0.1"]


def test_a_late_success_answer_to_a_timed_out_replay_means_delivered(guard, locate, clock, ledger_dir):
    locate.master = "m2"
    connect(guard, "m2")
    payload(guard, "r-late", "m1")
    [(tag, _load)] = step(guard, locate)
    clock.advance(guard.config["replay_timeout"] + 0.1)
    step(guard, locate)  # the replay times out: retried later
    assert len(guard.undelivered) == 1
    answer(guard, request_of(tag))  # ... but its answer comes after all
    assert guard.undelivered == {} and on_disk(ledger_dir) == []
    assert [item["to"] for item in history(ledger_dir)["replayed"]] == ["m2"]
    assert nothing_fired_for(guard, locate, clock) == []


def test_a_late_error_answer_to_a_timed_out_replay_changes_nothing(guard, locate, clock, ledger_dir):
    locate.master = "m2"
    connect(guard, "m2")
    payload(guard, "r-late-error", "m1")
    [(tag, _load)] = step(guard, locate)
    clock.advance(guard.config["replay_timeout"] + 0.1)
    step(guard, locate)
    next_try = next(iter(guard.undelivered.values()))["next_try"]
    answer(guard, request_of(tag), {"ret": None, "error": "timeout"})
    assert next(iter(guard.undelivered.values()))["next_try"] == next_try
    assert guard.replays == {}


def test_each_replay_attempt_is_on_disk(guard, locate, clock, ledger_dir):
    locate.master = "m2"
    connect(guard, "m2")
    payload(guard, "r-attempts", "m1")
    step(guard, locate)
    assert [entry["attempts"] for entry in on_disk(ledger_dir)] == [1]


def test_busy_while_anything_is_in_flight_or_pending(guard, locate, clock):
    assert guard.busy() is False
    payload(guard, "r-busy", "m1")
    assert guard.busy() is True
    answer(guard, "r-busy")
    assert guard.busy() is False
