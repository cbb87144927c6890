"""
salt-ha runner: keep the masters of a failover set equal, and say where they are not.

Peers are the other masters, reached through their salt-api (rest_cherrypy);
configure them in this master's config under ``ha:peers`` (see
``examples/master.d/ha.conf``). Every master runs this same runner: the functions
``ha.local_inventory`` and ``ha.receive_keys`` are what peers call over salt-api.

Long runs fire progress events when ``display_progress`` is set in the master config.
The work itself is in ``_utils``: ``ha_sync`` (inventories, key sync),
``ha_keyreceive`` (the receiving side), ``ha_readiness``, ``ha_drift``, ``ha_jobs``
(``ha.jobs`` and its receiving side ``ha.local_jobs``), ``ha_drill*`` (``ha.drill``,
``ha.drill_history`` and their receiving side ``ha.local_drill``).
"""

import logging

import salt.utils.sdb
from salt.exceptions import SaltInvocationError

import ha_drift
import ha_drill
import ha_drill_history
import ha_drill_local
import ha_drill_run
import ha_jobs
import ha_key_model
import ha_keyreceive
import ha_keystore
import ha_keysync
import ha_master_lint
import ha_master_lint_peers
import ha_peers
import ha_probe
import ha_readiness
import ha_sync
import ha_validate

log = logging.getLogger(__name__)

__virtualname__ = "ha"


def __virtual__():
    return __virtualname__


def _progress():
    """A relay for this run's progress events (Salt's event object is not thread-safe)."""
    if not __opts__.get("display_progress"):
        return ha_sync.ProgressRelay()
    return ha_sync.ProgressRelay(lambda message: __jid_event__.fire_event({"message": message}, "progress"))


def _peers():
    return ha_peers.peers_from_opts(__opts__, resolve_secret=lambda uri: salt.utils.sdb.sdb_get(uri, __opts__))


def _with_key_store(report):
    """
    ``report`` with ``key_store``: where this master's minion keys are read and
    written (``{"pki_dir", "option", "cluster_id", "driver"}``): ``cluster_pki_dir``
    on a master cluster, as Salt itself reads them (``ha_keystore.key_pki_dir``).
    """
    return {**report, "key_store": ha_keystore.key_store_description(__opts__)}


