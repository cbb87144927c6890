"""Unit tests for ha_watch: transitions, flapping damping, hang detection, config validation."""

import re
import time

import pytest

import ha_endpoints
import ha_probe
import ha_watch
from tests.support import fake_master

A, B, C = "127.10.0.1", "127.10.0.2", "127.10.0.3"
SETTINGS = ha_watch.settings_from([{"timeout": 1}, {"hang_ticks": 3}, {"flap_count": 4}, {"flap_window": 60}])


class Ticker:
    """Feeds ticks to ``observe`` one second apart, keeping the state."""

    def __init__(self, settings=SETTINGS, primary=A, start=1_000_000.0):
        self.settings = settings
        self.primary = primary
        self.now = start
        self.state = None

    def tick(self, probes, connected=A, step=1.0):
        self.now += step
        self.state, events, heal = ha_watch.observe(
            self.state, probes, connected, self.primary, self.now, self.settings
        )
        return events, heal


def names(events):
    return [event["transition"] for event in events]


def test_first_tick_fires_connected_with_the_documented_data():
    events, heal = Ticker().tick({A: True, B: True})
    (event,) = events
    assert heal is None
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
    assert ticker.state["flapping"]
    # Up but flapping: counts as down.
    events, _ = ticker.tick({A: True, B: True}, step=30)
    assert events == []
    assert ticker.state["health"] == "degraded"
    # Stable for the whole window: its real state counts again.
    events, _ = ticker.tick({A: True, B: True}, step=31)
    assert names(events) == ["recovered"]
    assert not ticker.state["flapping"]


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


def test_hang_counts_consecutive_failed_ticks_and_heals_once():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    assert ticker.tick({A: False, B: True}) == ([], None)  # held back: A would not receive them
    assert ticker.tick({A: False, B: True}) == ([], None)
    events, heal = ticker.tick({A: False, B: True})
    assert heal == A
    assert events == []
    # The minion moved: failover with reason hang, since the first failed probe,
    # and the degraded event held back since then.
    events, heal = ticker.tick({A: False, B: True}, connected=B)
    assert heal is None
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
    assert ticker.state["hang"] is None
    assert ticker.tick({A: False, B: True})[1] is None
    assert ticker.tick({A: False, B: True})[1] is None
    assert ticker.tick({A: False, B: True})[1] == A


def test_heal_is_retried_after_another_hang_ticks_when_the_minion_did_not_move():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    heals = [ticker.tick({A: False, B: True})[1] for _ in range(6)]
    assert heals == [None, None, A, None, None, A]


def test_no_heal_when_no_other_master_is_up():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    heals = [ticker.tick({A: False, B: False})[1] for _ in range(6)]
    assert heals == [None] * 6


def test_no_heal_towards_a_flapping_master():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    for up in [False, True, False, True]:
        ticker.tick({A: True, B: up})
    heals = [ticker.tick({A: False, B: True})[1] for _ in range(4)]
    assert heals == [None] * 4


def test_no_heal_when_failover_on_hang_is_off():
    ticker = Ticker(settings=ha_watch.settings_from([{"failover_on_hang": False}]))
    ticker.tick({A: True, B: True})
    heals = [ticker.tick({A: False, B: True})[1] for _ in range(6)]
    assert heals == [None] * 6


def test_hang_ticks_one_heals_at_the_first_failed_probe():
    ticker = Ticker(settings=ha_watch.settings_from([{"hang_ticks": 1}]))
    ticker.tick({A: True, B: True})
    assert ticker.tick({A: False, B: True})[1] == A


def test_connected_master_unknown_to_the_list_never_holds_events():
    ticker = Ticker()
    events, heal = ticker.tick({A: True, B: False}, connected="elsewhere")
    assert names(events) == ["connected", "degraded"]
    assert heal is None


