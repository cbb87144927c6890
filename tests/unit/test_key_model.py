"""The key model of a set of masters and of one minion (ha_key_model), and drift under each model."""

import pytest

import ha_drift
import ha_key_model
import ha_keys
from tests.support import lab as lablib
from tests.unit.test_drift import inventory


def signing(name, pub="pa", sign="s1", signs=True):
    return inventory(name, master_pub_fingerprint=pub, master_sign_pubkey=signs, master_sign_pub_fingerprint=sign)


MODEL_CASES = [
    # name, inventories, model, signing_key, master_pub_shared, texts in the problems' reasons
    ("one shared key", {"a": inventory("a"), "b": inventory("b")}, "shared master key", None, True, []),
    (
        "different keys, no signing",
        {"a": inventory("a"), "b": inventory("b", master_pub_fingerprint="bb")},
        "shared master key", None, False, ["different master.pub keys and none signs it"],
    ),
    ("signing, own master keys", {"a": signing("a", "pa"), "b": signing("b", "pb")}, "signing", "s1", False, []),
    ("signing and one master key", {"a": signing("a"), "b": signing("b")}, "signing", "s1", True, []),
    (
        "a master without master_sign_pubkey",
        {"a": signing("a", "pa"), "b": signing("b", "pb", sign=None, signs=False)},
        "mixed", None, False, ["a sign their public key (master_sign_pubkey: True), b do not"],
    ),
    (
        "signing keys differ",
        {"a": signing("a", "pa", "s1"), "b": signing("b", "pb", "s2")},
        "signing", None, False, ["different signing keys: a minion trusts one master_sign.pub and refuses the masters signed by another (a s1, b s2)"],
    ),
    (
        "signing on, no signing key on disk",
        {"a": signing("a", "pa", "s1"), "b": signing("b", "pb", None)},
        "signing", None, False, ["b set master_sign_pubkey but hold no master_sign.pub"],
    ),
]


@pytest.mark.parametrize(
    "inventories,model,signing_key,shared,reasons", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES]
)
def test_master_key_model(inventories, model, signing_key, shared, reasons):
    found = ha_key_model.master_key_model(inventories)
    assert (found["model"], found["signing_key"], found["master_pub_shared"]) == (model, signing_key, shared)
    assert len(found["problems"]) == len(reasons)
    for problem, text in zip(found["problems"], reasons, strict=True):
        assert text in problem["reason"] and problem["fix"]
    summary = ha_key_model.summary(found)
    assert summary["model"] == model and summary["problems"] == found["problems"]
    assert summary["signing"] == sorted(name for name, inv in inventories.items() if inv["master_sign_pubkey"])


def test_drift_compares_the_keys_of_the_model():
    shared = ha_drift.compare_inventories({"a": inventory("a"), "b": inventory("b", master_pub_fingerprint="bb")})
    assert [d["what"] for d in shared] == ["master.pub fingerprint"]
    own_keys = ha_drift.compare_inventories({"a": signing("a", "pa"), "b": signing("b", "pb")})
    assert own_keys == []  # each master keeps its own master.pem: no drift
    two_signers = ha_drift.compare_inventories({"a": signing("a", "pa", "s1"), "b": signing("b", "pb", "s2")})
    assert [d["what"] for d in two_signers] == ["master_sign.pub fingerprint"]
    assert two_signers[0]["masters"] == {"a": "s1", "b": "s2"}
    mixed = ha_drift.compare_inventories({"a": signing("a", "pa"), "b": signing("b", "pb", None, signs=False)})
    assert {d["what"] for d in mixed} == {"master.pub fingerprint", "master_sign.pub fingerprint"}


MINION_CASES = [
    # masters' model, minion facts, text in the reason (None: no reason)
    ("signing", {"verify": False}, "does not verify"),
    ("shared", {"verify": True, "master_sign_pub_fingerprint": "s1"}, "no master signs"),
    ("signing", {"verify": True, "master_sign_pub_fingerprint": "s9"}, "is not the masters' signing key"),
    ("signing", {"verify": True, "master_sign_pub_fingerprint": "s1"}, None),
    ("signing", {"verify": True, "master_sign_pub_fingerprint": None}, None),  # its lint says HA602/HA603
    ("shared", {"verify": False}, None),
    ("mixed", {"verify": True}, None),  # the masters' problem, reported once
    ("signing", None, None),  # a minion whose lint does not report the model
]


@pytest.mark.parametrize("masters,facts,text", MINION_CASES)
def test_minion_key_problems(masters, facts, text):
    inventories = {
        "signing": {"a": signing("a", "pa"), "b": signing("b", "pb")},
        "shared": {"a": inventory("a"), "b": inventory("b")},
        "mixed": {"a": signing("a"), "b": inventory("b")},
    }[masters]
    problems = ha_key_model.minion_key_problems(ha_key_model.master_key_model(inventories), facts)
    if text is None:
        assert problems == []
    else:
        (problem,) = problems
        assert text in problem["reason"] and "ha." in problem["fix"]


def test_public_key_problem(tmp_path):
    pem, pub = (path.read_text() for path in lablib.make_keypair(tmp_path, "master_sign"))
    assert ha_key_model.public_key_problem(pub) is None
    assert ha_key_model.public_key_problem("\n" + pub + "\n") is None
    assert "PRIVATE KEY" in ha_key_model.public_key_problem(pem)
    assert "exactly one PEM block, not 2" in ha_key_model.public_key_problem(pub + pub)
    assert ha_key_model.public_key_problem("") == "public key is missing"
    body = "".join(pub.splitlines(keepends=True)[1:-1])
    broken = "-----BEGIN PUBLIC KEY-----\n" + body[:40] + "\n-----END PUBLIC KEY-----\n"
    assert ha_key_model.public_key_problem(broken) == "public key is not a PEM public key"


def test_minion_key_facts_read_the_pki_dir(tmp_path):
    _pem, pub = lablib.make_keypair(tmp_path / "keys", "master_sign")
    facts = ha_key_model.minion_key_facts({"pki_dir": str(tmp_path / "keys"), "verify_master_pubkey_sign": True})
    assert facts["model"] == "signing" and facts["master_sign_pub_problem"] is None
    assert facts["master_sign_pub_fingerprint"] == ha_keys.fingerprint(pub.read_text())
    empty = ha_key_model.minion_key_facts({"pki_dir": str(tmp_path / "nowhere")})
    assert (empty["model"], empty["master_sign_pub_problem"], empty["cached_master_pub_fingerprint"]) == (
        "shared master key", "missing", None,
    )
    # "yes" is no boolean to Salt's config check: only True verifies
    assert ha_key_model.minion_key_facts({"pki_dir": "", "verify_master_pubkey_sign": "yes"})["verify"] is False
