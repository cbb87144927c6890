"""
The runner's ``ha.drift``, ``ha.status`` and ``ha.readiness`` on two masters' real pki
dirs (master keys, signing keys written as the states write them), the peer served
by its own real runner functions behind a stand-in salt-api: which key model they
see, and what breaks it.
"""

import contextlib

import pytest
import salt.client
import salt.loader

import ha_keys
import ha_state
from tests.functional.test_ha_runner import FakeJidEvent, limited_peer, loaded_runners, master_options
from tests.support import api_lab
from tests.support import lab as lablib

MINION = "web1"


@pytest.fixture(scope="module")
def master_config(salt_factories):
    return salt_factories.salt_master_daemon("ha-functional-keymodel-master").config.copy()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Master key pairs ``a``, ``b`` and signing key pairs ``sign``, ``other`` (PEM texts)."""
    root = tmp_path_factory.mktemp("key-model-keys")
    return {
        name: tuple(path.read_text() for path in lablib.make_keypair(root / name, basename))
        for name, basename in (("a", "master"), ("b", "master"), ("sign", "master_sign"), ("other", "master_sign"))
    }


def master(master_config, folder, keys, master_key, signing_key=None):
    """A master's options: its own master key pair, and a signing pair with master_sign_pubkey when given."""
    opts = master_options(master_config, folder)
    pem, pub = keys[master_key]
    (folder / "master.pem").write_text(pem)
    (folder / "master.pub").write_text(pub)
    if signing_key:
        ha_state.write_plan(ha_state.plan_keypair(str(folder), *keys[signing_key], "master_sign"))
        opts["master_sign_pubkey"] = True
    api_lab.write_minion_keys(folder, {MINION: PUBLIC})
    return opts


PUBLIC = api_lab.random_public_pem()


@contextlib.contextmanager
def two_masters(master_config, tmp_path, keys, a, b):
    """Master A's runners with master B as its peer: ``a``/``b`` are ``(master key, signing key)``."""
    opts = master(master_config, tmp_path / "a", keys, *a)
    peer = master(master_config, tmp_path / "b", keys, *b)
    runners = loaded_runners(opts)
    runners.pack["__jid_event__"] = FakeJidEvent()
    # The peer's runner module in a namespace of its own: one module shared by both
    # loaders would keep the peer's __opts__ after the peer's first answer.
    peer_runners = salt.loader.runner(peer, utils=salt.loader.utils(peer), loaded_base_name="salt.loaded.ha_peer")
    with limited_peer(opts, peer_runners, 10**7):
        yield runners


class AnsweringClient:
    """A LocalClient stand-in: every minion answers ``ha.lint`` with ``findings``."""

    def __init__(self, findings):
        self.findings = findings

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def cmd(self, tgt, fun, **kwargs):
        assert fun == "ha.lint"
        return {minion_id: self.findings for minion_id in tgt}


def lint_reporting(model, verify, fingerprint=None):
    facts = {"model": model, "verify": verify, "master_sign_pub_fingerprint": fingerprint}
    return [{"id": "HA601", "severity": "info", "option": "verify_master_pubkey_sign", "message": "m",
             "suggestion": "s", "key_model": facts}]


def test_different_master_keys_without_signing_break_the_shared_key_model(master_config, tmp_path, keys, monkeypatch):
    monkeypatch.setattr(salt.client, "get_local_client", lambda *a, **k: AnsweringClient(lint_reporting("shared master key", False)))
    with two_masters(master_config, tmp_path, keys, ("a", None), ("b", None)) as runners:
        drift, status, readiness = runners["ha.drift"](), runners["ha.status"](), runners["ha.readiness"]()
    assert drift["key_model"]["model"] == "shared master key" and drift["key_model"]["master_pub_shared"] is False
    (problem,) = drift["key_model"]["problems"]
    assert "different master.pub keys and none signs it" in problem["reason"] and "ha.master_signing" in problem["fix"]
    assert [d["what"] for d in drift["differences"]] == ["master.pub fingerprint"]
    assert status["key_model"] == drift["key_model"]
    assert {m["master"]: m["master_sign_pubkey"] for m in status["masters"]} == {runners.opts["id"]: False, "peer": False}
    (entry,) = readiness["not_ready"]
    assert entry["reasons"] == [problem]


def test_masters_signing_with_one_key_are_in_sync_and_a_verifying_minion_is_ready(master_config, tmp_path, keys, monkeypatch):
    signing_key = ha_keys.fingerprint(keys["sign"][1])
    monkeypatch.setattr(salt.client, "get_local_client", lambda *a, **k: AnsweringClient(lint_reporting("signing", True, signing_key)))
    with two_masters(master_config, tmp_path, keys, ("a", "sign"), ("b", "sign")) as runners:
        drift, status, readiness = runners["ha.drift"](), runners["ha.status"](), runners["ha.readiness"]()
        monkeypatch.setattr(salt.client, "get_local_client", lambda *a, **k: AnsweringClient(lint_reporting("shared master key", False)))
        not_verifying = runners["ha.readiness"]()
    assert drift["differences"] == [] and drift["in_sync"] is True  # each master keeps its own master.pem
    assert drift["key_model"] == {
        "model": "signing", "master_pub_shared": False, "signing_key": signing_key,
        "signing": sorted([runners.opts["id"], "peer"]), "problems": [],
    }
    assert {m["master_sign_pub_fingerprint"] for m in status["masters"]} == {signing_key}
    assert readiness["ready"] == [MINION] and readiness["key_model"]["model"] == "signing"
    (entry,) = not_verifying["not_ready"]
    (reason,) = entry["reasons"]
    assert "does not verify" in reason["reason"] and "verify_master_pubkey_sign: True" in reason["fix"]


def test_a_master_signing_with_another_key_or_not_at_all_is_named(master_config, tmp_path, keys):
    with two_masters(master_config, tmp_path / "other", keys, ("a", "sign"), ("b", "other")) as runners:
        drift = runners["ha.drift"]()
    assert [d["what"] for d in drift["differences"]] == ["master_sign.pub fingerprint"]
    (problem,) = drift["key_model"]["problems"]
    assert "sign with different signing keys" in problem["reason"]
    with two_masters(master_config, tmp_path / "mixed", keys, ("a", "sign"), ("b", None)) as runners:
        drift = runners["ha.drift"]()
    assert drift["key_model"]["model"] == "mixed" and drift["key_model"]["signing"] == [runners.opts["id"]]
    assert "peer do not" in drift["key_model"]["problems"][0]["reason"]
    assert "ha.master_signing on peer" in drift["key_model"]["problems"][0]["fix"]
    assert "config master_sign_pubkey" in [d["what"] for d in drift["differences"]]
