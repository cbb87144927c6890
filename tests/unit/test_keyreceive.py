"""
The receiving side against a real key store in tmp_path: whole-batch checks, key
items that are exactly one public key, escaped reports and logs, store failures
reported per item, odd file names skipped.
"""

import logging
import os
import pathlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import ha_keyreceive
import ha_keys
import ha_keystore
from tests.support import api_lab

STATE_FOLDERS = ("minions", "minions_pre", "minions_rejected", "minions_denied")


@pytest.fixture
def opts(tmp_path):
    for folder in STATE_FOLDERS:
        (tmp_path / "pki" / folder).mkdir(parents=True)
    return {"pki_dir": str(tmp_path / "pki")}


@pytest.fixture
def store(opts):
    return ha_keystore.KeyStore(opts)


def accept_item(minion_id, pem=None):
    pem = pem or api_lab.random_public_pem()
    return {"action": "accept", "id": minion_id, "fingerprint": ha_keys.fingerprint(pem), "pem": pem}


def delete_item(minion_id, pem):
    return {"action": "delete", "id": minion_id, "fingerprint": ha_keys.fingerprint(pem)}


def everything_under(opts):
    """Every path under the pki dir with its content (folders as None): the whole disk state."""
    root = pathlib.Path(opts["pki_dir"])
    return {
        str(path.relative_to(root)): (None if path.is_dir() else path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.name != ha_keystore.LOCK_NAME
    }


# --- key items: exactly one public key block -------------------------------------


def test_a_public_key_with_a_private_key_appended_is_refused_and_never_echoed(opts, store):
    secret = api_lab.random_private_pem()
    pem = api_lab.random_public_pem() + secret
    before = everything_under(opts)
    result = ha_keyreceive.apply_items(store, [accept_item("web1", pem)])
    [refused] = result["refused"]
    assert refused["id"] == "web1" and "PRIVATE KEY" in refused["reason"]
    body = secret.splitlines()[1]
    assert body not in repr(result)
    assert everything_under(opts) == before


@pytest.mark.parametrize(
    "make_pem, reason",
    [
        (lambda pub: pub + pub, "exactly one PEM block"),
        (lambda pub: pub + "trailing junk\n", "not a single PEM public key block"),
        (lambda pub: "leading junk\n" + pub, "not a single PEM public key block"),
        (lambda pub: pub.replace("-----END PUBLIC KEY-----", "-----END RSA PUBLIC KEY-----"), "not a single PEM"),
        (lambda pub: pub.replace("\n", "\n\n", 2), "not a single PEM public key block"),
        (lambda pub: api_lab.random_private_pem(), "PRIVATE KEY"),
        (lambda pub: pub.replace("PUBLIC KEY", "ENCRYPTED PRIVATE KEY"), "PRIVATE KEY"),
        (lambda pub: pub.replace("-----BEGIN PUBLIC KEY-----", "-----BEGIN CERTIFICATE-----"), "not a single PEM"),
    ],
    ids=["two-blocks", "trailing", "leading", "mismatched-end", "blank-lines", "private", "private-header", "cert"],
)
def test_key_items_must_be_exactly_one_public_key_block(make_pem, reason):
    pem = make_pem(api_lab.random_public_pem())
    assert reason in ha_keystore.validate_key(pem, ha_keys.fingerprint(pem))


@pytest.mark.parametrize(
    "make_pem",
    [
        lambda pub: pub,
        lambda pub: "\n  " + pub + "\n\n\t",
        lambda pub: pub.replace("\n", "\r\n"),
        lambda pub: pub.rstrip("\n"),
    ],
    ids=["plain", "whitespace-around", "crlf", "no-final-newline"],
)
def test_well_formed_public_keys_pass(make_pem):
    pem = make_pem(api_lab.random_public_pem())
    assert ha_keystore.validate_key(pem, ha_keys.fingerprint(pem)) is None


def test_pkcs1_rsa_public_key_passes():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()
    assert ha_keystore.validate_key(pem, ha_keys.fingerprint(pem)) is None


# --- one batch, checked as a whole ---------------------------------------------


def test_accept_and_delete_of_one_id_are_both_refused_and_the_rest_applied(opts, store):
    old, gone = api_lab.random_public_pem(), api_lab.random_public_pem()
    api_lab.write_minion_keys(opts["pki_dir"], {"twice": old, "gone": gone})
    later = accept_item("later")
    items = [delete_item("gone", gone), accept_item("twice"), delete_item("twice", old), later]
    result = ha_keyreceive.apply_items(store, items)
    assert [entry["id"] for entry in result["deleted"]] == ["gone"]
    assert result["accepted"] == ["later"]
    assert [(entry["id"], "2 items of one batch" in entry["reason"]) for entry in result["refused"]] == [
        ("twice", True),
        ("twice", True),
    ]
    assert "accept, delete" in result["refused"][0]["reason"]
    minions = pathlib.Path(opts["pki_dir"]) / "minions"
    assert (minions / "twice").read_text() == old
    assert (minions / "later").read_text() == later["pem"]
    assert not (minions / "gone").exists()
    [backup] = pathlib.Path(opts["pki_dir"], ".salt-ha-backups").rglob("gone")
    assert backup.read_text() == gone


def test_a_batch_without_deletes_leaves_no_backup_folder(opts, store):
    ha_keyreceive.apply_items(store, [accept_item("web1"), accept_item("web1")])
    assert not (pathlib.Path(opts["pki_dir"]) / ".salt-ha-backups").exists()
    assert not (pathlib.Path(opts["pki_dir"]) / "minions" / "web1").exists()


def test_a_refused_item_writes_nothing_and_the_valid_ones_go_on(opts, store):
    good = accept_item("good")
    items = [accept_item("bidi\u202eevil"), {"action": "accept", "id": "x"}, "junk", good]
    result = ha_keyreceive.apply_items(store, items)
    assert result["accepted"] == ["good"]
    assert [entry["id"] for entry in result["refused"]] == ["'bidi\\u202eevil'", "x", "None"]
    assert sorted(os.listdir(pathlib.Path(opts["pki_dir"]) / "minions")) == ["good"]


def test_refused_ids_are_escaped_in_reports_and_logs(store, caplog):
    forged = "web1\n2026-11-27 09:00:00,000 [salt.master][CRITICAL] forged line"
    with caplog.at_level(logging.WARNING):
        result = ha_keyreceive.apply_items(store, [accept_item(forged)])
    [refused] = result["refused"]
    assert "\n" not in refused["id"] and "\n" not in refused["reason"]
    assert "\\n" in refused["id"]
    messages = [record.getMessage() for record in caplog.records]
    assert messages and all("\n" not in message for message in messages)
    assert any("forged line" in message for message in messages)


# --- the store failing half-way --------------------------------------------------


def test_a_rename_that_fails_is_reported_for_that_key_only(opts, store, monkeypatch):
    items = [accept_item(f"web{number}") for number in range(4)]
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "web2":
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    result = ha_keyreceive.apply_items(store, items)
    assert result["accepted"] == ["web0", "web1", "web3"]
    [refused] = result["refused"]
    assert refused["id"] == "web2" and "Input/output error" in refused["reason"]
    names = sorted(os.listdir(pathlib.Path(opts["pki_dir"]) / "minions"))
    assert names == ["web0", "web1", "web3"]  # no temp file left behind


def test_an_unreadable_store_refuses_every_item_with_the_error(opts, store, monkeypatch):
    def unreadable(minion_ids):
        raise PermissionError(13, "Permission denied", os.path.join(opts["pki_dir"], "minions", "web1"))

    monkeypatch.setattr(store, "lookup", unreadable)
    result = ha_keyreceive.apply_items(store, [accept_item("web1"), accept_item("web2")])
    assert result["accepted"] == []
    assert [entry["id"] for entry in result["refused"]] == ["web1", "web2"]
    assert all("not applied" in entry["reason"] and "Permission denied" in entry["reason"] for entry in result["refused"])


def test_what_was_deleted_before_a_failure_is_reported(opts, store, monkeypatch):
    pems = {name: api_lab.random_public_pem() for name in ("old1", "old2")}
    api_lab.write_minion_keys(opts["pki_dir"], pems)

    def broken_accept(keys):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "accept_many", broken_accept)
    items = [delete_item("old1", pems["old1"]), delete_item("old2", pems["old2"]), accept_item("new")]
    result = ha_keyreceive.apply_items(store, items)
    assert [entry["id"] for entry in result["deleted"]] == ["old1", "old2"]
    assert [entry["id"] for entry in result["refused"]] == ["new"]
    assert "No space left" in result["refused"][0]["reason"]


# --- odd files in the key folders -----------------------------------------------


@pytest.mark.parametrize("folder, state", [("minions", "accepted"), ("minions_rejected", "rejected")])
def test_a_key_file_whose_name_is_not_utf8_is_skipped_with_one_finding(opts, folder, state, caplog):
    good = api_lab.random_public_pem()
    api_lab.write_minion_keys(opts["pki_dir"], {"good": good}, folder)
    odd = os.path.join(os.fsencode(opts["pki_dir"]), folder.encode(), b"caf\xe9")
    with open(odd, "wb") as handle:
        handle.write(api_lab.random_public_pem().encode())
    store = ha_keystore.KeyStore(opts)
    with caplog.at_level(logging.WARNING):
        fingerprints = store.fingerprints()
        keys = store.keys()
    assert fingerprints[state] == {"good": ha_keys.fingerprint(good)}
    assert keys[state] == {"good": good}
    assert store.odd_files == [
        {"path": f"{folder}/b'caf\\xe9'", "reason": store.odd_files[0]["reason"]}
    ]
    assert "not valid UTF-8" in store.odd_files[0]["reason"]
    assert sum("b'caf\\xe9'" in record.getMessage() for record in caplog.records) == 1
