"""Inventories and their differences."""

import ha_drift


def inventory(name, **changes):
    base = {
        "master": name,
        "salt_version": "3008.4",
        "salt_ha_version": "0.1.0",
        "master_pub_fingerprint": "aa",
        "master_sign_pub_fingerprint": None,
        "master_sign_pubkey": False,
        "config": {"publish_port": 4505, "transport": "zeromq"},
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
