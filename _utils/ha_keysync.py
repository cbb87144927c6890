"""
Key sync planning: pure data in, pure data out.

The source master's accepted keys ``{minion_id: fingerprint}`` against one peer's
keys by status ``{"accepted"|"pending"|"rejected"|"denied": {minion_id: fingerprint}}``:

- accepted on the source, absent on the peer          -> ``accept`` (added as accepted)
- pending on the peer with the source's fingerprint   -> ``accept`` (accepted there)
- accepted or pending on the peer with another key    -> ``conflicts`` (nothing overwritten)
- rejected or denied on the peer                      -> ``blocked`` (never accepted)
- accepted on the peer, not accepted on the source    -> ``extra``; ``delete`` only with prune
- same fingerprint accepted on both                   -> counted in ``in_sync``

The receiving master decides again, per item, against its own keys at the time of
writing (:func:`decide_item`): the plan is a request, not an order.
"""

import hashlib

import ha_keys

# Keys per request. Every salt-api runner call pays a fixed cost on the peer, ~1 s
# at 10,000 keys in Salt's job cache (bench/sync_keys.py), so fewer requests win:
# 5,000 keys are ~3 MB of JSON. A request refused as too large (HTTP 413) is halved.
DEFAULT_BATCH_SIZE = 5000


def _status_of(peer, minion_id):
    for status in ha_keys.KEY_STATUSES:
        if minion_id in peer.get(status, {}):
            return status, peer[status][minion_id]
    return None, None


def plan_key_sync(source_accepted, peer, prune=False, source_statuses=None):
    """
    The plan making ``peer``'s accepted keys equal ``source_accepted``.

    ``source_statuses`` (optional, ``{minion_id: status}``) names the source's status of
    the peer's extra keys in the report. Returns ``{"accept": [ids], "delete": [ids],
    "conflicts": [...], "blocked": [...], "extra": [...], "in_sync": int}``.
    """
    source_statuses = source_statuses or {}
    plan = {"accept": [], "delete": [], "conflicts": [], "blocked": [], "extra": [], "in_sync": 0}
    for minion_id in sorted(source_accepted):
        source_fp = source_accepted[minion_id]
        status, peer_fp = _status_of(peer, minion_id)
        if status is None:
            plan["accept"].append(minion_id)
        elif status in ("rejected", "denied"):
            plan["blocked"].append(
                {"id": minion_id, "state": status, "source_fingerprint": source_fp, "peer_fingerprint": peer_fp}
            )
        elif peer_fp != source_fp:
            plan["conflicts"].append(
                {"id": minion_id, "state": status, "source_fingerprint": source_fp, "peer_fingerprint": peer_fp}
            )
        elif status == "pending":
            plan["accept"].append(minion_id)
        else:
            plan["in_sync"] += 1
    for minion_id in sorted(set(peer.get("accepted", {})) - set(source_accepted)):
        plan["extra"].append(
            {
                "id": minion_id,
                "peer_fingerprint": peer["accepted"][minion_id],
                "source_state": source_statuses.get(minion_id),
            }
        )
        if prune:
            plan["delete"].append(minion_id)
    return plan


def plan_items(plan, source_pems, source_accepted, peer_accepted):
    """The requests a plan makes: ``{"action", "id", "fingerprint", "pem"?}``, accepts first."""
    items = [
        {"action": "accept", "id": minion_id, "fingerprint": source_accepted[minion_id], "pem": source_pems[minion_id]}
        for minion_id in plan["accept"]
    ]
    items.extend(
        {"action": "delete", "id": minion_id, "fingerprint": peer_accepted[minion_id]}
        for minion_id in plan["delete"]
    )
    return items


def decide_item(item, local):
    """
    What the receiving master does with one validated item, given its own keys
    ``{status: {minion_id: fingerprint}}``: ``(outcome, reason)`` with outcome one of
    ``accept``, ``unchanged``, ``delete``, ``conflict``, ``refused``.
    """
    minion_id, fingerprint = item["id"], item["fingerprint"]
    status, local_fp = _status_of(local, minion_id)
    if item["action"] == "accept":
        if status in ("rejected", "denied"):
            return "refused", f"the key is {status} here; salt-ha never accepts it"
        if status == "accepted":
            if local_fp == fingerprint:
                return "unchanged", None
            return "conflict", "another key is accepted here"
        if status == "pending" and local_fp != fingerprint:
            return "conflict", "another key is pending here"
        return "accept", None
    if item["action"] == "delete":
        if status != "accepted":
            return "unchanged", None
        if local_fp != fingerprint:
            return "conflict", "the accepted key here changed since the plan"
        return "delete", None
    return "refused", f"unknown action {item['action']!r}"


def summarize(plan):
    """Counts of a plan, for progress messages and status."""
    return {
        key: (value if isinstance(value, int) else len(value)) for key, value in plan.items()
    }


# Key set digests: each master hashes its keys in 256 buckets (by the hash of the
# minion id). Two masters compare 256 digests instead of every fingerprint, and
# exchange full listings only for the buckets that differ: a no-op sync or drift
# of 10,000 keys moves a few kilobytes.
BUCKET_HEX = 2


def bucket_of(minion_id):
    """The bucket (two hex digits) of a minion id."""
    return hashlib.sha256(minion_id.encode("utf-8", "surrogatepass")).hexdigest()[:BUCKET_HEX]


def bucket_digests(keys_by_status):
    """``{bucket: sha256 of its sorted "id status fingerprint" lines}`` of ``{status: {id: fp}}``."""
    lines = {}
    for status, keys in keys_by_status.items():
        for minion_id, fingerprint in keys.items():
            lines.setdefault(bucket_of(minion_id), []).append(f"{minion_id}\0{status}\0{fingerprint}")
    return {
        bucket: hashlib.sha256("\n".join(sorted(entries)).encode("utf-8", "surrogatepass")).hexdigest()
        for bucket, entries in lines.items()
    }


def accepted_only(accepted):
    """``{status: {id: fp}}`` of a master holding exactly ``accepted`` and nothing else."""
    return {status: (dict(accepted) if status == "accepted" else {}) for status in ha_keys.KEY_STATUSES}


def differing_buckets(*digests):
    """Sorted buckets whose digest is not the same in every one of ``digests``."""
    buckets = set().union(*(digest.keys() for digest in digests))
    return sorted(bucket for bucket in buckets if len({digest.get(bucket) for digest in digests}) > 1)


def in_buckets(keys_by_status, buckets):
    """The part of ``{status: {id: fp}}`` whose ids fall in ``buckets``."""
    wanted = set(buckets)
    return {
        status: {minion_id: fp for minion_id, fp in keys.items() if bucket_of(minion_id) in wanted}
        for status, keys in keys_by_status.items()
    }
