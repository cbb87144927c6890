"""
salt-ha runner: keep the masters of a failover set equal, and say where they are not.

Peers are the other masters, reached through their salt-api (rest_cherrypy);
configure them in this master's config under ``ha:peers`` (see
``examples/master.d/ha.conf``). Every master runs this same runner: the functions
``ha.local_inventory`` and ``ha.receive_keys`` are what peers call over salt-api.

Long runs fire progress events when ``display_progress`` is set in the master config.
"""

import concurrent.futures
import fnmatch
import logging
import queue
import threading

import ha_drift
import ha_keyreceive
import ha_keys
import ha_keystore
import ha_keysync
import ha_peers
import salt.client
import salt.utils.sdb
from salt.exceptions import CommandExecutionError, SaltClientError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "ha"

SYNC_LOCK = ".salt-ha-sync.lock"
LINT_TIMEOUT = 5
PEER_THREAD_PREFIX = "salt-ha-peer"


def __virtual__():
    return __virtualname__


# Salt's event objects are not thread-safe: peer threads queue their progress
# messages and the main thread fires them (see _for_each_peer).
_PENDING_PROGRESS = queue.Queue()


def _progress(message):
    if not __opts__.get("display_progress"):
        return
    if threading.current_thread().name.startswith(PEER_THREAD_PREFIX):
        _PENDING_PROGRESS.put(message)
    else:
        __jid_event__.fire_event({"message": message}, "progress")


def _fire_pending_progress():
    while True:
        try:
            message = _PENDING_PROGRESS.get_nowait()
        except queue.Empty:
            return
        __jid_event__.fire_event({"message": message}, "progress")


def _peers():
    return ha_peers.peers_from_opts(__opts__, resolve_secret=lambda uri: salt.utils.sdb.sdb_get(uri, __opts__))


def _batch_size():
    size = (__opts__.get("ha") or {}).get("sync_batch_size", ha_keysync.DEFAULT_BATCH_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SaltInvocationError(f"ha:sync_batch_size {size!r} is not a positive integer")
    return size


def _for_each_peer(peers, work):
    """Run ``work(client)`` for every peer at once; ``{name: (result, error)}``, never raising."""

    def run(peer):
        try:
            with ha_peers.PeerClient(peer) as client:
                return work(client), None
        except (CommandExecutionError, SaltInvocationError, ValueError, TypeError, KeyError) as err:
            message = ha_peers.mask(err, (peer.password,))
            log.warning("Peer %s: %s", peer.name, message)
            return None, message

    if not peers:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(peers), thread_name_prefix=PEER_THREAD_PREFIX) as pool:
        futures = {peer.name: pool.submit(run, peer) for peer in peers}
        pending = set(futures.values())
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=0.2)
            _fire_pending_progress()
        return {name: future.result() for name, future in futures.items()}


def _checked(answer, fields, what):
    """``answer`` when it is a dict holding ``fields``, else a garbage error."""
    if not isinstance(answer, dict) or any(field not in answer for field in fields):
        raise CommandExecutionError(f"{what}: the peer answered garbage: {str(answer)[:200]!r}")
    return answer


def _peer_inventory(client, keys=True, trees=True, buckets=None):
    answer = client.runner("ha.local_inventory", keys=keys, trees=trees, buckets=buckets)
    inventory = _checked(answer, ("master", "keys", "key_digests", "master_pub_fingerprint"), "ha.local_inventory")
    if not isinstance(inventory["keys"], dict) or not isinstance(inventory["key_digests"], dict) or not all(
        isinstance(inventory["keys"].get(state, {}), dict) for state in ha_keystore.STATES
    ):
        raise CommandExecutionError("ha.local_inventory: the peer answered garbage keys")
    return inventory


def _inventories(trees=True, keys="digests"):
    """``({master name: inventory}, {peer name: error})``, this master first."""
    local = local_inventory(keys=keys, trees=trees)
    results = _for_each_peer(_peers(), lambda client: _peer_inventory(client, keys=keys, trees=trees))
    inventories = {local["master"]: local}
    unreachable = {}
    for name, (inventory, error) in results.items():
        if error:
            unreachable[name] = error
        else:
            inventories[name] = inventory
    return inventories, unreachable


