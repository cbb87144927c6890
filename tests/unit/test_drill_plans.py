"""
Unit tests for the drill's pure part (ha_drill: settings, arguments, canaries,
blackout windows, stop conditions, the report), its history and metrics
(ha_drill_history, on real files) and the freeze watchdog (ha_drill_watchdog, on a
real process it freezes and thaws).
"""

import datetime
import os
import stat
import subprocess
import sys
import time

import psutil
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_drill
import ha_drill_history
import ha_drill_local
import ha_drill_run
import ha_drill_watchdog

MON_10 = datetime.datetime(2026, 11, 23, 10, 0)  # a Monday


# --- settings and arguments -------------------------------------------------------


def test_default_settings():
    assert ha_drill.drill_settings({}) == ha_drill.DrillSettings()
    assert ha_drill.drill_settings({"ha": {"peers": {}}}).allow_hang is False


@pytest.mark.parametrize(
    "section,message",
    [
        ("yes", "ha:drill 'yes' is not a mapping"),
        ({"allow_hang": "yes"}, "ha:drill:allow_hang 'yes' is not True or False"),
        ({"max_minions": 0}, "ha:drill:max_minions 0 is out of range"),
        ({"max_minions": "5"}, "ha:drill:max_minions '5' is not a whole number"),
        ({"max_percent": 150}, "ha:drill:max_percent 150 is out of range"),
        ({"max_duration": -1}, "ha:drill:max_duration -1 is out of range"),
        ({"blackout": "Mon 08:00-18:00"}, "is not a list of windows"),
        ({"blackout": ["weekdays 08:00-18:00"]}, "window 'weekdays 08:00-18:00' is not"),
        ({"blackout": ["Mon-Fry 08:00-18:00"]}, "'mon-fry' is not a day"),
        ({"blackout": ["25:00-26:00"]}, "'25:00' is not a time of day"),
        ({"textfile": "drill.prom"}, "ha:drill:textfile 'drill.prom' is not an absolute path"),
        ({"alow_hang": True}, "unknown setting(s) 'alow_hang'"),
    ],
)
def test_bad_settings_are_named(section, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_drill.drill_settings({"ha": {"drill": section}})
    assert message in str(err.value)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "chaos"}, "mode 'chaos' is not one of minion, hang"),
        ({"tgt": ""}, "tgt '' is not a glob"),
        ({"percent": 0}, "percent 0 is out of range"),
        ({"percent": "ten"}, "percent 'ten' is not a number"),
        ({"count": 0}, "count 0 is out of range"),
        ({"budget": 0}, "budget 0 is out of range"),
        ({"seed": -1}, "seed -1 is out of range"),
        ({"duration": 99999}, "duration 99999 is out of range"),
        ({"max_failed": True}, "max_failed True is not a whole number"),
        ({"rpo": "no"}, "rpo 'no' is not True or False"),
        ({"master": ""}, "master '' is not a master id"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_drill.drill_request(**kwargs)
    assert message in str(err.value)


def test_a_seed_is_chosen_and_reported_when_none_is_given():
    request = ha_drill.drill_request()
    assert isinstance(request.seed, int) and request.mode == "minion" and request.budget == 60


# --- canaries ------------------------------------------------------------------------------


MINIONS = [f"web{n:02d}" for n in range(40)]


def test_canaries_are_reproducible_with_a_seed():
    settings = ha_drill.DrillSettings(max_minions=100, max_percent=100)
    first = ha_drill.choose_canaries(MINIONS, ha_drill.drill_request(percent=10, seed=42), settings)
    again = ha_drill.choose_canaries(list(reversed(MINIONS)), ha_drill.drill_request(percent=10, seed=42), settings)
    other = ha_drill.choose_canaries(MINIONS, ha_drill.drill_request(percent=10, seed=43), settings)
    assert first == again and len(first[0]) == 4 and first[1] == "asked"
    assert first[0] != other[0]
    assert set(first[0]) <= set(MINIONS)


@pytest.mark.parametrize(
    "request_kwargs,settings,expected",
    [
        ({"percent": 10}, ha_drill.DrillSettings(), (4, "asked")),
        ({"count": 30}, ha_drill.DrillSettings(), (10, "ha:drill:max_minions")),
        ({"count": 30}, ha_drill.DrillSettings(max_minions=100), (10, "ha:drill:max_percent")),
        ({"percent": 1}, ha_drill.DrillSettings(), (1, "asked")),  # at least one
        ({"count": 99}, ha_drill.DrillSettings(max_minions=1000, max_percent=100), (40, "minions available")),
    ],
)
def test_the_blast_radius_never_exceeds_the_limits(request_kwargs, settings, expected):
    assert ha_drill.canary_count(len(MINIONS), ha_drill.drill_request(**request_kwargs), settings) == expected


def test_no_minion_no_canary():
    assert ha_drill.choose_canaries([], ha_drill.drill_request(), ha_drill.DrillSettings()) == ([], "no minion matched")


# --- blackout windows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window,now,inside",
    [
        ("Mon-Fri 08:00-18:00", MON_10, True),
        ("Mon-Fri 08:00-18:00", MON_10.replace(hour=18), False),
        ("Mon-Fri 08:00-18:00", MON_10 + datetime.timedelta(days=5), False),  # Saturday
        ("Sat,Sun 00:00-24:00", MON_10 + datetime.timedelta(days=6), True),  # Sunday
        ("09:00-11:00", MON_10 + datetime.timedelta(days=3), True),  # every day
        ("Fri-Mon 22:00-02:00", MON_10.replace(hour=1), True),  # Sunday night into Monday
        ("Mon 22:00-02:00", MON_10.replace(hour=23), True),
        ("Mon 22:00-02:00", (MON_10 + datetime.timedelta(days=1)).replace(hour=1), True),  # Tuesday 01:00
        ("Mon 22:00-02:00", MON_10.replace(hour=1), False),  # Monday 01:00 belongs to Sunday's night
        ("Sat-Mon 10:00-11:00", MON_10, True),  # a range across the week's end
    ],
)
def test_blackout_windows(window, now, inside):
    assert ha_drill.in_window(ha_drill.parse_window(window), now) is inside


