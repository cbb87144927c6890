"""
Unit tests for ha_lint and its rule modules: every rule with its stable id, the ids
shared with the README, and the failover estimate (HA901, ha_failover_time).
"""

import inspect
import pathlib
import re

import pytest
import salt.config
from salt.exceptions import SaltInvocationError

import ha_failover_time
import ha_keepalive
import ha_lint
import ha_lint_context
import ha_lint_findings
import ha_lint_frontdoor
import ha_lint_keys
import ha_lint_masters
import ha_lint_network
import ha_lint_options
import ha_lint_returns
import ha_lint_timing
import ha_minion_config
from tests.unit import test_lint_keys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
RULE_MODULES = (
    ha_lint_masters, ha_lint_timing, ha_lint_network, ha_lint_frontdoor, ha_lint_options, ha_lint_returns, ha_lint_keys,
)

M1 = "master1.example.com"
M2 = "master2.example.com"
M3 = "master3.example.com"
GOOD = {
    "master": [M1, M2],
    "master_type": "failover",
    "master_alive_interval": 10,
    "retry_dns": 0,
    **ha_keepalive.RECOMMENDED,
    "grains_cache": True,
    "grains_cache_expiration": 86400,
}
NO_KEEPALIVE = {"tcp_keepalive_idle": None, "tcp_keepalive_intvl": None, "tcp_keepalive_cnt": None}
VIP = "vip.example.com"
FRONT_DOOR = {"master": VIP, "master_type": None}
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


def matching(findings, severity, option, finding_id=None):
    return [
        f for f in findings
        if f["severity"] == severity and f["option"] == option and finding_id in (None, f["id"])
    ]


