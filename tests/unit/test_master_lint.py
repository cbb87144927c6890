"""
Unit tests for ha_master_lint and its rule modules (the runner's ``ha.lint``): every
rule with its stable HA7xx id, quiet on a good cluster and on a plain master, the ids
declared once and reachable, and the key store of a cluster.
"""

import inspect
import pathlib
import re

import pytest
import salt.config
from salt.exceptions import SaltInvocationError

import ha_keystore
import ha_lint_findings
import ha_master_lint
import ha_master_lint_cluster
import ha_master_lint_jobs
import ha_master_lint_peers

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
RULE_MODULES = (ha_master_lint_cluster, ha_master_lint_jobs, ha_master_lint_peers)

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
DNS = {"salt-a.example.com": [A], "salt-b.example.com": [B], "api.example.com": [A], "localhost": ["127.0.0.1"]}
PEER_B = {"url": "https://salt-b.example.com:8000", "username": "ha-sync", "password": "s3cret", "verify": True}

# A cluster master lint has nothing to say about but the two infos every cluster gets.
GOOD_CLUSTER = {
    "id": A,
    "interface": A,
    "cluster_id": "ha",
    "cluster_peers": [B],
    "cluster_pki_dir": "/srv/cluster/pki",
    "cachedir": "/srv/cluster/cache",
    "cluster_secret": "long-random",
    "engines": [{"ha_health": {"port": 4510}}],
    "master_job_cache": "pgjsonb",
}
CLUSTER_INFOS = {"HA714", "HA721"}


def fake_resolver(hosts):
    return {host: DNS.get(host, []) for host in hosts}


def shared_fs(path):
    return ("nfs4", "/srv")


def master_opts(**changes):
    """Salt's master defaults with ``changes`` (None removes an option)."""
    opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    for key, value in changes.items():
        if value is None:
            opts.pop(key, None)
        else:
            opts[key] = value
    return opts


def cluster_opts(**changes):
    return master_opts(**{**GOOD_CLUSTER, **changes})


def written_of(opts):
    """What an operator wrote to get ``opts``: every option that differs from Salt's defaults."""
    defaults = salt.config.DEFAULT_MASTER_OPTS
    return {key: value for key, value in opts.items() if key not in defaults or defaults[key] != value}


def lint(opts, written=None, peers=None, **overrides):
    overrides.setdefault("filesystem_of", shared_fs)
    overrides.setdefault("path_exists", lambda path: path == "/etc/pki/ca.crt")
    written = written_of(opts) if written is None else written
    return ha_master_lint.lint_master(opts, written, resolver=fake_resolver, peers=peers, **overrides)


def ids(findings):
    return {item["id"] for item in findings}


def the(findings, finding_id):
    found = [item for item in findings if item["id"] == finding_id]
    assert len(found) == 1, findings
    return found[0]


def answer(master, version="3008.4", cluster_id="ha"):
    return {"answered": True, "error": None, "master": master, "salt_version": version, "cluster_id": cluster_id}


# --- quiet ------------------------------------------------------------------------------


def test_a_good_cluster_gets_only_the_two_cluster_infos():
    findings = lint(cluster_opts(), peers={"b": answer(B)})
    assert ids(findings) == CLUSTER_INFOS, findings
    assert all(item["severity"] == "info" for item in findings)


def test_a_plain_master_without_peers_is_quiet():
    assert lint(master_opts(), written={}) == []


# --- one rule each ---------------------------------------------------------------------

