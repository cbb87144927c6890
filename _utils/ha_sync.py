"""
What the ``ha`` runner does across masters, without Salt's dunders.

Every function takes this master's ``opts``, its peers (:func:`ha_peers.peers_from_opts`)
and a :class:`ProgressRelay` for progress messages. Peers are called concurrently,
one thread each (:func:`for_each_peer`); a peer that fails is reported by name with
its (masked) error, never fatal to the others.

- :func:`local_inventory` / :func:`peer_inventory`: what one master has (keys as
  bucket digests or fingerprints, master key fingerprints, HA config, trees).
- :func:`inventories`, :func:`fill_differing_keys`: every master's inventory, the
  keys fetched only for the buckets whose digests differ.
- :func:`sync_keys`: the key sync, peer by peer: plan (:mod:`ha_keysync`), the
  key material read once for all peers, batches sent to the peer's
  ``ha.receive_keys`` and halved on HTTP 413 (:func:`send_items`).
"""

import concurrent.futures
import logging
import queue
import threading

from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_drift
import ha_keys
import ha_keystore
import ha_keysync
import ha_peers

log = logging.getLogger(__name__)

PEER_THREAD_PREFIX = "salt-ha-peer"
SYNC_LOCK = ".salt-ha-sync.lock"
PROGRESS_POLL = 0.2
INVENTORY_FIELDS = ("master", "keys", "key_digests", "master_pub_fingerprint")
RECEIVE_FIELDS = ("accepted", "deleted", "conflicts", "refused")


class ProgressRelay:
    """
    Progress messages from any thread, delivered by the thread that made the relay:
    Salt's event objects are not thread-safe, so peer threads queue their messages
    and :func:`for_each_peer` hands them over while it waits. ``send(message)`` is
    the runner's own progress function (None: progress is off).
    """

    def __init__(self, send=None):
        self.send = send
        self.owner = threading.get_ident()
        self.pending = queue.SimpleQueue()

    def __call__(self, message):
        if self.send is None:
            return
        if threading.get_ident() == self.owner:
            self.send(message)
        else:
            self.pending.put(message)

    def flush(self):
        """Deliver the queued messages (call from the owner thread)."""
        while True:
            try:
                message = self.pending.get_nowait()
            except queue.Empty:
                return
            self.send(message)


def for_each_peer(peers, work, progress):
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
            _, pending = concurrent.futures.wait(pending, timeout=PROGRESS_POLL)
            progress.flush()
        return {name: future.result() for name, future in futures.items()}


def checked(answer, fields, what):
    """``answer`` when it is a dict holding ``fields``, else a garbage error."""
    if not isinstance(answer, dict) or any(field not in answer for field in fields):
        raise CommandExecutionError(f"{what}: the peer answered garbage: {str(answer)[:200]!r}")
    return answer


# --- inventories ------------------------------------------------------------------


def local_inventory(opts, keys=True, trees=True, buckets=None):
    """This master's inventory (see the runner's ``ha.local_inventory`` for the fields)."""
    store = ha_keystore.KeyStore(opts)
    fingerprints = store.fingerprints() if keys else {}
    inventory = ha_drift.master_inventory(opts, {}, trees=bool(trees))
    inventory["odd_key_files"] = store.odd_files
    inventory["key_counts"] = {status: len(fingerprints.get(status, {})) for status in ha_keys.KEY_STATUSES}
    inventory["key_digests"] = ha_keysync.bucket_digests(fingerprints)
    if keys is True:
        inventory["keys"] = ha_keysync.in_buckets(fingerprints, buckets) if buckets is not None else fingerprints
    return inventory


def peer_inventory(client, keys=True, trees=True, buckets=None):
    """A peer's ``ha.local_inventory``, its shape checked."""
    answer = client.runner("ha.local_inventory", keys=keys, trees=trees, buckets=buckets)
    inventory = checked(answer, INVENTORY_FIELDS, "ha.local_inventory")
    if not isinstance(inventory["keys"], dict) or not isinstance(inventory["key_digests"], dict) or not all(
        isinstance(inventory["keys"].get(status, {}), dict) for status in ha_keys.KEY_STATUSES
    ):
        raise CommandExecutionError("ha.local_inventory: the peer answered garbage keys")
    return inventory


