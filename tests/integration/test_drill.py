"""
``salt-run ha.drill`` on real daemons: masters A and B (each with salt-api, each
the other's peer, both allowing hang drills) and three failover minions
``[A, B]`` with the ``ha`` beacon and the ``ha_returns`` engine, all on A at the
start. Tests run in file order: each leaves the minions on A (and checks it);
the last one leaves them wherever a killed drill left them.
"""

import pathlib
import secrets
import signal
import subprocess
import threading
import time

import psutil
import pytest
import yaml

import ha_drill
from tests.support import beacon_lab, drill_lab
from tests.support import lab as lablib
from tests.support import returns_lab as rlab

pytestmark = pytest.mark.integration

MINIONS = ["ha-drill-m1", "ha-drill-m2", "ha-drill-m3"]


@pytest.fixture(scope="module")
def lab(salt_factories, tmp_path_factory):
    drill = drill_lab.build(salt_factories, tmp_path_factory.mktemp("drill"), MINIONS)
    with lablib.RunningDaemons(lablib.daemons(drill) + list(drill.apis.values())):
        a = drill.masters["a"]
        for minion_id in MINIONS:
            assert lablib.answers_through(a, minion_id, 60), f"{minion_id} never answered through A"
        yield drill


def on_a(lab):
    """Every minion answers through A (the state each test starts and ends in)."""
    answers = lab.masters["a"].salt_cli(timeout=20).run("-L", "test.ping", minion_tgt=",".join(MINIONS), _timeout=5)
    return sorted(minion for minion, answer in (answers.data or {}).items() if answer is True) == MINIONS


def gate(report, name):
    return next(item for item in report["gates"] if item["gate"] == name)


def test_dry_run_refuses_a_minion_whose_key_is_pending_on_b(lab):
    a, b = lab.masters["a"], lab.masters["b"]
    accepted = pathlib.Path(b.config["pki_dir"]) / "minions" / "ha-drill-m3"
    pending = pathlib.Path(b.config["pki_dir"]) / "minions_pre" / "ha-drill-m3"
    pending.parent.mkdir(exist_ok=True)
    accepted.rename(pending)
    try:
        report = rlab.salt_run(a, "ha.drill", "test=True", "count=3", "seed=7")
    finally:
        pending.rename(accepted)
    assert report["test"] is True and report["result"] is False and report["minions"] == {}
    assert report["plan"]["canaries"] == MINIONS and report["plan"]["seed"] == 7
    ready = gate(report, "minions_ready")
    assert ready["ok"] is False
    assert list(ready["not_ready"]) == ["ha-drill-m3"]
    assert ready["not_ready"]["ha-drill-m3"][0]["reason"] == f"key pending on {b.id}"
    assert "ha.sync_keys" in ready["fix"]
    assert all(item["ok"] for item in report["gates"] if item["gate"] != "minions_ready")
    assert on_a(lab), "a dry run moved a minion"
    assert rlab.salt_run(a, "ha.drill_history") == []


def test_dry_run_refuses_while_a_master_is_down(lab):
    a, b = lab.masters["a"], lab.masters["b"]
    with lablib.frozen(b):
        report = rlab.salt_run(a, "ha.drill", "test=True", "count=1")
    up = gate(report, "masters_up")
    assert up["ok"] is False and b.id in up["reason"] and up["up"] == [a.id]
    assert gate(report, "minions_ready")["ok"] is False
    assert report["result"] is False and report["minions"] == {}
    assert on_a(lab)


def test_minion_drill_moves_three_minions_and_puts_them_back(lab, event_listener):
    a, b = lab.masters["a"], lab.masters["b"]
    started = beacon_lab.utc_now()
    report = rlab.salt_run(a, "ha.drill", "count=3", "budget=30", "seed=1")
    assert report["result"] is True, report
    assert report["aborted"] is None and report["restored"] is True
    assert sorted(report["minions"]) == MINIONS
    for minion_id, entry in report["minions"].items():
        assert entry["from"] == a.id and entry["to"] == b.id and entry["ok"] is True, (minion_id, entry)
        assert 0 < entry["rto_s"] < 30 and entry["back"] is True
        assert entry["return_arrived"] is True, (minion_id, entry, report["notes"])
    assert report["rto"]["max"] == max(entry["rto_s"] for entry in report["minions"].values())
    assert report["jobs_in_flight"] == 3 and report["returns_lost"] == 0
    assert on_a(lab)

    drill_id = report["id"]
    end = beacon_lab.wait_for_event(event_listener, a, f"salt/ha/drill/{drill_id}/end", started, 10)
    assert end is not None and end.data["result"] is True and end.data["rto"] == report["rto"]
    assert beacon_lab.events_since(event_listener, a, f"salt/ha/drill/{drill_id}/start", started)
    assert rlab.salt_run(a, "ha.drill_history", "limit=1")[0]["id"] == drill_id
    metrics = drill_lab.textfile(lab, "a").read_text()
    assert f'salt_ha_drill_rto_seconds{{mode="minion",quantile="1"}} {report["rto"]["max"]}' in metrics
    assert 'salt_ha_drill_failed_minions{mode="minion"} 0' in metrics