RULE_CASES = [
    # HA401-HA403: unknown options, typos, failover concepts
    ("concept master_failover", {"master_failover": True}, "HA401", "error", "master_failover", ["master_failover"], "master_type: failover"),
    ("typo alive interval", {"master_alive_intervall": 10}, "HA402", "error", "master_alive_intervall", ["master_alive_intervall"], "master_alive_interval: 10"),
    ("concept masters list", {"masters": [M1, M3]}, "HA401", "error", "masters", ["masters"], f"master: [{M1}, {M3}]"),
    ("concept failback", {"failback": True}, "HA401", "error", "failback", ["failback"], "master_failback: True"),
    ("concept alive_interval", {"alive_interval": 5}, "HA401", "error", "alive_interval", ["alive_interval"], "master_alive_interval"),
    ("concept master_list", {"master_list": [M1, M2]}, "HA401", "error", "master_list", ["master_list"], "master: ["),
    ("wrong case", {"Master_Type": "failover"}, "HA402", "error", "Master_Type", ["Master_Type"], "master_type"),
    ("unknown option", {"frobnicate": 1}, "HA403", "warning", "frobnicate", ["unknown option 'frobnicate'"], "frobnicate"),
    # HA404 option types, HA101 master_type
    ("quoted number", {"master_alive_interval": "10"}, "HA404", "error", "master_alive_interval", ["'10'", "str"], "master_alive_interval: 10"),
    ("string bool", {"master_failback": "yes"}, "HA404", "error", "master_failback", ["'yes'"], "master_failback: True (unquoted)"),
    ("not a number", {"auth_timeout": "five"}, "HA404", "error", "auth_timeout", ["'five'"], "auth_timeout: 5 (unquoted)"),
    ("master_type not a string", {"master_type": ["failover"]}, "HA404", "error", "master_type", ["['failover']"], "master_type: failover"),
    ("bad master_type", {"master_type": "fail-over"}, "HA101", "error", "master_type", ["'fail-over'"], "master_type: failover"),
    # HA102: malformed master entries
    ("empty entry", {"master": [M1, ""]}, "HA102", "error", "master", ["''", "empty"], "master: ["),
    ("port out of range", {"master": [M1, f"{M2}:99999"]}, "HA102", "error", "master", [f"{M2}:99999"], "master: ["),
    ("master not a list", {"master": 42}, "HA102", "error", "master", ["42"], "master: ["),
    ("bad master_port", {"master_port": "abc"}, "HA102", "error", "master_port", ["'abc'"], "master_port: 4506"),
    ("bad publish_port", {"publish_port": 70000}, "HA102", "error", "publish_port", ["70000", "out of range"], "publish_port: 4505"),
    # HA103: fewer than two masters
    ("one master string", {"master": M1}, "HA103", "error", "master", [M1, "1 master"], "<second master>"),
    ("one master list", {"master": [M1]}, "HA103", "error", "master", [M1], "<second master>"),
    # HA104: list with master_type str
    ("list with str", {"master_type": None}, "HA104", "error", "master_type", ["'str'", "multi-master", M1], "master_type: failover"),
    # HA105: duplicates
    ("duplicate entry", {"master": [M1, M2, M1]}, "HA105", "error", "master", [M1, "duplicates"], f"master: [{M1}, {M2}]"),
    ("duplicate spelled with port", {"master": [M1, f"{M1}:4506", M2]}, "HA105", "error", "master", [f"{M1}:4506"], f"master: [{M1}, {M2}]"),
    # HA106: host:port entries
    ("host:port entries", {"master": [f"{M1}:4506", f"{M2}:4506"]}, "HA106", "warning", "master", [f"{M1}:4506", "retried first"], f"master: [{M1}, {M2}]"),
    ("host:port one host", {"master": [f"{M1}:4506", f"{M1}:5506"]}, "HA106", "error", "master", [M1, "no failover at all"], "own host"),
    ("host:port with failback", {"master": [f"{M1}:4506", f"{M2}:4506"], "master_failback": True}, "HA106", "warning", "master", ["master_failback reconnects"], "host-only"),
    # HA107: different ret ports
    ("different ret ports", {"master": [f"{M1}:4506", f"{M2}:5506"]}, "HA107", "warning", "master", ["5506", "4506", "publish_port (4505)"], "publish_port: 4505"),
    # HA108: inherited port
    ("inherited port", {"master": [f"{M1}:5506", M2]}, "HA108", "warning", "master", [f"'{M2}'", "5506", "inherited"], "master_port"),
    # HA201: no alive interval
    ("alive interval 0", {"master_alive_interval": 0}, "HA201", "warning", "master_alive_interval", ["is 0"], "master_alive_interval: 10"),
    ("alive interval unset", {"master_alive_interval": None}, "HA201", "warning", "master_alive_interval", ["is 0", "hung master"], "master_alive_interval: 10"),
    # HA202: zmq_monitor off without alive interval
    ("zmq_monitor off", {"zmq_monitor": False, "master_alive_interval": 0}, "HA202", "error", "zmq_monitor", ["False", "never fails over"], "zmq_monitor: True"),
    # HA203-HA205: failback
    ("failback without alive", {"master_failback": True, "master_alive_interval": 0}, "HA204", "error", "master_failback", ["master_alive_interval 0", "never fails back"], "master_alive_interval: 10"),
    ("failback with tcp", {"master_failback": True, "transport": "tcp"}, "HA204", "error", "master_failback", ["transport tcp"], "transport: zeromq"),
    ("failback without failover", {"master_failback": True, "master_type": None, "master": M1}, "HA203", "warning", "master_failback", ["master_type str", "ignored"], "master_type: failover"),
    ("failback interval inherited", {"master_failback": True}, "HA205", "info", "master_failback", ["master_failback_interval is unset", "10 s"], "master_failback_interval: 10"),
    # HA206, HA207: auth_timeout
    ("high auth_timeout", {"auth_timeout": 30}, "HA206", "warning", "auth_timeout", ["30"], "auth_timeout: 5"),
    ("zero auth_timeout", {"auth_timeout": 0}, "HA207", "error", "auth_timeout", ["is 0", "never succeed"], "auth_timeout: 5"),
    # HA208: auth_safemode, a dead master is retried forever
    ("auth_safemode", {"auth_safemode": True}, "HA208", "error", "auth_safemode", ["auth_safemode is True", "forever"], "auth_safemode: False"),
    ("auth_safemode with retries", {"auth_safemode": True, "auth_retries": 2}, "HA208", "warning", "auth_safemode", ["2 retries", "30 s"], "auth_safemode: False"),
    # HA303: retry_dns
    ("retry_dns written", {"retry_dns": 30}, "HA303", "warning", "retry_dns", ["retry_dns is 30 with", "overrides it to 0"], "retry_dns: 0"),
    ("retry_dns default", {"retry_dns": None}, "HA303", "warning", "retry_dns", ["30 (the default)"], "retry_dns: 0"),
    ("retry_dns distributed", {"retry_dns": 15, "master_type": "distributed"}, "HA303", "error", "retry_dns", ["15", "blocks"], "retry_dns: 0"),
    # HA304: tcp transport
    ("tcp transport", {"transport": "tcp"}, "HA304", "warning", "transport", ["transport is tcp", "master_alive_interval (10)"], "transport: zeromq"),
    # HA301, HA302: DNS
    ("unresolvable name", {"master": [M1, "nowhere.example.com"]}, "HA301", "error", "master", ["'nowhere.example.com'", "does not resolve"], "nowhere.example.com"),
    ("names on one address", {"master": [M1, "twin.example.com"]}, "HA302", "warning", "master", ["127.10.0.1", "twin.example.com"], "own address"),
    ("name and ip on one address", {"master": [M1, "127.10.0.1"]}, "HA302", "warning", "master", ["127.10.0.1", M1], "own address"),
    # HA209, HA210: random_master, master_shuffle
    ("random_master", {"random_master": True}, "HA209", "info", "random_master", ["random_master is True", "+auth_timeout 5 s"], "random_master: False"),
    ("master_shuffle", {"master_shuffle": True}, "HA210", "warning", "master_shuffle", ["deprecated"], "random_master: True"),
    # HA109: master_uri_format ip_only, names crash prep_ip_port
    ("ip_only with names", {"master_uri_format": "ip_only"}, "HA109", "error", "master_uri_format", [M1, M2], "bare IP addresses"),
    # HA801-HA803: failover storms (values written by the operator; master_tries always)
    ("storm acceptance_wait_time", {"acceptance_wait_time": 10}, "HA801", "info", "acceptance_wait_time", ["is 10 s", "5 + 5 + 10 s", "23.5-27.8 s", "14.7 s"], "acceptance_wait_time: 2 and acceptance_wait_time_max: 10"),
    ("storm acceptance_wait_time 30", {"acceptance_wait_time": 30, "auth_timeout": 10}, "HA801", "info", "acceptance_wait_time", ["10 + 10 + 30 s"], "acceptance_wait_time: 2"),
    ("storm auth_timeout", {"auth_timeout": 5}, "HA802", "info", "auth_timeout", ["is 5 s", "5 + 5 + 10 s", "6.1 s"], "auth_timeout: 10"),
    ("storm auth_timeout 2", {"auth_timeout": 2, "acceptance_wait_time": 2}, "HA802", "info", "auth_timeout", ["2 + 2 + 2 s"], "auth_timeout: 10"),
    ("storm master_tries", {"master_tries": 1}, "HA803", "warning", "master_tries", ["master_tries is 1", "exits"], "master_tries: -1"),
    ("storm master_tries 3", {"master_tries": 3}, "HA803", "warning", "master_tries", ["after 3 round(s)"], "master_tries: -1"),
    # HA804: the grains run again at each failover unless cached
    ("grains cache off", {"grains_cache": False}, "HA804", "info", "grains_cache", ["grains_cache is off", "every grains module", "before it takes jobs", "11.9 s", "7.7 s"], "grains_cache: True and grains_cache_expiration: 86400"),
    ("grains cache default expiration", {"grains_cache_expiration": 300}, "HA804", "info", "grains_cache_expiration", ["grains_cache_expiration is 300 s", "last ran"], "saltutil.refresh_grains"),
    ("grains cache an hour", {"grains_cache_expiration": 3600}, "HA804", "info", "grains_cache_expiration", ["is 3600 s"], "grains_cache_expiration: 86400"),
    # HA221-HA223: partitioned masters, TCP keepalive
    ("keepalive defaults", NO_KEEPALIVE, "HA221", "info", "tcp_keepalive_idle", ["idle 300 s + 9 x 75 s", "Linux's defaults", "= 975 s", "988.6 s", "15.5 s", "hung master"], "tcp_keepalive: True, tcp_keepalive_idle: 10, tcp_keepalive_intvl: 2, tcp_keepalive_cnt: 3"),
    ("keepalive idle 60", {"tcp_keepalive_idle": 60}, "HA221", "info", "tcp_keepalive_idle", ["idle 60 s + 3 x 2 s = 66 s"], "tcp_keepalive_idle: 10"),
    ("keepalive off", {"tcp_keepalive": False}, "HA222", "warning", "tcp_keepalive", ["tcp_keepalive is False", "never left"], "tcp_keepalive: True"),
    ("keepalive idle a float", {"tcp_keepalive_idle": 10.0}, "HA223", "error", "tcp_keepalive_idle", ["10.0", "whole numbers only"], "tcp_keepalive_idle: 10 (a whole number, unquoted)"),
    ("keepalive cnt quoted", {"tcp_keepalive_cnt": "3"}, "HA223", "error", "tcp_keepalive_cnt", ["'3'"], "tcp_keepalive_cnt: 3"),
    ("keepalive quoted on one master", {"master": M1, "master_type": None, "tcp_keepalive_intvl": "2"}, "HA223", "error", "tcp_keepalive_intvl", ["'2'"], "tcp_keepalive_intvl: 2"),
    # HA311-HA319: front doors
    ("one address undeclared", FRONT_DOOR, "HA311", "info", "master", [f"one master address ({VIP})", "no failover"], "ha: {front_door: vip} (or balancer, dns)"),
    ("front door misspelled", {**FRONT_DOOR, "ha": {"front_door": "keepalived"}}, "HA312", "warning", "ha", ["'keepalived'", "vip, balancer, dns"], "front_door: vip"),
    ("ha not a mapping", {**FRONT_DOOR, "ha": "vip"}, "HA312", "warning", "ha", ["ha is 'vip', not a mapping"], "front_door"),
    ("front door with a failover list", {"ha": {"front_door": "vip"}}, "HA313", "warning", "ha", ["failover list (2 masters", "ignored"], "remove ha:front_door"),
    ("vip without short keepalive", {**FRONT_DOOR, **NO_KEEPALIVE, "ha": {"front_door": "vip"}}, "HA314", "warning", "tcp_keepalive_idle", ["= 975 s", "vip front door", "8.5 s"], "tcp_keepalive_idle: 10"),
    ("dns with keepalive off", {**FRONT_DOOR, "tcp_keepalive": False, "ha": {"front_door": "dns"}}, "HA314", "error", "tcp_keepalive", ["never breaks", "dns front door"], "tcp_keepalive: True"),
    ("balancer keepalive", {**FRONT_DOOR, **NO_KEEPALIVE, "ha": {"front_door": "balancer"}}, "HA314", "warning", "tcp_keepalive_idle", ["balancer's own failure", "HA317"], "tcp_keepalive_cnt: 3"),
    ("front door keys", {**FRONT_DOOR, "ha": {"front_door": "vip"}}, "HA315", "info", "master", ["same master.pem", "accepted on every master"], "ha.readiness"),
    ("front door keys signing", {**FRONT_DOOR, "ha": {"front_door": "balancer"}, "verify_master_pubkey_sign": True}, "HA315", "info", "master", ["master pubkey signing is on"], "ha.master_signing"),
    ("front door no monitor", {**FRONT_DOOR, "ha": {"front_door": "vip"}, "zmq_monitor": False, "master_alive_interval": None}, "HA316", "error", "zmq_monitor", ["never signs in"], "zmq_monitor: True"),
    ("balancer sessions", {**FRONT_DOOR, "ha": {"front_door": "balancer"}}, "HA317", "info", "ha", ["reach the balancer, not the master"], "on-marked-down shutdown-sessions"),
    ("dns name", {**FRONT_DOOR, "ha": {"front_door": "dns"}}, "HA318", "info", "master", [f"a DNS front door ({VIP})", "dns_check", "the ha beacon does"], "TTL"),
    ("dns on an address", {**FRONT_DOOR, "master": "10.0.0.9", "ha": {"front_door": "DNS"}}, "HA318", "warning", "master", ["the address 10.0.0.9", "never moves"], "DNS name"),
    ("vip health", {**FRONT_DOOR, "ha": {"front_door": "vip"}}, "HA319", "info", "ha", [f"keepalived VIP ({VIP})", "frozen master"], "curl -fsS -m 1 http://127.0.0.1:4510/health"),
]


