"""
The ``ha`` runner through Salt's loader (master options of a salt-factories master,
pki dir in tmp_path): the receiving side writes through the key store, atomically,
with backups on prune; sync_keys with unreachable peers; progress events.
"""

import contextlib
import json
import logging
import os
import pathlib

import pytest
import salt.client
import salt.key
import salt.loader
from salt.exceptions import SaltClientError

import ha_keys
import ha_keystore
from tests.support import api_lab, fake_http

MINIONS = "minions"


@pytest.fixture(scope="module")
def master_config(salt_factories):
    return salt_factories.salt_master_daemon("ha-functional-runner-master").config.copy()


def master_options(master_config, pki_dir):
    """The master's options with an empty key store in ``pki_dir`` and no ``ha`` settings."""
    for folder in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        os.makedirs(os.path.join(pki_dir, folder))
    return dict(master_config, pki_dir=str(pki_dir), ha={})


@pytest.fixture
def opts(master_config, tmp_path):
    return master_options(master_config, tmp_path / "pki")


class FakeJidEvent:
    def __init__(self):
        self.fired = []

    def fire_event(self, data, tag):
        self.fired.append((tag, data))


def loaded_runners(opts):
    """The runner functions of a master with ``opts``, through Salt's loader."""
    return salt.loader.runner(opts, utils=salt.loader.utils(opts))


@pytest.fixture
def runners(opts):
    loader = loaded_runners(opts)
    loader.pack["__jid_event__"] = FakeJidEvent()
    return loader


def accept_item(minion_id, pem=None):
    pem = pem or api_lab.random_public_pem()
    return {"action": "accept", "id": minion_id, "fingerprint": ha_keys.fingerprint(pem), "pem": pem}


def key_path(opts, minion_id, folder=MINIONS):
    return pathlib.Path(opts["pki_dir"]) / folder / minion_id


def test_every_public_function_has_a_cli_example(runners):
    functions = [name for name in runners if name.startswith("ha.")]
    assert {"ha.sync_keys", "ha.status", "ha.drift", "ha.readiness", "ha.receive_keys", "ha.local_inventory"} <= set(functions)
    for name in functions:
        assert "CLI Example:" in runners[name].__doc__, name


def test_receive_keys_writes_through_the_key_store(runners, opts):
    pending = accept_item("pending-here")
    api_lab.write_minion_keys(opts["pki_dir"], {"pending-here": pending["pem"]}, "minions_pre")
    result = runners["ha.receive_keys"](items=[accept_item("new-one"), pending])
    assert sorted(result["accepted"]) == ["new-one", "pending-here"] and result["refused"] == []
    assert key_path(opts, "pending-here").read_text() == pending["pem"]
    assert not key_path(opts, "pending-here", "minions_pre").exists()
    inventory = runners["ha.local_inventory"](trees=False)
    assert set(inventory["keys"]["accepted"]) == {"new-one", "pending-here"}
    assert inventory["keys"]["accepted"]["pending-here"] == pending["fingerprint"]
    again = runners["ha.receive_keys"](items=[pending])
    assert again["unchanged"] == ["pending-here"] and again["accepted"] == []


def test_rejected_denied_and_conflicting_keys_stay(runners, opts):
    mine = accept_item("conflict")
    api_lab.write_minion_keys(opts["pki_dir"], {"conflict": api_lab.random_public_pem()})
    api_lab.write_minion_keys(opts["pki_dir"], {"bad": api_lab.random_public_pem()}, "minions_rejected")
    api_lab.write_minion_keys(opts["pki_dir"], {"worse": api_lab.random_public_pem()}, "minions_denied")
    before = {p: p.read_text() for p in pathlib.Path(opts["pki_dir"]).glob("minions*/*")}
    result = runners["ha.receive_keys"](items=[mine, accept_item("bad"), accept_item("worse")])
    assert result["accepted"] == []
    assert [c["id"] for c in result["conflicts"]] == ["conflict"]
    assert sorted(r["id"] for r in result["refused"]) == ["bad", "worse"]
    assert {p: p.read_text() for p in pathlib.Path(opts["pki_dir"]).glob("minions*/*")} == before


def test_malicious_ids_write_nothing(runners, opts, tmp_path):
    items = [accept_item(bad) for bad in ("../escaped", "a/b", "x\0y", "", "a" * 300, ".hidden")]
    result = runners["ha.receive_keys"](items=items)
    assert result["accepted"] == [] and len(result["refused"]) == len(items)
    assert list(pathlib.Path(opts["pki_dir"]).glob("minions*/*")) == []
    assert not (pathlib.Path(opts["pki_dir"]) / "escaped").exists()


