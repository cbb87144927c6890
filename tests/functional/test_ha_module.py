"""The ``ha`` execution module through Salt's loader."""

import sys
import time

import pytest
import salt.payload
from prometheus_client.parser import text_string_to_metric_families
from salt.exceptions import CommandExecutionError, SaltInvocationError
from saltfactories.utils.functional import Loaders

import ha_probe


def test_status_reports_each_master_from_the_minion_options(modules, answering_master):
    started = time.monotonic()
    status = modules.ha.status(timeout=1)
    elapsed = time.monotonic() - started
    first, second = status["masters"]
    assert (first["master"], first["up"]) == ("127.0.0.1", True)
    # Up (the ret port answers) but no publisher: said, not hidden.
    assert first["publish_port_open"] is False
    assert "publish port" in first["error"]
    assert first["ret_port"] == answering_master.port
    assert first["latency_ms"] < 500
    assert second["master"] == "127.0.0.2"
    assert second["up"] is False
    assert "refused" in second["error"].lower()
    assert (status["up"], status["total"]) == (1, 2)
    assert status["connected"] is None  # no minion daemon runs here
    assert elapsed < 1.5
    request = salt.payload.loads(answering_master.requests[-1])
    assert request == {"enc": "clear", "load": {"cmd": "ping"}, "version": 3}


@pytest.mark.parametrize("timeout", ["abc", 0, -1, 301, "", None])
def test_status_rejects_a_bad_timeout(modules, timeout):
    with pytest.raises(SaltInvocationError, match="timeout"):
        modules.ha.status(timeout=timeout)


def test_probe_one_master_given_as_host_port(modules, answering_master):
    entry = modules.ha.probe(f"127.0.0.1:{answering_master.port}", timeout=1)
    assert entry["up"] is True
    assert entry["ret_port"] == answering_master.port


@pytest.mark.parametrize("master", ["", "bad host", "127.0.0.1:0", "127.0.0.1:99999", "a:b"])
def test_probe_rejects_a_malformed_master(modules, master):
    with pytest.raises(SaltInvocationError) as err:
        modules.ha.probe(master, timeout=1)
    assert repr(master) in str(err.value) or master in str(err.value)


def test_lint_of_a_good_failover_file_has_only_the_estimate(modules, tmp_path):
    config = tmp_path / "failover.conf"
    config.write_text(
        "master: [127.0.0.1, 127.0.0.2]\nmaster_type: failover\n"
        "master_alive_interval: 10\nretry_dns: 0\n"
        "tcp_keepalive: True\ntcp_keepalive_idle: 10\ntcp_keepalive_intvl: 2\ntcp_keepalive_cnt: 3\n"
        "grains_cache: True\ngrains_cache_expiration: 86400\n"
    )
    findings = modules.ha.lint(config=str(config))
    assert [(f["id"], f["severity"]) for f in findings] == [("HA901", "info")]
    assert "failover" in findings[-1]["message"]


def test_lint_of_a_file_with_a_failover_typo_says_what_to_write(modules, tmp_path):
    config = tmp_path / "typo.conf"
    config.write_text("master: [127.0.0.1, 127.0.0.2]\nmaster_failover: true\n")
    findings = modules.ha.lint(config=str(config))
    typo = [f for f in findings if f["option"] == "master_failover"]
    assert typo and typo[0]["severity"] == "error" and typo[0]["id"] == "HA401"
    assert "master_type: failover" in typo[0]["suggestion"]


@pytest.mark.parametrize(
    "content, expected",
    [(None, "does not exist"), ("master: [a, b\n", "YAML"), ("- just\n- a list\n", "mapping")],
)
def test_lint_rejects_a_config_path_that_is_not_a_minion_config(modules, tmp_path, content, expected):
    path = tmp_path / "minion.conf"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandExecutionError) as err:
        modules.ha.lint(config=str(path))
    assert str(path) in str(err.value)
    assert expected.lower() in str(err.value).lower()


def test_lint_of_the_running_options(modules):
    findings = modules.ha.lint()
    assert findings[-1]["severity"] == "info"
    assert not [f for f in findings if f["severity"] == "error"], findings


def test_check_is_a_nagios_line_with_the_retcode_in_context(modules, loaders):
    line = modules.ha.check(timeout=1)
    assert line.startswith("SALT-HA WARNING - ")
    assert " | up=1;;;0;2 total=2 " in line
    assert loaders.context["retcode"] == 1


