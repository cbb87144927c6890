"""Unit tests for ha_report: findings from a probe, failover readiness, Nagios and Prometheus output."""

import importlib
import math
import re
import sys
import types

import pytest
from prometheus_client.parser import text_string_to_metric_families
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_report

M1, M2, M3 = "m1.example.com", "m2.example.com:4510", "[::1]:4506"


def entry(master, up=True, latency_ms=5.0, connected=False, error=None):
    """A ``masters`` entry as ha_probe returns it, with ``connected`` set."""
    if not up:
        latency_ms = None
        error = error or "ret port 4506: no answer within 2 s"
    return {
        "master": master,
        "host": master,
        "ret_port": 4506,
        "publish_port": 4505,
        "addresses": ["127.10.0.1"] if up else [],
        "up": up,
        "latency_ms": latency_ms,
        "error": error,
        "connected": connected,
        "publish_port_open": up,
    }


LINT_ERROR = ha_report.finding("error", "master_type", "bad", "fix it")
LINT_WARNING = ha_report.finding("warning", "retry_dns", "meh", "fix it")
LINT_INFO = ha_report.finding("info", "random_master", "fyi", "nothing")


def status(masters, lint=()):
    connected = next((m["master"] for m in masters if m["connected"]), None)
    return ha_report.build_status(masters, connected, list(lint))


# --- probe_findings -----------------------------------------------------------


def test_probe_findings_all_up_and_connected():
    masters = [entry(M1, connected=True), entry(M2)]
    assert ha_report.probe_findings(masters, M1) == []


def test_probe_findings_down_master():
    masters = [entry(M1, connected=True), entry(M2, up=False, error="ret port 4510: refused")]
    (found,) = ha_report.probe_findings(masters, M1)
    assert found["severity"] == "warning"
    assert found["option"] == "master"
    assert found["message"] == f"master {M2!r} is down: ret port 4510: refused"
    assert found["suggestion"]


def test_probe_findings_hung_or_partitioned_connected_master():
    masters = [entry(M1, up=False, connected=True, error="no answer"), entry(M2)]
    (found,) = ha_report.probe_findings(masters, M1)
    assert found["severity"] == "error"
    assert f"connected to {M1!r}, which does not answer (hung or partitioned): no answer" in found["message"]
    assert "a partitioned one only when TCP keepalive aborts the connection" in found["message"]
    assert "tcp_keepalive: True, tcp_keepalive_idle: 10, tcp_keepalive_intvl: 2, tcp_keepalive_cnt: 3" in found["suggestion"]


def test_probe_findings_no_daemon():
    masters = [entry(M1), entry(M2, up=False)]
    found = ha_report.probe_findings(masters, None)
    assert [f["severity"] for f in found] == ["warning", "info"]
    assert "no running salt-minion" in found[1]["message"]


def test_probe_findings_connection_unknown_is_said_not_no_daemon():
    masters = [entry(M1), entry(M2)]
    why = "cannot read the salt-minion pidfile '/run/salt-minion.pid': PermissionError: Permission denied"
    found = ha_report.probe_findings(masters, None, why)
    assert [(f["severity"], f["option"]) for f in found] == [("warning", "master")]
    assert found[0]["message"] == f"cannot tell which master the salt-minion daemon is connected to: {why}"
    assert "root" in found[0]["suggestion"]
    assert not any("no running salt-minion" in f["message"] for f in found)


def test_build_status_with_the_connection_unknown():
    why = "cannot read the TCP connections of the salt-minion process 1: AccessDenied: (pid=1)"
    result = ha_report.build_status([entry(M1), entry(M2)], None, [], why)
    assert result["connected"] is None
    assert [f["message"] for f in result["findings"]] == [
        f"cannot tell which master the salt-minion daemon is connected to: {why}"
    ]


FORGED = "m1.example.com\nWARNING forged log line"


def test_probe_findings_show_values_escaped():
    masters = [
        entry(FORGED, up=False, connected=True, error="ret port 4506: bad\nanswer"),
        entry(M2, up=False, error="x\ry"),
    ]
    found = ha_report.probe_findings(masters, FORGED, "pid\nfile")
    messages = [f["message"] for f in found]
    assert all("\n" not in m and "\r" not in m for m in messages), messages
    assert f"connected to {FORGED!r}, which does not answer (hung or partitioned): ret port 4506: bad\\nanswer" in messages[0]
    assert messages[1] == f"master {M2!r} is down: x\\ry"
    assert messages[2].endswith("connected to: pid\\nfile")


# --- is_failover_ready --------------------------------------------------------


