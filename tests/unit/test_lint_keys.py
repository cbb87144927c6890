"""
Lint rules HA6xx (ha_lint_keys): the key model a minion uses and what breaks it,
against real pki dirs in tmp_path.
"""

import pytest

import ha_key_model
import ha_keys
import ha_lint
import ha_lint_context
from tests.support import lab as lablib

M1 = "master1.example.com"
M2 = "master2.example.com"
FAILOVER = {"master": [M1, M2], "master_type": "failover", "master_alive_interval": 10, "retry_dns": 0}
RUNNING = {"__role": "minion", "engines": [{"ha_returns": {}}]}


@pytest.fixture(scope="module")
def signing_pub(tmp_path_factory):
    _pem, pub = lablib.make_keypair(tmp_path_factory.mktemp("signing"), "master_sign")
    return pub.read_text()


def pki_dir(folder, files):
    """A minion pki dir holding ``files`` (``{name: text}``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def running(folder, **options):
    return {**FAILOVER, **RUNNING, "pki_dir": str(folder), **options}


def key_findings(opts):
    return [f for f in ha_lint.lint_options(opts) if f["id"].startswith("HA6")]


def ids(findings):
    return [(f["id"], f["severity"]) for f in findings]


def test_a_running_failover_minion_without_signing_reports_the_shared_key_model(tmp_path):
    folder = pki_dir(tmp_path / "pki", {})
    (model,) = key_findings(running(folder))
    assert (model["id"], model["severity"], model["option"]) == ("HA601", "info", "verify_master_pubkey_sign")
    assert "key model: one shared master key" in model["message"] and "none cached yet" in model["message"]
    assert "ha.master_signing" in model["suggestion"]
    assert model["key_model"] == {
        "model": ha_key_model.SHARED,
        "verify": False,
        "master_sign_pub": str(folder / "master_sign.pub"),
        "master_sign_pub_fingerprint": None,
        "master_sign_pub_problem": "missing",
        "cached_master_pub_fingerprint": None,
    }


def test_a_running_minion_that_verifies_with_the_signing_key_reports_the_signing_model(tmp_path, signing_pub):
    cached = lablib.make_keypair(tmp_path / "cached")[1].read_text()
    folder = pki_dir(tmp_path / "pki", {"master_sign.pub": signing_pub, "minion_master.pub": cached})
    (model,) = key_findings(running(folder, verify_master_pubkey_sign=True))
    assert model["id"] == "HA601" and "key model: master pubkey signing" in model["message"]
    assert ha_keys.fingerprint(signing_pub) in model["message"]
    assert model["key_model"]["model"] == ha_key_model.SIGNING
    assert model["key_model"]["master_sign_pub_fingerprint"] == ha_keys.fingerprint(signing_pub)
    assert model["key_model"]["cached_master_pub_fingerprint"] == ha_keys.fingerprint(cached)


def test_verify_without_the_signing_key_is_an_error(tmp_path):
    folder = pki_dir(tmp_path / "pki", {})
    findings = key_findings(running(folder, verify_master_pubkey_sign=True))
    assert ids(findings) == [("HA602", "error"), ("HA601", "info")]
    assert str(folder / "master_sign.pub") in findings[0]["message"]
    assert "master_sign_pub" in findings[0]["suggestion"]
    assert "none: missing" in findings[1]["message"]


@pytest.mark.parametrize(
    "content,problem",
    [
        ("not a key\n", "not a PEM public key"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PRIVATE KEY block"),
        (None, "a directory"),
    ],
)
def test_a_signing_key_salt_cannot_use_is_an_error(tmp_path, content, problem):
    folder = pki_dir(tmp_path / "pki", {})
    if content is None:
        (folder / "master_sign.pub").mkdir()
    else:
        (folder / "master_sign.pub").write_text(content)
    findings = key_findings(running(folder, verify_master_pubkey_sign=True))
    assert ids(findings) == [("HA603", "error"), ("HA601", "info")]
    assert problem in findings[0]["message"] and "AAAA" not in findings[0]["message"]


def test_a_signing_key_without_verify_is_half_a_setup(tmp_path, signing_pub):
    folder = pki_dir(tmp_path / "pki", {"master_sign.pub": signing_pub})
    findings = key_findings(running(folder))
    assert ids(findings) == [("HA605", "warning"), ("HA601", "info")]
    assert "refuses masters that sign" in findings[0]["message"]


def test_master_sign_key_name_names_the_file_read(tmp_path, signing_pub):
    folder = pki_dir(tmp_path / "pki", {"other.pub": signing_pub})
    (model,) = key_findings(running(folder, verify_master_pubkey_sign=True, master_sign_key_name="other"))
    assert model["key_model"]["master_sign_pub"] == str(folder / "other.pub")


def test_master_finger_with_signing_pins_one_master(tmp_path, signing_pub):
    folder = pki_dir(tmp_path / "pki", {"master_sign.pub": signing_pub})
    findings = key_findings(running(folder, verify_master_pubkey_sign=True, master_finger="ab:cd"))
    assert ids(findings) == [("HA604", "warning"), ("HA601", "info")]
    assert "'ab:cd'" in findings[0]["message"] and "code 42" in findings[0]["message"]
    # not running: the option rules still speak; not failover: no pinning problem
    assert ids(key_findings({**FAILOVER, "verify_master_pubkey_sign": True, "master_finger": "ab"})) == [
        ("HA604", "warning")
    ]
    single = {"master": M1, "verify_master_pubkey_sign": True, "master_finger": "ab"}
    assert key_findings(single) == []
    assert key_findings({**FAILOVER, "master_finger": "ab"}) == []


def test_always_verify_signature_without_verify_is_an_error():
    findings = key_findings({**FAILOVER, "always_verify_signature": True})
    assert ids(findings) == [("HA606", "error")]
    assert key_findings({**FAILOVER, "always_verify_signature": True, "verify_master_pubkey_sign": True}) == []


@pytest.mark.parametrize(
    "options",
    [
        {},  # a config file: no pki dir read
        {"verify_master_pubkey_sign": True},
        {"master": M1, "master_type": "str", **RUNNING},  # running, not failover: no model info
    ],
)
def test_quiet_without_a_running_failover_minion(tmp_path, options):
    opts = {**FAILOVER, **options}
    if "__role" in opts:
        opts["pki_dir"] = str(pki_dir(tmp_path / "pki", {}))
    assert key_findings(opts) == []


def key_contexts(folder):
    """Lint contexts that between them make every HA6xx rule speak (for test_lint's corpus)."""
    signing_pub = lablib.make_keypair(folder / "signing", "master_sign")[1].read_text()
    with_key = pki_dir(folder / "with-key", {"master_sign.pub": signing_pub})
    without = pki_dir(folder / "without", {})
    broken = pki_dir(folder / "broken", {"master_sign.pub": "garbage\n"})
    options = [
        running(without),
        running(without, verify_master_pubkey_sign=True),
        running(broken, verify_master_pubkey_sign=True),
        running(with_key),
        running(with_key, verify_master_pubkey_sign=True, master_finger="ab"),
        {**FAILOVER, "always_verify_signature": True},
    ]
    return [ha_lint_context.build_context(opts) for opts in options]
