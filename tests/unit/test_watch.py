"""Unit tests for ha_watch: transitions, flapping damping, hang detection, config validation, the probe worker."""

import os
import re
import statistics
import threading
import time

import pytest

import ha_endpoints
import ha_probe
import ha_watch
from tests.support import fake_master
from tests.support import lab as lablib

A, B, C = "127.10.0.1", "127.10.0.2", "127.10.0.3"
SETTINGS = ha_watch.settings_from([{"timeout": 1}, {"hang_ticks": 3}, {"flap_count": 4}, {"flap_window": 60}])


class Ticker:
    """Feeds ticks to ``observe`` one second apart, keeping the memory."""

    def __init__(self, settings=SETTINGS, primary=A, start=1_000_000.0):
        self.settings = settings
        self.primary = primary
        self.now = start
        self.memory = None

    def tick(self, probes, connected=A, step=1.0, probed_ago=None):
        """One tick ``step`` s later; ``probed_ago``: the worker's round ended that long before it."""
        self.now += step
        probed = None if probed_ago is None else self.now - probed_ago
        self.memory, events, leave = ha_watch.observe(
            self.memory, probes, connected, self.primary, self.now, self.settings, probed=probed
        )
        return events, leave


def names(events):
    return [event["transition"] for event in events]


def test_first_tick_fires_connected_with_the_documented_data():
    events, leave = Ticker().tick({A: True, B: True})
    (event,) = events
    assert leave is None
    assert event["tag"] == "connected"
    assert {k: event[k] for k in ("transition", "from", "to", "up", "total", "down")} == {
        "transition": "connected", "from": None, "to": A, "up": 2, "total": 2, "down": [],
    }
    assert event["since"].endswith("+00:00")


def test_nothing_fires_while_nothing_changes():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    for _ in range(10):
        assert ticker.tick({A: True, B: True}) == ([], None)


def test_first_tick_with_a_master_down_fires_connected_and_degraded():
    events, _ = Ticker().tick({A: True, B: False})
    assert names(events) == ["connected", "degraded"]
    assert events[1]["from"] is None and events[1]["to"] == "degraded"
    assert events[1]["down"] == [B]


def test_failover_after_the_master_closed():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    events, _ = ticker.tick({A: False, B: True}, connected=B)
    assert names(events) == ["failover", "degraded"]
    failover, degraded = events
    assert (failover["from"], failover["to"], failover["reason"]) == (A, B, "closed")
    assert (failover["up"], failover["total"], failover["down"]) == (1, 2, [A])
    assert (degraded["from"], degraded["to"]) == ("ok", "degraded")


def test_failover_while_the_old_master_answers_is_disconnected():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    events, _ = ticker.tick({A: True, B: True}, connected=B)
    assert names(events) == ["failover"]
    assert events[0]["reason"] == "disconnected"


def test_a_failover_seen_with_a_round_from_before_it_waits_for_a_fresh_round():
    """A killed master's last probe (before the kill) said it answers: not ``disconnected``."""
    ticker = Ticker()
    ticker.tick({A: True, B: True}, probed_ago=0.3)
    assert ticker.tick({A: True, B: True}, connected=B, probed_ago=0.3) == ([], None)
    changed = ticker.now
    assert ticker.tick({A: True, B: True}, connected=B, step=0.5, probed_ago=0.1) == ([], None)  # began before
    events, _ = ticker.tick({A: False, B: True}, connected=B, step=1.0, probed_ago=0.2)  # began after
    assert names(events) == ["failover", "degraded"]
    assert (events[0]["from"], events[0]["to"], events[0]["reason"]) == (A, B, "closed")
    assert events[0]["since"] == ha_watch.iso(changed)
    for _ in range(3):
        assert ticker.tick({A: False, B: True}, connected=B, probed_ago=0.2) == ([], None)


def test_a_failover_the_fresh_round_confirms_is_disconnected():
    ticker = Ticker()
    ticker.tick({A: True, B: True}, probed_ago=0.3)
    ticker.tick({A: True, B: True}, connected=B, probed_ago=0.3)
    events, _ = ticker.tick({A: True, B: True}, connected=B, step=1.5, probed_ago=0.2)
    assert names(events) == ["failover"] and events[0]["reason"] == "disconnected"


def test_a_held_failover_fires_when_the_worker_stays_behind():
    ticker = Ticker()
    ticker.tick({A: True, B: True}, probed_ago=0.3)
    ticker.tick({A: True, B: True}, connected=B, probed_ago=0.3)
    for waited in range(1, ha_watch.DEFER_LIMIT_SECONDS):  # the worker's latest round stays the old one
        assert ticker.tick({A: True, B: True}, connected=B, probed_ago=0.3 + waited) == ([], None)
    events, _ = ticker.tick({A: True, B: True}, connected=B, probed_ago=0.3 + ha_watch.DEFER_LIMIT_SECONDS)
    assert names(events) == ["failover"] and events[0]["reason"] == "disconnected"


def test_a_held_failover_fires_before_the_next_change():
    ticker = Ticker()
    ticker.tick({A: True, B: True, C: True}, probed_ago=0.3)
    ticker.tick({A: True, B: True, C: True}, connected=B, probed_ago=0.3)
    events, _ = ticker.tick({A: True, B: True, C: True}, connected=A, step=0.2, probed_ago=0.3)
    assert [(e["transition"], e["from"], e["to"]) for e in events] == [("failover", A, B), ("failback", B, A)]


def test_failback_to_the_first_master_fires_once():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    ticker.tick({A: False, B: True}, connected=B)
    events, _ = ticker.tick({A: True, B: True}, connected=A)
    assert names(events) == ["failback", "recovered"]
    assert (events[0]["from"], events[0]["to"], events[0]["reason"]) == (B, A, "failback")
    assert (events[1]["from"], events[1]["to"]) == ("degraded", "ok")
    for _ in range(5):
        assert ticker.tick({A: True, B: True}, connected=A) == ([], None)