@pytest.mark.parametrize(
    "changes,finding_id,severity,option,in_message,in_suggestion",
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_rule_reports_the_bad_value(changes, finding_id, severity, option, in_message, in_suggestion):
    found = matching(lint(config(**changes)), severity, option, finding_id)
    assert found, f"no {severity} {finding_id} finding for {option}"
    assert any(all(text in f["message"] for text in in_message) for f in found), found
    assert any(in_suggestion in f["suggestion"] for f in found), found


QUIET_CASES = [
    ("alive interval set", {}, "master_alive_interval"),
    ("tcp: HA304 speaks, not HA201", {"transport": "tcp", "master_alive_interval": 0}, "master_alive_interval"),
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
    # HA801-HA803: the recommended storm settings, Salt's defaults unwritten, retrying forever
    ("storm settings recommended", {"acceptance_wait_time": 2, "acceptance_wait_time_max": 10, "auth_timeout": 10}, "acceptance_wait_time"),
    ("storm auth_timeout recommended", {"auth_timeout": 10}, "auth_timeout"),
    ("storm master_tries forever", {"master_tries": -1}, "master_tries"),
    ("storm master_tries 0 is forever", {"master_tries": 0}, "master_tries"),
    ("storm settings without failover", {"master": M1, "master_type": None, "master_tries": 1, "acceptance_wait_time": 10}, "master_tries"),
    # HA804: a day of grains cache, or no failover
    ("grains cache a day", {}, "grains_cache"),
    ("grains cache two days", {"grains_cache_expiration": 172800}, "grains_cache_expiration"),
    ("grains cache off without failover", {"master": M1, "master_type": None, "grains_cache": False}, "grains_cache"),
    # HA221, HA222, HA314: short keepalive (or none asked for: one master without a front door)
    ("keepalive recommended", {}, "tcp_keepalive_idle"),
    ("keepalive 20 + 3 x 3", {"tcp_keepalive_idle": 20, "tcp_keepalive_intvl": 3}, "tcp_keepalive_idle"),
    ("keepalive off on one master", {"master": M1, "master_type": None, "tcp_keepalive": False}, "tcp_keepalive"),
    ("keepalive defaults on one master", {"master": M1, "master_type": None, **NO_KEEPALIVE}, "tcp_keepalive_idle"),
    ("front door with recommended keepalive", {**FRONT_DOOR, "ha": {"front_door": "vip"}}, "tcp_keepalive_idle"),
    ("front door with the alive job", {**FRONT_DOOR, "ha": {"front_door": "vip"}, "zmq_monitor": False}, "zmq_monitor"),
]


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
    keys = {"id", "severity", "option", "message", "suggestion"}
    assert all(set(f) == keys and f["message"] and f["suggestion"] for f in findings)
    assert all(f["id"] in ha_lint_findings.FINDING_TITLES for f in findings)
    assert findings[-1]["id"] == "HA901"
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


def test_running_minion_opts_use_master_list_and_skip_typo_rule_without_written_keys(tmp_path):
    opts = dict(salt.config.DEFAULT_MINION_OPTS)
    opts.update(GOOD)
    opts.update({"__role": "minion", "master": M2, "master_list": [M1, M2], "local_masters": [M2, M1]})
    opts.update({"master_uri": "tcp://127.10.0.2:4506", "master_ip": "127.10.0.2", "conf_file": "/x"})
    opts["pki_dir"] = str(tmp_path)
    assert [f["id"] for f in lint(opts)] == ["HA501", "HA601", "HA901"]  # the master list is linted (failover)
    opts["engines"] = [{"ha_returns": {}}]
    assert [f["id"] for f in lint(opts)] == ["HA601", "HA901"]
    assert [f["id"] for f in lint(opts, written_keys=list(GOOD))] == ["HA601", "HA901"]


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
        ha_failover_time.estimate_failover_seconds(bad)


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
]


