"""Readiness: the reasons a minion would not fail over, each with its fix."""

import ha_key_model
import ha_readiness
from tests.unit.test_drift import inventory


def test_masters_key_problems_unless_shared_or_signed():
    same = {"a": inventory("a"), "b": inventory("b")}
    assert ha_key_model.master_key_model(same)["problems"] == []
    differ = {"a": inventory("a"), "b": inventory("b", master_pub_fingerprint="bb")}
    (problem,) = ha_key_model.master_key_model(differ)["problems"]
    assert "different master.pub" in problem["reason"] and "a aa, b bb" in problem["reason"]
    assert "ha.master_keypair" in problem["fix"] and "ha.master_signing" in problem["fix"]
    signed = {
        name: inventory(name, master_pub_fingerprint=name, master_sign_pubkey=True, master_sign_pub_fingerprint="s")
        for name in "ab"
    }
    assert ha_key_model.master_key_model(signed)["problems"] == []


def test_every_minion_carries_the_masters_key_problems_and_its_own():
    differ = {"a": inventory("a"), "b": inventory("b", master_pub_fingerprint="bb")}
    model = ha_key_model.master_key_model(differ)
    reasons = ha_readiness.minion_readiness("web1", differ, "a", [], model["problems"], model)
    assert reasons == model["problems"]
    signed = {
        name: inventory(name, master_pub_fingerprint=name, master_sign_pubkey=True, master_sign_pub_fingerprint="s")
        for name in "ab"
    }
    model = ha_key_model.master_key_model(signed)
    not_verifying = [{"id": "HA601", "severity": "info", "key_model": {"model": "shared master key", "verify": False}}]
    (reason,) = ha_readiness.minion_readiness("web1", signed, "a", not_verifying, model["problems"], model)
    assert "does not verify" in reason["reason"] and "verify_master_pubkey_sign: True" in reason["fix"]
    verifying = [{"id": "HA601", "severity": "info", "key_model": {"verify": True, "master_sign_pub_fingerprint": "s"}}]
    assert ha_readiness.minion_readiness("web1", signed, "a", verifying, model["problems"], model) == []
    other_key = [{"id": "HA601", "severity": "info", "key_model": {"verify": True, "master_sign_pub_fingerprint": "x"}}]
    (reason,) = ha_readiness.minion_readiness("web1", signed, "a", other_key, model["problems"], model)
    assert "master_sign.pub (x) is not the masters' signing key (s)" in reason["reason"]
    # a minion whose ha.lint predates the key model: nothing to compare
    assert ha_readiness.minion_readiness("web1", signed, "a", [], model["problems"], model) == []


def test_minion_readiness_reasons_and_fixes():
    inventories = {
        "a": inventory("a"),
        "b": inventory("b", keys={"accepted": {}, "pending": {"web1": "f1"}, "rejected": {}, "denied": {}}),
        "c": inventory("c", keys={"accepted": {}, "pending": {}, "rejected": {"web1": "f1"}, "denied": {}}),
    }
    lint = [{"severity": "error", "option": "master_type", "message": "not failover", "suggestion": "master_type: failover"}]
    reasons = ha_readiness.minion_readiness("web1", inventories, "a", lint, None)
    assert reasons == [
        {"reason": "key pending on b", "fix": "salt-run ha.sync_keys on a"},
        {"reason": "key is rejected on c", "fix": reasons[1]["fix"]},
        {"reason": "ha.lint: master_type: not failover", "fix": "master_type: failover"},
    ]
    ready = {"a": inventory("a"), "b": inventory("b")}
    assert ha_readiness.minion_readiness("web1", ready, "a", [], None) == []
    unavailable = ha_readiness.LintUnavailable("ha.lint not run: the key is not accepted on a", "run it elsewhere")
    assert ha_readiness.minion_readiness("web1", ready, "a", unavailable, None) == [
        {"reason": "ha.lint not run: the key is not accepted on a", "fix": "run it elsewhere"}
    ]
    assert "ha.lint failed on the minion: 'boom\\n'" in ha_readiness.minion_readiness("web1", ready, "a", "boom\n", None)[0]["reason"]


def test_lint_of_says_why_findings_are_missing():
    lint = {"web1": [], "web2": "ha.lint is not available"}
    accepted = {"web1", "web2", "web3"}
    assert ha_readiness.lint_of("a", "web1", accepted, lint, None) == []
    assert ha_readiness.lint_of("a", "web2", accepted, lint, None) == "ha.lint is not available"
    assert "did not answer ha.lint within 5 s" in ha_readiness.lint_of("a", "web3", accepted, lint, None).reason
    assert "not accepted on a" in ha_readiness.lint_of("a", "web4", accepted, lint, None).reason
    assert ha_readiness.lint_of("a", "web1", accepted, {}, "a cannot publish").reason == "ha.lint not run: a cannot publish"


def test_a_key_missing_everywhere_but_a_peer_is_fixed_from_that_peer():
    inventories = {
        "a": inventory("a", keys={"accepted": {}, "pending": {}, "rejected": {}, "denied": {}}),
        "b": inventory("b", keys={"accepted": {"web1": "f1"}, "pending": {}, "rejected": {}, "denied": {}}),
    }
    reasons = ha_readiness.minion_readiness("web1", inventories, "a", [], None)
    assert reasons == [{"reason": "key missing on a", "fix": "salt-run ha.sync_keys on b"}]