def test_check_with_bad_thresholds_is_unknown(modules, loaders):
    line = modules.ha.check(timeout=1, warn="fast")
    assert line.startswith("SALT-HA UNKNOWN - ")
    assert "'fast'" in line
    assert loaders.context["retcode"] == 3


def test_check_of_any_exception_is_unknown_with_what_happened(modules, loaders, monkeypatch, caplog):
    def broken_probe(endpoints, timeout, transport="zeromq"):
        raise RuntimeError("zmq context gone\nSALT-HA OK - forged")

    monkeypatch.setattr(ha_probe, "probe_endpoints", broken_probe)
    with caplog.at_level("WARNING"):
        line = modules.ha.check(timeout=1)
    assert line == "SALT-HA UNKNOWN - RuntimeError: zmq context gone\\nSALT-HA OK - forged"
    assert loaders.context["retcode"] == 3  # UNKNOWN, not 1 (WARNING)
    assert "salt-ha: ha.check failed: RuntimeError: zmq context gone\\nSALT-HA OK - forged" in [
        r.getMessage() for r in caplog.records
    ]


def test_check_critical_above_the_latency_limit(modules, loaders):
    line = modules.ha.check(timeout=1, warn=0, crit=0)
    assert line.startswith("SALT-HA CRITICAL - latency")
    assert loaders.context["retcode"] == 2


def test_metrics_written_atomically_for_the_textfile_collector(modules, tmp_path):
    path = tmp_path / "salt_ha.prom"
    text = modules.ha.metrics(path=str(path), timeout=1)
    assert path.read_text() == text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["master"]: s.value for s in families["salt_ha_master_up"].samples}
    assert up == {"127.0.0.1": 1.0, "127.0.0.2": 0.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["salt_ha.prom"]


def test_metrics_to_a_path_that_cannot_be_written(modules, tmp_path):
    with pytest.raises(CommandExecutionError, match="missing"):
        modules.ha.metrics(path=str(tmp_path / "missing" / "salt_ha.prom"), timeout=1)


def test_status_says_why_it_cannot_tell_the_connected_master(minion_opts, tmp_path, request):
    pidfile = tmp_path / "salt-minion.pid"
    pidfile.mkdir()  # cannot be read: not "no daemon"
    loaders = Loaders(dict(minion_opts, pidfile=str(pidfile)), loaded_base_name=f"{__name__}.unreadable_pidfile")
    request.addfinalizer(loaders.reset_state)
    status = loaders.modules.ha.status(timeout=1)
    assert status["connected"] is None
    messages = [f["message"] for f in status["findings"] if f["option"] == "master"]
    assert (
        "cannot tell which master the salt-minion daemon is connected to: cannot read the salt-minion "
        f"pidfile {str(pidfile)!r}: IsADirectoryError: Is a directory"
    ) in messages
    assert not [m for m in messages if "no running salt-minion" in m]
    assert loaders.modules.ha.check(timeout=1).startswith("SALT-HA WARNING - ")


def test_without_prometheus_client_only_metrics_fails_and_says_why(minion_opts, monkeypatch, request):
    # As on a Salt whose Python has no prometheus_client: the import fails.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "ha_report")  # imported afresh by the module below
    loaders = Loaders(minion_opts, loaded_base_name=f"{__name__}.without_prometheus")
    request.addfinalizer(loaders.reset_state)
    ha = loaders.modules.ha
    with pytest.raises(CommandExecutionError) as err:
        ha.metrics(timeout=1)
    assert str(err.value).startswith("prometheus_client is not installed; ")
    assert "pip install prometheus_client" in str(err.value)
    status = ha.status(timeout=1)
    assert (status["up"], status["total"]) == (1, 2)
    assert ha.check(timeout=1).startswith("SALT-HA WARNING - ")
    assert loaders.context["retcode"] == 1
    assert ha.lint()[-1]["severity"] == "info"
    assert ha.probe("127.0.0.1", timeout=1)["up"] is True


def test_every_function_documents_a_cli_example(modules):
    docs = modules.sys.doc("ha")
    assert set(docs) >= {"ha.status", "ha.probe", "ha.lint", "ha.check", "ha.metrics"}
    for name, doc in docs.items():
        assert "CLI Example:" in (doc or ""), name


def test_leave_master_does_nothing_once_its_request_expired(modules):
    left = modules.ha.leave_master(master="127.0.0.9", not_after=time.time() - 1)
    assert left == {"master": "127.0.0.9", "fired": False, "late": True}
    with pytest.raises(SaltInvocationError, match="not_after 'soon' is not a number"):
        modules.ha.leave_master(master="127.0.0.9", not_after="soon")