def test_abort_when_a_minion_cannot_rehome_in_budget(lab, event_listener):
    a = lab.masters["a"]
    stuck = lab.minions["ha-drill-m3"]
    started = beacon_lab.utc_now()
    result = {}
    runner = threading.Thread(
        target=lambda: result.update(report=rlab.salt_run(a, "ha.drill", "count=3", "budget=12", "seed=2")),
        daemon=True,
    )
    runner.start()
    start = beacon_lab.wait_for_event(event_listener, a, "salt/ha/drill/*/start", started, 60)
    assert start is not None, "the drill never started"
    progress = start.tag.rsplit("/", 1)[0] + "/progress"

    def aborted():
        return [event for event in beacon_lab.events_since(event_listener, a, progress, started)
                if str(event.data.get("message", "")).startswith("aborted")]

    try:
        # The gates passed; now m3 cannot move, until the drill has given up on it. (Frozen
        # much longer, about 30 s, Salt's master would drop m3's publish connection for
        # missing ZMTP heartbeats, and m3 would fail over by itself when it resumes.)
        with lablib.frozen(stuck):
            lablib.wait_for(aborted, 60, "the drill aborting")
    finally:
        runner.join(120)
    report = result["report"]
    assert report["result"] is False
    assert report["aborted"].startswith("1 minion(s) did not answer through another master within 12 s")
    assert report["failed"] == ["ha-drill-m3"]
    assert report["minions"]["ha-drill-m3"]["ok"] is False
    moved = [m for m in MINIONS if m != "ha-drill-m3"]
    for minion_id in moved:
        assert report["minions"][minion_id]["ok"] is True and report["minions"][minion_id]["back"] is True
    # m3 ran its queued leave after the drill: too late, it stays on A
    assert lablib.wait_for(lambda: on_a(lab), 30, "every minion on A again")
    time.sleep(2)
    assert on_a(lab)


def test_hang_drill_moves_every_minion_and_thaws_the_master(lab):
    a, b = lab.masters["a"], lab.masters["b"]
    report = rlab.salt_run(b, "ha.drill", "mode=hang", f"master={a.id}", "duration=10", "budget=15", timeout=180)
    assert report["result"] is True, report
    assert report["restored"] is True and report["aborted"] is None
    assert sorted(report["minions"]) == MINIONS
    hang = beacon_lab.hang_seconds()
    for minion_id, entry in report["minions"].items():
        assert entry["from"] == a.id and entry["to"] == b.id and entry["ok"] is True, (minion_id, entry)
        assert hang <= entry["rto_s"] < 15, (minion_id, entry)
    state = drill_lab.freeze_state(a)
    assert state["state"] == "thawed" and state["drill"] == report["id"] and state["frozen_pids"]
    assert report["returns_lost"] == 0
    assert on_a(lab)


def test_hang_drill_thaws_the_master_when_salt_run_is_killed(lab):
    a = lab.masters["a"]
    cli = a.salt_run_cli(timeout=120)
    command = cli.cmdline("ha.drill", "mode=hang", f"master={a.id}", "duration=6", "budget=10")
    drill = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        frozen = lablib.wait_for(
            lambda: (drill_lab.freeze_state(a) or {}).get("state") == "frozen"
            and drill_lab.freeze_state(a)["drill"] != "" and drill_lab.freeze_state(a),
            60, "A frozen by the drill",
        )
        master = psutil.Process(a.pid)
        assert master.status() == psutil.STATUS_STOPPED
        drill.send_signal(signal.SIGKILL)  # the drilling salt-run dies while its own master is frozen
        drill.wait(10)
        thawed = lablib.wait_for(
            lambda: (drill_lab.freeze_state(a) or {}).get("state") == "thawed" and drill_lab.freeze_state(a),
            frozen["thaw_at"] - time.time() + 10, "A thawed by the watchdog",
        )
        assert thawed["thawed_at"] >= frozen["thaw_at"] - 0.1
        assert master.status() != psutil.STATUS_STOPPED
        assert lablib.answers_through(a, MINIONS[0], 60) is not None or lablib.answers_through(
            lab.masters["b"], MINIONS[0], 30) is not None
        marker = secrets.token_hex(4)
        assert a.salt_run_cli(timeout=30).run("test.arg", marker).returncode == 0
    finally:
        if drill.poll() is None:
            drill.kill()
        lablib.thaw(a)


SCHEDULE_RECIPE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "master.d" / "drill-schedule.conf"


def test_the_weekly_schedule_recipe_runs_the_drill_from_the_master_scheduler(salt_factories, tmp_path):
    recipe = yaml.safe_load(SCHEDULE_RECIPE.read_text())
    entry = dict(recipe["schedule"]["ha-weekly-drill"])
    assert entry.pop("when") == ["Wednesday 10:00am"]
    entry.update(seconds=3600, run_on_start=True)  # the recipe, fired now instead of on Wednesday
    for window in recipe["ha"]["drill"]["blackout"]:
        ha_drill.parse_window(window)
    drill_settings = {**recipe["ha"]["drill"], "textfile": str(tmp_path / "drill.prom")}
    master = salt_factories.salt_master_daemon(
        "ha-drill-scheduler",
        overrides={**lablib.master_overrides(lablib.LOOPBACK_A, lablib.random_shared_ports([lablib.LOOPBACK_A])),
                   "schedule": {"ha-weekly-drill": entry}, "ha": {"drill": drill_settings}},
    )
    with lablib.RunningDaemons([master]):
        history = lablib.wait_for(lambda: rlab.salt_run(master, "ha.drill_history"), 60, "a scheduled drill")
    report = history[0]
    # no minion here: the scheduled drill ran, with the recipe's arguments, and refused
    assert report["plan"]["budget"] == 60 and report["plan"]["max_failed"] == 0 and report["plan"]["tgt"] == "*"
    assert report["aborted"].startswith("refused by its gates") and report["result"] is False
    assert next(g for g in report["gates"] if g["gate"] == "minions_ready")["reason"] == "no minion to drill"
    assert (tmp_path / "drill.prom").read_text().startswith("# HELP salt_ha_drill_rto_seconds")