def test_move_between_secondaries_is_a_failover():
    ticker = Ticker()
    ticker.tick({A: True, B: True, C: True}, connected=B)
    events, _ = ticker.tick({A: True, B: True, C: True}, connected=C)
    assert names(events) == ["failover"]


def test_lost_then_recovered():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    events, _ = ticker.tick({A: False, B: False}, connected=None)
    assert names(events) == ["lost"]
    assert (events[0]["from"], events[0]["to"], events[0]["up"], events[0]["down"]) == ("ok", "lost", 0, [A, B])
    events, _ = ticker.tick({A: False, B: True}, connected=B)
    assert names(events) == ["connected", "recovered"]
    assert (events[1]["from"], events[1]["to"]) == ("lost", "degraded")


def test_standby_down_is_degraded_then_recovered():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    events, _ = ticker.tick({A: True, B: False})
    assert names(events) == ["degraded"]
    assert events[0]["down"] == [B]
    assert ticker.tick({A: True, B: False}) == ([], None)
    events, _ = ticker.tick({A: True, B: True})
    assert names(events) == ["recovered"]
    assert (events[0]["from"], events[0]["to"], events[0]["down"]) == ("degraded", "ok", [])


def test_a_further_master_down_while_degraded_fires_degraded_again():
    ticker = Ticker()
    ticker.tick({A: True, B: False, C: True})
    events, _ = ticker.tick({A: True, B: False, C: False})
    assert names(events) == ["degraded"]
    assert (events[0]["from"], events[0]["to"], events[0]["down"]) == ("degraded", "degraded", [B, C])


def test_flapping_master_fires_flapping_once_then_nothing_until_stable():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    seen = []
    for up in [False, True, False, True, False, True, False, True]:
        events, _ = ticker.tick({A: True, B: up})
        seen.extend(names(events))
    # Three changes fire normally, the fourth starts the damping; then silence.
    assert seen == ["degraded", "recovered", "degraded", "flapping"]
    assert ticker.memory["flapping"]
    # Up but flapping: counts as down.
    events, _ = ticker.tick({A: True, B: True}, step=30)
    assert events == []
    assert ticker.memory["health"] == "degraded"
    # Stable for the whole window: its real state counts again.
    events, _ = ticker.tick({A: True, B: True}, step=31)
    assert names(events) == ["recovered"]
    assert not ticker.memory["flapping"]


def test_flapping_event_names_the_master_and_when_it_started():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    events = []
    for up in [False, True, False, True]:
        events, _ = ticker.tick({A: True, B: up})
    (event,) = events
    assert event["master"] == B
    assert event["since"] == ha_watch.iso(ticker.now - 3)


def test_slow_changes_never_flap():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    seen = []
    for up in [False, True, False, True, False, True]:
        events, _ = ticker.tick({A: True, B: up}, step=25)
        seen.extend(names(events))
    assert "flapping" not in seen
    assert seen.count("degraded") == 3 and seen.count("recovered") == 3


def test_hang_counts_consecutive_failed_ticks_and_leaves_once():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    assert ticker.tick({A: False, B: True}) == ([], None)  # held back: A would not receive them
    assert ticker.tick({A: False, B: True}) == ([], None)
    events, leave = ticker.tick({A: False, B: True})
    assert leave == A
    assert events == []
    # The minion moved: failover with reason hang, since the first failed probe,
    # and the degraded event held back since then.
    events, leave = ticker.tick({A: False, B: True}, connected=B)
    assert leave is None
    assert names(events) == ["degraded", "failover"]
    degraded, failover = events
    assert (failover["from"], failover["to"], failover["reason"]) == (A, B, "hang")
    assert failover["since"] == degraded["since"] == ha_watch.iso(ticker.now - 3)


def test_hang_counter_resets_when_the_master_answers_again():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    ticker.tick({A: False, B: True})
    ticker.tick({A: False, B: True})
    ticker.tick({A: True, B: True})
    assert ticker.memory["hang"] is None
    assert ticker.tick({A: False, B: True})[1] is None
    assert ticker.tick({A: False, B: True})[1] is None
    assert ticker.tick({A: False, B: True})[1] == A


def test_leave_is_retried_after_another_hang_ticks_when_the_minion_did_not_move():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    leaves = [ticker.tick({A: False, B: True})[1] for _ in range(6)]
    assert leaves == [None, None, A, None, None, A]


def test_no_leave_when_no_other_master_is_up():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    leaves = [ticker.tick({A: False, B: False})[1] for _ in range(6)]
    assert leaves == [None] * 6


def test_no_leave_towards_a_flapping_master():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    for up in [False, True, False, True]:
        ticker.tick({A: True, B: up})
    leaves = [ticker.tick({A: False, B: True})[1] for _ in range(4)]
    assert leaves == [None] * 4


def test_no_leave_when_failover_on_hang_is_off():
    ticker = Ticker(settings=ha_watch.settings_from([{"failover_on_hang": False}]))
    ticker.tick({A: True, B: True})
    leaves = [ticker.tick({A: False, B: True})[1] for _ in range(6)]
    assert leaves == [None] * 6


def test_hang_ticks_one_leaves_at_the_first_failed_probe():
    ticker = Ticker(settings=ha_watch.settings_from([{"hang_ticks": 1}]))
    ticker.tick({A: True, B: True})
    assert ticker.tick({A: False, B: True})[1] == A


def test_connected_master_unknown_to_the_list_never_holds_events():
    ticker = Ticker()
    events, leave = ticker.tick({A: True, B: False}, connected="elsewhere")
    assert names(events) == ["connected", "degraded"]
    assert leave is None


def test_held_events_are_bounded():
    ticker = Ticker(settings=ha_watch.settings_from([{"failover_on_hang": False}, {"flap_count": 1000}]))
    ticker.tick({A: True, B: True, C: True})
    for index in range(200):
        ticker.tick({A: False, B: bool(index % 2), C: True})
    assert len(ticker.memory["pending"]) == ha_watch.PENDING_LIMIT