@pytest.mark.parametrize(
    "masters,connected,findings,ready",
    [
        ([entry(M1, connected=True), entry(M2)], M1, [], True),
        ([entry(M1), entry(M2)], None, [], True),
        ([entry(M1, connected=True), entry(M2), entry(M3, up=False)], M1, [], True),
        ([entry(M1, connected=True), entry(M2)], M1, [LINT_WARNING, LINT_INFO], True),
        ([entry(M1, connected=True), entry(M2)], M1, [LINT_ERROR], False),
        ([entry(M1, connected=True)], M1, [], False),
        ([entry(M1)], None, [], False),
        ([], None, [], False),
        ([entry(M1, connected=True), entry(M2, up=False)], M1, [], False),
        ([entry(M1, up=False), entry(M2, up=False)], None, [], False),
    ],
    ids=[
        "two up",
        "two up no daemon",
        "one of three down",
        "lint warnings only",
        "lint error",
        "single master",
        "single master no daemon",
        "no masters",
        "the other one is down",
        "all down",
    ],
)
def test_is_failover_ready(masters, connected, findings, ready):
    assert ha_report.is_failover_ready(masters, connected, findings) is ready


# --- build_status -------------------------------------------------------------


def test_build_status():
    masters = [entry(M1, up=False, connected=True), entry(M2), entry(M3, up=False)]
    result = ha_report.build_status(masters, M1, [LINT_INFO, LINT_WARNING])
    assert result["masters"] is masters
    assert result["connected"] == M1
    assert (result["up"], result["total"]) == (1, 3)
    assert result["failover_ready"] is False  # the hung connected master is an error
    assert [(f["severity"], f["option"]) for f in result["findings"]] == [
        ("error", "master"),
        ("warning", "master"),
        ("warning", "retry_dns"),
        ("info", "random_master"),
    ]


def test_build_status_ready():
    result = status([entry(M1, connected=True), entry(M2)], lint=[LINT_WARNING])
    assert result["failover_ready"] is True
    assert (result["up"], result["total"], result["findings"]) == (2, 2, [LINT_WARNING])


# --- nagios_line --------------------------------------------------------------

NAGIOS_CASES = [
    # id, masters, lint, warn, crit, retcode, state, reason
    ("all up", [entry(M1, connected=True), entry(M2)], [], None, None, 0, "OK", "all masters answer"),
    ("all up no daemon", [entry(M1), entry(M2)], [], None, None, 0, "OK", "all masters answer"),
    ("all down", [entry(M1, up=False), entry(M2, up=False)], [], None, None, 2, "CRITICAL", "no master answers"),
    ("no masters", [], [], None, None, 2, "CRITICAL", "no master answers"),
    (
        "connected down",
        [entry(M1, up=False, connected=True), entry(M2)],
        [], None, None, 2, "CRITICAL", f"connected master {M1} does not answer (hung or partitioned)",
    ),
    ("other down", [entry(M1, connected=True), entry(M2, up=False)], [], None, None, 1, "WARNING", "a master is down"),
    ("single master", [entry(M1, connected=True)], [], None, None, 1, "WARNING", "failover not ready"),
    ("lint error", [entry(M1, connected=True), entry(M2)], [LINT_ERROR], None, None, 1, "WARNING", "failover not ready"),
    (
        "slow over warn",
        [entry(M1, connected=True, latency_ms=5), entry(M2, latency_ms=150)],
        [], 100, 500, 1, "WARNING", "latency 150 ms > 100 ms",
    ),
    (
        "slow over crit",
        [entry(M1, connected=True, latency_ms=5), entry(M2, latency_ms=600.5)],
        [], 100, 500, 2, "CRITICAL", "latency 600.5 ms > 500 ms",
    ),
    (
        "crit beats down",
        [entry(M1, connected=True, latency_ms=600), entry(M2, up=False)],
        [], None, 500, 2, "CRITICAL", "latency 600 ms > 500 ms",
    ),
    (
        "down beats warn",
        [entry(M1, connected=True, latency_ms=150), entry(M2, up=False)],
        [], 100, None, 1, "WARNING", "a master is down",
    ),
    ("under thresholds", [entry(M1, connected=True, latency_ms=99), entry(M2, latency_ms=20)], [], 100, 500, 0, "OK", "all masters answer"),
    ("fractional threshold", [entry(M1, connected=True, latency_ms=1), entry(M2, latency_ms=2)], [], 0.5, None, 1, "WARNING", "latency 2 ms > 0.5 ms"),
]


