"""Unit tests for ha_lint: every rule, the failover estimate and the config readers."""

import os

import pytest
import salt.config
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_lint

M1 = "master1.example.com"
M2 = "master2.example.com"
M3 = "master3.example.com"
GOOD = {
    "master": [M1, M2],
    "master_type": "failover",
    "master_alive_interval": 10,
    "retry_dns": 0,
}
FAKE_DNS = {M1: ["127.10.0.1"], M2: ["127.10.0.2"], M3: ["127.10.0.3"], "twin.example.com": ["127.10.0.1"]}


def fake_resolver(hosts):
    return {host: FAKE_DNS.get(host, []) for host in hosts}


def config(**changes):
    """GOOD with ``changes`` applied; a value of None removes the option."""
    opts = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            opts.pop(key, None)
        else:
            opts[key] = value
    return opts


def lint(opts, **kwargs):
    kwargs.setdefault("resolver", fake_resolver)
    return ha_lint.lint_options(opts, **kwargs)


def matching(findings, severity, option):
    return [f for f in findings if f["severity"] == severity and f["option"] == option]


RULE_CASES = [
    # rule 1: unknown options, typos, failover concepts
    ("concept master_failover", {"master_failover": True}, "error", "master_failover", ["master_failover"], "master_type: failover"),
    ("typo alive interval", {"master_alive_intervall": 10}, "error", "master_alive_intervall", ["master_alive_intervall"], "master_alive_interval: 10"),
    ("concept masters list", {"masters": [M1, M3]}, "error", "masters", ["masters"], f"master: [{M1}, {M3}]"),
    ("concept failback", {"failback": True}, "error", "failback", ["failback"], "master_failback: True"),
    ("concept alive_interval", {"alive_interval": 5}, "error", "alive_interval", ["alive_interval"], "master_alive_interval"),
    ("concept master_list", {"master_list": [M1, M2]}, "error", "master_list", ["master_list"], "master: ["),
    ("wrong case", {"Master_Type": "failover"}, "error", "Master_Type", ["Master_Type"], "master_type"),
    ("unknown option", {"frobnicate": 1}, "warning", "frobnicate", ["unknown option 'frobnicate'"], "frobnicate"),
    # option types and master_type
    ("quoted number", {"master_alive_interval": "10"}, "error", "master_alive_interval", ["'10'", "str"], "master_alive_interval: 10"),
    ("string bool", {"master_failback": "yes"}, "error", "master_failback", ["'yes'"], "master_failback: True (unquoted)"),
    ("not a number", {"auth_timeout": "five"}, "error", "auth_timeout", ["'five'"], "auth_timeout: 5 (unquoted)"),
    ("master_type not a string", {"master_type": ["failover"]}, "error", "master_type", ["['failover']"], "master_type: failover"),
    ("bad master_type", {"master_type": "fail-over"}, "error", "master_type", ["'fail-over'"], "master_type: failover"),
    # malformed master entries
    ("empty entry", {"master": [M1, ""]}, "error", "master", ["''", "empty"], "master: ["),
    ("port out of range", {"master": [M1, f"{M2}:99999"]}, "error", "master", [f"{M2}:99999"], "master: ["),
    ("master not a list", {"master": 42}, "error", "master", ["42"], "master: ["),
    ("bad master_port", {"master_port": "abc"}, "error", "master_port", ["'abc'"], "master_port: 4506"),
    ("bad publish_port", {"publish_port": 70000}, "error", "publish_port", ["70000", "out of range"], "publish_port: 4505"),
    # rule 2: fewer than two masters
    ("one master string", {"master": M1}, "error", "master", [M1, "1 master"], "<second master>"),
    ("one master list", {"master": [M1]}, "error", "master", [M1], "<second master>"),
    # rule 14: list with master_type str
    ("list with str", {"master_type": None}, "error", "master_type", ["'str'", "multi-master", M1], "master_type: failover"),
    # rule 12: duplicates
    ("duplicate entry", {"master": [M1, M2, M1]}, "error", "master", [M1, "duplicates"], f"master: [{M1}, {M2}]"),
    ("duplicate spelled with port", {"master": [M1, f"{M1}:4506", M2]}, "error", "master", [f"{M1}:4506"], f"master: [{M1}, {M2}]"),
    # rule 6: host:port entries
    ("host:port entries", {"master": [f"{M1}:4506", f"{M2}:4506"]}, "warning", "master", [f"{M1}:4506", "retried first"], f"master: [{M1}, {M2}]"),
    ("host:port one host", {"master": [f"{M1}:4506", f"{M1}:5506"]}, "error", "master", [M1, "no failover at all"], "own host"),
    ("host:port with failback", {"master": [f"{M1}:4506", f"{M2}:4506"], "master_failback": True}, "warning", "master", ["master_failback reconnects"], "host-only"),
    # rule 7: different ret ports
    ("different ret ports", {"master": [f"{M1}:4506", f"{M2}:5506"]}, "warning", "master", ["5506", "4506", "publish_port (4505)"], "publish_port: 4505"),
    # rule 8: inherited port
    ("inherited port", {"master": [f"{M1}:5506", M2]}, "warning", "master", [f"'{M2}'", "5506", "inherited"], "master_port"),
    # rule 3: no alive interval
    ("alive interval 0", {"master_alive_interval": 0}, "warning", "master_alive_interval", ["is 0"], "master_alive_interval: 10"),
    ("alive interval unset", {"master_alive_interval": None}, "warning", "master_alive_interval", ["is 0", "hung master"], "master_alive_interval: 10"),
    # rule 4: zmq_monitor off without alive interval
    ("zmq_monitor off", {"zmq_monitor": False, "master_alive_interval": 0}, "error", "zmq_monitor", ["False", "never fails over"], "zmq_monitor: True"),
    # rule 5: failback
    ("failback without alive", {"master_failback": True, "master_alive_interval": 0}, "error", "master_failback", ["master_alive_interval 0", "never fails back"], "master_alive_interval: 10"),
    ("failback with tcp", {"master_failback": True, "transport": "tcp"}, "error", "master_failback", ["transport tcp"], "transport: zeromq"),
    ("failback without failover", {"master_failback": True, "master_type": None, "master": M1}, "warning", "master_failback", ["master_type str", "ignored"], "master_type: failover"),
    ("failback interval inherited", {"master_failback": True}, "info", "master_failback", ["master_failback_interval is unset", "10 s"], "master_failback_interval: 10"),
    # rule 9: auth_timeout
    ("high auth_timeout", {"auth_timeout": 30}, "warning", "auth_timeout", ["30"], "auth_timeout: 5"),
    ("zero auth_timeout", {"auth_timeout": 0}, "error", "auth_timeout", ["is 0", "never succeed"], "auth_timeout: 5"),
    # auth_safemode (extra): a dead master is retried forever
    ("auth_safemode", {"auth_safemode": True}, "error", "auth_safemode", ["auth_safemode is True", "forever"], "auth_safemode: False"),
    ("auth_safemode with retries", {"auth_safemode": True, "auth_retries": 2}, "warning", "auth_safemode", ["2 retries", "30 s"], "auth_safemode: False"),
    # rule 10: retry_dns
    ("retry_dns written", {"retry_dns": 30}, "warning", "retry_dns", ["retry_dns is 30 with", "overrides it to 0"], "retry_dns: 0"),
    ("retry_dns default", {"retry_dns": None}, "warning", "retry_dns", ["30 (the default)"], "retry_dns: 0"),
    ("retry_dns distributed", {"retry_dns": 15, "master_type": "distributed"}, "error", "retry_dns", ["15", "blocks"], "retry_dns: 0"),
    # rule 11: tcp transport
    ("tcp transport", {"transport": "tcp"}, "warning", "transport", ["transport is tcp", "master_alive_interval (10)"], "transport: zeromq"),
    # rule 13: DNS
    ("unresolvable name", {"master": [M1, "nowhere.example.com"]}, "error", "master", ["'nowhere.example.com'", "does not resolve"], "nowhere.example.com"),
    ("names on one address", {"master": [M1, "twin.example.com"]}, "warning", "master", ["127.10.0.1", "twin.example.com"], "own address"),
    ("name and ip on one address", {"master": [M1, "127.10.0.1"]}, "warning", "master", ["127.10.0.1", M1], "own address"),
    # rule 15: random_master, master_shuffle
    ("random_master", {"random_master": True}, "info", "random_master", ["random_master is True", "+auth_timeout 5 s"], "random_master: False"),
    ("master_shuffle", {"master_shuffle": True}, "warning", "master_shuffle", ["deprecated"], "random_master: True"),
    # master_uri_format ip_only (extra): names crash prep_ip_port
    ("ip_only with names", {"master_uri_format": "ip_only"}, "error", "master_uri_format", [M1, M2], "bare IP addresses"),
]  # fmt: skip


