"""
Unit tests for ha_storm: which MWorkers answer ``_auth``, the planning figures, and the
master-side storm findings HA811/HA812 (``storm_findings``, called by the runner's
``ha.lint``).
"""

import pytest

import ha_lint_findings
import ha_storm

AUTH_POOLS = {
    "auth": {"worker_count": 1, "commands": ["_auth"]},
    "default": {"worker_count": 4, "commands": ["*"]},
}
CATCHALL_ONLY = {"fast": {"worker_count": 2, "commands": ["_return"]}, "rest": {"worker_count": 6, "commands": ["*"]}}


@pytest.mark.parametrize(
    "opts,expected",
    [
        ({}, (5, "worker_threads")),
        ({"worker_threads": 12}, (12, "worker_threads")),
        ({"worker_pools": AUTH_POOLS}, (1, "worker_pools:auth")),
        ({"worker_pools": CATCHALL_ONLY}, (6, "worker_pools:rest")),
        ({"worker_pools": {}}, (5, "worker_threads")),
        ({"worker_pools": AUTH_POOLS, "worker_pools_enabled": False, "worker_threads": 7}, (7, "worker_threads")),
        ({"worker_pools": {"bad": "x", "rest": {"worker_count": 3, "commands": ["*"]}}}, (3, "worker_pools:rest")),
        ({"worker_pools": {"p\nq": {"worker_count": 2, "commands": ["_auth", "*"]}}}, (2, "worker_pools:p\\nq")),
        ({"worker_threads": "many"}, (None, "worker_threads")),
        ({"worker_threads": 0}, (None, "worker_threads")),
        ({"worker_threads": 2.5}, (None, "worker_threads")),
        ({"worker_threads": True}, (None, "worker_threads")),
        ({"worker_pools": {"a": {"worker_count": "two", "commands": ["_auth"]}}}, (None, "worker_pools:a")),
    ],
    ids=["default", "worker_threads", "auth pool", "catch-all pool", "empty pools", "pools disabled",
         "a broken pool skipped", "pool name escaped", "not a number", "zero", "fraction", "bool",
         "bad worker_count"],
)
def test_auth_workers(opts, expected):
    assert ha_storm.auth_workers(opts) == expected


@pytest.mark.parametrize(
    "minions,cpus,timeout,expected",
    [
        (100, 2, 5, 5),  # Salt's default is never lowered
        (1000, 2, 5, 5),  # 4 needed, 2 CPUs: the CPUs are the limit, the default stays
        (1000, 16, 5, 5),
        (3000, 16, 5, 10),
        (3000, 16, 10, 5),
        (10000, 16, 5, 16),  # never more than the CPUs
    ],
)
def test_recommended_worker_threads(minions, cpus, timeout, expected):
    assert ha_storm.recommended_worker_threads(minions, cpus, timeout) == expected


def test_planning_figures():
    # 8 ms of master CPU per sign-in, half of the window for them: 62.5 a second per CPU.
    assert ha_storm.sign_ins_per_second(5, 2) == pytest.approx(125)
    assert ha_storm.sign_ins_per_second(1, 8) == pytest.approx(62.5)
    assert ha_storm.storm_seconds(1000, 5, 2) == pytest.approx(8)
    assert ha_storm.workers_needed(1, 5) == 1
    assert ha_storm.workers_needed(625, 5) == 2
    assert ha_storm.recommended_master_options(3000, 16) == {"worker_threads": 10}


STORM_CASES = [
    # name, opts, minions, cpus, auth_timeout, [(id, option, texts in message, text in suggestion)]
    ("small fleet", {}, 100, 2, 5, []),
    ("fits 2 CPUs", {}, 600, 2, 5, []),
    ("fits 16 CPUs", {}, 1500, 16, 5, []),
    ("too few workers", {}, 3000, 16, 5,
     [("HA811", "worker_threads", ["3000 minions", "5 MWorkers", "(worker_threads)", "about 10 s", "5 + 5 +"],
       "worker_threads: 10 (this master has 16 CPUs")]),
    ("one auth worker", {"worker_pools": AUTH_POOLS}, 1000, 8, 5,
     [("HA811", "worker_pools", ["1 MWorkers", "(worker_pools:auth)", "about 16 s"],
       "worker_count: 4 in worker_pools auth")]),
    ("CPUs the limit, minion settings help", {}, 1000, 2, 5,
     [("HA812", "auth_timeout", ["1000 minions", "about 8 s of its 2 CPUs", "auth_timeout (5 s)"],
       "auth_timeout: 10, acceptance_wait_time: 2")]),
    ("CPUs the limit even with 10 s", {}, 3000, 2, 5,
     [("HA812", "auth_timeout", ["about 24 s"], "a master of 2 CPUs answers about 625 sign-ins within 5 s")]),
    ("minions already on 10 s", {}, 1500, 2, 10,
     [("HA812", "auth_timeout", ["auth_timeout (10 s)", "10 + 10 +"], "more CPUs or more masters")]),
    ("workers and CPUs", {"worker_threads": 2}, 10000, 16, 5,
     [("HA811", "worker_threads", ["2 MWorkers", "about 80 s"], "worker_threads: 16"),
      ("HA812", "auth_timeout", ["about 10 s of its 16 CPUs"], "auth_timeout: 10")]),
    ("more workers than CPUs add nothing", {"worker_threads": 64}, 30000, 16, 5,
     [("HA812", "auth_timeout", ["30000 minions", "about 30 s"], "a master of 16 CPUs answers about 5000")]),
]