def inventories(opts, peers, progress, trees=True, keys="digests"):
    """``({master name: inventory}, {peer name: error})``, this master first."""
    local = local_inventory(opts, keys=keys, trees=trees)
    results = for_each_peer(peers, lambda client: peer_inventory(client, keys=keys, trees=trees), progress)
    found = {local["master"]: local}
    unreachable = {}
    for name, (inventory, error) in results.items():
        if error:
            unreachable[name] = error
        else:
            found[name] = inventory
    return found, unreachable


def fill_differing_keys(opts, peers, found, progress):
    """Fetch, from every master, the keys of the buckets whose digests differ (into ``keys``)."""
    buckets = ha_keysync.differing_buckets(*(inv["key_digests"] for inv in found.values()))
    if not buckets:
        return found, {}
    progress(f"ha: {len(buckets)} key buckets differ, fetching them")
    found[opts.get("id")]["keys"] = ha_keysync.in_buckets(ha_keystore.KeyStore(opts).fingerprints(), buckets)
    results = for_each_peer(
        [peer for peer in peers if peer.name in found],
        lambda client: peer_inventory(client, keys=True, trees=False, buckets=buckets)["keys"],
        progress,
    )
    unreachable = {}
    for name, (keys, error) in results.items():
        if error:
            unreachable[name] = error
            del found[name]
        else:
            found[name]["keys"] = keys
    return found, unreachable


def compared_inventories(opts, peers, progress):
    """``(inventories with differing keys filled in, unreachable)``: what drift and status compare."""
    found, unreachable = inventories(opts, peers, progress, trees=True)
    found, lost = fill_differing_keys(opts, peers, found, progress)
    return found, {**unreachable, **lost}


# --- key sync -------------------------------------------------------------------


def source_keys(opts, store):
    """``(accepted {id: fp}, {id: status}, skipped [{"id", "reason"}], bucket digests)`` of this master."""
    fingerprints = store.fingerprints()
    skipped = [{"id": odd["path"], "reason": odd["reason"]} for odd in store.odd_files]
    source_fps = {}
    for minion_id, fingerprint in fingerprints["accepted"].items():
        reason = ha_keystore.validate_minion_id(opts, minion_id, resolve=False)
        if reason:
            skipped.append({"id": ha_keystore.shown_id(minion_id), "reason": reason})
        else:
            source_fps[minion_id] = fingerprint
    source_statuses = {minion_id: status for status, ids in fingerprints.items() for minion_id in ids}
    expected = ha_keysync.bucket_digests(ha_keysync.accepted_only(source_fps))
    return source_fps, source_statuses, skipped, expected


def pem_reader(store):
    """
    ``read(ids) -> ({id: pem}, refused [{"id", "reason"}])``, reading and checking
    each accepted key once for all peers. A key file here that is not shaped as one
    PEM public key block (a private key pasted into ``minions/``) is never sent.
    """
    pems, bad, lock = {}, {}, threading.Lock()

    def read(minion_ids):
        with lock:
            unread = [minion_id for minion_id in minion_ids if minion_id not in pems and minion_id not in bad]
            for minion_id, pem in store.read_accepted(unread).items():
                problem = ha_keystore.pem_shape_problem(pem)
                if problem:
                    log.warning("Not sending the accepted key of %s: %s", minion_id, problem)
                    bad[minion_id] = problem
                else:
                    pems[minion_id] = pem
            refused = [
                {"id": minion_id, "reason": f"not sent: the key file here is bad: {bad[minion_id]}"}
                for minion_id in minion_ids
                if minion_id in bad
            ]
            return {minion_id: pems[minion_id] for minion_id in minion_ids if minion_id in pems}, refused

    return read


def send_items(client, items, batch_size):
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
            )
            continue
        position += len(batch)
        yield checked(answer, RECEIVE_FIELDS, "ha.receive_keys")


def empty_report(plan):
    """A peer's entry in the ``ha.sync_keys`` report before anything is sent."""
    return {
        "result": True, "error": None, "plan": plan, "accepted": [], "deleted": [], "refused": [],
        "conflicts": list(plan["conflicts"]), "blocked": plan["blocked"], "extra": plan["extra"],
    }