def _fill_differing_keys(inventories):
    """Fetch, from every master, the keys of the buckets whose digests differ (into ``keys``)."""
    buckets = ha_keysync.differing_buckets(*(inv["key_digests"] for inv in inventories.values()))
    if not buckets:
        return inventories, {}
    _progress(f"ha: {len(buckets)} key buckets differ, fetching them")
    local_name = __opts__.get("id")
    inventories[local_name]["keys"] = ha_keysync.in_buckets(
        ha_keystore.KeyStore(__opts__).fingerprints(), buckets
    )
    peers = [peer for peer in _peers() if peer.name in inventories]
    results = _for_each_peer(
        peers, lambda client: _peer_inventory(client, keys=True, trees=False, buckets=buckets)["keys"]
    )
    unreachable = {}
    for name, (keys, error) in results.items():
        if error:
            unreachable[name] = error
            del inventories[name]
        else:
            inventories[name]["keys"] = keys
    return inventories, unreachable


def local_inventory(keys=True, trees=True, buckets=None):
    """
    This master's inventory, as peers compare it: ``master``, ``salt_version``,
    ``salt_ha_version``, ``master_pub_fingerprint``, ``master_sign_pub_fingerprint``,
    ``master_sign_pubkey``, ``config`` (HA-relevant options, secrets masked),
    ``key_counts`` (by state), ``key_digests`` (``{bucket: digest}``, see
    ``ha_keysync.bucket_digests``), ``keys`` (``{state: {minion_id: fingerprint}}``:
    all with ``keys=True``, those of ``buckets`` only when given, none with
    ``keys=digests``), ``odd_key_files`` (``[{"path", "reason"}]``: files in the
    key folders skipped because their names are not valid UTF-8, names escaped)
    and, with ``trees``, ``file_roots``/``pillar_roots`` (``{env: {path:
    sha256}}``) and ``gitfs``.

    Peers call it over salt-api; it reads only.

    CLI Example:

    .. code-block:: bash

        salt-run ha.local_inventory
        salt-run ha.local_inventory keys=digests trees=False
    """
    if keys not in (True, False, "digests"):
        raise SaltInvocationError(f"keys {keys!r} is not True, False or 'digests'")
    if buckets is not None and not (isinstance(buckets, list) and all(isinstance(b, str) for b in buckets)):
        raise SaltInvocationError(f"buckets {str(buckets)[:80]!r} is not a list of bucket names")
    store = ha_keystore.KeyStore(__opts__)
    fingerprints = store.fingerprints() if keys else {}
    inventory = ha_drift.master_inventory(__opts__, {}, trees=bool(trees))
    inventory["odd_key_files"] = store.odd_files
    inventory["key_counts"] = {state: len(fingerprints.get(state, {})) for state in ha_keystore.STATES}
    inventory["key_digests"] = ha_keysync.bucket_digests(fingerprints)
    if keys is True:
        inventory["keys"] = ha_keysync.in_buckets(fingerprints, buckets) if buckets is not None else fingerprints
    return inventory


def receive_keys(items):
    """
    Apply key sync items sent by a peer's ``ha.sync_keys`` (called over salt-api).

    Each item is ``{"action": "accept"|"delete", "id", "fingerprint", "pem"}``.
    Everything is validated again here, the batch as a whole before anything is
    written: minion ids (Salt's ``valid_id``; no path separator, ``..``, NUL,
    leading dot, nor any control, format or separator character, Unicode
    categories Cc, Cf, Zl, Zp; nothing that escapes the pki dir), a ``pem`` that is
    exactly one PEM public key block whose fingerprint matches, one item per
    minion. Refused items are reported with the reason, ids escaped, and touch
    nothing. A key rejected or denied here is never accepted; a different key
    already here is a conflict and stays; deleted keys are backed up first.
    Writes are atomic, under a lock shared with every other sync; what was
    applied is reported even when the key store fails half-way.

    Returns ``{"master", "accepted": [ids], "unchanged": [ids], "deleted":
    [{"id", "backup"}], "conflicts": [{"id", "reason"}], "refused": [{"id", "reason"}]}``.

    CLI Example:

    .. code-block:: bash

        salt-run ha.receive_keys items='[{"action": "accept", "id": "web1", "fingerprint": "...", "pem": "..."}]'
    """
    result = ha_keyreceive.apply_items(ha_keystore.KeyStore(__opts__), items)
    log.info(
        "Received keys: %d accepted, %d deleted, %d conflicts, %d refused",
        len(result["accepted"]), len(result["deleted"]), len(result["conflicts"]), len(result["refused"]),
    )  # fmt: skip
    return {"master": __opts__.get("id"), **result}