def test_memory_passed_in_is_not_mutated():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    before = repr(ticker.memory)
    ha_watch.observe(ticker.memory, {A: False, B: True}, B, A, ticker.now + 1, SETTINGS)
    assert repr(ticker.memory) == before


def test_defaults_are_the_recommended_settings():
    assert ha_watch.settings_from([]) == {
        "interval": 1, "timeout": 1, "probe_interval": 0.5, "hang_ticks": 4, "failover_on_hang": True,
        "flap_count": 4, "flap_window": 60,
    }
    # A connected master silent for 2 s is left; one that stalls for 1.5 s is not.
    assert ha_watch.hang_seconds(ha_watch.settings_from([])) == 2.0


@pytest.mark.parametrize(
    "config",
    [
        [{"interval": 5}, {"timeout": 2}],
        {"timeout": 1.5, "hang_ticks": 2},
        [{"interval": 1}, {"timeout": 1}, {"enabled": True}, {"_beacon_name": "ha"}],
        [],
        # Probes run off the loop: a timeout longer than the interval blocks nothing.
        [{"interval": 1}, {"timeout": 3}, {"probe_interval": 0.1}],
    ],
)
def test_validate_accepts_good_configs(config):
    assert ha_watch.validate(config) == (True, "Valid beacon configuration")


@pytest.mark.parametrize(
    "config, named",
    [
        ("interval: 5", "'interval: 5'"),
        ([5], "5"),
        ([{"timout": 2}], "'timout'"),
        ([{"interval": 0}], "interval: 0"),
        ([{"interval": "5"}], "interval: '5'"),
        ([{"timeout": 0}], "timeout: 0"),
        ([{"timeout": 301}], "timeout: 301"),
        ([{"timeout": True}], "timeout: True"),
        ([{"hang_ticks": 0}], "hang_ticks: 0"),
        ([{"hang_ticks": 2.5}], "hang_ticks: 2.5"),
        ([{"failover_on_hang": "yes"}], "failover_on_hang: 'yes'"),
        ([{"flap_count": 1}], "flap_count: 1"),
        ([{"flap_window": -1}], "flap_window: -1"),
        ([{"probe_interval": 0.05}], "probe_interval: 0.05"),
        ([{"probe_interval": "1"}], "probe_interval: '1'"),
    ],
)
def test_validate_rejects_bad_configs_naming_the_value(config, named):
    valid, message = ha_watch.validate(config)
    assert valid is False
    assert named in message


def entry(master, address, publish_port=4505):
    return {"master": master, "addresses": [address], "publish_port": publish_port}


MASTERS = [entry(A, A), entry(B, B)]


@pytest.mark.parametrize(
    "previous, candidate, remotes, expected",
    [
        (A, A, set(), A),  # no change: nothing to confirm
        (None, None, set(), None),
        (A, B, {(B, 4505)}, B),  # publish connection to B: confirmed
        (A, B, {("::ffff:" + B, 4505)}, B),
        (A, B, {(B, 4506)}, A),  # only the ret port (still signing in): not yet
        (A, B, set(), A),
        (None, A, {(A, 4505)}, A),
        (None, A, set(), None),
        (A, "not-in-the-list", set(), "not-in-the-list"),
    ],
)
def test_confirmed_connection(previous, candidate, remotes, expected):
    assert ha_watch.confirmed_connection(previous, candidate, MASTERS, remotes) == expected


def test_confirmed_connection_reads_the_sockets_only_on_a_change():
    def remotes():
        raise AssertionError("read the sockets without a change")

    assert ha_watch.confirmed_connection(A, A, MASTERS, remotes) == A
    assert ha_watch.confirmed_connection(A, B, MASTERS, lambda: {(B, 4505)}) == B


def test_confirmed_connection_without_socket_proof_after_confirm_ticks():
    seen = ha_watch.CONFIRM_TICKS
    assert ha_watch.confirmed_connection(A, B, MASTERS, set(), seen - 1) == A
    assert ha_watch.confirmed_connection(A, B, MASTERS, set(), seen) == B


class Endpoint:
    def __init__(self, master, host):
        self.master, self.host = master, host


@pytest.mark.parametrize(
    "connected, expected",
    [
        (None, None), ("", None), (["a", "b"], None),  # not signed in: the option is still the list
        ("m1", "m1"), ("127.10.0.9", "m2:4510"), ("m2:4510", "m2:4510"), ("other", "other"),
    ],
)
def test_configured_entry(connected, expected):
    endpoints = [Endpoint("m1", "m1"), Endpoint("m2:4510", "127.10.0.9")]
    assert ha_watch.configured_entry(connected, endpoints) == expected


def probed(up_a=True, up_b=True):
    return [dict(entry(A, A), up=up_a), dict(entry(B, B), up=up_b)]


def test_tick_waits_for_the_publish_connection_then_reports_the_failover():
    memory, events, _ = ha_watch.tick(None, probed(), A, A, 1.0, SETTINGS, {(A, 4505)})
    assert names(events) == ["connected"]
    # Salt is signing in on B (its master option says B), no publish connection yet.
    memory, events, _ = ha_watch.tick(memory, probed(), B, A, 2.0, SETTINGS, set())
    assert events == [] and memory["connected"] == A and memory["candidate"] == {"master": B, "ticks": 1}
    memory, events, _ = ha_watch.tick(memory, probed(), B, A, 3.0, SETTINGS, {(B, 4505)})
    assert names(events) == ["failover"] and memory["candidate"] is None