CASES = [
    # (name, opts, written (None: the opts), peers, id, severity, words in the message)
    ("no peers", cluster_opts(cluster_peers=[]), None, None, "HA701", "error", "refuses to start"),
    ("peers without cluster_id", master_opts(), {"cluster_peers": [B], "cluster_secret": "x"}, None,
     "HA702", "error", "cluster_peers, cluster_secret"),
    ("peers not a list", cluster_opts(cluster_peers=B), None, None, "HA703", "error", "not a list"),
    ("peer twice", cluster_opts(cluster_peers=[B, B]), None, None, "HA703", "error", "twice"),
    ("peer bad port", cluster_opts(cluster_peers=["10.0.0.2:x"]), None, None, "HA703", "error", "port"),
    ("peer empty", cluster_opts(cluster_peers=[B, ""]), None, None, "HA703", "error", "not a host"),
    ("itself by interface", cluster_opts(cluster_peers=[B, A]), None, None, "HA704", "error", "itself"),
    ("itself by name", cluster_opts(cluster_peers=[B, "salt-a.example.com"]), None, None, "HA704", "error",
     "itself"),
    ("misses a master", cluster_opts(), None, {"b": answer(B), "c": answer(C)}, "HA705", "error", "10.0.0.3"),
    ("id unset", cluster_opts(id="salt-a_master"), {k: v for k, v in GOOD_CLUSTER.items() if k != "id"}, None,
     "HA706", "error", "68462"),
    ("id unset, files unknown", cluster_opts(id="salt-a_master"), "unknown", None, "HA706", "error", "_master"),
    ("id not the interface", cluster_opts(id="salt-b.example.com"), None, None, "HA707", "error",
     "never finds"),
    ("id an other address", cluster_opts(id=C), None, None, "HA707", "error", "10.0.0.3"),
    ("wildcard interface", cluster_opts(interface="0.0.0.0"), None, None, "HA708", "error", "split brain"),
    ("no secret", cluster_opts(cluster_secret=None), None, None, "HA709", "error", "cluster.pem"),
    ("isolated, no pin", cluster_opts(cluster_isolated_filesystem=True, **{"keys.cache_driver": "mmap_key"}),
     None, None, "HA710", "info", "first"),
    ("no cluster_pki_dir", cluster_opts(cluster_pki_dir=salt.config.DEFAULT_MASTER_OPTS["pki_dir"]),
     {k: v for k, v in GOOD_CLUSTER.items() if k != "cluster_pki_dir"}, None, "HA711", "warning", "pki_dir"),
    ("isolated, localfs_key", cluster_opts(cluster_isolated_filesystem=True, cluster_pub_fingerprint="ab"), None,
     None, "HA713", "warning", "localfs_key"),
    ("no health engine", cluster_opts(engines=[]), None, None, "HA722", "warning", "hung master"),
    ("local_cache with peers", master_opts(ha={"peers": {"b": PEER_B}}), None, None, "HA731", "warning",
     "lookup_jid"),
    ("local_cache, isolated cluster", cluster_opts(master_job_cache="local_cache", cluster_isolated_filesystem=True,
     cluster_pub_fingerprint="ab", **{"keys.cache_driver": "mmap_key"}), None, None, "HA731", "warning",
     "survivor"),
    ("ext_job_cache", master_opts(ext_job_cache="pgjsonb"), None, None, "HA732", "warning", "stores none"),
    ("job_cache off", master_opts(job_cache=False), None, None, "HA733", "warning", "no job returns"),
    ("keep_jobs", master_opts(keep_jobs=48), {"keep_jobs": 48}, None, "HA734", "warning", "ignored"),
    ("keep_jobs_seconds 0", master_opts(keep_jobs_seconds=0), None, None, "HA735", "info", "never purged"),
    ("worker pools off", master_opts(worker_pools_enabled=False), None, None, "HA741", "error", "catchall"),
    ("peers not a mapping", master_opts(ha={"peers": ["b"]}), None, None, "HA751", "error", "not a mapping"),
    ("peer without url", master_opts(ha={"peers": {"b": {**PEER_B, "url": "ftp://b"}}}), None, None, "HA751",
     "error", "http(s)"),
    ("verify False", master_opts(ha={"peers": {"b": {**PEER_B, "verify": False}}}), None, None, "HA752",
     "warning", "not checked"),
    ("missing CA", master_opts(ha={"peers": {"b": {**PEER_B, "verify": "/etc/pki/none.crt"}}}), None, None,
     "HA753", "error", "does not exist"),
    ("plain http", master_opts(ha={"peers": {"b": {**PEER_B, "url": "http://salt-b.example.com:8000"}}}), None,
     None, "HA754", "warning", "clear"),
    ("peer is me", master_opts(interface=A, rest_cherrypy={"port": 8000},
                               ha={"peers": {"b": PEER_B, "me": {**PEER_B, "url": "https://api.example.com:8000"}}}),
     None, None, "HA755", "error", "itself"),
    ("peer is localhost", master_opts(rest_cherrypy={"port": 8001},
                                      ha={"peers": {"me": {**PEER_B, "url": "https://127.0.0.1:8001"}}}),
     None, None, "HA755", "error", "own salt-api"),
    ("two peers one url", master_opts(ha={"peers": {"b": PEER_B, "b2": PEER_B}}), None, None, "HA756", "warning",
     "twice"),
    ("other version", cluster_opts(), None, {"b": answer(B, version="3007.1")}, "HA761", "warning", "3007.1"),
    ("no answer", cluster_opts(), None, {"b": {**answer(None), "answered": False, "error": "refused"}}, "HA762",
     "info", "refused"),
]