def _batch_size():
    size = (__opts__.get("ha") or {}).get("sync_batch_size", ha_keysync.DEFAULT_BATCH_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SaltInvocationError(f"ha:sync_batch_size {size!r} is not a positive integer")
    return size


def local_inventory(keys=True, trees=True, buckets=None):
    """
    This master's inventory, as peers compare it: ``master``, ``salt_version``,
    ``salt_ha_version``, ``master_pub_fingerprint``, ``master_sign_pub_fingerprint``,
    ``master_sign_pubkey``, ``config`` (HA-relevant options, secrets masked),
    ``key_counts`` (by status), ``key_digests`` (``{bucket: digest}``, see
    ``ha_keysync.bucket_digests``), ``keys`` (``{status: {minion_id: fingerprint}}``:
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
    return ha_sync.local_inventory(__opts__, keys=keys, trees=trees, buckets=buckets)


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
    )
    return {"master": __opts__.get("id"), **result}


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
    "accepted", "deleted", "conflicts", "blocked", "extra", "refused"}}, "key_store"}``
    (``key_store``: where this master's minion keys are read, ``cluster_pki_dir`` on a cluster).

    CLI Example:

    .. code-block:: bash

        salt-run ha.sync_keys
        salt-run ha.sync_keys test=True
        salt-run ha.sync_keys prune=True
    """
    peers, batch_size = _peers(), _batch_size()
    report = ha_sync.sync_keys(__opts__, peers, _progress(), test=test, prune=prune, batch_size=batch_size)
    return _with_key_store(report)


def drift():
    """
    Differences across this master and its peers: HA-relevant master config
    (secrets masked), the master keys of their key model (``master.pub`` with one
    shared master key, ``master_sign.pub`` when masters sign their key), minion key
    sets and fingerprints, file_roots/pillar_roots tree hashes per environment
    (with the differing paths), gitfs revisions, salt and salt-ha versions.

    Returns ``{"masters": [names compared], "unreachable": {peer: error},
    "key_model": {"model", "master_pub_shared", "signing_key", "signing",
    "problems"}, "differences": [{"what", "masters", ...}], "in_sync": bool}``;
    ``differences`` is empty when the masters agree. ``key_model.model`` is
    ``shared master key`` (no master signs), ``signing`` (every master signs) or
    ``mixed``; ``problems`` (``[{"reason", "fix"}]``) say what keeps a minion from
    failing over between them. ``key_store``: where this master's minion keys are
    read (``cluster_pki_dir`` on a master cluster).

    CLI Example:

    .. code-block:: bash

        salt-run ha.drift
    """
    progress = _progress()
    progress("ha.drift: collecting inventories")
    inventories, unreachable = ha_sync.compared_inventories(__opts__, _peers(), progress)
    differences = ha_drift.compare_inventories(inventories)
    return _with_key_store({
        "masters": sorted(inventories),
        "unreachable": unreachable,
        "key_model": ha_key_model.summary(ha_key_model.master_key_model(inventories)),
        "differences": differences,
        "in_sync": not differences and not unreachable,
    })


def status():
    """
    Every master's health, versions, key counts by status, master.pub and
    master_sign.pub fingerprints, the masters' key model and a summary of drift.
    An unreachable peer is reported, never fatal.

    Returns ``{"masters": [{"master", "up", "error", "salt_version",
    "salt_ha_version", "master_pub_fingerprint", "master_sign_pubkey",
    "master_sign_pub_fingerprint", "keys": {status: count},
    "odd_key_files": [{"path", "reason"}]}],
    "up", "total", "key_model": {"model", "master_pub_shared", "signing_key",
    "signing", "problems"}, "drift": {"count", "what": [...]}}``. ``key_model``
    covers the masters that answered (see ``ha.drift``).

    CLI Example:

    .. code-block:: bash

        salt-run ha.status
    """
    inventories, unreachable = ha_sync.compared_inventories(__opts__, _peers(), _progress())
    masters = [_master_status(name, inventory) for name, inventory in inventories.items()]
    masters += [{"master": name, "up": False, "error": error} for name, error in sorted(unreachable.items())]
    differences = ha_drift.compare_inventories(inventories)
    return {
        "masters": masters,
        "up": len(inventories),
        "total": len(masters),
        "key_model": ha_key_model.summary(ha_key_model.master_key_model(inventories)),
        "drift": {"count": len(differences), "what": [difference["what"] for difference in differences]},
    }


def _master_status(name, inventory):
    return {
        "master": name,
        "up": True,
        "error": None,
        "salt_version": inventory.get("salt_version"),
        "salt_ha_version": inventory.get("salt_ha_version"),
        "master_pub_fingerprint": inventory.get("master_pub_fingerprint"),
        "master_sign_pubkey": inventory.get("master_sign_pubkey"),
        "master_sign_pub_fingerprint": inventory.get("master_sign_pub_fingerprint"),
        "keys": inventory.get("key_counts"),
        "odd_key_files": inventory.get("odd_key_files", []),
    }


def readiness(tgt="*"):
    """
    For each minion matching ``tgt`` (a glob over minion ids known to any master):
    would failover work now? Its key must be accepted with the same fingerprint on
    every master; the masters must share one master key, or all sign it with one
    signing key (master pubkey signing); the minion must match that key model
    (verify signatures exactly when the masters sign, with their signing key, as
    its ``ha.lint`` reports); and its own ``ha.lint`` must report no error.

    Returns ``{"masters": [names], "unreachable": {peer: error}, "key_model":
    {"model", "master_pub_shared", "signing_key", "signing", "problems"}, "ready":
    [ids], "not_ready": [{"minion", "reasons": [{"reason", "fix"}]}], "key_store"}``
    (``key_store``: where this master's minion keys are read).

    CLI Example:

    .. code-block:: bash

        salt-run ha.readiness
        salt-run ha.readiness tgt='web*'
    """
    return _with_key_store(ha_readiness.readiness(__opts__, _peers(), _progress(), tgt=tgt))


def local_jobs(jid=None, hours=24, limit=1000):
    """
    This master's jobs, read from its ``master_job_cache`` (what peers call for
    ``ha.jobs``; it reads only). Arguments are checked again here: ``jid`` a Salt
    jid (20 digits, or Salt's ``unique_jid`` form), ``hours`` a number in
    (0, 8784], ``limit`` 1-100000.

    jid
        Only this job, with the minions' returns themselves (``hours`` is not applied).

    hours
        Jobs whose jid is at most this many hours old (jids carry the publishing
        master's UTC time). The master's own runner and wheel jobs and
        ``saltutil.find_job`` are not listed (counted in ``ignored``).

    limit
        At most this many jobs, the newest; ``left_out`` counts the others. A
        listing also stops once it holds 100000 minion returns.

    Returns ``{"master", "returner", "job_cache", "ext_job_cache", "jid", "hours",
    "limit", "total", "left_out", "ignored", "jobs": {jid: {"fun", "arg", "tgt",
    "tgt_type", "user", "start_time", "published_here", "expected", "replay",
    "load_digest", "returns": {minion: {"success", "retcode"}}}}}``.
    ``published_here`` is True when the stored load is a publication of this
    master, False when it only received returns for the jid (the load is a
    return's: ``tgt``/``user`` are then not the publication's); ``expected``: the
    minions the publication targeted (Salt's ``Minions``; None when unknown);
    ``replay``: ``{"from", "reason", "minion"}`` when salt-ha's ``ha_returns``
    engine replayed a return here; ``returns`` carry ``return`` with ``jid``.

    CLI Example:

    .. code-block:: bash

        salt-run ha.local_jobs
        salt-run ha.local_jobs hours=2 limit=100
        salt-run ha.local_jobs jid=20261127101010123456
    """
    return ha_jobs.local_jobs(__opts__, jid=jid, hours=hours, limit=limit)


def jobs(jid=None, hours=24, limit=1000):
    """
    Jobs as every master saw them: this master's job cache and every peer's
    (``ha.local_jobs`` over salt-api), merged per jid. Answers "where is my job's
    result?" from any master. A master that does not answer is reported in
    ``masters`` with its error; the others' data is still merged. Masters that read
    one job store (a shared PostgreSQL through ``pgjsonb``, a shared ``local_cache``)
    show each return once, with every master that reads it.

    jid
        Only this job, with the returns themselves.

    hours
        Jobs at most this many hours old (default 24).

    limit
        At most this many jobs per master and in the report, the newest (default 1000).

    Returns ``{"master", "jid", "hours", "limit", "left_out", "masters": {name:
    {"answered", "error", "returner", "listed", "total", "left_out"}}, "jobs": {jid:
    {"fun", "arg", "tgt", "tgt_type", "user", "start_time", "published_by",
    "shared_store", "minions": {minion: {"masters", "success", "retcode"}}, "missing",
    "replayed", "note"}}, "findings": [{"severity", "jid", "message"}]}``.
    ``published_by``: the masters holding the job's publication (None when no
    answering master does, or when several read it from one shared store; ``note``
    says which). ``shared_store``: the masters that read this job from one store
    (they hold the very same load), else None. ``minions``: every minion whose
    return is stored somewhere, with the masters it landed on (``return`` too with
    ``jid``; ``differs`` when two masters hold different returns). ``missing``: minions the publication targeted
    that returned nowhere (None when the publication is unknown). ``replayed``:
    ``[{"master", "from", "reason", "minion"}]`` of returns the ``ha_returns`` engine
    delivered to another master. ``tgt``, ``tgt_type`` and ``user`` come from the
    publication only.

    CLI Example:

    .. code-block:: bash

        salt-run ha.jobs
        salt-run ha.jobs hours=1
        salt-run ha.jobs jid=20261127101010123456
    """
    return ha_jobs.jobs(__opts__, _peers(), _progress(), jid=jid, hours=hours, limit=limit)


def lint(config=None, peers=True, timeout=2):
    """
    Findings for this master's own settings (or for the master config file at
    ``config``): Salt's master cluster (``cluster_id``, ``cluster_peers``,
    ``cluster_secret``, ``id``, ``interface``, the shared or isolated filesystem,
    the balancer in front), the job store, the request workers, salt-ha's
    ``ha:peers``, and with ``peers`` what every peer answers (its Salt version and
    cluster). The same shape as the minion's ``ha.lint``; ids HA7xx. For this
    master (no ``config``), also whether it can answer the sign-ins of all its
    accepted minions at once when another master dies (HA811, HA812: a failover
    storm).

    config
        A master config file to lint instead of this master's (its ``master.d``
        and ``include`` files are read too, as the salt-master reads them).

    peers
        Ask every ``ha:peers`` peer for its Salt version and cluster over salt-api
        (a peer that does not answer is an info finding). False: no network but DNS.

    timeout
        Seconds for each DNS lookup (peers use their own ``timeout``).

    Returns ``[{"id", "severity", "option", "message", "suggestion"}]``, errors
    first, then warnings, then infos.

    CLI Example:

    .. code-block:: bash

        salt-run ha.lint
        salt-run ha.lint peers=False
        salt-run ha.lint config=/etc/salt/master
    """
    if config is None:
        opts, written = __opts__, ha_master_lint.read_written_options(__opts__.get("conf_file"))
    else:
        opts, written = ha_master_lint.options_from_file(config)
    answers = None
    if peers:
        usable = ha_master_lint_peers.usable_peers(opts, lambda uri: salt.utils.sdb.sdb_get(uri, opts))
        answers = ha_master_lint_peers.ask_peers(usable, _progress())
    resolver = lambda hosts: ha_probe.resolve_many(hosts, timeout)  # noqa: E731
    # This master's accepted minions may all sign in here at once when another master dies.
    accepted = None if config is not None else len(ha_keystore.KeyStore(__opts__).keys()["accepted"])
    return ha_master_lint.lint_master(dict(opts), written, resolver=resolver, peers=answers, minion_count=accepted)


def drill(tgt="*", mode="minion", percent=10, count=None, budget=60, test=False, seed=None, master=None,
          duration=30, max_failed=0, rpo=True):
    """
    A failover drill: move minions off their master on purpose, measure how long
    each takes to answer through another master (RTO), move them back, and report.

    Gates, all checked with ``test=True`` (which returns the plan and moves
    nothing) and again just before acting, each refusal with its reason and fix:
    every master answers (this master's request server, every peer's salt-api
    and master); no other drill runs on any master and no master is frozen by
    one; not inside an ``ha:drill:blackout`` window of this master; every chosen
    minion is ready to fail over (``ha.readiness``'s rules: its key accepted
    with one fingerprint on every master, one master key model, no ``ha.lint``
    error, asked through the master it is connected to); another master answers
    to take the minions. Peers must allow ``ha.local_drill`` and
    ``ha.local_jobs`` in their ``external_auth`` (see ``examples/master.d/ha.conf``).

    tgt
        A glob over the minion ids accepted on this master.

    mode
        ``minion`` (safe in production): the canaries leave their master
        (``ha.leave_master``), each is timed until it answers through another
        master, then it is moved back where it was. ``hang``: the master
        ``master`` is frozen (SIGSTOP of its whole salt-master) for ``duration``
        seconds by a watchdog on its own host that thaws it whatever happens to
        this runner; every minion connected to it is timed until it answers
        through another master (the ``ha`` beacon moves them), then moved back
        once the master is thawed. Only on a master whose config says
        ``ha:drill:allow_hang: True``, for at most its ``ha:drill:max_duration``.

    percent, count
        How many canaries (mode ``minion``): ``count`` minions, else ``percent``
        of those tgt matches that are connected (at least one); never more than
        ``ha:drill:max_minions`` nor ``ha:drill:max_percent``.

    seed
        Picks the canaries reproducibly (the report gives the one used).

    budget
        Seconds a minion has to answer through another master.

    max_failed
        More minions than this without an answer within ``budget`` abort the
        drill (as does a master that is not the target going down): nothing more
        is moved, what was moved is moved back, ``aborted`` says why.

    rpo
        Publish a short ``test.sleep`` to every minion just before the fault and
        count the returns that arrived on some master (``returns_lost``; the
        ``ha_returns`` engine on the minions delivers them across the failover).

    Returns ``{"id", "mode", "test", "result", "gates": [{"gate", "ok", "reason",
    "fix"}], "plan", "minions": {id: {"from", "to", "rto_s", "ok", "error", "back",
    "return_arrived"}}, "rto": {"p50", "p95", "max"}, "failed": [ids],
    "jobs_in_flight", "returns_lost", "aborted", "restored", "started", "ended",
    "notes"}``. Fires ``salt/ha/drill/<id>/start``, ``.../progress`` and
    ``.../end`` on this master's bus; the report is kept (``ha.drill_history``)
    and written as metrics to ``ha:drill:textfile`` when set.

    CLI Example:

    .. code-block:: bash

        salt-run ha.drill test=True
        salt-run ha.drill tgt='web*' percent=10 budget=30
        salt-run ha.drill mode=hang master=master2 duration=30
    """
    request = ha_drill.drill_request(tgt=tgt, mode=mode, percent=percent, count=count, budget=budget, seed=seed,
                                     master=master, duration=duration, max_failed=max_failed, rpo=rpo)
    test = ha_validate.validate_flag(test, "test")
    return ha_drill_run.run(__opts__, _peers(), request, _progress(), test=test)


def drill_history(limit=10):
    """
    The reports of the last drills run from this master, newest first (refused
    and aborted ones included; ``test=True`` runs are not kept).

    CLI Example:

    .. code-block:: bash

        salt-run ha.drill_history
        salt-run ha.drill_history limit=1
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10000:
        raise SaltInvocationError(f"limit {limit!r} is not a whole number 1-10000")
    return ha_drill_history.history(__opts__, limit=limit)


def local_drill(action, minions=None, **kwargs):
    """
    A drill's work on this master, asked by the drilling master over salt-api
    (give the peer account this function): ``ping``, ``locate`` (which of
    ``minions`` are connected here), ``lint``, ``publish`` (the probe job),
    ``leave`` (``ha.leave_master`` to ``minions``), ``await`` (ping ``minions``
    until each answers here, ``budget`` seconds at most), ``freeze`` (this master,
    ``duration`` s from ``delay`` s on, only with ``ha:drill:allow_hang: True``).
    Every answer has ``master`` and ``now`` (this master's clock).

    CLI Example:

    .. code-block:: bash

        salt-run ha.local_drill ping
        salt-run ha.local_drill locate minions='["web1"]'
    """
    extra = {key: value for key, value in kwargs.items() if not key.startswith("__")}
    return ha_drill_local.run_action(__opts__, action, minions=minions, **extra)