@pytest.mark.parametrize(
    "changes,closed,retried", [c[1:] for c in ESTIMATE_CASES], ids=[c[0] for c in ESTIMATE_CASES]
)
def test_estimate_failover_seconds(changes, closed, retried):
    estimate = ha_failover_time.estimate_failover_seconds(config(**changes))
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
)
def test_estimate_is_the_last_finding(changes, expected):
    last = lint(config(**changes))[-1]
    assert last["severity"] == "info" and last["option"] == "master"
    assert all(text in last["message"] for text in expected), last["message"]


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
            "master_alive_interval": 10, "retry_dns": 0, **extra}
    findings = ha_lint.lint_options(opts, written_keys=[])
    flagged = {f["option"] for f in findings if f["severity"] == "warning"}
    assert flagged == expected, findings


# --- HA501, HA502: the ha_returns engine -------------------------------------------

RUNNING = {"__role": "minion"}

RETURNS_CASES = [
    # name, changes, running minion, expected (id, severity) list, texts in the message
    ("failover without the engine", {}, True, [("HA501", "info")], ["ha_returns engine is not configured", "dropped"]),
    ("other engines only", {"engines": ["pytest", {"ha_health": {}}]}, True, [("HA501", "info")], ["not configured"]),
    ("engine by name", {"engines": ["ha_returns"]}, True, [], []),
    ("engine with options", {"engines": ["pytest", {"ha_returns": {"max_age": 3600}}]}, True, [], []),
    ("engine with no options", {"engines": [{"ha_returns": None}]}, True, [], []),
    ("engines as a mapping", {"engines": {"ha_returns": {"grace": 2}}}, True, [], []),
    ("one file: its engines say nothing of the minion", {}, False, [], []),
    ("not failover", {"master": M1, "master_type": None}, True, [], []),
    ("one master", {"master": [M1]}, True, [], []),
    ("max_age too small", {"engines": [{"ha_returns": {"max_age": 5}}]}, True, [("HA502", "error")], ["max_age 5"]),
    ("unknown option", {"engines": [{"ha_returns": {"frobnicate": 1}}]}, True, [("HA502", "error")], ["'frobnicate'"]),
    ("relative directory", {"engines": [{"ha_returns": {"directory": "ledger"}}]}, True, [("HA502", "error")], ["'ledger'", "absolute"]),
    ("grace not a number", {"engines": [{"ha_returns": {"grace": "soon"}}]}, False, [("HA502", "error")], ["grace", "'soon'"]),
    ("options a list", {"engines": [{"ha_returns": [1]}]}, True, [("HA502", "error")], ["not a mapping"]),
    ("options a string", {"engines": [{"ha_returns": "fast"}]}, False, [("HA502", "error")], ["not a mapping", "'fast'"]),
    ("engines not a list", {"engines": 5}, True, [("HA502", "error")], ["engines option 5 is not a list of engines"]),
]