@pytest.mark.parametrize(
    "opts, written, peers, finding_id, severity, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_each_rule(opts, written, peers, finding_id, severity, words):
    written = None if written == "unknown" else (written_of(opts) if written is None else written)
    findings = ha_master_lint.lint_master(
        opts, written, resolver=fake_resolver, peers=peers, filesystem_of=shared_fs,
        path_exists=lambda path: path == "/etc/pki/ca.crt",
    )
    found = the(findings, finding_id)
    assert found["severity"] == severity
    assert words in found["message"], found
    assert set(found) == {"id", "severity", "option", "message", "suggestion"}
    assert found["suggestion"]


def test_shared_folders_on_a_local_filesystem_are_named():
    findings = lint(cluster_opts(), filesystem_of=lambda path: ("ext4", "/"))
    shared = [item for item in findings if item["id"] == "HA712"]
    assert {item["option"] for item in shared} == {"cluster_pki_dir", "cachedir"}
    assert "ext4" in shared[0]["message"] and shared[0]["severity"] == "warning"


def test_isolated_folders_may_be_local():
    opts = cluster_opts(cluster_isolated_filesystem=True, cluster_pub_fingerprint="ab", **{"keys.cache_driver": "mmap_key"})
    findings = lint(opts, filesystem_of=lambda path: ("ext4", "/"))
    assert "HA712" not in ids(findings) and "HA713" not in ids(findings)
    assert "cluster.sync_roots" in the(findings, "HA714")["message"]


def test_local_cache_in_a_shared_cluster_cachedir_is_shared():
    assert "HA731" not in ids(lint(cluster_opts(master_job_cache="local_cache")))


def test_worker_pools_off_is_flagged_with_or_without_a_catch_all_pool():
    pools = {"default": {"worker_count": 5, "commands": ["*"]}}
    assert "HA741" in ids(lint(master_opts(worker_pools_enabled=False, worker_pools=pools)))
    assert "HA741" not in ids(lint(master_opts(worker_pools_enabled=False, transport="tcp")))  # not measured there


def test_keep_jobs_with_keep_jobs_seconds_is_not_flagged():
    assert "HA734" not in ids(lint(master_opts(), written={"keep_jobs": 48, "keep_jobs_seconds": 3600}))


def test_id_set_explicitly_to_the_interface_name_is_quiet():
    findings = lint(cluster_opts(id="salt-a.example.com", cluster_peers=["salt-b.example.com"]))
    assert ids(findings) == CLUSTER_INFOS, findings


def test_without_a_resolver_an_id_name_is_not_judged():
    opts = cluster_opts(id="salt-z.example.com")
    findings = ha_master_lint.lint_master(opts, written_of(opts), filesystem_of=shared_fs)
    assert "HA707" not in ids(findings)


def test_a_peer_on_this_host_with_another_port_is_not_this_master():
    opts = master_opts(rest_cherrypy={"port": 8001}, ha={"peers": {"b": {**PEER_B, "url": "https://127.0.0.1:8002"}}})
    assert "HA755" not in ids(lint(opts))


def test_peer_findings_never_show_the_password():
    opts = master_opts(ha={"peers": {"b": {**PEER_B, "verify": False, "url": "http://b:1"}, "c": {"password": "s3cret"}}})
    findings = lint(opts)
    assert {"HA751", "HA752", "HA754"} <= ids(findings)
    assert all("s3cret" not in item["message"] + item["suggestion"] for item in findings)


def test_a_peer_id_with_newlines_is_escaped():
    findings = lint(cluster_opts(), peers={"b\nforged": answer("x\ny")})
    assert all("\n" not in item["message"] for item in findings)


def test_findings_are_sorted_by_severity():
    findings = lint(cluster_opts(cluster_secret=None, engines=[], keep_jobs_seconds=0))
    order = [ha_lint_findings.SEVERITY_ORDER[item["severity"]] for item in findings]
    assert order == sorted(order)


def test_opts_must_be_a_dict():
    with pytest.raises(SaltInvocationError):
        ha_master_lint.lint_master(["not", "a", "dict"])


# --- written options, filesystems --------------------------------------------------------


def test_read_written_options_follows_master_d_and_include(tmp_path):
    conf = tmp_path / "master"
    conf.write_text("id: 10.0.0.1\ninclude: extra.conf\n")
    (tmp_path / "master.d").mkdir()
    (tmp_path / "master.d" / "cluster.conf").write_text("cluster_id: ha\ncluster_peers: [10.0.0.2]\n")
    (tmp_path / "master.d" / "broken.conf").write_text("cluster_id: [\n")
    (tmp_path / "extra.conf").write_text("keep_jobs: 48\n")
    written = ha_master_lint.read_written_options(str(conf))
    assert written["id"] == A and written["cluster_peers"] == [B] and written["keep_jobs"] == 48


def test_read_written_options_of_no_or_a_missing_file_is_unknown(tmp_path):
    assert ha_master_lint.read_written_options(None) is None
    assert ha_master_lint.read_written_options(str(tmp_path / "none")) is None


def test_filesystem_of_takes_the_longest_mount(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /srv/shared rw,relatime - nfs4 nas:/export rw\n"
        "41 22 0:51 / /srv/shared\\040dir rw - cifs //nas/x rw\n"
    )
    assert ha_master_lint_cluster.filesystem_of("/srv/shared/pki/none", str(mountinfo)) == ("nfs4", "/srv/shared")
    assert ha_master_lint_cluster.filesystem_of("/srv/sharedx", str(mountinfo)) == ("ext4", "/")
    assert ha_master_lint_cluster.filesystem_of("/srv/shared dir/a", str(mountinfo)) == ("cifs", "/srv/shared dir")
    assert ha_master_lint_cluster.filesystem_of("/x", str(tmp_path / "none")) is None


# --- the key store of a cluster ---------------------------------------------------------


def test_key_store_follows_salt_on_a_cluster():
    plain = {"pki_dir": "/etc/salt/pki/master"}
    assert ha_keystore.key_pki_dir(plain) == "/etc/salt/pki/master"
    assert ha_keystore.key_pki_dir({**plain, "cluster_pki_dir": "/srv/c"}) == "/etc/salt/pki/master"
    cluster = {**plain, "cluster_id": "ha", "cluster_pki_dir": "/srv/c"}
    assert ha_keystore.key_pki_dir(cluster) == "/srv/c"
    # apply_master_config's fallback when cluster_pki_dir is unset
    assert ha_keystore.key_pki_dir({**plain, "cluster_id": "ha", "cluster_pki_dir": None}) == "/etc/salt/pki/master"
    assert ha_keystore.key_store_description(cluster) == {
        "pki_dir": "/srv/c", "option": "cluster_pki_dir", "cluster_id": "ha", "driver": "localfs_key",
    }
    assert ha_keystore.key_store_description(plain)["option"] == "pki_dir"


# --- stable ids ---------------------------------------------------------------------------


def test_every_rule_is_run_and_declares_its_ids_once():
    defined = {
        function
        for module in RULE_MODULES
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if name.startswith("check_") and function.__module__ == module.__name__
    }
    assert defined == set(ha_master_lint.RULES)
    declared = [finding_id for rule in ha_master_lint.RULES for finding_id in rule.finding_ids]
    assert len(declared) == len(set(declared)), "an id is declared by two rules"
    assert set(declared) == set(ha_lint_findings.MASTER_FINDING_TITLES)
    assert not set(ha_lint_findings.MASTER_FINDING_TITLES) & set(ha_lint_findings.FINDING_TITLES)
    assert all(re.fullmatch(r"HA7\d\d", finding_id) for finding_id in declared)


def test_each_rule_returns_only_its_ids_and_every_id_is_reachable():
    produced = set()
    corpus = [(case[1], case[2], case[3]) for case in CASES] + [(cluster_opts(), None, None)]
    for opts, written, peers in corpus:
        written = None if written == "unknown" else (written_of(opts) if written is None else written)
        ctx = ha_master_lint.build_context(
            opts, written, fake_resolver, peers, filesystem_of=lambda path: ("ext4", "/"),
            path_exists=lambda path: False,
        )
        for rule in ha_master_lint.RULES:
            found = {item["id"] for item in rule(ctx)}
            assert found <= set(rule.finding_ids), (rule.__name__, found)
            produced |= found
    assert produced == set(ha_lint_findings.MASTER_FINDING_TITLES)


def test_every_master_id_is_in_the_readme_table():
    """Fails until the README's ha.lint table holds the HA7xx rows (kept in /tmp/readme-cluster.md)."""
    listed = re.findall(r"^\| (HA7\d{2}) \|", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert listed == sorted(ha_lint_findings.MASTER_FINDING_TITLES)


# --- failover storms: the runner passes its accepted minion count ------------------------


@pytest.mark.parametrize(
    "minion_count,expected",
    [(None, set()), (10, set()), (500_000, {"HA811", "HA812"})],
    ids=["not asked", "a few minions", "a fleet one worker cannot sign in"],
)
def test_lint_master_adds_the_storm_findings_for_the_minion_count(minion_count, expected):
    opts = master_opts(worker_threads=1)
    found = ids(lint(opts, minion_count=minion_count)) & {"HA811", "HA812"}
    assert found == expected