def test_the_blackout_gate_names_the_window():
    settings = ha_drill.drill_settings({"ha": {"drill": {"blackout": ["Sat 00:00-01:00", "Mon-Fri 08:00-18:00"]}}})
    gate = ha_drill.blackout_gate(settings, MON_10)
    assert gate["ok"] is False and "'Mon-Fri 08:00-18:00'" in gate["reason"] and "Mon 10:00" in gate["reason"]
    assert ha_drill.blackout_gate(settings, MON_10.replace(hour=19))["ok"] is True


# --- stop conditions and the report -------------------------------------------------------------


def entries(*oks):
    return {f"m{n}": ha_drill.minion_entry("a", "b" if ok else None, 1.0 if ok else None, ok=ok)
            for n, ok in enumerate(oks)}


def test_stop_conditions():
    request = ha_drill.drill_request(max_failed=1, budget=5)
    assert ha_drill.stop_reason(entries(True, False), request, set()) is None
    reason = ha_drill.stop_reason(entries(True, False, False), request, set())
    assert reason.startswith("2 minion(s) did not answer through another master within 5 s (max_failed 1)")
    assert "master(s) not the drill's target stopped answering: b" == ha_drill.stop_reason(entries(True), request,
                                                                                            {"b"})


def test_rto_summary():
    assert ha_drill.rto_summary([]) == {"p50": None, "p95": None, "max": None}
    summary = ha_drill.rto_summary([float(n) for n in range(1, 21)])
    assert summary == {"p50": 10.5, "p95": 19.0, "max": 20.0}


def test_report_result():
    request = ha_drill.drill_request()
    passed = ha_drill.report("x", request, [ha_drill.gate("g", True)], entries(True, True), 1.0, 2.0, restored=True)
    assert passed["result"] is True and passed["failed"] == [] and passed["rto"]["max"] == 1.0
    for changes in ({"restored": False}, {"aborted": "why"}, {"test": True}):
        kwargs = {"restored": True, **changes}
        assert ha_drill.report("x", request, [], entries(True), 1.0, 2.0, **kwargs)["result"] is False
    refused = ha_drill.report("x", request, [ha_drill.gate("g", False, "no")], {}, 1.0, 2.0)
    assert refused["result"] is False
    failed = ha_drill.report("x", request, [], entries(True, False), 1.0, 2.0, restored=True)
    assert failed["result"] is False and failed["failed"] == ["m1"]


def test_runner_errors_are_reduced_to_the_exception():
    answer = "Exception occurred in runner ha.local_drill: Traceback (most recent call last):\n  File x\nValueError: bad"
    assert ha_drill_run.runner_error(answer) == "ValueError: bad"
    assert ha_drill_run.runner_error(["odd"]) == "unexpected answer \"['odd']\""