@pytest.mark.parametrize(
    "changes,running,expected,in_message", [c[1:] for c in RETURNS_CASES], ids=[c[0] for c in RETURNS_CASES]
)
def test_returns_engine_rule(changes, running, expected, in_message):
    opts = {**config(**changes), **(RUNNING if running else {})}
    found = [f for f in lint(opts) if f["id"] in ("HA501", "HA502")]
    assert [(f["id"], f["severity"]) for f in found] == expected, found
    for item in found:
        assert item["option"] == "engines"
        assert all(text in item["message"] for text in in_message), item["message"]
        assert "\n" not in item["message"]
    if expected == [("HA501", "info")]:
        assert "returns_engine: True" in found[0]["suggestion"]
    if expected == [("HA502", "error")]:
        assert "max_age" in found[0]["suggestion"] and "ha_returns: {}" in found[0]["suggestion"]


def test_returns_engine_options_are_escaped():
    opts = config(engines=[{"ha_returns": {"directory": "x\nERROR forged"}}])
    (found,) = [f for f in lint(opts) if f["id"] == "HA502"]
    assert "\n" not in found["message"] and "x\\nERROR forged" in found["message"]


# --- HA411: an engines list Salt drops (ha_minion_config finds it; test_minion_config reads real files) ---


def test_a_replaced_engines_list_is_a_warning_naming_both_files():
    problem = ha_minion_config.ConfigFileProblem(
        "/etc/salt/minion", "engines", "sets engines [pytest], which Salt ignores", ha_minion_config.REPLACED,
        replaced_by=("/etc/salt/minion.d/a.conf",),
    )
    findings = lint(dict(GOOD), config_problems=(problem,))
    (found,) = [f for f in findings if f["option"] == "engines"]
    assert (found["id"], found["severity"]) == ("HA411", "warning")
    assert found["message"] == "config file '/etc/salt/minion' sets engines [pytest], which Salt ignores"
    assert "'/etc/salt/minion.d/a.conf'" in found["suggestion"] and "minion.d/*.conf" in found["suggestion"]
    assert not [f for f in findings if f["id"] == "HA410"]


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


