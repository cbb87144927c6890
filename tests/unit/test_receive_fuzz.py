"""
Property-based tests (hypothesis) of what the receiving side accepts: ids, PEM key
items and whole batches, against a real key store in a fresh temp dir per example.
Bounded: a few hundred examples, a few seconds in all.
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import unicodedata

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ha_keyreceive
import ha_keys
import ha_keystore
from tests.support import api_lab

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PEMS = [api_lab.random_public_pem() for _ in range(4)]
FOLDERS = ("minions", "minions_pre", "minions_rejected", "minions_denied")

# Ids: mostly plausible names, salted with every kind of hostile character.
HOSTILE = st.sampled_from(
    ["/", "\\", "..", ".", "\0", "\n", "\r", "\t", "\x7f", "\x85", "\x9b", "\u202e", "\u2066", "\u2028", "\u2029",
     "\u200b", "\ufeff", "\udce9", "é", "-", "_", " "]
)
IDS = st.lists(st.one_of(st.characters(), HOSTILE, st.sampled_from("abcxyz019")), min_size=0, max_size=24).map("".join)


@contextlib.contextmanager
def fresh_store():
    """A key store in a new temp dir, removed after the example."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="ha-fuzz-"))
    try:
        for folder in FOLDERS:
            (root / "pki" / folder).mkdir(parents=True)
        yield ha_keystore.KeyStore({"pki_dir": str(root / "pki")}), root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def safe_to_write(minion_id):
    """The rules of the README, written independently of the code under test."""
    return (
        isinstance(minion_id, str)
        and 0 < len(minion_id.encode("utf-8", "surrogatepass")) <= 255
        and not any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs") for char in minion_id)
        and "/" not in minion_id
        and "\\" not in minion_id
        and ".." not in minion_id
        and not minion_id.startswith(".")
    )


@SETTINGS
@given(IDS)
def test_an_id_passes_only_when_it_is_safe_to_write(minion_id):
    with fresh_store() as (store, _):
        reason = ha_keystore.validate_minion_id(store.opts, minion_id)
    if reason is None:
        assert safe_to_write(minion_id)
    else:
        assert isinstance(reason, str) and reason.isprintable(), reason  # escaped: one line, no controls
    if not safe_to_write(minion_id):
        assert reason is not None


EXTRA_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n", PEMS[1], "\x00", "\n\n"]),
)


@SETTINGS
@given(before=EXTRA_TEXT, after=EXTRA_TEXT)
def test_a_key_item_passes_only_as_one_public_key_block(before, after):
    pem = before + PEMS[0] + after
    reason = ha_keystore.validate_key(pem, ha_keys.fingerprint(pem))
    only_whitespace_around = not before.strip() and not after.strip()
    assert (reason is None) == only_whitespace_around, (reason, before, after)
    if reason is not None:
        assert "MIIB" not in reason


ITEMS = st.lists(
    st.fixed_dictionaries(
        {
            "action": st.sampled_from(["accept", "accept", "delete", "format"]),
            "id": st.one_of(IDS, st.sampled_from(["web1", "web2", "db1"]), st.integers(), st.none()),
            "pem_index": st.integers(min_value=0, max_value=len(PEMS) - 1),
            "forge": st.booleans(),
        }
    ),
    max_size=8,
)


def as_item(spec):
    pem = PEMS[spec["pem_index"]]
    fingerprint = ha_keys.fingerprint(PEMS[0] if spec["forge"] else pem)
    return {"action": spec["action"], "id": spec["id"], "fingerprint": fingerprint, "pem": pem}


@SETTINGS
@given(ITEMS)
def test_a_batch_writes_exactly_what_it_reports_and_nothing_else(specs):
    with fresh_store() as (store, root):
        existing = {"web1": PEMS[1], "db1": PEMS[2]}
        api_lab.write_minion_keys(store.opts["pki_dir"], existing)
        items = [as_item(spec) for spec in specs]
        result = ha_keyreceive.apply_items(store, items)

        # Every item is answered once, and the report travels (JSON for salt-api, msgpack for the event bus).
        answered = len(result["accepted"]) + len(result["unchanged"]) + sum(
            len(result[field]) for field in ("deleted", "conflicts", "refused")
        )
        assert answered == len(items)
        json.dumps(result)
        msgpack.packb(result)
        assert all(entry["reason"].isprintable() for entry in result["refused"]), result["refused"]

        # The disk holds exactly the keys before, plus what was accepted, minus what was deleted.
        expected = dict(existing)
        valid = [item for item in items if ha_keyreceive.validate_item(store.opts, item) is None]
        by_id = {item["id"]: item for item in valid}
        assert set(result["accepted"]) <= {item["id"] for item in valid if item["action"] == "accept"}
        for minion_id in result["accepted"]:
            expected[minion_id] = by_id[minion_id]["pem"]
        for entry in result["deleted"]:
            del expected[entry["id"]]
        minions = root / "pki" / "minions"
        assert {path.name: path.read_text() for path in minions.iterdir()} == expected
        for folder in FOLDERS[1:]:
            assert os.listdir(root / "pki" / folder) == []
        outside = {path.name for path in (root / "pki").iterdir()} - set(FOLDERS)
        assert outside <= {ha_keystore.LOCK_NAME, ha_keystore.FINGERPRINT_CACHE, ha_keystore.BACKUP_DIR}
        assert os.listdir(root) == ["pki"]
        if not result["deleted"]:
            assert ha_keystore.BACKUP_DIR not in outside