def test_no_partial_file_after_a_failed_write(runners, opts, monkeypatch):
    items = [accept_item(f"atomic-{n}") for n in range(5)]
    real_fchmod, calls = os.fchmod, []

    def failing_fchmod(fd, mode):  # fails once the third key's temp file exists
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", failing_fchmod)
    result = runners["ha.receive_keys"](items=items)
    assert [r["id"] for r in result["refused"]] == ["atomic-2"]
    assert "No space left" in result["refused"][0]["reason"]
    folder = pathlib.Path(opts["pki_dir"]) / MINIONS
    assert sorted(p.name for p in folder.iterdir()) == ["atomic-0", "atomic-1", "atomic-3", "atomic-4"]
    for item in items:
        path = folder / item["id"]
        assert not path.exists() or path.read_text() == item["pem"]


def test_temp_files_of_a_killed_sync_are_never_keys_and_are_swept(runners, opts):
    folder = pathlib.Path(opts["pki_dir"]) / MINIONS
    stale = folder / ".salt-ha-web9.abc123.tmp"
    stale.write_text("-----BEGIN PUBLIC KEY-----\nMIIBIj")  # what a SIGKILL mid-write leaves
    with salt.key.Key(opts) as keys:
        assert keys.list_keys()["minions"] == []
    assert runners["ha.local_inventory"](trees=False)["keys"]["accepted"] == {}
    runners["ha.receive_keys"](items=[accept_item("web9")])
    assert sorted(p.name for p in folder.iterdir()) == ["web9"]


def test_prune_deletes_with_a_backup_only_the_planned_key(runners, opts):
    old = accept_item("old")
    api_lab.write_minion_keys(opts["pki_dir"], {"old": old["pem"], "changed": api_lab.random_public_pem()})
    result = runners["ha.receive_keys"](
        items=[
            {"action": "delete", "id": "old", "fingerprint": old["fingerprint"]},
            {"action": "delete", "id": "changed", "fingerprint": "00:00"},
        ]
    )
    [deleted] = result["deleted"]
    assert deleted["id"] == "old" and not key_path(opts, "old").exists()
    assert pathlib.Path(deleted["backup"]).read_text() == old["pem"]
    assert pathlib.Path(deleted["backup"]).is_relative_to(pathlib.Path(opts["pki_dir"]) / ".salt-ha-backups")
    assert [c["id"] for c in result["conflicts"]] == ["changed"] and key_path(opts, "changed").exists()
    assert sorted(runners["ha.local_inventory"](trees=False)["keys"]["accepted"]) == ["changed"]


def test_sync_keys_reports_unreachable_peers_and_fires_progress_only_when_asked(runners, opts):
    api_lab.write_minion_keys(opts["pki_dir"], {"web1": api_lab.random_public_pem()})
    opts["ha"] = {"peers": {"dead": {"url": "http://127.0.0.1:9", "username": "u", "password": "pw-xyz", "timeout": 1}}}
    result = runners["ha.sync_keys"]()
    assert result["result"] is False and result["failed"] == ["dead"]
    assert "unreachable" in result["peers"]["dead"]["error"] and "pw-xyz" not in str(result)
    jid_event = runners.pack["__jid_event__"]
    assert jid_event.fired == []
    opts["display_progress"] = True
    runners["ha.sync_keys"](test=True)
    assert jid_event.fired and all(tag == "progress" and "message" in data for tag, data in jid_event.fired)


def test_drift_and_status_without_peers(runners, opts):
    assert runners["ha.drift"]()["differences"] == []
    status = runners["ha.status"]()
    assert status["up"] == status["total"] == 1
    assert status["masters"][0]["keys"] == {"accepted": 0, "pending": 0, "rejected": 0, "denied": 0}


def test_remembered_fingerprints_follow_every_change_on_disk(runners, opts):
    first, second = api_lab.random_public_pem(), api_lab.random_public_pem()
    api_lab.write_minion_keys(opts["pki_dir"], {"web1": first})
    inventory = runners["ha.local_inventory"]
    assert inventory(trees=False)["keys"]["accepted"] == {"web1": ha_keys.fingerprint(first)}
    assert (pathlib.Path(opts["pki_dir"]) / ".salt-ha-fingerprints.json").is_file()
    api_lab.write_minion_keys(opts["pki_dir"], {"web1": second})  # rewritten in place, as salt-key would not
    assert inventory(trees=False)["keys"]["accepted"] == {"web1": ha_keys.fingerprint(second)}
    os.rename(key_path(opts, "web1"), key_path(opts, "web1", "minions_rejected"))
    keys = inventory(trees=False)["keys"]
    assert keys["accepted"] == {} and keys["rejected"] == {"web1": ha_keys.fingerprint(second)}
    digests = inventory(keys="digests", trees=False)
    assert "keys" in digests and digests["keys"] == {} and digests["key_counts"]["rejected"] == 1