# --- stable ids: declared once, shared with the README, produced by their rule only ----


def readme_ids():
    """The ids of the README's ha.lint table, in table order."""
    return re.findall(r"^\| (HA\d{3}) \|", README.read_text(encoding="utf-8"), flags=re.MULTILINE)


def test_every_finding_id_is_in_the_readme_table_and_every_readme_id_in_the_code():
    listed = readme_ids()
    assert len(listed) == len(set(listed)), "an id is listed twice in the README"
    assert set(listed) == set(ha_lint_findings.ALL_FINDING_TITLES)
    # Two tables: the minion's (HA101-HA901) and the master runner's (HA7xx), each sorted.
    minion = [finding_id for finding_id in listed if finding_id in ha_lint_findings.FINDING_TITLES]
    master = [finding_id for finding_id in listed if finding_id in ha_lint_findings.MASTER_FINDING_TITLES]
    assert minion == sorted(minion) and master == sorted(master)


def test_every_rule_is_run_and_declares_its_ids_once():
    defined = {
        function
        for module in RULE_MODULES
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if name.startswith("check_") and function.__module__ == module.__name__
    }
    assert defined == set(ha_lint.RULES)
    declared = [finding_id for rule in ha_lint.RULES for finding_id in rule.finding_ids]
    assert len(declared) == len(set(declared)), "an id is declared by two rules"
    assert set(declared) | {"HA901"} == set(ha_lint_findings.FINDING_TITLES)
    for rule in ha_lint.RULES:
        assert all(finding_id in rule.__doc__ for finding_id in rule.finding_ids), rule.__name__