def _source_keys(store):
    """``(accepted {id: fp}, {id: state}, skipped [{"id", "reason"}], bucket digests)`` of this master."""
    fingerprints = store.fingerprints()
    skipped = [{"id": odd["path"], "reason": odd["reason"]} for odd in store.odd_files]
    source_fps = {}
    for minion_id, fingerprint in fingerprints["accepted"].items():
        reason = ha_keystore.validate_minion_id(__opts__, minion_id, resolve=False)
        if reason:
            skipped.append({"id": ha_keyreceive.shown_id({"id": minion_id}), "reason": reason})
        else:
            source_fps[minion_id] = fingerprint
    source_states = {minion_id: state for state, ids in fingerprints.items() for minion_id in ids}
    expected = ha_keysync.bucket_digests(ha_keysync.accepted_only(source_fps))
    return source_fps, source_states, skipped, expected


def _sync_peer(client, read_pems, source_keys, test, prune, batch_size):
    name = client.peer.name
    digests = _peer_inventory(client, keys="digests", trees=False)["key_digests"]
    source_fps, source_states, _, expected = source_keys()
    buckets = ha_keysync.differing_buckets(expected, digests)
    peer_keys = _peer_inventory(client, keys=True, trees=False, buckets=buckets)["keys"] if buckets else {}
    wanted = set(buckets)
    source_part = {minion_id: fp for minion_id, fp in source_fps.items() if ha_keysync.bucket_of(minion_id) in wanted}
    plan = ha_keysync.plan_key_sync(source_part, peer_keys, prune=prune, source_states=source_states)
    plan["in_sync"] += len(source_fps) - len(source_part)
    report = {"result": True, "error": None, "plan": plan, "accepted": [], "deleted": [], "refused": [],
              "conflicts": list(plan["conflicts"]), "blocked": plan["blocked"], "extra": plan["extra"]}  # fmt: skip
    if test:
        _progress(f"ha.sync_keys: {name}: {ha_keysync.summarize(plan)}")
        return report
    # Key material is read only for the keys to send; the fingerprint sent is the
    # one of the PEM read now (the receiver checks that they match).
    source_pems = read_pems(plan["accept"])
    report["refused"] += _unsendable(source_pems)
    plan["accept"] = [minion_id for minion_id in plan["accept"] if minion_id in source_pems]
    sent_fps = {**source_fps, **{minion_id: ha_keys.fingerprint(pem) for minion_id, pem in source_pems.items()}}
    items = ha_keysync.plan_items(plan, source_pems, sent_fps, peer_keys.get("accepted", {}))
    _progress(f"ha.sync_keys: {name}: {ha_keysync.summarize(plan)}")
    if not items:
        return report
    try:
        for number, answer in enumerate(_send_items(client, items, batch_size), start=1):
            for field in ("accepted", "deleted", "conflicts", "refused"):
                report[field] += answer[field]
            _progress(f"ha.sync_keys: {name}: batch {number}, {len(report['accepted'])} accepted so far")
    except CommandExecutionError as err:
        # What earlier batches did on the peer stays in the report.
        log.warning("Peer %s: %s", name, err)
        report.update(result=False, error=str(err))
    return report


def _unsendable(pems):
    """
    Remove from ``{id: pem}`` the key files here that are not one PEM public key
    block (a private key pasted into ``minions/`` is never sent); ``[{"id", "reason"}]``.
    """
    refused = []
    for minion_id, pem in list(pems.items()):
        reason = ha_keystore.validate_key(pem, ha_keys.fingerprint(pem))
        if reason:
            del pems[minion_id]
            log.warning("Not sending the accepted key of %s: %s", minion_id, reason)
            refused.append({"id": minion_id, "reason": f"not sent: the key file here is bad: {reason}"})
    return refused


def _send_items(client, items, batch_size):
    """
    Yield the peer's ``ha.receive_keys`` answer for each batch of ``items``. A batch
    refused as too large (HTTP 413, from the peer or a proxy in front of it: nothing
    was applied) is halved, and the smaller size kept for the rest of the run.
    """
    position, size = 0, batch_size
    while position < len(items):
        batch = items[position : position + size]
        try:
            answer = client.runner("ha.receive_keys", items=batch)
        except ha_peers.PeerRequestTooLarge:
            if len(batch) == 1:
                raise
            size = len(batch) // 2
            log.warning(
                "Peer %s refused %d keys in one request as too large (HTTP 413); sending %d per request",
                client.peer.name, len(batch), size,
            )  # fmt: skip
            continue
        position += len(batch)
        yield _checked(answer, ("accepted", "deleted", "conflicts", "refused"), "ha.receive_keys")