class LimitedPeerApi(fake_http.QuietHandler):
    """
    A peer's salt-api behind a proxy refusing bodies over ``server.limit`` bytes
    (HTTP 413, as nginx's ``client_max_body_size`` does); what passes is run by the
    real ``ha`` runner functions of ``server.runners`` (the peer's own pki dir).
    """

    def do_POST(self):  # noqa: N802 (http.server API)
        body = self.read_body()
        if len(body) > self.server.limit:
            self.server.refused.append(len(body))
            return self.send_body(413, b"<html>413 Request Entity Too Large</html>", "text/html")
        if self.path == "/login":
            return self.send_json({"return": [{"token": "peer-token"}]})
        low = json.loads(body)[0]
        function = self.server.runners[low.pop("fun")]
        low.pop("client")
        if "items" in low and len(self.server.sizes) >= self.server.fail_from:
            return self.send_body(500, b"peer crashed")
        self.server.sizes.append(len(low.get("items", [])))
        return self.send_json({"return": [function(**low)]})


@contextlib.contextmanager
def limited_peer(opts, peer_runners, limit, fail_from=1000, **ha):
    """
    Serve :class:`LimitedPeerApi` (bodies over ``limit`` bytes refused, receive calls
    from the ``fail_from``-th request on answered HTTP 500) as ``opts``' only peer
    ``peer``, with the other ``ha`` settings in ``ha``; yield the server.
    """
    with fake_http.serving(LimitedPeerApi) as server:
        server.runners, server.limit, server.fail_from = peer_runners, limit, fail_from
        server.refused, server.sizes = [], []
        opts["ha"] = {**ha, "peers": {"peer": {"url": fake_http.url_of(server), "username": "u", "password": "pw-xyz"}}}
        yield server


def test_batches_refused_as_too_large_are_halved_until_they_pass(runners, opts, master_config, tmp_path, caplog):
    peer_opts = master_options(master_config, tmp_path / "peer-pki")
    keys = {f"web{number:02d}": api_lab.random_public_pem() for number in range(60)}
    api_lab.write_minion_keys(opts["pki_dir"], keys)
    # ~30 keys a request pass
    with limited_peer(opts, loaded_runners(peer_opts), 20_000, sync_batch_size=50) as server:
        with caplog.at_level(logging.WARNING):
            result = runners["ha.sync_keys"]()
    assert result["result"] is True, result
    assert sorted(result["peers"]["peer"]["accepted"]) == sorted(keys)
    assert server.refused and all(size > server.limit for size in server.refused)
    assert server.sizes == [0, 0, 25, 25, 10], server.sizes  # two inventories, then 50 -> 25 for the rest
    assert "HTTP 413" in caplog.text and "sending 25 per request" in caplog.text
    assert {name: (pathlib.Path(peer_opts["pki_dir"]) / MINIONS / name).read_text() for name in keys} == keys


def test_a_peer_failing_mid_sync_keeps_what_earlier_batches_did_in_the_report(runners, opts, master_config, tmp_path):
    peer_opts = master_options(master_config, tmp_path / "peer-pki")
    keys = {f"web{number:02d}": api_lab.random_public_pem() for number in range(30)}
    api_lab.write_minion_keys(opts["pki_dir"], keys)
    # two inventory requests and one batch pass, then HTTP 500
    with limited_peer(opts, loaded_runners(peer_opts), 10**7, fail_from=3, sync_batch_size=20):
        result = runners["ha.sync_keys"]()
    assert result["failed"] == ["peer"] and result["result"] is False
    entry = result["peers"]["peer"]
    assert entry["result"] is False and "HTTP 500" in entry["error"] and "pw-xyz" not in str(result)
    assert entry["accepted"] == sorted(keys)[:20]
    assert sorted(os.listdir(pathlib.Path(peer_opts["pki_dir"]) / MINIONS)) == sorted(keys)[:20]