def test_storm_infos_judge_only_written_values():
    """Salt's defaults (acceptance_wait_time 10, auth_timeout 5) unwritten: no HA801/HA802, running or not."""
    running = {**dict(salt.config.DEFAULT_MINION_OPTS), **GOOD, **RUNNING}
    assert not [f for f in lint(running) if f["id"] in ("HA801", "HA802")]
    written = lint(running, written_keys=[*GOOD, "auth_timeout"])
    assert [f["id"] for f in written if f["id"] in ("HA801", "HA802")] == ["HA802"]


def test_storm_values_come_from_ha_storm():
    import ha_storm  # pylint: disable=import-outside-toplevel

    quiet = config(**{key: value for key, value in ha_storm.RECOMMENDED_MINION_OPTIONS.items()})
    assert not [f for f in lint(quiet) if f["id"].startswith("HA80")]


def test_undeclared_ids_are_refused():
    with pytest.raises(ValueError, match="HA999"):
        ha_lint_findings.lint_finding("HA999", "error", "master", "m", "s")
    with pytest.raises(ValueError, match="HA999"):
        ha_lint_findings.produces("HA999")


CONFIG_PROBLEMS = tuple(
    ha_minion_config.ConfigFileProblem(path, option, "is broken", effect, pattern, included_by)
    for path, option, effect, pattern, included_by in [
        ("/etc/salt/minion", "conf_file", ha_minion_config.EXITS, None, None),
        ("/etc/salt/minion.d/a.conf", "default_include", ha_minion_config.EXITS, "minion.d/*.conf", None),
        ("/etc/salt/minion.d/_schedule.conf", "default_include", ha_minion_config.RENAMED, "minion.d/*.conf", None),
        ("/etc/salt/minion.d/b.conf", "default_include", ha_minion_config.UNREADABLE_HERE, "minion.d/*.conf", None),
        ("/etc/salt/more/c.conf", "include", ha_minion_config.IGNORED, "more/*.conf", "/etc/salt/x.conf"),
        ("/etc/salt/minion", "include", ha_minion_config.BAD_VALUE, None, None),
        ("/etc/salt/minion", "include", ha_minion_config.NO_MATCH, None, None),
        ("/etc/salt/minion", "engines", ha_minion_config.REPLACED, None, None),
    ]
)