def test_tick_never_leaves_a_master_salt_already_left():
    memory, _, _ = ha_watch.tick(None, probed(), A, A, 1.0, SETTINGS, {(A, 4505)})
    leaves = []
    for now in (2.0, 3.0, 4.0):
        # A hangs; Salt is already trying B (not confirmed): the hang counts for A,
        # but leaving "the current master" would now leave B.
        memory, _, leave = ha_watch.tick(memory, probed(up_a=False), B, A, now, SETTINGS, set())
        leaves.append(leave)
    assert leaves == [None, None, None]


def test_tick_without_remotes_trusts_the_option():
    memory, events, _ = ha_watch.tick(None, probed(), A, A, 1.0, SETTINGS)
    memory, events, _ = ha_watch.tick(memory, probed(), B, A, 2.0, SETTINGS)
    assert names(events) == ["failover"]


# --- a fault of the probe is no news about the master ---------------------------


def test_tick_keeps_the_previous_memory_of_a_master_whose_probe_failed():
    settings = ha_watch.settings_from([{"timeout": 1}, {"hang_ticks": 1}])
    memory, events, _ = ha_watch.tick(None, probed(), A, A, 1.0, settings)
    assert names(events) == ["connected"]
    for now in (2.0, 3.0, 4.0):
        # A's probe raised an unexpected exception (up None): not "down", no
        # degraded event, no hang, no leave.
        memory, events, leave = ha_watch.tick(memory, probed(up_a=None), A, A, now, settings)
        assert (events, leave) == ([], None)
        assert memory["raw"] == {A: True, B: True}
        assert memory["hang"] is None
    # A master that was down stays down while its probe fails.
    memory, events, _ = ha_watch.tick(memory, probed(up_b=False), A, A, 5.0, settings)
    assert names(events) == ["degraded"]
    memory, events, _ = ha_watch.tick(memory, probed(up_b=None), A, A, 6.0, settings)
    assert events == [] and memory["raw"] == {A: True, B: False}


def test_tick_counts_a_master_whose_probe_failed_at_the_first_tick_as_down():
    memory, events, _ = ha_watch.tick(None, probed(up_b=None), A, A, 1.0, SETTINGS)
    assert names(events) == ["connected", "degraded"]
    assert memory["raw"] == {A: True, B: False}


# --- tick_probe against stand-ins on 127.0.0.1 ----------------------------------


@pytest.fixture
def answering_master():
    with fake_master.AnsweringMaster() as master:
        yield master


@pytest.fixture
def silent_master():
    with fake_master.SilentMaster() as master:
        yield master


def endpoints_for(*masters):
    return [ha_endpoints.endpoint_for(master, {"master_port": 4506, "publish_port": 4505}) for master in masters]


def test_tick_probe_says_why_each_master_did_not_answer(answering_master, silent_master):
    refused = fake_master.closed_port()
    unresolvable = "salt-ha-test.invalid"
    masters = [
        f"127.0.0.1:{answering_master.port}",
        f"127.0.0.1:{silent_master.port}",
        f"127.0.0.1:{refused}",
        f"{unresolvable}:4506",
    ]
    started = time.monotonic()
    entries = ha_watch.tick_probe(endpoints_for(*masters), 0.5)
    assert time.monotonic() - started < 1.5
    assert [(e["master"], e["up"]) for e in entries] == [
        (masters[0], True), (masters[1], False), (masters[2], False), (masters[3], False),
    ]
    assert entries[0]["error"] is None
    assert entries[1]["error"] == f"ret port {silent_master.port}: no answer within 0.5 s"
    assert entries[2]["error"].startswith(f"ret port {refused}: ")
    assert "refused" in entries[2]["error"].lower()
    assert re.match(f"DNS lookup of '{unresolvable}' (failed|timed out)", entries[3]["error"])
    assert entries[3]["addresses"] == []


def test_tick_probe_logs_and_names_an_exception_of_the_probe(monkeypatch, caplog, answering_master):
    def broken_ping(address, port, timeout, transport, context):
        if port == answering_master.port:
            raise AttributeError("'NoneType' object has no attribute 'send'\nforged line")
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(ha_probe, "app_ping", broken_ping)
    masters = [f"127.0.0.1:{answering_master.port}", "127.0.0.1:9"]
    with caplog.at_level("WARNING"):
        faulty, refused = ha_watch.tick_probe(endpoints_for(*masters), 0.5)
    assert faulty["up"] is None  # not "down": unknown
    assert faulty["error"] == (
        f"ret port {answering_master.port}: ping check failed: "
        "AttributeError: 'NoneType' object has no attribute 'send'\\nforged line"
    )
    assert refused["up"] is False
    assert refused["error"] == "ret port 9: [Errno 111] Connection refused"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # the refusal is an answer, not logged
    assert repr(masters[0]) in warnings[0]
    assert "AttributeError" in warnings[0] and "\n" not in warnings[0]


# --- hang detection from the worker's measure of silence --------------------------


def worker_entries(up_a=True, up_b=True, silence_a=None):
    """Entries as the worker hands them out: ``silence`` of A when it did not answer."""
    return [dict(entry(A, A), up=up_a, silence=silence_a), dict(entry(B, B), up=up_b, silence=None)]


def silent(since, seconds, probes=1):
    return {"since": since, "seconds": seconds, "probes": probes}


HANG_2S = ha_watch.settings_from([{"probe_interval": 0.5}, {"hang_ticks": 4}])


def test_the_connected_master_is_left_after_hang_seconds_of_silence_whatever_the_tick_count():
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    since, leaves = 101.0, []
    # One tick sees 1.2 s of silence, the next 1.9 s, then 2.0 s: left once; the
    # minion did not move: left again after another 2 s of silence.
    for seconds in (1.2, 1.9, 2.0, 3.5, 3.9, 4.0):
        memory, events, leave = ha_watch.tick(
            memory, worker_entries(up_a=False, silence_a=silent(since, seconds)), A, A, since + seconds, HANG_2S
        )
        assert events == []  # held back while A does not answer
        leaves.append(leave)
    assert leaves == [None, None, A, None, None, A]
    memory, events, leave = ha_watch.tick(
        memory, worker_entries(up_a=False, silence_a=silent(since, 4.6)), B, A, since + 4.6, HANG_2S
    )
    failover = next(event for event in events if event["transition"] == "failover")
    assert (failover["from"], failover["to"], failover["reason"]) == (A, B, "hang")
    assert failover["since"] == ha_watch.iso(since)  # the start of the first failed probe
    assert leave is None


