"""
The receiving side of a key sync: what a master does with the items a peer sends.

A batch is checked as a whole before anything is written (:func:`check_batch`):
every item must be well formed (:func:`validate_item`: the id and the PEM as
:mod:`ha_keystore` validates them, a fingerprint, a known action) and name a minion
no other item of the batch names. Refused items never touch the disk. The valid
ones are decided again against this master's own keys, under the store lock, at
write time (:func:`ha_keysync.decide_item`), then applied; whatever was applied is
reported, also when the store fails half-way (:func:`apply_items`).
"""

import collections
import logging

from salt.exceptions import CommandExecutionError

import ha_keys
import ha_keystore
import ha_keysync
import ha_text

log = logging.getLogger(__name__)

ACTIONS = ("accept", "delete")
MAX_FINGERPRINT_CHARS = 200  # sha512 in colon notation is 191


def empty_result():
    """The shape :func:`apply_items` returns."""
    return {"accepted": [], "unchanged": [], "deleted": [], "conflicts": [], "refused": []}


def shown_id(item):
    """The id of a received item as reports and logs show it (:func:`ha_keystore.shown_id`)."""
    return ha_keystore.shown_id(item.get("id") if isinstance(item, dict) else None)


def validate_item(opts, item):
    """None when a received sync item is well formed and safe, else the reason."""
    if not isinstance(item, dict):
        return "item is not a mapping"
    if item.get("action") not in ACTIONS:
        return f"unknown action {ha_text.shown(item.get('action'))}"
    reason = ha_keystore.validate_minion_id(opts, item.get("id"))
    if reason:
        return reason
    fingerprint = item.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        return "fingerprint is missing"
    if len(fingerprint) > MAX_FINGERPRINT_CHARS or not fingerprint.isprintable():
        return f"fingerprint {ha_text.shown(fingerprint)} is not a key fingerprint"
    if item["action"] == "accept":
        return ha_keystore.validate_key(item.get("pem"), fingerprint)
    return None


def check_batch(opts, items):
    """
    ``(valid items, refused [{"id", "reason"}])`` of one received batch. An id named
    by more than one item is refused in every one of them: a batch holds one item per
    minion, so an accept and a delete of one id (or two different keys) never race.
    """
    if not isinstance(items, list):
        return [], [{"id": None, "reason": "items is not a list"}]
    valid, refused = [], []
    for item in items:
        reason = validate_item(opts, item)
        if reason:
            refused.append({"id": shown_id(item), "reason": reason})
        else:
            valid.append(item)
    counts = collections.Counter(item["id"] for item in valid)
    for item in [item for item in valid if counts[item["id"]] > 1]:
        actions = ", ".join(other["action"] for other in valid if other["id"] == item["id"])
        reason = f"{counts[item['id']]} items of one batch name this minion ({actions}); one per minion"
        refused.append({"id": item["id"], "reason": reason})
    valid = [item for item in valid if counts[item["id"]] == 1]
    for entry in refused:
        log.warning("Refused a received key item for %s: %s", entry["id"], entry["reason"])
    return valid, refused


def apply_items(store, items, lock_timeout=ha_keystore.LOCK_TIMEOUT):
    """
    Check received sync items as a batch, then apply the valid ones to ``store``
    under the store lock.

    Returns ``{"accepted": [ids], "unchanged": [ids], "deleted": [{"id", "backup"}],
    "conflicts": [{"id", "reason"}], "refused": [{"id", "reason"}]}``. Refused items
    never touch the disk. If the store fails (lock, read, write), what was applied
    before is reported and every item not done is refused with the error.
    """
    result = empty_result()
    valid, result["refused"] = check_batch(store.opts, items)
    if not valid:
        return result
    try:
        with ha_keystore.store_lock(store.opts, timeout=lock_timeout):
            _apply_valid(store, valid, result)
    except (OSError, CommandExecutionError) as err:
        log.warning("Key store %s failed while applying received keys: %s", ha_text.shown(store.pki_dir), err)
        _refuse_undone(valid, result, f"not applied: {err}")
    return result


def _apply_valid(store, items, result):
    """Decide every item against the keys on disk now, then delete and accept; fills ``result``."""
    local_pems = store.lookup([item["id"] for item in items])
    local = {
        status: {minion_id: ha_keys.fingerprint(pem) for minion_id, pem in pems.items()}
        for status, pems in local_pems.items()
    }
    if store.local:
        store.sweep_staged()
    to_accept, backup_folder = {}, store.backup_folder()
    for item in items:
        outcome, reason = ha_keysync.decide_item(item, local)
        minion_id = item["id"]
        if outcome == "accept":
            to_accept[minion_id] = item["pem"]
        elif outcome == "delete":
            _delete(store, minion_id, local_pems["accepted"][minion_id], backup_folder, result)
        elif outcome == "unchanged":
            result["unchanged"].append(minion_id)
        elif outcome == "conflict":
            result["conflicts"].append({"id": minion_id, "reason": reason})
        else:
            result["refused"].append({"id": minion_id, "reason": reason})
    if to_accept:
        failed = store.accept_many(to_accept)
        result["accepted"] += [minion_id for minion_id in to_accept if minion_id not in failed]
        result["refused"] += [{"id": minion_id, "reason": error} for minion_id, error in failed.items()]


def _delete(store, minion_id, pem, backup_folder, result):
    try:
        backup = store.delete_accepted(minion_id, pem, backup_folder)
    except CommandExecutionError as err:
        result["refused"].append({"id": minion_id, "reason": str(err)})
    else:
        result["deleted"].append({"id": minion_id, "backup": backup})


def _refuse_undone(items, result, reason):
    """Refuse, with ``reason``, every item that no entry of ``result`` reports yet."""
    done = set(result["accepted"]) | set(result["unchanged"])
    done.update(entry["id"] for field in ("deleted", "conflicts", "refused") for entry in result[field])
    result["refused"] += [{"id": item["id"], "reason": reason} for item in items if item["id"] not in done]
