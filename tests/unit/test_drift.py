"""Inventories and their differences."""

import json
import pathlib

import pytest
import salt.config

import ha_drift

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
JOB_STORE_EXAMPLE = REPO_ROOT / "examples" / "master.d" / "job-store-pgjsonb.conf"
SECRET = "s3cr3t-Pa55w0rd"
LOCAL_STORE = {
    "master_job_cache": "local_cache", "ext_job_cache": "", "job_cache": True, "keep_jobs_seconds": 86400,
    "keep_jobs": 24, "archive_jobs": False, "hash_type": "sha256",
}


def inventory(name, **changes):
    base = {
        "master": name,
        "salt_version": "3008.4",
        "salt_ha_version": "0.1.0",
        "master_pub_fingerprint": "aa",
        "master_sign_pub_fingerprint": None,
        "master_sign_pubkey": False,
        "config": {"publish_port": 4505, "transport": "zeromq"},
        "job_store": dict(LOCAL_STORE),
        "keys": {"accepted": {"web1": "f1"}, "pending": {}, "rejected": {}, "denied": {}},
        "file_roots": {"base": {"top.sls": "h1"}},
        "pillar_roots": {"base": {}},
        "gitfs": {},
    }
    base.update(changes)
    return base


def test_identical_masters_have_no_drift():
    assert ha_drift.compare_inventories({"a": inventory("a"), "b": inventory("b")}) == []


def test_each_difference_names_the_masters_and_what_differs():
    differences = ha_drift.compare_inventories(
        {
            "a": inventory("a"),
            "b": inventory(
                "b",
                master_pub_fingerprint="bb",
                salt_version="3007.1",
                config={"publish_port": 4510, "transport": "zeromq"},
                keys={"accepted": {"web1": "other", "web2": "f2"}, "pending": {}, "rejected": {}, "denied": {}},
                file_roots={"base": {"top.sls": "h2", "extra.sls": "h3"}, "dev": {}},
            ),
        }
    )
    by_what = {difference["what"]: difference for difference in differences}
    assert by_what["master.pub fingerprint"]["masters"] == {"a": "aa", "b": "bb"}
    assert by_what["salt version"]["masters"] == {"a": "3008.4", "b": "3007.1"}
    assert by_what["config publish_port"]["masters"] == {"a": 4505, "b": 4510}
    keys = by_what["minion keys"]
    assert keys["count"] == 2
    assert keys["minions"]["web1"] == {"a": "accepted f1", "b": "accepted other"}
    assert keys["minions"]["web2"] == {"a": None, "b": "accepted f2"}
    assert by_what["file_roots base"]["paths"] == ["extra.sls", "top.sls"]
    assert by_what["file_roots dev"]["masters"] == {"a": "missing", "b": "0 files"}


def test_secrets_are_masked():
    masked = ha_drift.mask_secrets(
        {"ext_pillar": [{"git": ["https://user:hunter2@git.example.com/p.git"]}], "db": {"password": "x", "host": "h"}}
    )
    assert masked == {
        "ext_pillar": [{"git": ["https://*****@git.example.com/p.git"]}],
        "db": {"password": "*****", "host": "h"},
    }