def test_a_master_that_stalls_for_less_than_hang_seconds_is_not_left():
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    for stall in range(3):
        since = 101.0 + stall * 100  # further apart than flap_window: no flapping
        for seconds in (0.5, 1.0, 1.5):
            memory, _, leave = ha_watch.tick(
                memory, worker_entries(up_a=False, silence_a=silent(since, seconds)), A, A, since + seconds, HANG_2S
            )
            assert leave is None
        memory, events, leave = ha_watch.tick(memory, worker_entries(), A, A, since + 2, HANG_2S)
        assert leave is None and memory["hang"] is None
        # A answers again: its connection stays under check, events held back for VERIFY_SECONDS.
        assert events == [] and memory["suspect"] == {"master": A, "since": since + 0.5, "answered": since + 2}
        memory, events, leave = ha_watch.tick(
            memory, worker_entries(), A, A, since + 2 + ha_watch.VERIFY_SECONDS, HANG_2S
        )
        assert leave is None and memory["suspect"] is None
        assert [event["transition"] for event in events] == ["degraded", "recovered"]  # held, then released


def test_a_new_silence_starts_from_zero_after_a_leave():
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    memory, _, leave = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=silent(101, 2.1)), A, A, 103.1, HANG_2S)
    assert leave == A
    memory, _, _ = ha_watch.tick(memory, worker_entries(), A, A, 104.0, HANG_2S)
    memory, _, leave = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=silent(105, 2.0)), A, A, 107.0, HANG_2S)
    assert leave == A


def test_no_news_is_no_progress_of_a_hang():
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    memory, _, _ = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=silent(101, 1.5)), A, A, 102.5, HANG_2S)
    # The worker is behind or its probe failed (up None): the silence stays at 1.5 s.
    for now in (103.0, 104.0, 110.0):
        memory, events, leave = ha_watch.tick(memory, worker_entries(up_a=None), A, A, now, HANG_2S)
        assert (events, leave) == ([], None)
        assert memory["hang"]["seconds"] == 1.5
    memory, _, leave = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=silent(101, 2.0)), A, A, 111.0, HANG_2S)
    assert leave == A


# --- the probe worker leaves a hung master itself (worker_leave_due) -----------------


WORKER_LEAVE_CASES = [
    # (id, entries, connected, flapping, left, due)
    ("hung 2 s, B up", worker_entries(up_a=False, silence_a=silent(101, 2.0, 4)), A, (), None, True),
    ("hung 1.9 s", worker_entries(up_a=False, silence_a=silent(101, 1.9, 4)), A, (), None, False),
    ("A answers", worker_entries(), A, (), None, False),
    ("A's probe failed itself (no news)", worker_entries(up_a=None, silence_a=silent(101, 3.0)), A, (), None, False),
    ("no other master up", worker_entries(up_a=False, up_b=False, silence_a=silent(101, 3.0)), A, (), None, False),
    ("the other master flaps", worker_entries(up_a=False, silence_a=silent(101, 3.0)), A, (B,), None, False),
    ("the minion is on B", worker_entries(up_a=False, silence_a=silent(101, 3.0)), B, (), None, False),
    ("not connected", worker_entries(up_a=False, silence_a=silent(101, 3.0)), None, (), None, False),
    ("left at 2 s, now 3.9 s", worker_entries(up_a=False, silence_a=silent(101, 3.9)), A, (),
     {"master": A, "since": 101, "seconds": 2.0}, False),
    ("left at 2 s, now 4 s: again", worker_entries(up_a=False, silence_a=silent(101, 4.0)), A, (),
     {"master": A, "since": 101, "seconds": 2.0}, True),
    ("left an earlier silence", worker_entries(up_a=False, silence_a=silent(105, 2.0)), A, (),
     {"master": A, "since": 101, "seconds": 2.0}, True),
]


@pytest.mark.parametrize("entries,connected,flapping,left,due", [case[1:] for case in WORKER_LEAVE_CASES],
                         ids=[case[0] for case in WORKER_LEAVE_CASES])
def test_worker_leave_due(entries, connected, flapping, left, due):
    found = ha_watch.worker_leave_due(entries, connected, HANG_2S, flapping, left)
    assert (found is not None) == due
    if due:
        assert found["master"] == A


def test_worker_leave_due_honours_failover_on_hang():
    settings = ha_watch.settings_from([{"probe_interval": 0.5}, {"hang_ticks": 4}, {"failover_on_hang": False}])
    assert ha_watch.worker_leave_due(worker_entries(up_a=False, silence_a=silent(101, 3.0)), A, settings) is None


def test_a_tick_after_the_workers_leave_does_not_leave_again_and_calls_the_failover_a_hang():
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    left = dict(silent(101, 2.1, 4), left=2.1)  # the worker left A at 2.1 s of this silence
    memory, _, leave = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=left), A, A, 103.3, HANG_2S)
    assert leave is None and memory["leaving"]["master"] == A
    memory, _, leave = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=dict(left, seconds=3.0)), A, A,
                                     104.0, HANG_2S)
    assert leave is None  # the worker leaves again at 4.1 s; a tick only then
    memory, events, _ = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=dict(left, seconds=3.5)), B, A,
                                      104.5, HANG_2S)
    failover = next(event for event in events if event["transition"] == "failover")
    assert (failover["reason"], failover["since"]) == ("hang", ha_watch.iso(101))