class KeySync:
    """One ``ha.sync_keys`` run: this master's keys against every peer."""

    def __init__(self, opts, peers, progress, test=False, prune=False, batch_size=ha_keysync.DEFAULT_BATCH_SIZE):
        self.opts, self.peers, self.progress = opts, peers, progress
        self.test, self.prune, self.batch_size = bool(test), bool(prune), batch_size

    def run(self, store):
        """``(skipped, {peer name: (report, error)}, number of accepted keys here)``."""
        read_pems = pem_reader(store)
        # This master's keys are read while the peers sign in and send their digests.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as local:
            source = local.submit(source_keys, self.opts, store)
            results = for_each_peer(
                self.peers, lambda client: self.sync_peer(client, read_pems, source.result), self.progress
            )
            source_fps, _, skipped, _ = source.result()
        return skipped, results, len(source_fps)

    def plan(self, client, source):
        """``(plan, the peer's keys of the differing buckets, this master's accepted {id: fp})``."""
        digests = peer_inventory(client, keys="digests", trees=False)["key_digests"]
        source_fps, source_statuses, _, expected = source()
        buckets = ha_keysync.differing_buckets(expected, digests)
        peer_keys = peer_inventory(client, keys=True, trees=False, buckets=buckets)["keys"] if buckets else {}
        wanted = set(buckets)
        source_part = {mid: fp for mid, fp in source_fps.items() if ha_keysync.bucket_of(mid) in wanted}
        plan = ha_keysync.plan_key_sync(source_part, peer_keys, prune=self.prune, source_statuses=source_statuses)
        plan["in_sync"] += len(source_fps) - len(source_part)
        return plan, peer_keys, source_fps

    def sync_peer(self, client, read_pems, source):
        """One peer's report: the plan, then (unless ``test``) what its batches did."""
        name = client.peer.name
        plan, peer_keys, source_fps = self.plan(client, source)
        report = empty_report(plan)
        if self.test:
            self.progress(f"ha.sync_keys: {name}: {ha_keysync.summarize(plan)}")
            return report
        # Key material is read only for the keys to send; the fingerprint sent is the
        # one of the PEM read now (the receiver checks that they match).
        source_pems, refused = read_pems(plan["accept"])
        report["refused"] += refused
        plan["accept"] = [minion_id for minion_id in plan["accept"] if minion_id in source_pems]
        sent_fps = {**source_fps, **{minion_id: ha_keys.fingerprint(pem) for minion_id, pem in source_pems.items()}}
        items = ha_keysync.plan_items(plan, source_pems, sent_fps, peer_keys.get("accepted", {}))
        self.progress(f"ha.sync_keys: {name}: {ha_keysync.summarize(plan)}")
        if items:
            self.send(client, items, report)
        return report

    def send(self, client, items, report):
        """Send ``items`` in batches, adding each answer to ``report``; a failure keeps what was done."""
        name = client.peer.name
        try:
            for number, answer in enumerate(send_items(client, items, self.batch_size), start=1):
                for field in RECEIVE_FIELDS:
                    report[field] += answer[field]
                self.progress(f"ha.sync_keys: {name}: batch {number}, {len(report['accepted'])} accepted so far")
        except CommandExecutionError as err:
            log.warning("Peer %s: %s", name, err)
            report.update(result=False, error=str(err))


def sync_keys(opts, peers, progress, test=False, prune=False, batch_size=ha_keysync.DEFAULT_BATCH_SIZE):
    """
    The ``ha.sync_keys`` report (see the runner for its shape): every peer's
    accepted keys made equal to this master's, one sync at a time on this master.
    """
    keysync = KeySync(opts, peers, progress, test=test, prune=prune, batch_size=batch_size)
    with ha_keystore.store_lock(opts, name=SYNC_LOCK):
        skipped, results, source_count = keysync.run(ha_keystore.KeyStore(opts))
    progress(f"ha.sync_keys: done: {source_count} accepted keys here, {len(peers)} peers")
    report = {"master": opts.get("id"), "test": keysync.test, "prune": keysync.prune, "skipped": skipped, "peers": {}}
    for name, (peer_report, error) in results.items():
        report["peers"][name] = peer_report or {"result": False, "error": error}
    report["failed"] = sorted(name for name, entry in report["peers"].items() if not entry["result"])
    report["result"] = not report["failed"]
    return report