def test_tree_hashes_first_root_wins(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    (first / "sub").mkdir(parents=True)
    second.mkdir()
    (first / "sub" / "a.sls").write_text("a")
    (second / "sub").mkdir()
    (second / "sub" / "a.sls").write_text("shadowed")
    (second / "b.sls").write_text("b")
    (first / ".git").mkdir()
    (first / ".git" / "HEAD").write_text("x")
    trees = ha_drift.tree_hashes({"base": [str(first), str(second), str(tmp_path / "missing")]})
    assert sorted(trees["base"]) == ["b.sls", "sub/a.sls"]
    assert trees["base"]["sub/a.sls"] == ha_drift._file_hash(first / "sub" / "a.sls")


def test_gitfs_revisions_from_the_cache(tmp_path):
    repo = tmp_path / "gitfs" / "abc123" / ".git"
    (repo / "refs" / "remotes" / "origin").mkdir(parents=True)
    (repo / "refs" / "remotes" / "origin" / "main").write_text("1111\n")
    (repo / "packed-refs").write_text("# pack-refs\n2222 refs/tags/v1\n")
    (tmp_path / "gitfs" / "remote_map.txt").write_text("# map\nabc123 = https://u:pw@git.example.com/s.git\n")
    assert ha_drift.gitfs_revisions(str(tmp_path)) == {
        "https://*****@git.example.com/s.git": {"refs/remotes/origin/main": "1111", "refs/tags/v1": "2222"}
    }
    assert ha_drift.gitfs_revisions(str(tmp_path / "none")) == {}


def pgjsonb_store(**changes):
    """A job store inventory section on pgjsonb; ``changes`` with ``None`` values drop a key."""
    store = dict(
        LOCAL_STORE,
        master_job_cache="pgjsonb",
        **{"returner.pgjsonb.host": "pg1", "returner.pgjsonb.port": 5432, "returner.pgjsonb.pass": ha_drift.MASK},
    )
    store.update(changes)
    return {key: value for key, value in store.items() if value is not None}


@pytest.mark.parametrize(
    "opts, expected_extra",
    [
        pytest.param({}, {}, id="defaults: no returner options"),
        pytest.param(
            {"master_job_cache": "pgjsonb", "returner.pgjsonb.host": "pg1", "returner.pgjsonb.pass": SECRET},
            {"returner.pgjsonb.host": "pg1", "returner.pgjsonb.pass": ha_drift.MASK},
            id="pgjsonb flat options, password masked",
        ),
        pytest.param(
            {"master_job_cache": "pgjsonb", "pgjsonb.password": SECRET, "pgjsonb.db": "salt"},
            {"pgjsonb.password": ha_drift.MASK, "pgjsonb.db": "salt"},
            id="<name>.* options",
        ),
        pytest.param(
            {"master_job_cache": "pgjsonb", "returner.pgjsonb": {"host": "pg1", "pass": SECRET}},
            {"returner.pgjsonb": {"host": "pg1", "pass": ha_drift.MASK}},
            id="nested mapping, password masked inside",
        ),
        pytest.param(
            {"master_job_cache": "pgjsonb", "ext_job_cache": "redis", "redis.url": f"redis://u:{SECRET}@r1:6379/0",
             "returner.mysql.host": "unused", "pgjsonbx.host": "unrelated"},
            {"redis.url": f"redis://{ha_drift.MASK}@r1:6379/0"},
            id="ext_job_cache too; URL credentials masked; unconfigured returners left out",
        ),
        pytest.param(
            {"master_job_cache": "odbc", "returner.odbc.dsn": f"DSN=salt;UID=salt;PWD={SECRET}",
             "odbc.conn": f"host=db password='{SECRET} x' dbname=salt"},
            {"returner.odbc.dsn": f"DSN=salt;UID=salt;PWD={ha_drift.MASK}",
             "odbc.conn": f"host=db password={ha_drift.MASK} dbname=salt"},
            id="connection strings: password= masked",
        ),
        pytest.param(
            {"master_job_cache": "mysql", "ext_job_cache": "mysql", "returner.mysql.pass": SECRET},
            {"returner.mysql.pass": ha_drift.MASK},
            id="one returner named twice",
        ),
    ],
)
def test_job_store_config(opts, expected_extra):
    base = {**LOCAL_STORE, **{key: value for key, value in opts.items() if key in LOCAL_STORE}}
    full = {**LOCAL_STORE, **opts}
    assert ha_drift.job_store_config(full) == {**base, **expected_extra}
    assert SECRET not in json.dumps(ha_drift.job_store_config(full))


@pytest.mark.parametrize(
    "stores, expected",
    [
        pytest.param({"a": pgjsonb_store(), "b": pgjsonb_store()}, None, id="same store"),
        pytest.param(
            {"a": dict(LOCAL_STORE), "b": dict(LOCAL_STORE, keep_jobs_seconds=3600)},
            {"options": ["keep_jobs_seconds"], "masters": {"a": {"keep_jobs_seconds": 86400}, "b": {"keep_jobs_seconds": 3600}}},
            id="keep_jobs_seconds",
        ),
        pytest.param(
            {"a": pgjsonb_store(), "b": dict(LOCAL_STORE)},
            {
                "options": ["master_job_cache", "returner.pgjsonb.host", "returner.pgjsonb.pass", "returner.pgjsonb.port"],
                "masters": {
                    "a": {"master_job_cache": "pgjsonb", "returner.pgjsonb.host": "pg1",
                          "returner.pgjsonb.pass": ha_drift.MASK, "returner.pgjsonb.port": 5432},
                    "b": {"master_job_cache": "local_cache", "returner.pgjsonb.host": None,
                          "returner.pgjsonb.pass": None, "returner.pgjsonb.port": None},
                },
            },
            id="one master not on the shared store",
        ),
        pytest.param(
            {"a": pgjsonb_store(), "b": pgjsonb_store(**{"returner.pgjsonb.host": "pg2", "returner.pgjsonb.pass": None}),
             "c": pgjsonb_store(hash_type="md5", keep_jobs=48)},
            {
                "options": ["hash_type", "keep_jobs", "returner.pgjsonb.host", "returner.pgjsonb.pass"],
                "masters": {
                    "a": {"hash_type": "sha256", "keep_jobs": 24, "returner.pgjsonb.host": "pg1", "returner.pgjsonb.pass": ha_drift.MASK},
                    "b": {"hash_type": "sha256", "keep_jobs": 24, "returner.pgjsonb.host": "pg2", "returner.pgjsonb.pass": None},
                    "c": {"hash_type": "md5", "keep_jobs": 48, "returner.pgjsonb.host": "pg1", "returner.pgjsonb.pass": ha_drift.MASK},
                },
            },
            id="three masters: server, password unset, hash_type, legacy keep_jobs",
        ),
        pytest.param(
            {"a": dict(LOCAL_STORE, job_cache=False, ext_job_cache="mysql"), "b": dict(LOCAL_STORE)},
            {"options": ["ext_job_cache", "job_cache"],
             "masters": {"a": {"ext_job_cache": "mysql", "job_cache": False}, "b": {"ext_job_cache": "", "job_cache": True}}},
            id="ext_job_cache and job_cache",
        ),
    ],
)
def test_job_store_drift_is_one_item_naming_what_differs_per_master(stores, expected):
    inventories = {name: inventory(name, job_store=store) for name, store in stores.items()}
    found = [d for d in ha_drift.compare_inventories(inventories) if d["what"] == "job store"]
    assert found == ([] if expected is None else [{"what": "job store", **expected}])


def test_job_store_is_not_compared_with_a_peer_that_does_not_report_it():
    old_peer = inventory("b")
    del old_peer["job_store"]
    differences = ha_drift.compare_inventories({"a": inventory("a", job_store=pgjsonb_store()), "b": old_peer})
    assert [d["what"] for d in differences] == []


def test_hash_type_drift_is_reported_once_in_the_job_store():
    opts = {"a": dict(LOCAL_STORE), "b": dict(LOCAL_STORE, hash_type="md5")}
    inventories = {
        name: inventory(name, config=ha_drift.ha_config(o), job_store=ha_drift.job_store_config(o)) for name, o in opts.items()
    }
    assert [d["what"] for d in ha_drift.compare_inventories(inventories)] == ["job store"]


def example_master_opts(host, password):
    """The job store recipe as Salt's master config reader loads it, with this host and password."""
    opts = salt.config.master_config(str(JOB_STORE_EXAMPLE))
    opts.update({"returner.pgjsonb.host": host, "returner.pgjsonb.pass": password})
    return opts


def test_the_recipe_on_two_masters_drifts_by_server_and_never_shows_a_password():
    a = example_master_opts("pg1.example.com", SECRET)
    b = example_master_opts("pg2.example.com", SECRET + "-other")
    inventories = {name: inventory(name, job_store=ha_drift.job_store_config(o)) for name, o in (("a", a), ("b", b))}
    [store] = [d for d in ha_drift.compare_inventories(inventories) if d["what"] == "job store"]
    assert store["options"] == ["returner.pgjsonb.host"]
    assert store["masters"] == {"a": {"returner.pgjsonb.host": "pg1.example.com"}, "b": {"returner.pgjsonb.host": "pg2.example.com"}}
    assert inventories["a"]["job_store"]["returner.pgjsonb.pass"] == ha_drift.MASK
    shown = json.dumps([inventories, ha_drift.compare_inventories(inventories)])
    assert SECRET not in shown and "CHANGE-ME" not in shown


def test_a_cluster_master_is_compared_on_the_cluster_key_minions_get(tmp_path):
    """Salt 3008 serves cluster_pki_dir/cluster.pub to the minions of a cluster, not master.pub."""
    import ha_keys

    own, shared = tmp_path / "pki", tmp_path / "cluster"
    own.mkdir()
    shared.mkdir()
    (own / "master.pub").write_text(_public_pem())
    (shared / "cluster.pub").write_text(_public_pem())
    opts = {"pki_dir": str(own), "cluster_id": "ha", "cluster_pki_dir": str(shared)}
    served, _sign = ha_drift.master_pub_fingerprints(opts)
    assert served == ha_keys.fingerprint_file(str(shared / "cluster.pub"))
    assert served != ha_keys.fingerprint_file(str(own / "master.pub"))
    assert ha_drift.master_pub_fingerprints({"pki_dir": str(own)})[0] == ha_keys.fingerprint_file(str(own / "master.pub"))


def _public_pem():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