def test_a_move_seen_only_after_the_workers_leave_is_a_hang():
    """The worker left and Salt moved before any tick saw A silent: the failover is still a hang."""
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    left = dict(silent(101, 2.1, 4), left=2.1)
    memory, events, leave = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=left), B, A, 103.4, HANG_2S)
    failover = next(event for event in events if event["transition"] == "failover")
    assert (failover["from"], failover["to"], failover["reason"]) == (A, B, "hang") and leave is None


# --- the probe worker, against stand-ins on 127.0.0.1 ------------------------------


class FreezableMaster:
    """A master stand-in that answers pings, except while frozen (a SIGSTOPped master as its peers see it)."""

    def __init__(self):
        self.thawed = threading.Event()
        self.thawed.set()
        self.master = fake_master.AnsweringMaster(answer=self._answer)
        self.port = self.master.port

    def _answer(self, request):
        self.thawed.wait(20)
        return fake_master.clear_ping_answer(request)

    def freeze(self):
        self.thawed.clear()

    def thaw(self):
        self.thawed.set()

    def close(self):
        self.thaw()
        self.master.close()


@pytest.fixture
def freezable_master():
    master = FreezableMaster()
    try:
        yield master
    finally:
        master.close()


@pytest.fixture
def worker_name(request):
    """A beacon name of the test's own; its probe worker is stopped at the end."""
    name = f"test-{request.node.name}"
    try:
        yield name
    finally:
        ha_watch.stop_worker(name, wait=3)
        ha_watch.MEMORY.pop(name, None)


def fast(**options):
    """Settings with quick rounds, for tests."""
    config = {"timeout": 0.2, "probe_interval": 0.1, **options}
    return ha_watch.settings_from([{key: value} for key, value in config.items()])


def first_round(name, endpoints, settings):
    """Start the worker as the first tick does and wait (bounded) for its first round."""
    entries, _ = ha_watch.worker_results(name, endpoints, settings)
    assert entries is None  # the first tick never waits: nothing to report yet
    worker = ha_watch.probe_worker(name, endpoints, settings)
    assert worker.wait_for_round(0, 5)
    return worker


class BeaconLoop:
    """Ticks as the beacon does (worker results, then ``tick``), recording the wall time of each."""

    def __init__(self, name, endpoints, settings):
        self.name, self.endpoints, self.settings = name, endpoints, settings
        self.memory = None
        self.walls = []

    def tick(self, current=None):
        current = current or self.endpoints[0].master
        started = time.perf_counter()
        entries, _ = ha_watch.worker_results(self.name, self.endpoints, self.settings)
        events, leave = [], None
        if entries is not None:
            self.memory, events, leave = ha_watch.tick(
                self.memory, entries, current, self.endpoints[0].master, time.time(), self.settings
            )
        self.walls.append(time.perf_counter() - started)
        return events, leave

    def run(self, seconds, every=0.02, current=None):
        """Tick every ``every`` s for ``seconds`` (bounded); the first leave's time after the start, or None."""
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            _, leave = self.tick(current)
            if leave:
                return time.monotonic() - started
            time.sleep(every)
        return None


def test_a_tick_never_waits_for_a_hung_standby(answering_master, silent_master, worker_name):
    endpoints = endpoints_for(f"127.0.0.1:{answering_master.port}", f"127.0.0.1:{silent_master.port}")
    settings = ha_watch.settings_from([{"timeout": 0.5}, {"probe_interval": 0.1}])
    first_round(worker_name, endpoints, settings)
    loop = BeaconLoop(worker_name, endpoints, settings)
    events, _ = loop.tick()
    assert names(events) == ["connected", "degraded"]
    for _ in range(40):
        assert loop.tick() == ([], None)
        time.sleep(0.01)
    walls_ms = sorted(wall * 1000 for wall in loop.walls)
    # Each probe round waits 0.5 s for the hung standby; a tick waits for nothing.
    assert statistics.median(walls_ms) < 5, walls_ms
    assert walls_ms[-1] < 100, walls_ms


def connected_loop(worker_name, connected_master, other_master, settings):
    """A beacon loop on ``[connected_master, other_master]`` after its first round and its ``connected`` tick."""
    endpoints = endpoints_for(f"127.0.0.1:{connected_master.port}", f"127.0.0.1:{other_master.port}")
    first_round(worker_name, endpoints, settings)
    loop = BeaconLoop(worker_name, endpoints, settings)
    assert names(loop.tick()[0]) == ["connected"]
    return loop


def test_the_worker_leaves_a_hung_connected_master_but_not_a_short_stall(freezable_master, answering_master,
                                                                           worker_name):
    settings = fast(hang_ticks=8)  # 0.8 s of silence
    loop = connected_loop(worker_name, freezable_master, answering_master, settings)
    # Silent for 0.4 s, then answering again: never left.
    freezable_master.freeze()
    time.sleep(0.4)
    freezable_master.thaw()
    assert loop.run(2.0) is None
    assert loop.memory["hang"] is None
    # Hung: left after 0.8 s of silence, plus at most a round and a tick.
    freezable_master.freeze()
    left_after = loop.run(5.0)
    assert left_after is not None, "the hung connected master was never left"
    assert 0.8 <= left_after < 0.8 + ha_watch.round_seconds(settings) + 1.0, left_after
    assert loop.memory["hang"]["probes"] >= 2


def test_the_worker_leaves_a_hung_connected_master_at_the_end_of_its_round(freezable_master, answering_master,
                                                                            worker_name):
    settings = fast(hang_ticks=8)  # 0.8 s of silence
    loop = connected_loop(worker_name, freezable_master, answering_master, settings)
    endpoints = loop.endpoints
    left = []
    ha_watch.follow_connection(worker_name, endpoints[0].master, (), lambda master: left.append((master, time.monotonic())))
    frozen = time.monotonic()
    freezable_master.freeze()
    deadline = time.monotonic() + 5
    while not left and time.monotonic() < deadline:  # no tick runs meanwhile
        time.sleep(0.01)
    assert left and left[0][0] == endpoints[0].master, "the worker did not leave the hung master"
    assert 0.8 <= left[0][1] - frozen < 0.8 + ha_watch.round_seconds(settings) + 0.3, left[0][1] - frozen
    time.sleep(0.5)
    assert len(left) == 1  # once per silence of hang_seconds
    assert loop.tick()[1] is None  # the tick does not leave again
    assert loop.memory["leaving"]["master"] == endpoints[0].master