def _pem_reader(store):
    """``read(ids) -> {id: pem}`` reading each accepted key once for all peers."""
    pems, lock = {}, threading.Lock()

    def read(minion_ids):
        with lock:
            pems.update(store.read_accepted([minion_id for minion_id in minion_ids if minion_id not in pems]))
            return {minion_id: pems[minion_id] for minion_id in minion_ids if minion_id in pems}

    return read


def sync_keys(test=False, prune=False):
    """
    Make every peer's accepted minion keys equal this master's.

    Keys accepted here and missing on a peer are added there as accepted; a key
    pending on a peer with the same fingerprint is accepted there. A minion whose
    key differs on a peer is a conflict: reported, both keys kept. Rejected and
    denied keys are never accepted anywhere. Keys accepted only on a peer are
    reported as ``extra`` and deleted (with a backup on the peer) only with
    ``prune=True``. One request per peer per batch (``ha:sync_batch_size``,
    default 5000; a batch refused as too large, HTTP 413, is halved). Unreachable
    or broken peers are reported; the others are synced. A peer failing mid-sync
    keeps, in its entry, what the batches before the failure did.
    Syncs started on this master run one at a time.

    test
        Return the plan and change nothing.

    prune
        Delete keys accepted on a peer but not here.

    Returns ``{"master", "test", "prune", "result", "failed": [peer names],
    "skipped": [{"id", "reason"}], "peers": {name: {"result", "error", "plan",
    "accepted", "deleted", "conflicts", "blocked", "extra", "refused"}}}``.

    CLI Example:

    .. code-block:: bash

        salt-run ha.sync_keys
        salt-run ha.sync_keys test=True
        salt-run ha.sync_keys prune=True
    """
    test, prune = bool(test), bool(prune)
    peers = _peers()
    batch_size = _batch_size()
    with ha_keystore.store_lock(__opts__, name=SYNC_LOCK):
        store = ha_keystore.KeyStore(__opts__)
        read_pems = _pem_reader(store)
        # This master's keys are read while the peers sign in and send their digests.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as local:
            source = local.submit(_source_keys, store)
            results = _for_each_peer(
                peers,
                lambda client: _sync_peer(client, read_pems, source.result, test, prune, batch_size),
            )
            source_fps, _, skipped, _ = source.result()
    _progress(f"ha.sync_keys: done: {len(source_fps)} accepted keys here, {len(peers)} peers")
    report = {"master": __opts__.get("id"), "test": test, "prune": prune, "skipped": skipped, "peers": {}}
    for name, (peer_report, error) in results.items():
        report["peers"][name] = peer_report or {"result": False, "error": error}
    report["failed"] = sorted(name for name, entry in report["peers"].items() if not entry["result"])
    report["result"] = not report["failed"]
    return report


def drift():
    """
    Differences across this master and its peers: HA-relevant master config
    (secrets masked), master.pub fingerprint, minion key sets and fingerprints,
    file_roots/pillar_roots tree hashes per environment (with the differing
    paths), gitfs revisions, salt and salt-ha versions.

    Returns ``{"masters": [names compared], "unreachable": {peer: error},
    "differences": [{"what", "masters", ...}], "in_sync": bool}``;
    ``differences`` is empty when the masters agree.

    CLI Example:

    .. code-block:: bash

        salt-run ha.drift
    """
    _progress("ha.drift: collecting inventories")
    inventories, unreachable = _inventories(trees=True)
    inventories, lost = _fill_differing_keys(inventories)
    unreachable.update(lost)
    differences = ha_drift.compare_inventories(inventories)
    return {
        "masters": sorted(inventories),
        "unreachable": unreachable,
        "differences": differences,
        "in_sync": not differences and not unreachable,
    }