@pytest.mark.parametrize(
    "changes,severity,option,in_message,in_suggestion",
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_rule_reports_the_bad_value(changes, severity, option, in_message, in_suggestion):
    found = matching(lint(config(**changes)), severity, option)
    assert found, f"no {severity} finding for {option}"
    assert any(all(text in f["message"] for text in in_message) for f in found), found
    assert any(in_suggestion in f["suggestion"] for f in found), found


QUIET_CASES = [
    ("alive interval set", {}, "master_alive_interval"),
    ("tcp: rule 11 speaks, not rule 3", {"transport": "tcp", "master_alive_interval": 0}, "master_alive_interval"),
    ("zmq_monitor off with alive interval", {"zmq_monitor": False}, "zmq_monitor"),
    ("failback with both intervals", {"master_failback": True, "master_failback_interval": 30}, "master_failback"),
    ("auth_timeout 10", {"auth_timeout": 10}, "auth_timeout"),
    ("retry_dns for str master", {"master": M1, "master_type": None, "retry_dns": 30}, "retry_dns"),
    ("module config key", {"mysql.host": "db"}, "mysql.host"),
    ("ha pillar-like key", {"ha": {"peers": {}}}, "ha"),
    ("beacons key", {"beacons": {"ha": []}}, "beacons"),
    ("mine_functions key", {"mine_functions": {}}, "mine_functions"),
    ("dunder key", {"__role": "minion"}, "__role"),
    ("ip_only with ips", {"master_uri_format": "ip_only", "master": ["127.10.0.1", "127.10.0.2"]}, "master_uri_format"),
    ("single master str", {"master": M1, "master_type": None}, "master_type"),
]  # fmt: skip


@pytest.mark.parametrize(
    "changes,option", [case[1:] for case in QUIET_CASES], ids=[case[0] for case in QUIET_CASES]
)
def test_rule_stays_quiet(changes, option):
    assert not [f for f in lint(config(**changes)) if f["option"] == option]


def test_good_failover_config_has_only_the_estimate():
    findings = lint(GOOD)
    assert [f["severity"] for f in findings] == ["info"]
    assert "0.5 s when a master's connection closes" in findings[0]["message"]


def test_findings_have_the_contract_shape_and_order():
    findings = lint(config(master_alive_intervall=1, auth_timeout=30, random_master=True))
    keys = {"severity", "option", "message", "suggestion"}
    assert all(set(f) == keys and f["message"] and f["suggestion"] for f in findings)
    severities = [f["severity"] for f in findings]
    assert severities == sorted(severities, key=ha_lint.SEVERITY_ORDER.get)
    assert severities[:2] == ["error", "warning"]
    assert findings[-1]["option"] == "master" and "worst-case failover" in findings[-1]["message"]
    assert findings[-2]["option"] == "random_master"


def test_written_keys_limit_the_unknown_option_rule():
    opts = config(master_alive_intervall=10, frobnicate=1)
    findings = lint(opts, written_keys=["master", "frobnicate"])
    assert not [f for f in findings if f["option"] == "master_alive_intervall"]
    assert matching(findings, "warning", "frobnicate")


def test_running_minion_opts_use_master_list_and_skip_typo_rule_without_written_keys():
    opts = dict(salt.config.DEFAULT_MINION_OPTS)
    opts.update(GOOD)
    opts.update({"__role": "minion", "master": M2, "master_list": [M1, M2], "local_masters": [M2, M1]})
    opts.update({"master_uri": "tcp://127.10.0.2:4506", "master_ip": "127.10.0.2", "conf_file": "/x"})
    assert [f["severity"] for f in lint(opts)] == ["info"]
    assert [f["severity"] for f in lint(opts, written_keys=list(GOOD))] == ["info"]


def test_resolver_gets_names_only_and_is_optional():
    asked = []

    def resolver(hosts):
        asked.append(list(hosts))
        return fake_resolver(hosts)

    lint(config(master=["127.10.0.9", M1, "nowhere.example.com"]), resolver=resolver)
    assert asked == [[M1, "nowhere.example.com"]]
    findings = ha_lint.lint_options(config(master=[M1, "nowhere.example.com"]))
    assert not [f for f in findings if "does not resolve" in f["message"]]


@pytest.mark.parametrize("bad", [None, "master: salt", ["master"], 42])
def test_bad_opts_raise(bad):
    with pytest.raises(SaltInvocationError, match="opts must be a dict"):
        ha_lint.lint_options(bad)
    with pytest.raises(SaltInvocationError, match="opts must be a dict"):
        ha_lint.estimate_failover_seconds(bad)


ESTIMATE_CASES = [
    ("good", {}, 0.5, 0),
    ("no alive interval: zmq monitor", {"master_alive_interval": 0}, 0.5, 0),
    ("zmq_monitor off, alive 10", {"zmq_monitor": False}, 10.5, 0),
    ("zmq_monitor off, no alive", {"zmq_monitor": False, "master_alive_interval": 0}, None, 0),
    ("host:port retries the dead master", {"master": [f"{M1}:4506", f"{M2}:4506"]}, 5.5, 1),
    ("host:port on one host", {"master": [f"{M1}:4506", f"{M1}:5506"]}, None, 1),
    ("random_master", {"random_master": True, "auth_timeout": 8}, 8.5, 1),
    ("auth_safemode retries forever", {"random_master": True, "auth_safemode": True}, None, 1),
    ("tcp transport", {"transport": "tcp", "master_alive_interval": 0}, 0.5, 0),
    ("master_type str", {"master_type": None}, None, 0),
    ("one master", {"master": [M1]}, None, 0),
    ("malformed", {"master": [M1, ""]}, None, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    "changes,closed,retried", [c[1:] for c in ESTIMATE_CASES], ids=[c[0] for c in ESTIMATE_CASES]
)
def test_estimate_failover_seconds(changes, closed, retried):
    estimate = ha_lint.estimate_failover_seconds(config(**changes))
    assert estimate["closed_connection"] == closed
    assert estimate["hung_master"] is None
    assert estimate["dead_masters_tried_first"] == retried
    assert estimate["per_dead_master_retry"] == changes.get("auth_timeout", 5)
    assert estimate["all_masters_down_wait"] == 10
    assert (estimate["never_reason"] is None) == (closed is not None)


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({}, ["0.5 s when a master's connection closes", "+5 s per dead master", "never when a master hangs"]),
        ({"master": [f"{M1}:4506", f"{M2}:4506"], "auth_timeout": 7}, ["7.5 s", "+7 s"]),
        ({"zmq_monitor": False, "master_alive_interval": 0}, ["never when a master's connection closes (zmq_monitor is off"]),
        ({"master_type": None}, ["master_type is 'str', not failover"]),
    ],
)  # fmt: skip
def test_estimate_is_the_last_finding(changes, expected):
    last = lint(config(**changes))[-1]
    assert last["severity"] == "info" and last["option"] == "master"
    assert all(text in last["message"] for text in expected), last["message"]