@pytest.mark.parametrize(
    "masters,lint,warn,crit,retcode,state,reason",
    [case[1:] for case in NAGIOS_CASES],
    ids=[case[0] for case in NAGIOS_CASES],
)
def test_nagios_line(masters, lint, warn, crit, retcode, state, reason):
    code, line = ha_report.nagios_line(status(masters, lint), warn=warn, crit=crit)
    assert code == retcode
    assert ha_report.NAGIOS_CODES[state] == retcode
    text, _, perf = line.partition(" | ")
    assert text.startswith(f"SALT-HA {state} - {reason}: ")
    assert "|" not in text and "\n" not in line
    assert perf == ha_report.perfdata(status(masters, lint), warn, crit)


def test_nagios_line_text():
    masters = [entry(M1, connected=True), entry(M2, up=False), entry(M3, up=False)]
    code, line = ha_report.nagios_line(status(masters, [LINT_ERROR, LINT_ERROR, LINT_WARNING]))
    assert code == 1
    assert line.split(" | ")[0] == (
        f"SALT-HA WARNING - a master is down: 1/3 masters up, connected {M1}, "
        f"down: {M2}, {M3}, 2 config error(s)"
    )


def test_nagios_line_without_daemon_says_none():
    _, line = ha_report.nagios_line(status([entry(M1), entry(M2)]))
    assert line.startswith("SALT-HA OK - all masters answer: 2/2 masters up, connected none |")


@pytest.mark.parametrize("warn,crit", [(100, None), (None, 100)])
def test_latency_equal_to_threshold_is_ok(warn, crit):
    masters = [entry(M1, connected=True, latency_ms=100), entry(M2, latency_ms=10)]
    assert ha_report.nagios_line(status(masters), warn=warn, crit=crit)[0] == 0


def test_unknown_line():
    assert ha_report.unknown_line("timeout 'abc' is not a number of seconds") == (
        3,
        "SALT-HA UNKNOWN - timeout 'abc' is not a number of seconds",
    )


@pytest.mark.parametrize(
    "error,line",
    [
        (SaltInvocationError("warn 'fast' is not a number"), "SALT-HA UNKNOWN - warn 'fast' is not a number"),
        (CommandExecutionError("master list is empty"), "SALT-HA UNKNOWN - master list is empty"),
        (KeyError("master"), "SALT-HA UNKNOWN - KeyError: 'master'"),
        (RuntimeError("boom\nSALT-HA OK - forged"), "SALT-HA UNKNOWN - RuntimeError: boom\\nSALT-HA OK - forged"),
        (ValueError(), "SALT-HA UNKNOWN - ValueError"),
    ],
    ids=["salt-invocation", "salt-execution", "keyerror", "newline", "no-message"],
)
def test_unknown_line_names_what_happened_on_one_line(error, line):
    assert ha_report.unknown_line(error) == (3, line)


def test_nagios_line_is_one_line_whatever_the_master_names_hold():
    masters = [entry(FORGED, connected=True), entry(M2, up=False)]
    code, line = ha_report.nagios_line(status(masters))
    assert code == 1
    assert "\n" not in line
    assert "connected m1.example.com\\nWARNING forged log line" in line


# --- perfdata -----------------------------------------------------------------

# 'label'=value[UOM];[warn];[crit];[min];[max] (Nagios plugin development guidelines)
PERF_ITEM = re.compile(
    r"^(?P<label>'(?:[^'=]|'')+'|[^'= ]+)"
    r"=(?P<value>U|-?\d+(?:\.\d+)?)(?P<uom>s|ms|us|%|B|KB|MB|GB|TB|c)?"
    r"(?:;(?P<warn>[-~@:.\d]*)(?:;(?P<crit>[-~@:.\d]*)(?:;(?P<min>-?[\d.]*)(?:;(?P<max>-?[\d.]*))?)?)?)?$"
)


def perf_items(text):
    items = {}
    for item in text.split(" "):
        match = PERF_ITEM.match(item)
        assert match, f"invalid perfdata item {item!r}"
        items[match["label"]] = match.groupdict()
    return items


def test_perfdata_is_valid_nagios_perfdata():
    masters = [entry(M1, connected=True, latency_ms=12.5), entry(M2, up=False), entry(M3, latency_ms=0.001)]
    items = perf_items(ha_report.perfdata(status(masters), 100, 250.5))
    assert list(items) == ["up", "total", f"'latency_{M1}'", f"'latency_{M2}'", f"'latency_{M3}'"]
    assert (items["up"]["value"], items["up"]["min"], items["up"]["max"]) == ("2", "0", "3")
    assert items["total"]["value"] == "3"
    latency = items[f"'latency_{M1}'"]
    assert (latency["value"], latency["uom"], latency["warn"], latency["crit"], latency["min"]) == (
        "12.5", "ms", "100", "250.5", "0",
    )
    unknown = items[f"'latency_{M2}'"]
    assert (unknown["value"], unknown["uom"]) == ("U", None)
    assert items[f"'latency_{M3}'"]["value"] == "0.001"


