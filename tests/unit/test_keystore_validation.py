"""What the receiving master accepts from a peer: ids, keys, fingerprints; the store lock."""

import threading
import time

import pytest
from salt.exceptions import CommandExecutionError

import ha_keyreceive
import ha_keys
import ha_keystore
from tests.support import api_lab


@pytest.fixture
def opts(tmp_path):
    (tmp_path / "pki" / "minions").mkdir(parents=True)
    return {"pki_dir": str(tmp_path / "pki")}


@pytest.mark.parametrize("minion_id", ["web1", "web1.example.com", "db-01_x", "UPPER", "ünïcode"])
def test_good_ids_pass(opts, minion_id):
    assert ha_keystore.validate_minion_id(opts, minion_id) is None


@pytest.mark.parametrize(
    "minion_id, reason",
    [
        ("../x", "path separator"),
        ("a/b", "path separator"),
        ("/etc/passwd", "path separator"),
        ("a\\b", "path separator"),
        ("x\0y", "NUL"),
        ("", "empty"),
        ("a" * 256, "longer than"),
        ("é" * 128, "longer than"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        (".", "starts with"),
        (".hidden", "starts with"),
        ("line\nbreak", "U+000A"),
        ("tab\tid", "U+0009"),
        ("del\x7fid", "U+007F"),
        ("c1\x85id", "U+0085"),
        ("c1\x9bid", "U+009B"),
        ("bidi\u202eid", "U+202E (RIGHT-TO-LEFT OVERRIDE, category Cf)"),
        ("bidi\u202aid", "U+202A"),
        ("isolate\u2066id", "U+2066"),
        ("isolate\u2069id", "U+2069"),
        ("zero\u200bwidth", "U+200B"),
        ("line\u2028sep", "category Zl"),
        ("para\u2029sep", "category Zp"),
        ("caf\udce9", "not valid UTF-8"),
        (None, "not a string"),
        (42, "not a string"),
        (["web1"], "not a string"),
    ],
)
def test_malicious_ids_are_refused(opts, minion_id, reason):
    assert reason in ha_keystore.validate_minion_id(opts, minion_id)


def test_key_must_parse_and_match_its_fingerprint():
    pem = api_lab.random_public_pem()
    fingerprint = ha_keys.fingerprint(pem)
    assert ha_keystore.validate_key(pem, fingerprint) is None
    assert "does not match" in ha_keystore.validate_key(pem, ha_keys.fingerprint(api_lab.random_public_pem()))
    assert "not a PEM" in ha_keystore.validate_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "x")
    assert "missing" in ha_keystore.validate_key("", fingerprint)
    assert "missing" in ha_keystore.validate_key(None, fingerprint)
    assert "longer than" in ha_keystore.validate_key("A" * 20000, fingerprint)


@pytest.mark.parametrize(
    "item, reason",
    [
        ("not a dict", "not a mapping"),
        ({"action": "rm -rf", "id": "x", "fingerprint": "f"}, "unknown action"),
        ({"action": "accept", "id": "../x", "fingerprint": "f", "pem": "p"}, "path separator"),
        ({"action": "accept", "id": "x", "pem": "p"}, "fingerprint is missing"),
        ({"action": "accept", "id": "x", "fingerprint": "f", "pem": "junk"}, "not a PEM"),
        ({"action": "delete", "id": "x\0", "fingerprint": "f"}, "NUL"),
    ],
)
def test_bad_items_are_refused(opts, item, reason):
    assert reason in ha_keyreceive.validate_item(opts, item)


def test_store_lock_serializes_holders(opts):
    spans = []

    def hold():
        with ha_keystore.store_lock(opts, timeout=10):
            start = time.monotonic()
            time.sleep(0.2)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    spans.sort()
    assert len(spans) == 3
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False)), spans


def test_store_lock_wait_is_bounded(opts):
    with ha_keystore.store_lock(opts):
        started = time.monotonic()
        with pytest.raises(CommandExecutionError, match="locked by another key sync"):
            with ha_keystore.store_lock(opts, timeout=0.3):
                pass
        assert time.monotonic() - started < 2