# --- load_config_file / written_option_keys -----------------------------------------


def test_load_config_file_reads_a_mapping(tmp_path):
    path = tmp_path / "minion"
    path.write_text("master: [a, b]\nmaster_type: failover\n")
    assert ha_lint.load_config_file(str(path)) == {"master": ["a", "b"], "master_type": "failover"}


def test_load_config_file_empty_is_empty_dict(tmp_path):
    path = tmp_path / "minion"
    path.write_text("# nothing yet\n")
    assert ha_lint.load_config_file(str(path)) == {}


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("missing", None, "does not exist"),
        ("dir", "<dir>", "is a directory"),
        ("bad-yaml", "master: [a, b\nmaster_type: failover\n", "not valid YAML"),
        ("list", "- master\n- failover\n", "holds a list, not a mapping"),
        ("scalar", "failover\n", "holds a str, not a mapping"),
        ("binary", b"\xff\xfe\x00master", "cannot be read"),
        ("empty-name", "<empty name>", "is not a file path"),
    ],
)
def test_load_config_file_bad_input(tmp_path, name, content, match):
    path = tmp_path / name
    if content == "<empty name>":
        path = ""
    elif content == "<dir>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CommandExecutionError, match=match) as info:
        ha_lint.load_config_file(str(path))
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_load_config_file_unreadable(tmp_path):
    path = tmp_path / "minion"
    path.write_text("master: a\n")
    path.chmod(0)
    with pytest.raises(CommandExecutionError, match="cannot be read"):
        ha_lint.load_config_file(str(path))