def lint_corpus(folder):
    """Contexts that between them make every rule speak (and stay quiet); ``folder``: for pki dirs."""
    changes = [case[1] for case in RULE_CASES] + [case[1] for case in QUIET_CASES]
    changes += [{"loop_interval": 2, "beacons": {"ha": [{"interval": 2}]}}, {}]
    changes += [case[1] for case in RETURNS_CASES]
    contexts = [ha_lint_context.build_context(config(**change), None, fake_resolver) for change in changes]
    contexts += [ha_lint_context.build_context({**config(**case[1]), **RUNNING}) for case in RETURNS_CASES]
    contexts += test_lint_keys.key_contexts(folder)
    return contexts + [ha_lint_context.build_context(dict(GOOD), None, None, CONFIG_PROBLEMS)]


def test_each_rule_returns_only_the_ids_it_declares_and_every_id_is_reachable(tmp_path):
    produced = set()
    for ctx in lint_corpus(tmp_path):
        for rule in ha_lint.RULES:
            ids = {item["id"] for item in rule(ctx)}
            assert ids <= set(rule.finding_ids), (rule.__name__, ids)
            produced |= ids
    produced.add(ha_failover_time.estimate_finding(GOOD)["id"])
    assert produced == set(ha_lint_findings.FINDING_TITLES)


# --- HA901: partitioned masters and front doors ---------------------------------------


@pytest.mark.parametrize(
    "changes, partitioned, in_message",
    [
        ({}, 18.5, ["18.5 s when a master is partitioned", "idle 10 s + 3 x 2 s", "2 s connect test", "+2 s per further partitioned master"]),
        (NO_KEEPALIVE, 977.5, ["977.5 s when a master is partitioned", "Linux's defaults"]),
        ({"tcp_keepalive": False}, None, ["never when a master is partitioned (drops packets silently: tcp_keepalive is off"]),
        ({"master": [f"{M1}:4506", f"{M2}:4506"]}, 23.5, ["23.5 s when a master is partitioned"]),
        ({"master_type": None}, None, ["never when a master is partitioned either"]),
    ],
)
def test_estimate_tells_a_partition_from_a_hang(changes, partitioned, in_message):
    estimate = ha_failover_time.estimate_failover_seconds(config(**changes))
    assert estimate["partitioned_master"] == partitioned
    assert estimate["hung_master"] is None and estimate["per_partitioned_master"] == 2.0
    last = lint(config(**changes))[-1]
    assert last["id"] == "HA901"
    assert all(text in last["message"] for text in in_message), last["message"]
    assert "never when a master hangs" in last["message"]
    assert "tcp_keepalive_idle: 10" in last["suggestion"]


@pytest.mark.parametrize("topology", ["vip", "balancer", "dns"])
def test_estimate_behind_a_front_door(topology):
    opts = config(**FRONT_DOOR, ha={"front_door": topology})
    assert ha_failover_time.estimate_failover_seconds(opts)["front_door"] == topology
    findings = lint(opts)
    assert [f["id"] for f in findings if f["id"] in ("HA311", "HA312", "HA313", "HA314", "HA316")] == []
    last = findings[-1]
    assert last["message"].startswith(f"estimated worst-case failover behind the {topology} front door: ")
    assert "up to 16 s until TCP keepalive (idle 10 s + 3 x 2 s)" in last["message"]
    assert ("a frozen master behind DNS is never left" in last["message"]) == (topology == "dns")
    off = lint(config(**FRONT_DOOR, ha={"front_door": topology}, tcp_keepalive=False))[-1]
    assert "never (tcp_keepalive is off" in off["message"]


def test_a_front_door_declared_on_a_failover_list_changes_no_estimate():
    assert ha_failover_time.estimate_failover_seconds(config(ha={"front_door": "vip"}))["front_door"] is None