def test_held_events_are_bounded():
    ticker = Ticker(settings=ha_watch.settings_from([{"failover_on_hang": False}, {"flap_count": 1000}]))
    ticker.tick({A: True, B: True, C: True})
    for index in range(200):
        ticker.tick({A: False, B: bool(index % 2), C: True})
    assert len(ticker.state["pending"]) == ha_watch.PENDING_LIMIT


def test_state_passed_in_is_not_mutated():
    ticker = Ticker()
    ticker.tick({A: True, B: True})
    before = repr(ticker.state)
    ha_watch.observe(ticker.state, {A: False, B: True}, B, A, ticker.now + 1, SETTINGS)
    assert repr(ticker.state) == before


def test_defaults():
    assert ha_watch.settings_from([]) == {
        "interval": 5, "timeout": 2, "hang_ticks": 3, "failover_on_hang": True,
        "flap_count": 4, "flap_window": 60,
    }


@pytest.mark.parametrize(
    "config",
    [
        [{"interval": 5}, {"timeout": 2}],
        {"timeout": 1.5, "hang_ticks": 2},
        [{"interval": 1}, {"timeout": 1}, {"enabled": True}, {"_beacon_name": "ha"}],
        [],
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
        ([{"interval": 2}, {"timeout": 3}], "timeout: 3"),
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
    state, events, _ = ha_watch.tick(None, probed(), A, A, 1.0, SETTINGS, {(A, 4505)})
    assert names(events) == ["connected"]
    # Salt is signing in on B (its master option says B), no publish connection yet.
    state, events, _ = ha_watch.tick(state, probed(), B, A, 2.0, SETTINGS, set())
    assert events == [] and state["connected"] == A and state["candidate"] == {"master": B, "ticks": 1}
    state, events, _ = ha_watch.tick(state, probed(), B, A, 3.0, SETTINGS, {(B, 4505)})
    assert names(events) == ["failover"] and state["candidate"] is None


def test_tick_never_heals_a_master_salt_already_left():
    state, _, _ = ha_watch.tick(None, probed(), A, A, 1.0, SETTINGS, {(A, 4505)})
    heals = []
    for now in (2.0, 3.0, 4.0):
        # A hangs; Salt is already trying B (not confirmed): the hang counts for A,
        # but leaving "the current master" would now leave B.
        state, _, heal = ha_watch.tick(state, probed(up_a=False), B, A, now, SETTINGS, set())
        heals.append(heal)
    assert heals == [None, None, None]


def test_tick_without_remotes_trusts_the_option():
    state, events, _ = ha_watch.tick(None, probed(), A, A, 1.0, SETTINGS)
    state, events, _ = ha_watch.tick(state, probed(), B, A, 2.0, SETTINGS)
    assert names(events) == ["failover"]


# --- a fault of the probe is no news about the master ---------------------------


def test_tick_keeps_the_previous_state_of_a_master_whose_probe_failed():
    settings = ha_watch.settings_from([{"timeout": 1}, {"hang_ticks": 1}])
    state, events, _ = ha_watch.tick(None, probed(), A, A, 1.0, settings)
    assert names(events) == ["connected"]
    for now in (2.0, 3.0, 4.0):
        # A's probe raised an unexpected exception (up None): not "down", no
        # degraded event, no hang, no heal.
        state, events, heal = ha_watch.tick(state, probed(up_a=None), A, A, now, settings)
        assert (events, heal) == ([], None)
        assert state["raw"] == {A: True, B: True}
        assert state["hang"] is None
    # A master that was down stays down while its probe fails.
    state, events, _ = ha_watch.tick(state, probed(up_b=False), A, A, 5.0, settings)
    assert names(events) == ["degraded"]
    state, events, _ = ha_watch.tick(state, probed(up_b=None), A, A, 6.0, settings)
    assert events == [] and state["raw"] == {A: True, B: False}


def test_tick_counts_a_master_whose_probe_failed_at_the_first_tick_as_down():
    state, events, _ = ha_watch.tick(None, probed(up_b=None), A, A, 1.0, SETTINGS)
    assert names(events) == ["connected", "degraded"]
    assert state["raw"] == {A: True, B: False}


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