def test_written_option_keys_reads_minion_d(tmp_path):
    (tmp_path / "minion").write_text("master: [a, b]\nid: m1\n")
    drop_in = tmp_path / "minion.d"
    drop_in.mkdir()
    (drop_in / "ha.conf").write_text("master_type: failover\nmaster_alive_intervall: 10\n")
    (drop_in / "broken.conf").write_text("retry_dns: [0\n")
    (drop_in / "empty.conf").write_text("")
    (drop_in / "notes.txt").write_text("ignored_key: 1\n")
    (drop_in / "dir.conf").mkdir()
    keys = ha_lint.written_option_keys(str(tmp_path / "minion"))
    assert keys == {"master", "id", "master_type", "master_alive_intervall"}


def test_written_option_keys_missing_files(tmp_path):
    assert ha_lint.written_option_keys(str(tmp_path / "minion")) == set()


def test_daemon_options_drop_salt_call_cli_overrides():
    salt_call_opts = {"auth_timeout": 60, "master": "a", "id": "m"}
    merged = ha_lint.daemon_options(salt_call_opts, {"master": ["a", "b"]})
    assert merged["auth_timeout"] == salt.config.DEFAULT_MINION_OPTS["auth_timeout"]
    assert merged["master"] == ["a", "b"]
    assert ha_lint.daemon_options(salt_call_opts, {"auth_timeout": 30})["auth_timeout"] == 30


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"loop_interval": 0.05, "beacons": {"ha": [{"interval": 1}, {"timeout": 0.7}]}}, {"loop_interval"}),
        ({"loop_interval": 2, "beacons": {"ha": [{"interval": 2}]}}, {"loop_interval"}),
        ({"loop_interval": 1, "beacons": {"ha": [{"interval": 2}]}}, set()),
        ({"beacons": {"ha": [{"interval": 2}, {"timeout": 0.7}]}}, set()),
        ({"loop_interval": 0.05}, set()),  # no ha beacon: nothing to say
    ],
)
def test_ha_beacon_timing(extra, expected):
    opts = {"master": ["127.0.0.1", "127.0.0.2"], "master_type": "failover",
            "master_alive_interval": 10, "retry_dns": 0, **extra}  # fmt: skip
    findings = ha_lint.lint_options(opts, written_keys=[])
    flagged = {f["option"] for f in findings if f["severity"] == "warning"}
    assert flagged == expected, findings