@pytest.mark.parametrize(
    "opts,minions,cpus,timeout,expected", [case[1:] for case in STORM_CASES], ids=[case[0] for case in STORM_CASES]
)
def test_storm_findings(opts, minions, cpus, timeout, expected):
    findings = ha_storm.storm_findings(opts, minions, cpu_count=cpus, auth_timeout=timeout)
    assert [(f["id"], f["option"]) for f in findings] == [(item[0], item[1]) for item in expected], findings
    for found, (_, _, texts, suggestion) in zip(findings, expected, strict=True):
        assert found["severity"] == "warning"
        assert all(text in found["message"] for text in texts), found["message"]
        assert suggestion in found["suggestion"], found["suggestion"]
        assert set(found) == {"id", "severity", "option", "message", "suggestion"}
        assert "\n" not in found["message"] + found["suggestion"]
        assert found["id"] in ha_lint_findings.STORM_FINDING_TITLES


@pytest.mark.parametrize(
    "opts,minions,timeout",
    [
        ({}, 0, 5),
        ({}, -10, 5),
        ({}, "many", 5),
        ({}, None, 5),
        ({}, 10000, 0),
        ({}, 10000, "five"),
        ({"worker_threads": "many"}, 10000, 5),
        ({"worker_pools": {"a": {"worker_count": 0, "commands": ["*"]}}}, 10000, 5),
    ],
    ids=["no minions", "negative", "not a number", "None", "timeout 0", "timeout not a number",
         "workers not a number", "pool of 0"],
)
def test_storm_findings_stay_quiet_on_unusable_input(opts, minions, timeout):
    assert ha_storm.storm_findings(opts, minions, cpu_count=2, auth_timeout=timeout) == []


def test_storm_findings_default_to_this_machines_cpus(monkeypatch):
    monkeypatch.setattr(ha_storm.os, "cpu_count", lambda: 2)
    assert [f["id"] for f in ha_storm.storm_findings({}, 1000)] == ["HA812"]
    monkeypatch.setattr(ha_storm.os, "cpu_count", lambda: None)
    assert [f["id"] for f in ha_storm.storm_findings({}, 1000)] == ["HA812"]  # one CPU assumed


def test_numeric_strings_are_accepted():
    assert [f["id"] for f in ha_storm.storm_findings({"worker_threads": "2"}, "3000", cpu_count=16)] == ["HA811"]


def test_every_storm_id_is_reachable_and_declared_apart_from_the_other_tables():
    produced = {
        f["id"]
        for case in STORM_CASES
        for f in ha_storm.storm_findings(case[1], case[2], cpu_count=case[3], auth_timeout=case[4])
    }
    assert produced == set(ha_lint_findings.STORM_FINDING_TITLES)
    assert not set(ha_lint_findings.STORM_FINDING_TITLES) & set(ha_lint_findings.FINDING_TITLES)
    assert not set(ha_lint_findings.STORM_FINDING_TITLES) & set(ha_lint_findings.MASTER_FINDING_TITLES)
    assert set(ha_lint_findings.STORM_FINDING_TITLES) <= set(ha_lint_findings.ALL_FINDING_TITLES)


def test_the_recommended_minion_settings_are_what_the_minion_lint_accepts():
    assert ha_storm.RECOMMENDED_MINION_OPTIONS == {
        "auth_timeout": 10, "acceptance_wait_time": 2, "acceptance_wait_time_max": 10,
        "grains_cache": True, "grains_cache_expiration": 86400,
    }