def test_a_leave_that_failed_is_not_marked_and_the_tick_leaves(freezable_master, answering_master, worker_name):
    settings = fast(hang_ticks=8)
    loop = connected_loop(worker_name, freezable_master, answering_master, settings)

    def broken(master):
        raise RuntimeError("the minion's bus is gone")

    ha_watch.follow_connection(worker_name, loop.endpoints[0].master, (), broken)
    freezable_master.freeze()
    left_after = loop.run(5.0)
    assert left_after is not None, "neither the worker nor a tick left the hung master"
    assert ha_watch.probe_worker(worker_name, loop.endpoints, settings).left is None


def test_a_round_stretched_by_this_process_being_paused_is_no_news(freezable_master, answering_master,
                                                                     worker_name, monkeypatch):
    """A paused minion (SIGSTOP, suspended VM) must not leave a healthy master when it resumes."""
    settings = fast(hang_ticks=2)  # 0.2 s of silence would be enough
    loop = connected_loop(worker_name, freezable_master, answering_master, settings)
    left = []
    ha_watch.follow_connection(worker_name, loop.endpoints[0].master, (), left.append)
    real_probe = ha_watch.tick_probe

    def paused_probe(endpoints, timeout, transport="zeromq"):
        entries = real_probe(endpoints, timeout, transport)
        time.sleep(timeout + ha_probe.COLLECT_SLACK + ha_watch.STALL_SECONDS + 0.3)  # the process did not run
        return [dict(entry, up=False) if entry["master"] == endpoints[0].master else entry for entry in entries]

    worker = ha_watch.probe_worker(worker_name, loop.endpoints, settings)
    monkeypatch.setattr(ha_watch, "tick_probe", paused_probe)

    def stalled_round():
        entry = worker.latest["entries"][0]
        return entry if "paused" in (entry.get("error") or "") else None

    stalled = lablib.wait_for(stalled_round, 10, "a probe round stretched by the pause")
    monkeypatch.setattr(ha_watch, "tick_probe", real_probe)
    assert stalled["up"] is None and stalled["silence"] is None and "paused" in stalled["error"]
    assert left == [] and loop.tick()[1] is None


def test_stale_results_are_not_taken_as_up(answering_master, worker_name):
    endpoints = endpoints_for(f"127.0.0.1:{answering_master.port}", f"127.0.0.1:{fake_master.closed_port()}")
    settings = fast(timeout=0.3)
    worker = first_round(worker_name, endpoints, settings)
    loop = BeaconLoop(worker_name, endpoints, settings)
    assert names(loop.tick()[0]) == ["connected", "degraded"]
    # The worker falls behind: its last round ages past STALE_ROUNDS rounds.
    worker.stop(wait=3)
    time.sleep(ha_watch.STALE_ROUNDS * ha_watch.round_seconds(settings) + 0.1)
    entries, _ = ha_watch.worker_results(worker_name, endpoints, settings)  # restarts it, seeded with the old round
    assert [entry["up"] for entry in entries] == [None, None]
    assert all(entry["error"].startswith("no probe result for ") for entry in entries)
    memory, events, leave = ha_watch.tick(loop.memory, entries, endpoints[0].master, endpoints[0].master,
                                          time.time(), settings)
    assert (events, leave) == ([], None)
    assert memory["raw"] == loop.memory["raw"]  # unknown: the memory stays as it was


def test_a_new_configuration_restarts_the_worker(answering_master, worker_name):
    endpoints = endpoints_for(f"127.0.0.1:{answering_master.port}")
    first = first_round(worker_name, endpoints, fast())
    assert ha_watch.probe_worker(worker_name, endpoints, fast()) is first  # same configuration: same worker
    entries, _ = ha_watch.worker_results(worker_name, endpoints, fast(timeout=0.3))
    assert entries is None  # a new worker: its results are not the old one's
    second = ha_watch.probe_worker(worker_name, endpoints, fast(timeout=0.3))
    assert second is not first and second.timeout == 0.3
    more = endpoints_for(f"127.0.0.1:{answering_master.port}", "127.0.0.1:9")
    third = ha_watch.probe_worker(worker_name, more, fast(timeout=0.3))
    assert third is not second
    assert third.wait_for_round(0, 5)
    assert [entry["master"] for entry in third.latest["entries"]] == [e.master for e in more]
    for old in (first, second):
        old._thread.join(2)  # pylint: disable=protected-access
        assert not old._thread.is_alive() and old.exit == "stopped"  # pylint: disable=protected-access
    assert ha_watch.running_workers().count(worker_name) == 1


def test_stop_and_idle_stop_the_thread(answering_master, worker_name, monkeypatch):
    endpoints = endpoints_for(f"127.0.0.1:{answering_master.port}")
    worker = first_round(worker_name, endpoints, fast())
    assert worker_name in ha_watch.running_workers()
    ha_watch.stop_worker(worker_name, wait=3)
    assert worker_name not in ha_watch.running_workers()
    assert worker.exit == "stopped"
    # A later tick (Salt's refresh closed the beacon) restarts it, reading the old round meanwhile.
    entries, _ = ha_watch.worker_results(worker_name, endpoints, fast())
    assert [entry["up"] for entry in entries] == [True]
    # No tick reads it any more (beacon disabled): it stops by itself.
    monkeypatch.setattr(ha_watch, "IDLE_SECONDS", 0.3)
    idle = ha_watch.probe_worker(worker_name, endpoints, fast())
    idle._thread.join(5)  # pylint: disable=protected-access
    assert idle.exit == "idle"
    assert worker_name not in ha_watch.running_workers()