# --- files Salt cannot use are errors, not skipped ---------------------------------


def lint_written(conf_file):
    """What ha.lint does for a running minion (_modules/ha.py _lint_running)."""
    written = ha_lint.written_options(str(conf_file))
    opts = ha_lint.daemon_options(dict(GOOD), written)
    return ha_lint.lint_options(opts, written_keys=set(written), resolver=None)


@pytest.fixture
def minion_dir(tmp_path):
    (tmp_path / "minion").write_text("id: m1\n")
    (tmp_path / "minion.d").mkdir()
    (tmp_path / "minion.d" / "ha.conf").write_text(
        "master: [master1.example.com, master2.example.com]\nmaster_type: failover\n"
        "master_alive_interval: 10\nretry_dns: 0\n"
    )
    return tmp_path


BROKEN_DROPINS = [
    ("invalid YAML", "broken.conf", "retry_dns: [0\n", "is not valid YAML: ", "(line 2, column 1)"),
    ("a list", "list.conf", "- master\n- failover\n", "holds a list, not a mapping of options", ""),
    ("a scalar", "scalar.conf", "failover\n", "holds a str, not a mapping of options", ""),
    ("a duplicate key", "dup.conf", "retry_dns: 0\nretry_dns: 1\n", "is not valid YAML: ", "conflicting ID 'retry_dns'"),
    ("not UTF-8", "binary.conf", b"retry_dns: \xff\n", "cannot be read: it is not UTF-8 text", "invalid start byte"),
    ("a directory", "dir.conf", None, "is a directory", ""),
]  # fmt: skip


@pytest.mark.parametrize(
    "name,content,problem,detail", [c[1:] for c in BROKEN_DROPINS], ids=[c[0] for c in BROKEN_DROPINS]
)
def test_a_dropin_salt_cannot_read_is_an_error_naming_file_and_problem(minion_dir, name, content, problem, detail):
    path = minion_dir / "minion.d" / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    findings = lint_written(minion_dir / "minion")
    (found,) = [f for f in findings if f["severity"] == "error"]
    assert found["option"] == "default_include"
    assert found["message"].startswith(f"config file {str(path)!r} {problem}")
    assert detail in found["message"]
    assert "the salt-minion exits at start-up" in found["message"]
    assert str(path) in found["suggestion"] and "minion.d/*.conf" in found["suggestion"]
    assert "\n" not in found["message"]
    assert ha_lint.written_option_keys(str(minion_dir / "minion")) == {
        "id", "master", "master_type", "master_alive_interval", "retry_dns",
    }  # fmt: skip