def status():
    """
    Every master's health, versions, key counts by state, master.pub fingerprint
    and a summary of drift. An unreachable peer is reported, never fatal.

    Returns ``{"masters": [{"master", "up", "error", "salt_version",
    "salt_ha_version", "master_pub_fingerprint", "keys": {state: count},
    "odd_key_files": [{"path", "reason"}]}],
    "up", "total", "drift": {"count", "what": [...]}}``.

    CLI Example:

    .. code-block:: bash

        salt-run ha.status
    """
    inventories, unreachable = _inventories(trees=True)
    inventories, lost = _fill_differing_keys(inventories)
    unreachable.update(lost)
    masters = [
        {
            "master": name,
            "up": True,
            "error": None,
            "salt_version": inv.get("salt_version"),
            "salt_ha_version": inv.get("salt_ha_version"),
            "master_pub_fingerprint": inv.get("master_pub_fingerprint"),
            "keys": inv.get("key_counts"),
            "odd_key_files": inv.get("odd_key_files", []),
        }
        for name, inv in inventories.items()
    ]
    masters += [{"master": name, "up": False, "error": error} for name, error in sorted(unreachable.items())]
    differences = ha_drift.compare_inventories(inventories)
    return {
        "masters": masters,
        "up": len(inventories),
        "total": len(masters),
        "drift": {"count": len(differences), "what": [difference["what"] for difference in differences]},
    }


def _lint_minions(minion_ids):
    """``({minion_id: findings or error text}, None)``, or ``({}, why)`` when no minion could be asked."""
    if not minion_ids:
        return {}, None
    try:
        with salt.client.get_local_client(__opts__["conf_file"]) as client:
            answers = client.cmd(
                list(minion_ids), "ha.lint", tgt_type="list", timeout=LINT_TIMEOUT, gather_job_timeout=2
            )
    except SaltClientError as err:
        log.warning("ha.readiness: cannot run ha.lint on the minions: %s", err)
        return {}, f"{__opts__.get('id')} cannot publish to its minions: {err}"
    return answers, None


def _lint_of(minion_id, accepted_here, lint, lint_error):
    """What ``ha_drift.minion_readiness`` gets for one minion: its findings or a ``LintUnavailable``."""
    source = __opts__.get("id")
    if minion_id not in accepted_here:
        return ha_drift.LintUnavailable(
            f"ha.lint not run: the key is not accepted on {source}, where ha.readiness ran",
            "run ha.readiness on a master where the key is accepted, or salt-run ha.sync_keys there",
        )
    if lint_error:
        return ha_drift.LintUnavailable(f"ha.lint not run: {lint_error}", f"check the salt-master on {source}")
    if minion_id not in lint:
        return ha_drift.LintUnavailable(
            f"the minion did not answer ha.lint within {LINT_TIMEOUT} s",
            "check that the minion runs and has the ha module (saltutil.sync_all)",
        )
    return lint[minion_id]


def readiness(tgt="*"):
    """
    For each minion matching ``tgt`` (a glob over minion ids known to any master):
    would failover work now? Its key must be accepted with the same fingerprint on
    every master, the masters must share one master key (or signing), and the
    minion's own ``ha.lint`` must report no error.

    Returns ``{"masters": [names], "unreachable": {peer: error}, "ready": [ids],
    "not_ready": [{"minion", "reasons": [{"reason", "fix"}]}]}``.

    CLI Example:

    .. code-block:: bash

        salt-run ha.readiness
        salt-run ha.readiness tgt='web*'
    """
    inventories, unreachable = _inventories(trees=False, keys=True)
    source = __opts__.get("id")
    known = set()
    for inv in inventories.values():
        for ids in (inv.get("keys") or {}).values():
            known.update(ids)
    minion_ids = sorted(minion_id for minion_id in known if fnmatch.fnmatch(minion_id, str(tgt)))
    _progress(f"ha.readiness: {len(minion_ids)} minions, {len(inventories)} masters")
    accepted_here = set((inventories[source].get("keys") or {}).get("accepted", {}))
    lint, lint_error = _lint_minions([minion_id for minion_id in minion_ids if minion_id in accepted_here])
    master_problem = ha_drift.master_key_problem(inventories)
    ready, not_ready = [], []
    for minion_id in minion_ids:
        findings = _lint_of(minion_id, accepted_here, lint, lint_error)
        reasons = ha_drift.minion_readiness(minion_id, inventories, source, findings, master_problem)
        if unreachable:
            reasons.append({"reason": f"masters not checked: {', '.join(sorted(unreachable))}",
                            "fix": "bring their salt-api back and rerun ha.readiness"})  # fmt: skip
        if reasons:
            not_ready.append({"minion": minion_id, "reasons": reasons})
        else:
            ready.append(minion_id)
    return {"masters": sorted(inventories), "unreachable": unreachable, "ready": ready, "not_ready": not_ready}