def test_a_forked_process_inherits_no_running_worker(answering_master, worker_name):
    endpoints = endpoints_for(f"127.0.0.1:{answering_master.port}")
    first_round(worker_name, endpoints, fast())
    pid = os.fork()
    if pid == 0:  # the child, as a job process forked from the minion
        try:
            inherited = ha_watch.running_workers() == []
            entries, _ = ha_watch.worker_results(worker_name, endpoints, fast())
            own = ha_watch.probe_worker(worker_name, endpoints, fast())
            ok = inherited and entries is None and own.pid == os.getpid() and own.running()
        except Exception:  # pylint: disable=broad-except  (any failure in the child is a failed check)
            ok = False
        os._exit(0 if ok else 1)  # pylint: disable=protected-access
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert worker_name in ha_watch.running_workers()  # the parent's worker runs on


# --- front doors: the connection in doubt, a name that moved ----------------------------


def test_the_connected_master_is_suspect_from_its_first_failed_probe_until_it_answered_verify_seconds():
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    assert memory["suspect"] is None
    memory, _, _ = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=silent(100.5, 0.5)), A, A, 101.0, HANG_2S)
    assert memory["suspect"] == {"master": A, "since": 101.0, "answered": None}
    for now in (102.0, 102.0 + ha_watch.VERIFY_SECONDS - 0.1):
        memory, events, _ = ha_watch.tick(memory, worker_entries(), A, A, now, HANG_2S)
        assert memory["suspect"] == {"master": A, "since": 101.0, "answered": 102.0}
        assert events == []
    memory, events, _ = ha_watch.tick(memory, worker_entries(), A, A, 102.0 + ha_watch.VERIFY_SECONDS, HANG_2S)
    assert memory["suspect"] is None
    assert [event["transition"] for event in events] == ["degraded", "recovered"]


def test_a_new_connected_master_is_not_suspect():
    memory, _, _ = ha_watch.tick(None, worker_entries(), A, A, 100.0, HANG_2S)
    memory, _, _ = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=silent(100.5, 0.5)), A, A, 101.0, HANG_2S)
    memory, _, _ = ha_watch.tick(memory, worker_entries(up_a=False, silence_a=silent(100.5, 1.5)), B, A, 102.0, HANG_2S)
    assert memory["suspect"] is None


def named_entry(addresses, up=True):
    return {"master": "salt.lab", "host": "salt.lab", "addresses": list(addresses), "ret_port": 4506,
            "publish_port": 4505, "up": up, "error": None, "fault": False, "silence": None}


@pytest.mark.parametrize(
    ("previous", "now", "up", "remotes", "moved"),
    [
        ([A], [B], True, {(A, 4505), (A, 4506)}, True),  # DNS switched, the minion still on A
        ([A], [B], True, {(B, 4505)}, False),  # already reconnected
        ([A], [A, B], True, {(A, 4505)}, False),  # A still among the addresses
        ([A], [A], True, {(A, 4505)}, False),  # nothing changed
        (None, [B], True, {(A, 4505)}, False),  # first tick: unknown before
        ([A], [B], False, {(A, 4505)}, False),  # the new address does not answer: no reason to go there
        ([A], [B], True, set(), False),  # no publish connection at all: Salt is reconnecting
        (["::ffff:" + A], [A], True, {(A, 4505)}, False),  # mapped IPv4 is the same address
    ],
)
def test_address_moved(previous, now, up, remotes, moved):
    assert ha_watch.address_moved(previous, named_entry(now, up), remotes) is moved


def test_a_name_that_now_resolves_elsewhere_is_left_once_to_reconnect():
    remotes = {(A, 4505)}
    memory, _, leave = ha_watch.tick(None, [named_entry([A])], "salt.lab", "salt.lab", 100.0, HANG_2S, remotes)
    assert leave is None
    memory, _, leave = ha_watch.tick(memory, [named_entry([B])], "salt.lab", "salt.lab", 101.0, HANG_2S, remotes)
    assert leave == "salt.lab"
    memory, _, leave = ha_watch.tick(memory, [named_entry([B])], "salt.lab", "salt.lab", 102.0, HANG_2S, remotes)
    assert leave is None  # the addresses did not change again
    # Without the socket view (ha.watch by hand) a moved name is never acted on.
    memory, _, leave = ha_watch.tick(memory, [named_entry([A])], "salt.lab", "salt.lab", 103.0, HANG_2S)
    assert leave is None


def test_an_address_that_changed_host_makes_the_connected_master_suspect_for_verify_seconds():
    entries = [dict(entry(A, A), up=True, silence=None), dict(entry(B, B), up=True, silence=None)]
    table = {A: "02:00:00:00:00:0a"}
    memory, _, _ = ha_watch.tick(None, entries, A, A, 100.0, HANG_2S, neighbours=lambda addresses: dict(table))
    memory, _, _ = ha_watch.tick(memory, entries, A, A, 101.0, HANG_2S, neighbours=lambda addresses: dict(table))
    assert memory["suspect"] is None  # first sight and same host: nothing
    table[A] = "02:00:00:00:00:0b"  # the VIP moved (gratuitous ARP), every probe answered
    memory, _, _ = ha_watch.tick(memory, entries, A, A, 102.0, HANG_2S, neighbours=lambda addresses: dict(table))
    assert memory["suspect"] == {"master": A, "since": 102.0, "answered": 102.0}
    memory, _, _ = ha_watch.tick(memory, entries, A, A, 103.0, HANG_2S, neighbours=lambda addresses: dict(table))
    assert memory["suspect"]["master"] == A
    memory, _, _ = ha_watch.tick(
        memory, entries, A, A, 102.0 + ha_watch.VERIFY_SECONDS, HANG_2S, neighbours=lambda addresses: dict(table)
    )
    assert memory["suspect"] is None