# --- history, lock and metrics on real files --------------------------------------------------


def report_at(drill_id, mode="minion", result=True, rto=0.5, failed=(), test=False):
    return {"id": drill_id, "mode": mode, "result": result, "test": test, "ended": 1800000000.5,
            "rto": {"p50": rto, "p95": rto, "max": rto}, "failed": list(failed)}


def test_history_keeps_the_newest_and_files_are_private(tmp_path):
    opts = {"cachedir": str(tmp_path)}
    for day in range(1, 5):
        ha_drill_history.save(opts, report_at(f"202611{day:02d}T100000Z-abcdef"), keep=3)
    history = ha_drill_history.history(opts, limit=10)
    assert [item["id"] for item in history] == [f"202611{day:02d}T100000Z-abcdef" for day in (4, 3, 2)]
    folder = tmp_path / "ha_drill" / "history"
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in folder.iterdir())
    (folder / "20261130T100000Z-abcdef.json").write_text("{not json")
    assert ha_drill_history.history(opts, limit=1) == [{"id": "20261130T100000Z-abcdef", "error": "unreadable report"}]
    with pytest.raises(CommandExecutionError, match="is not a drill id"):
        ha_drill_history.save(opts, {"id": "../../etc/passwd"}, keep=3)


def test_one_drill_at_a_time(tmp_path):
    opts = {"cachedir": str(tmp_path)}
    assert ha_drill_history.running(opts) is None
    with ha_drill_history.drill_lock(opts, "20261127T100000Z-000001"):
        held = ha_drill_history.running(opts)
        assert held["id"] == "20261127T100000Z-000001" and held["pid"] == os.getpid()
        # another process cannot take it
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import ha_drill_history as h\n"
            "try:\n    h.drill_lock({'cachedir': sys.argv[2]}, '20261127T100001Z-000002').__enter__()\n"
            "except h.DrillRunning as err:\n    print(err)\n"
        )
        out = subprocess.run([sys.executable, "-c", code, os.path.dirname(ha_drill_history.__file__), str(tmp_path)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert "drill 20261127T100000Z-000001" in out and "is running on this master" in out
    assert ha_drill_history.running(opts) is None


def test_metrics_of_the_last_drills(tmp_path):
    reports = [
        report_at("20261127T100000Z-000003", rto=1.25, failed=["m1"], result=False),
        report_at("20261127T090000Z-000002", rto=0.75),
        report_at("20261127T080000Z-000001", mode="hang", rto=3.5),
        report_at("20261127T110000Z-000004", test=True, rto=99),
    ]
    lines = ha_drill_history.metric_lines(reports)
    assert 'salt_ha_drill_rto_seconds{mode="minion",quantile="0.5"} 1.25' in lines
    assert 'salt_ha_drill_rto_seconds{mode="hang",quantile="1"} 3.5' in lines
    assert 'salt_ha_drill_failed_minions{mode="minion"} 1' in lines
    assert 'salt_ha_drill_last_success_timestamp_seconds{mode="minion"} 1800000000.5' in lines
    assert not [line for line in lines if "99" in line]
    assert "# TYPE salt_ha_drill_failed_minions gauge" in lines
    opts = {"cachedir": str(tmp_path)}
    ha_drill_history.save(opts, reports[1], keep=5)
    path = ha_drill_history.write_textfile(opts, str(tmp_path / "drill.prom"))
    assert 'quantile="0.95"} 0.75' in open(path).read()


# --- the watchdog, on a real process -------------------------------------------------------------


@pytest.fixture
def fake_master(tmp_path):
    """A process whose command line says salt-master, with a child, and its pidfile."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    process = subprocess.Popen([sys.executable, "-c", code, "salt-master"], start_new_session=True)
    pidfile = tmp_path / "master.pid"
    pidfile.write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not psutil.Process(process.pid).children():
        time.sleep(0.05)
    yield process, pidfile
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    process.wait(10)


def test_the_watchdog_freezes_then_thaws(tmp_path, fake_master):
    process, pidfile = fake_master
    child = psutil.Process(process.pid).children()[0]
    state_path = str(tmp_path / "freeze.json")
    now = time.time()
    pid = ha_drill_watchdog.master_pid(str(pidfile))
    state = ha_drill_watchdog.schedule_freeze(state_path, "20261127T100000Z-000001", pid, now + 0.3, now + 1.5)
    assert state["state"] == "scheduled" and ha_drill_watchdog.is_active(state)
    watchdog = psutil.Process(state["watchdog_pid"])
    assert os.getsid(watchdog.pid) == watchdog.pid  # its own session: no group kill reaches it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ha_drill_watchdog.read_state(state_path)["state"] != "frozen":
        time.sleep(0.02)
    assert psutil.Process(process.pid).status() == psutil.STATUS_STOPPED and child.status() == psutil.STATUS_STOPPED
    while time.monotonic() < deadline and ha_drill_watchdog.read_state(state_path)["state"] != "thawed":
        time.sleep(0.02)
    final = ha_drill_watchdog.read_state(state_path)
    assert final["state"] == "thawed" and final["thawed_at"] >= now + 1.5 and not final["stopped_early"]
    assert sorted(final["frozen_pids"]) == sorted([process.pid, child.pid])
    assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED
    assert child.status() != psutil.STATUS_STOPPED
    assert not ha_drill_watchdog.is_active(final)
    assert stat.S_IMODE(os.stat(state_path).st_mode) == 0o600


def test_sigterm_thaws_at_once(tmp_path, fake_master):
    process, pidfile = fake_master
    state_path = str(tmp_path / "freeze.json")
    now = time.time()
    state = ha_drill_watchdog.schedule_freeze(state_path, "20261127T100000Z-000001",
                                              ha_drill_watchdog.master_pid(str(pidfile)), now + 0.1, now + 60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ha_drill_watchdog.read_state(state_path)["state"] != "frozen":
        time.sleep(0.02)
    os.kill(state["watchdog_pid"], 15)
    while time.monotonic() < deadline and ha_drill_watchdog.read_state(state_path)["state"] != "thawed":
        time.sleep(0.02)
    final = ha_drill_watchdog.read_state(state_path)
    assert final["state"] == "thawed" and final["stopped_early"] is True and final["thawed_at"] < now + 10
    assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED


def test_only_a_salt_master_is_frozen(tmp_path):
    pidfile = tmp_path / "master.pid"
    pidfile.write_text(str(os.getpid()))
    with pytest.raises(ValueError, match="is not a salt-master"):
        ha_drill_watchdog.master_pid(str(pidfile))
    pidfile.write_text("garbage")
    with pytest.raises(ValueError, match="cannot read the salt-master pid"):
        ha_drill_watchdog.master_pid(str(pidfile))


def test_the_health_endpoint_serves_the_drill_families(tmp_path):
    import ha_health  # noqa: PLC0415  (the engine's logic; prometheus_client)

    opts = {"cachedir": str(tmp_path), "id": "m1"}
    ha_drill_history.save(opts, report_at("20261127T090000Z-000002", rto=0.75, failed=["w1", "w2"]), keep=5)
    health = ha_health.HealthResult(up=True, latency_ms=1.0, error=None, checked_at=0.0)
    ctx = ha_health.ScrapeContext(opts=opts, master="m1", health=health, probes=1)
    text = ha_health.metrics_text(ctx, providers=(ha_health.drill_metrics,))
    assert 'salt_ha_drill_rto_seconds{master="m1",mode="minion",quantile="0.95"} 0.75' in text
    assert 'salt_ha_drill_failed_minions{master="m1",mode="minion"} 2.0' in text


class FakePeer:
    """A peer master whose answers the test decides (no salt-api): ``ha_drill_run.Master``'s interface."""

    def __init__(self, name, answers):
        self.name, self.answers, self.is_local, self.calls = name, list(answers), False, 0

    def call(self, action, seconds=None, **kwargs):
        self.calls += 1
        if self.answers.pop(0) if self.answers else True:
            return {"master": self.name, "now": time.time()}
        raise CommandExecutionError(f"peer {self.name}: unreachable")


def test_the_monitor_names_a_master_that_stops_answering(monkeypatch):
    monkeypatch.setattr(ha_drill_run, "MONITOR_INTERVAL", 0.05)
    steady, failing = FakePeer("b", [True] * 1000), FakePeer("c", [True, False, False, False, False] + [False] * 1000)
    target = FakePeer("a", [False] * 1000)
    monitor = ha_drill_run.Monitor({}, {"a": target, "b": steady, "c": failing}, target="a")
    monitor.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not monitor.down:
        time.sleep(0.02)
    monitor.stop()
    monitor.join(5)
    assert monitor.down == {"c"} and target.calls == 0 and steady.calls >= 3


def test_one_missed_check_is_not_a_master_down(monkeypatch):
    monkeypatch.setattr(ha_drill_run, "MONITOR_INTERVAL", 0.05)
    flaky = FakePeer("b", [True, False, True, False, True, False, True] * 100)
    monitor = ha_drill_run.Monitor({}, {"b": flaky})
    monitor.start()
    time.sleep(1)
    monitor.stop()
    monitor.join(5)
    assert monitor.down == set() and flaky.calls >= 5


class SleepyPeer:
    """A peer whose ``await`` takes its whole window and whose ``leave`` records its deadline."""

    def __init__(self, name):
        self.name, self.is_local, self.leave_deadlines = name, False, []

    def call(self, action, seconds=None, **kwargs):
        if action == "await":
            time.sleep(kwargs["budget"])
            return {"master": self.name, "answers": {}}
        self.leave_deadlines.append((time.time(), kwargs["not_after"]))
        return {"master": self.name, "published_at": time.time()}


def test_the_drill_stops_watching_only_after_a_late_leave_can_no_longer_run(monkeypatch):
    # The CI failure of session 6: the watchers' budget started LEAD before the leave's,
    # so the drill gave up on a stuck minion while its leave could still run and move it.
    monkeypatch.setattr(ha_drill_run, "SETTLE", 0.3)
    lead, budget = 0.3, 0.6
    peers = {"a": SleepyPeer("a"), "b": SleepyPeer("b")}
    watch = ha_drill_run.Watch(peers, {"b": ["m1"]}, budget, lead)
    time.sleep(lead)
    ha_drill_run.leave_through(peers, ["m1"], {"m1": "a"}, watch.not_after)
    watch.wait()
    [(published, not_after)] = peers["a"].leave_deadlines
    assert not_after - published >= budget - 0.05  # a minion gets its whole budget to run the leave
    assert time.time() >= not_after + ha_drill_run.SETTLE - 0.05  # and is watched until it lands


# --- await: whom to ping when (ha_drill_local.AwaitState) --------------------------


def test_await_pings_everyone_first_then_each_minion_once_per_interval():
    state = ha_drill_local.AwaitState(["m1", "m2"], interval=1.0)
    assert state.due(100.0) == ["m1", "m2"]
    state.sent(["m1", "m2"], "j1", 100.0)
    assert state.due(100.9) == [] and state.next_round(100.9) == pytest.approx(0.1)
    assert state.due(101.0) == ["m1", "m2"]


def test_await_pings_a_minion_the_moment_it_signs_in_here():
    state = ha_drill_local.AwaitState(["m1", "m2"], interval=1.0)
    state.sent(["m1", "m2"], "j1", 100.0)
    assert state.on_event("salt/minion/m2/start", 1.0) == "m2"
    assert state.on_event("salt/minion/other/start", 1.0) is None  # not one of ours
    state.sent(["m2"], "j2", 100.2)
    assert state.due(101.0) == ["m1"]  # m2 was pinged 0.8 s ago


def test_await_counts_only_returns_of_its_own_pings_once():
    state = ha_drill_local.AwaitState(["m1", "m2"], interval=1.0)
    state.sent(["m1", "m2"], "j1", 100.0)
    assert state.on_event("salt/job/j9/ret/m1", 5.0) is None  # another job
    assert state.on_event("salt/job/j1/ret/m1", 6.0) is None
    assert state.on_event("salt/job/j1/ret/m1", 7.0) is None  # the first answer counts
    assert state.on_event("salt/job/j1/ret/m1/extra", 8.0) is None
    assert state.on_event(None, 9.0) is None
    assert state.answers == {"m1": 6.0} and state.remaining == {"m2"}
    assert state.on_event("salt/minion/m1/start", 10.0) is None  # answered already: no more pings
    assert state.due(200.0) == ["m2"]


def test_await_has_no_round_left_once_everyone_answered():
    state = ha_drill_local.AwaitState(["m1"], interval=1.0)
    state.sent(["m1"], "j1", 100.0)
    state.on_event("salt/job/j1/ret/m1", 1.0)
    assert state.due(500.0) == [] and state.next_round(500.0) == float("inf")


def test_a_failed_ping_publication_still_counts_as_a_round():
    state = ha_drill_local.AwaitState(["m1"], interval=1.0)
    state.sent(["m1"], None, 100.0)
    assert state.jids == set() and state.due(100.5) == [] and state.due(101.0) == ["m1"]