def test_perfdata_without_thresholds():
    items = perf_items(ha_report.perfdata(status([entry(M1, latency_ms=3)]), None, None))
    latency = items[f"'latency_{M1}'"]
    assert (latency["value"], latency["warn"], latency["crit"], latency["min"]) == ("3", "", "", "0")


@pytest.mark.parametrize("text,label", [("m1", "'m1'"), ("it's", "'it''s'"), ("[::1]:4506", "'[::1]:4506'")])
def test_perf_label(text, label):
    assert ha_report.perf_label(text) == label


# --- prometheus_text ----------------------------------------------------------


def samples(text):
    """``{family: {labels tuple: value}}`` from the exposition text, parsed by prometheus_client."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        assert family.documentation
        parsed[family.name] = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    return parsed


def test_prometheus_text():
    masters = [entry(M1, connected=True, latency_ms=12.5), entry(M2, up=False), entry(M3, latency_ms=250)]
    lint = [LINT_ERROR, LINT_WARNING, LINT_WARNING]
    parsed = samples(ha_report.prometheus_text(status(masters, lint)))
    assert set(parsed) == {
        "salt_ha_master_up",
        "salt_ha_master_latency_seconds",
        "salt_ha_master_connected",
        "salt_ha_findings",
        "salt_ha_failover_ready",
    }
    assert parsed["salt_ha_master_up"] == {
        (("master", M1),): 1.0,
        (("master", M2),): 0.0,
        (("master", M3),): 1.0,
    }
    latency = parsed["salt_ha_master_latency_seconds"]
    assert latency[(("master", M1),)] == pytest.approx(0.0125)
    assert latency[(("master", M3),)] == pytest.approx(0.25)
    assert math.isnan(latency[(("master", M2),)])
    assert parsed["salt_ha_master_connected"] == {
        (("master", M1),): 1.0,
        (("master", M2),): 0.0,
        (("master", M3),): 0.0,
    }
    # probe: M2 down (warning); lint: 1 error, 2 warnings
    assert parsed["salt_ha_findings"] == {
        (("severity", "error"),): 1.0,
        (("severity", "warning"),): 3.0,
        (("severity", "info"),): 0.0,
    }
    assert parsed["salt_ha_failover_ready"] == {(): 0.0}


def test_prometheus_text_ready_and_no_findings():
    parsed = samples(ha_report.prometheus_text(status([entry(M1, connected=True), entry(M2)])))
    assert parsed["salt_ha_failover_ready"] == {(): 1.0}
    assert set(parsed["salt_ha_findings"].values()) == {0.0}
    assert len(parsed["salt_ha_findings"]) == 3


def test_prometheus_text_no_daemon_counts_info():
    parsed = samples(ha_report.prometheus_text(status([entry(M1), entry(M2)])))
    assert parsed["salt_ha_findings"][(("severity", "info"),)] == 1.0
    assert set(parsed["salt_ha_master_connected"].values()) == {0.0}


# --- without prometheus_client ------------------------------------------------


def test_prometheus_text_without_prometheus_client_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as when not installed
    with pytest.raises(CommandExecutionError) as err:
        ha_report.prometheus_text(status([entry(M1), entry(M2)]))
    assert str(err.value).startswith("prometheus_client is not installed; ")
    assert "pip install prometheus_client" in str(err.value)


def test_prometheus_text_with_a_broken_prometheus_client_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", types.ModuleType("prometheus_client"))
    with pytest.raises(CommandExecutionError) as err:
        ha_report.prometheus_text(status([entry(M1), entry(M2)]))
    assert str(err.value).startswith("prometheus_client cannot be imported (ImportError: cannot import name ")


def test_report_imports_and_works_without_prometheus_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "ha_report")
    fresh = importlib.import_module("ha_report")
    assert fresh is not ha_report
    masters = [entry(M1, connected=True), entry(M2)]
    result = fresh.build_status(masters, M1, [])
    assert fresh.nagios_line(result)[1].startswith("SALT-HA OK - all masters answer")
    with pytest.raises(CommandExecutionError, match="^prometheus_client is not installed; "):
        fresh.prometheus_text(result)
