"""Key sync planning: every case of the contract, and the receiving side's decision."""

import pytest

import ha_keysync

SOURCE = {"web1": "fp-web1", "web2": "fp-web2", "db1": "fp-db1"}


def peer(**states):
    return {state: states.get(state, {}) for state in ("accepted", "pending", "rejected", "denied")}


def test_missing_keys_are_accepted_on_the_peer():
    plan = ha_keysync.plan_key_sync(SOURCE, peer())
    assert plan["accept"] == ["db1", "web1", "web2"]
    assert plan["conflicts"] == plan["blocked"] == plan["extra"] == plan["delete"] == []
    assert plan["in_sync"] == 0


def test_in_sync_peer_gets_an_empty_plan():
    plan = ha_keysync.plan_key_sync(SOURCE, peer(accepted=dict(SOURCE)))
    assert plan["accept"] == [] and plan["in_sync"] == 3


def test_differing_accepted_key_is_a_conflict_never_overwritten():
    plan = ha_keysync.plan_key_sync(SOURCE, peer(accepted={**SOURCE, "web1": "other"}))
    assert plan["accept"] == []
    assert plan["conflicts"] == [
        {"id": "web1", "state": "accepted", "source_fingerprint": "fp-web1", "peer_fingerprint": "other"}
    ]


def test_pending_with_matching_fingerprint_is_accepted_there():
    plan = ha_keysync.plan_key_sync({"web1": "fp-web1"}, peer(pending={"web1": "fp-web1"}))
    assert plan["accept"] == ["web1"] and plan["conflicts"] == []


def test_pending_with_another_fingerprint_is_a_conflict():
    plan = ha_keysync.plan_key_sync({"web1": "fp-web1"}, peer(pending={"web1": "evil"}))
    assert plan["accept"] == [] and plan["conflicts"][0]["state"] == "pending"


@pytest.mark.parametrize("state", ["rejected", "denied"])
def test_rejected_or_denied_on_the_peer_is_never_accepted(state):
    plan = ha_keysync.plan_key_sync({"web1": "fp-web1"}, peer(**{state: {"web1": "fp-web1"}}))
    assert plan["accept"] == []
    assert plan["blocked"] == [
        {"id": "web1", "state": state, "source_fingerprint": "fp-web1", "peer_fingerprint": "fp-web1"}
    ]


def test_keys_only_on_the_peer_are_reported_and_kept_without_prune():
    plan = ha_keysync.plan_key_sync({}, peer(accepted={"old": "fp-old"}), source_statuses={"old": "rejected"})
    assert plan["extra"] == [{"id": "old", "peer_fingerprint": "fp-old", "source_state": "rejected"}]
    assert plan["delete"] == []


def test_keys_only_on_the_peer_are_deleted_with_prune():
    plan = ha_keysync.plan_key_sync({}, peer(accepted={"old": "fp-old"}), prune=True)
    assert plan["delete"] == ["old"]
    items = ha_keysync.plan_items(plan, {}, {}, {"old": "fp-old"})
    assert items == [{"action": "delete", "id": "old", "fingerprint": "fp-old"}]


def test_pending_only_on_the_peer_is_neither_extra_nor_deleted():
    plan = ha_keysync.plan_key_sync({}, peer(pending={"new": "fp"}), prune=True)
    assert plan["extra"] == [] and plan["delete"] == []


def test_items_carry_the_pem_and_fingerprint():
    plan = ha_keysync.plan_key_sync({"web1": "fp"}, peer())
    items = ha_keysync.plan_items(plan, {"web1": "PEM"}, {"web1": "fp"}, {})
    assert items == [{"action": "accept", "id": "web1", "fingerprint": "fp", "pem": "PEM"}]


@pytest.mark.parametrize(
    "item, local, outcome",
    [
        ({"action": "accept", "id": "m", "fingerprint": "f"}, peer(), "accept"),
        ({"action": "accept", "id": "m", "fingerprint": "f"}, peer(accepted={"m": "f"}), "unchanged"),
        ({"action": "accept", "id": "m", "fingerprint": "f"}, peer(accepted={"m": "g"}), "conflict"),
        ({"action": "accept", "id": "m", "fingerprint": "f"}, peer(pending={"m": "f"}), "accept"),
        ({"action": "accept", "id": "m", "fingerprint": "f"}, peer(pending={"m": "g"}), "conflict"),
        ({"action": "accept", "id": "m", "fingerprint": "f"}, peer(rejected={"m": "f"}), "refused"),
        ({"action": "accept", "id": "m", "fingerprint": "f"}, peer(denied={"m": "f"}), "refused"),
        ({"action": "delete", "id": "m", "fingerprint": "f"}, peer(accepted={"m": "f"}), "delete"),
        ({"action": "delete", "id": "m", "fingerprint": "f"}, peer(accepted={"m": "g"}), "conflict"),
        ({"action": "delete", "id": "m", "fingerprint": "f"}, peer(), "unchanged"),
        ({"action": "delete", "id": "m", "fingerprint": "f"}, peer(pending={"m": "f"}), "unchanged"),
        ({"action": "explode", "id": "m", "fingerprint": "f"}, peer(), "refused"),
    ],
)
def test_receiving_side_decides_against_its_own_keys(item, local, outcome):
    assert ha_keysync.decide_item(item, local)[0] == outcome


def test_summarize_counts():
    plan = ha_keysync.plan_key_sync(SOURCE, peer(accepted={"web1": "x", "zz": "y"}))
    assert ha_keysync.summarize(plan) == {
        "accept": 2, "delete": 0, "conflicts": 1, "blocked": 0, "extra": 1, "in_sync": 0
    }


def test_bucket_digests_match_only_for_equal_key_sets():
    source = {f"m{n}": f"fp{n}" for n in range(300)}
    same = ha_keysync.bucket_digests(ha_keysync.accepted_only(source))
    assert same == ha_keysync.bucket_digests(peer(accepted=dict(source)))
    changed = ha_keysync.bucket_digests(peer(accepted={**source, "m7": "other"}))
    pending = ha_keysync.bucket_digests(peer(accepted={k: v for k, v in source.items() if k != "m9"}, pending={"m9": "fp9"}))
    assert ha_keysync.differing_buckets(same, changed) == [ha_keysync.bucket_of("m7")]
    assert ha_keysync.differing_buckets(same, pending) == [ha_keysync.bucket_of("m9")]
    assert ha_keysync.differing_buckets(same, {}) == sorted(same)
    assert ha_keysync.differing_buckets(same, same, same) == []


def test_in_buckets_keeps_only_those_ids():
    keys = peer(accepted={"m1": "a", "m2": "b"}, pending={"m3": "c"})
    wanted = [ha_keysync.bucket_of("m1"), ha_keysync.bucket_of("m3")]
    part = ha_keysync.in_buckets(keys, wanted)
    assert "m1" in part["accepted"] and "m3" in part["pending"]
    assert ("m2" in part["accepted"]) == (ha_keysync.bucket_of("m2") in wanted)
    assert ha_keysync.in_buckets(keys, []) == peer()