def test_a_single_key_refused_as_too_large_fails_that_peer(runners, opts):
    api_lab.write_minion_keys(opts["pki_dir"], {"web1": api_lab.random_public_pem()})
    empty = {"ha.local_inventory": lambda **kwargs: {"master": "peer", "keys": {}, "key_digests": {}, "master_pub_fingerprint": None}}
    with limited_peer(opts, empty, 300):
        result = runners["ha.sync_keys"]()
    assert result["failed"] == ["peer"]
    assert "HTTP 413" in result["peers"]["peer"]["error"]


def test_received_keys_are_remembered_so_the_next_inventory_reads_none(runners, opts, monkeypatch):
    items = [accept_item(f"web{number}") for number in range(3)]
    runners["ha.receive_keys"](items=items)
    reads = []
    original = ha_keystore.KeyStore._read
    monkeypatch.setattr(ha_keystore.KeyStore, "_read", staticmethod(lambda path: reads.append(path) or original(path)))
    expected = {item["id"]: item["fingerprint"] for item in items}
    assert runners["ha.local_inventory"](trees=False)["keys"]["accepted"] == expected
    assert reads == []
    replacement = api_lab.random_public_pem()
    api_lab.write_minion_keys(opts["pki_dir"], {"web1": "placeholder"})  # rewritten in place: size and mtime change
    api_lab.write_minion_keys(opts["pki_dir"], {"web1": replacement})
    assert runners["ha.local_inventory"](trees=False)["keys"]["accepted"]["web1"] == ha_keys.fingerprint(replacement)
    assert [pathlib.Path(path).name for path in reads] == ["web1"]


def test_readiness_says_why_lint_was_not_run(runners, opts, monkeypatch):
    """No master to publish through: every accepted minion says so, not 'did not answer'."""
    api_lab.write_minion_keys(opts["pki_dir"], {"web1": api_lab.random_public_pem()})
    api_lab.write_minion_keys(opts["pki_dir"], {"newbie": api_lab.random_public_pem()}, "minions_pre")

    def no_master(*args, **kwargs):
        raise SaltClientError("Salt request timed out. The master is not responding.")

    monkeypatch.setattr(salt.client, "get_local_client", no_master)
    result = runners["ha.readiness"]()
    reasons = {entry["minion"]: [r["reason"] for r in entry["reasons"]] for entry in result["not_ready"]}
    assert reasons["web1"] == [
        f"ha.lint not run: {opts['id']} cannot publish to its minions: Salt request timed out. The master is not responding."
    ]
    assert f"ha.lint not run: the key is not accepted on {opts['id']}, where ha.readiness ran" in reasons["newbie"]
    assert not any("did not answer" in reason for entries in reasons.values() for reason in entries)


def test_a_key_file_here_carrying_a_private_key_is_never_sent(runners, opts, master_config, tmp_path, caplog):
    peer_opts = master_options(master_config, tmp_path / "peer-pki")
    good = api_lab.random_public_pem()
    secret = api_lab.random_private_pem()
    api_lab.write_minion_keys(opts["pki_dir"], {"good": good, "pasted": api_lab.random_public_pem() + secret})
    with limited_peer(opts, loaded_runners(peer_opts), 10_000_000):
        with caplog.at_level(logging.WARNING):
            result = runners["ha.sync_keys"]()
    report = result["peers"]["peer"]
    assert report["accepted"] == ["good"]
    [refused] = report["refused"]
    assert refused["id"] == "pasted" and refused["reason"].startswith("not sent: ") and "PRIVATE KEY" in refused["reason"]
    body = secret.splitlines()[1]
    assert body not in json.dumps(result) and body not in caplog.text
    assert sorted(os.listdir(pathlib.Path(peer_opts["pki_dir"]) / MINIONS)) == ["good"]


def test_local_inventory_shows_the_job_store_with_its_password_masked(opts):
    password = "s3cret-pg-password"
    store_opts = dict(opts, master_job_cache="pgjsonb", **{"returner.pgjsonb.host": "pg1", "returner.pgjsonb.pass": password})
    runners = loaded_runners(store_opts)
    runners.pack["__jid_event__"] = FakeJidEvent()
    inventory = runners["ha.local_inventory"](keys=False, trees=False)
    store = inventory["job_store"]
    assert (store["master_job_cache"], store["returner.pgjsonb.host"]) == ("pgjsonb", "pg1")
    assert store["returner.pgjsonb.pass"] == "*****"
    assert password not in json.dumps(inventory)
    assert runners["ha.drift"]()["differences"] == []