def test_a_broken_main_config_file_is_an_error_too(minion_dir):
    (minion_dir / "minion").write_text("id: m1\nmaster: [a\n")
    findings = lint_written(minion_dir / "minion")
    (found,) = [f for f in findings if f["severity"] == "error"]
    assert found["option"] == "conf_file"
    assert found["message"].startswith(f"config file {str(minion_dir / 'minion')!r} is not valid YAML: ")


def test_a_broken_schedule_file_is_a_warning(minion_dir):
    """Salt renames a broken _schedule.conf to _schedule.confYAMLError and starts without it."""
    path = minion_dir / "minion.d" / "_schedule.conf"
    path.write_text("schedule: {job: [\n")
    findings = lint_written(minion_dir / "minion")
    assert not [f for f in findings if f["severity"] == "error"]
    (found,) = [f for f in findings if f["option"] == "default_include"]
    assert found["severity"] == "warning" and "runs without the schedule" in found["message"]
    assert found["message"].startswith(f"config file {str(path)!r} is not valid YAML")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_dropin_is_a_warning(minion_dir):
    path = minion_dir / "minion.d" / "secret.conf"
    path.write_text("retry_dns: 0\n")
    path.chmod(0)
    (found,) = [f for f in lint_written(minion_dir / "minion") if f["option"] == "default_include"]
    assert found["severity"] == "warning" and "cannot be read by this process" in found["message"]


@pytest.mark.parametrize("content", ["", "# nothing\n", "false\n", "[]\n", "---\n"])
def test_an_empty_or_false_document_is_no_options_as_salt_reads_it(minion_dir, content):
    (minion_dir / "minion.d" / "empty.conf").write_text(content)
    assert [f["severity"] for f in lint_written(minion_dir / "minion")] == ["info"]


def test_a_missing_config_file_is_no_finding(tmp_path):
    assert ha_lint.written_options(str(tmp_path / "minion")) == {}


def test_a_file_name_with_a_newline_cannot_forge_a_line(minion_dir):
    path = minion_dir / "minion.d" / "x\nERROR forged.conf"
    path.write_text("master: [a\n")
    (found,) = [f for f in lint_written(minion_dir / "minion") if f["severity"] == "error"]
    assert "\n" not in found["message"] and "\n" not in found["suggestion"]
    assert repr(str(path)) in found["message"]


def test_load_config_file_errors_are_one_escaped_line(tmp_path):
    path = tmp_path / "bad\nname.conf"
    path.write_text("master: [a, b\nmaster_type: failover\n")
    with pytest.raises(ha_lint.ConfigFileError) as info:
        ha_lint.load_config_file(str(path))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"config file {str(path)!r} is not valid YAML: ")
    assert "did not find expected ',' or ']' (line 2, column 12)" in text
    assert isinstance(info.value, CommandExecutionError)


# --- values from the config never forge a line -----------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        {"master_alive_intervall\nERROR forged": 10},
        {"masters": ["a\nERROR forged", M2]},
        {"master": [M1, "b\nERROR: forged"]},
        {"master_failback": True, "master_type": "str\nERROR forged", "master": M1},
        {"master_failback": True, "transport": "zeromq\nERROR forged"},
        {"loop_interval": 2, "beacons": {"ha": [{"interval": "5\nERROR forged"}]}},
    ],
    ids=["key", "concept value", "master entry", "master_type", "transport", "beacon interval"],
)
def test_values_from_the_config_are_escaped_in_findings(opts):
    findings = lint(config(**opts))
    forged = [f for f in findings if "forged" in f["message"] + f["suggestion"]]
    assert forged, findings
    for item in findings:
        assert "\n" not in item["message"] and "\n" not in item["suggestion"], item


@pytest.mark.parametrize("path", [0, 5, None, ["/etc/salt/minion"]])
def test_load_config_file_refuses_what_is_not_a_path(path):
    with pytest.raises(ha_lint.ConfigFileError, match="is not a file path") as info:
        ha_lint.load_config_file(path)
    assert repr(path) in str(info.value)
