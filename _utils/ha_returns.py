"""
The returns guard of the ``ha_returns`` engine: no job return lost when the
minion changes master.

How a return travels in Salt 3008 (see the README): the job process fires
``__master_req_channel_payload/<request id>/<master>`` on the minion's local bus,
tagged with the master the job came from; the minion's main process sends it only
if that master is still its current one, and answers
``__master_req_channel_return/<request id>`` (``{"ret": ...}`` or, after its
retries, ``{"error": "timeout"}``). A return tagged for a master the minion has
left is skipped with no answer, and the job process drops it.

:class:`ReturnGuard` watches those events (it is pure logic: the engine feeds it
events and the time, and does what it asks). A return is *undelivered* when

- its answer is an error, or the master's request server said it did not take it:
  it answers a ``_return`` it stored with None, one whose storing raised with ``""``
  and one whose signature it dropped with False (:func:`refusal`). The storing
  raises in Salt's ``local_cache`` when several returns of a job this master did
  not publish arrive at once (one worker has written the job's ``.load.p`` and not
  yet its ``.minions.p``: saltstack/salt#68508), which is what replays after a
  failover do; the event of such a return is fired before the store fails, so a
  retried return can show twice on the master's bus, and once in its job cache;
- no answer came and the minion is connected to another master than the one it
  is tagged for (the main process skipped it), after ``grace`` seconds;
- no answer came within ``grace`` seconds and the minion connected to a master
  after the return was handed over: a return the main process tries to send while
  it switches masters fails inside Salt (its request channel is closed or None:
  "Error dispatching event") and nobody answers, even when the minion comes back
  to the return's own master;
- no answer came within ``answer_timeout`` seconds (the main process's own retry
  budget has passed).

An undelivered return is written to the ledger (:mod:`ha_ledger`) and replayed:
fired again on the local bus, tagged with the master the minion is connected to
*now*, so the main process sends it over its live channel. At least once: a
return whose first send reached a master that then died before answering can
arrive twice. A return still unanswered after ``grace`` is written to the ledger
too (and removed when its answer comes), so a restart of the minion loses nothing.
"""

import collections
import logging
import time
import uuid

from salt.exceptions import SaltInvocationError

import ha_connection
import ha_endpoints
import ha_ledger
import ha_probe
import ha_validate

log = logging.getLogger(__name__)

PAYLOAD_TAG = "__master_req_channel_payload/"
ANSWER_TAG = "__master_req_channel_return/"
CONNECTED_TAG = "__master_connected"
DISCONNECTED_TAG = "__master_disconnected"

DEFAULTS = {
    "max_age": 86400,  # seconds an undelivered return is kept (the masters' keep_jobs_seconds default)
    "max_bytes": 100 * 1024 * 1024,  # ledger size bound
    "grace": 1.0,  # seconds before an unanswered return is written to the ledger / judged skipped
    "answer_timeout": None,  # seconds to wait for the main process's answer; None: its retry budget + 5
    "retry_max": 60.0,  # longest wait between two replays of one return
    "replay_timeout": 10.0,  # seconds to wait for the answer to a replay before trying again
}
MAX_BYTES_LIMIT = 100 * 1024**3
TIMED_OUT_KEPT = 1000  # replays given up on whose late answer still counts


def _positive_int(value, what, minimum, maximum):
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SaltInvocationError(f"ha_returns {what} {value!r} is not a whole number in {minimum}-{maximum}")
    return value


def salt_retry_budget(opts):
    """Seconds the minion's main process may spend sending one return (its timer × tries)."""
    timer = opts.get("return_retry_timer_max") or opts.get("return_retry_timer") or 10
    tries = opts.get("return_retry_tries") or 3
    try:
        budget = float(timer) * int(tries)
    except (TypeError, ValueError):
        return 30.0
    return budget if budget > 0 else 30.0


def engine_config(options, opts):
    """
    The engine's options (``engines: [{ha_returns: {...}}]``) over the defaults,
    validated; raises ``SaltInvocationError`` naming the bad option and value.
    """
    options = options or {}
    if not isinstance(options, dict):
        raise SaltInvocationError(f"ha_returns options {options!r} are not a mapping")
    unknown = sorted(set(options) - set(DEFAULTS) - {"directory"}, key=str)
    if unknown:
        raise SaltInvocationError(f"ha_returns has no option {', '.join(map(repr, unknown))}")
    config = {**DEFAULTS, **options}
    config["max_age"] = _positive_int(config["max_age"], "max_age", 60, 30 * 86400)
    config["max_bytes"] = _positive_int(config["max_bytes"], "max_bytes", 1024 * 1024, MAX_BYTES_LIMIT)
    config["grace"] = ha_validate.validate_timeout(config["grace"], "ha_returns grace", maximum=60)
    config["retry_max"] = ha_validate.validate_timeout(config["retry_max"], "ha_returns retry_max", maximum=3600)
    config["replay_timeout"] = ha_validate.validate_timeout(config["replay_timeout"], "ha_returns replay_timeout")
    if config["answer_timeout"] is None:
        config["answer_timeout"] = salt_retry_budget(opts) + 5  # Salt's own budget: not capped at 300 s
    else:
        config["answer_timeout"] = ha_validate.validate_timeout(config["answer_timeout"], "ha_returns answer_timeout")
    directory = config.get("directory") or default_directory(opts)
    if not isinstance(directory, str) or not directory.startswith("/"):
        raise SaltInvocationError(f"ha_returns directory {directory!r} is not an absolute path")
    config["directory"] = directory
    return config


def default_directory(opts):
    """The ledger folder under the minion's cachedir."""
    return f"{str(opts.get('cachedir') or '/var/cache/salt/minion').rstrip('/')}/ha_returns"


def configured_options(opts):
    """
    The ``ha_returns`` entry of the minion's ``engines`` option: its options
    (``{}`` when it has none; a value that is not a mapping as it is, for
    :func:`engine_config` to refuse), or None when the engine is not configured.
    """
    engines = opts.get("engines") or []
    if isinstance(engines, dict):
        engines = [{name: options} for name, options in engines.items()]
    for item in engines:
        if item == "ha_returns":
            return {}
        if isinstance(item, dict) and "ha_returns" in item:
            options = item["ha_returns"] or {}
            return dict(options) if isinstance(options, dict) else options
    return None


def connected_masters(opts, minion_pid, timeout=1):
    """
    The masters (as Salt names them in a return's tag: the host of the entry) whose
    publish port the minion's main process ``minion_pid`` (the engine's parent) holds
    an ESTABLISHED connection to, in the order of its master list: one for a failover
    minion, several for a multi-master one. Only that process counts: a job process
    forked before a failover holds a copy of the old master's socket until it ends.
    """
    remotes = ha_connection.process_remotes(minion_pid)
    connected = []
    for endpoint in ha_endpoints.master_endpoints(opts):
        try:
            addresses = ha_probe.resolve(endpoint.host, timeout)
        except OSError as err:
            log.debug("salt-ha returns: %s", err)
            continue
        entry = {"addresses": addresses, "ret_port": endpoint.ret_port, "publish_port": endpoint.publish_port}
        if ha_connection.is_connected(entry, remotes) and endpoint.host not in connected:
            connected.append(endpoint.host)
    return connected


def refusal(answer):
    """
    Why the master did not take a return, read from the main process's answer
    ``{"ret": ...}`` or ``{"error": ...}``; None when it took it. Salt's request
    server answers None for a ``_return`` it stored, ``""`` when storing it raised
    (``run_func``), False when it dropped it for its signature.
    """
    if "error" in answer:
        return str(answer.get("error"))
    ret = answer.get("ret")
    if isinstance(ret, str) and not ret:
        return "its request server failed to store it"
    if ret is False:
        return "its request server dropped it (signature check)"
    return None


def replay_load(load, minion_id, from_master, reason):
    """
    The load to replay: the original, plus what a master that never saw the job
    needs to store it (``tgt``/``tgt_type``: Salt's ``local_cache`` cannot look a
    job up without them) and ``ha_replay`` saying where it came from. A signed
    load is replayed unchanged (its signature covers every key).
    """
    replayed = dict(load)
    if "sig" in replayed:
        return replayed
    replayed.setdefault("tgt", minion_id)
    replayed.setdefault("tgt_type", "glob")
    replayed["ha_replay"] = {"from": from_master, "reason": reason}
    return replayed


class ReturnGuard:
    """
    The engine's state: returns in flight, undelivered ones, replays in flight.

    ``locate()`` (given by the engine) lists the masters the minion daemon is
    connected to now (read from its sockets); :attr:`hint` is the master the bus
    last said it connected to, preferred among them.
    """

    def __init__(self, minion_id, ledger, config, locate, clock=time.time):
        self.minion_id = minion_id
        self.ledger = ledger
        self.config = config
        self.locate = locate
        self.clock = clock
        self.hint = None
        self.connected_at = None  # when the bus last said the minion connected to a master
        self.in_flight = {}  # Salt's own sends: request id -> entry
        self.undelivered = {}  # key -> entry (in the ledger)
        self.replays = {}  # our replay request id -> (key, target, fired at)
        self.timed_out = collections.OrderedDict()  # replays given up on, whose answer may still come
        self.findings = []

    # --- start ---------------------------------------------------------------

    def restore(self):
        """Load the ledger (bounds enforced); returns the findings about skipped files."""
        entries, self.findings = self.ledger.load()
        for finding in self.findings:
            log.warning("salt-ha returns: skipping ledger file %s: %s", finding["path"], finding["reason"])
        kept, _dropped = self.ledger.enforce(entries, self.config["max_age"], self.config["max_bytes"], self.clock())
        for entry in kept:
            entry.update(next_try=0, persisted=True)
            self.undelivered[entry["key"]] = entry
        if kept:
            log.warning("salt-ha returns: %d undelivered job return(s) in the ledger, replaying", len(kept))
        return self.findings

    # --- events --------------------------------------------------------------

    def on_event(self, tag, data):
        """Feed one event of the minion's bus."""
        if not isinstance(tag, str) or not isinstance(data, dict):
            return
        if tag.startswith(PAYLOAD_TAG):
            self._on_payload(tag, data)
        elif tag.startswith(ANSWER_TAG):
            self._on_answer(tag[len(ANSWER_TAG):], data)
        elif tag == CONNECTED_TAG and isinstance(data.get("master"), str):
            self.hint = data["master"]
            self.connected_at = self.clock()
            for entry in self.undelivered.values():
                entry["next_try"] = 0  # a new master: try at once
        elif tag == DISCONNECTED_TAG and data.get("master") == self.hint:
            self.hint = None

    def _on_payload(self, tag, load):
        request_id, _sep, master = tag[len(PAYLOAD_TAG):].partition("/")
        if request_id in self.replays or load.get("cmd") != "_return" or load.get("id") != self.minion_id:
            return
        self.in_flight[request_id] = {
            "key": uuid.uuid4().hex, "request_id": request_id, "minion": self.minion_id, "master": master,
            "seen": self.clock(), "load": load, "attempts": 0, "persisted": False,
        }
        if self.hint is not None and master != self.hint:
            self._judge(request_id)

    def _on_answer(self, request_id, answer):
        if request_id in self.replays:
            self._on_replay_answer(request_id, answer)
            return
        if request_id in self.timed_out:
            self.replays[request_id] = self.timed_out.pop(request_id)
            if refusal(answer) is None:  # a late success: delivered, do not send it again
                self._on_replay_answer(request_id, answer)
            else:
                del self.replays[request_id]
            return
        entry = self.in_flight.pop(request_id, None)
        if entry is None:
            self._answered_after_replay(request_id, answer)
            return
        why = refusal(answer)
        if why is not None:
            self._undelivered(entry, f"{entry['master']} did not take it ({why})")
            return
        self.hint = self.hint or entry["master"]
        if entry["persisted"]:
            self.ledger.remove(entry["key"])

    def _answered_after_replay(self, request_id, answer):
        """The first send of a return already judged undelivered was answered after all."""
        for key, entry in list(self.undelivered.items()):
            if entry.get("request_id") == request_id and refusal(answer) is None:
                if any(replay_key == key for replay_key, _target, _at in self.replays.values()):
                    log.info("salt-ha returns: job %s reached %s late; its replay may arrive twice",
                             entry["load"].get("jid"), entry["master"])
                    return
                del self.undelivered[key]
                self.ledger.remove(key)
                return

    def _on_replay_answer(self, request_id, answer):
        key, target, fired = self.replays.pop(request_id)
        entry = self.undelivered.get(key)
        if entry is None:
            return
        why = refusal(answer)
        if why is not None:
            self._retry_later(entry, f"{target} did not take the replay ({why})")
            return
        del self.undelivered[key]
        self.ledger.remove(key)
        now = self.clock()
        self.ledger.record("replayed", {
            **ha_ledger.summary(entry), "to": target, "at": now, "answer_seconds": round(now - fired, 3),
        })
        log.warning("salt-ha returns: delivered the return of job %s (published by %s) to %s",
                    entry["load"].get("jid"), entry["master"], target)

    def busy(self):
        """True while a return is in flight, undelivered or being replayed (the clock matters)."""
        return bool(self.in_flight or self.undelivered or self.replays)

    def due(self):
        """
        True when :meth:`tick` would act now: a return in flight past ``grace``, a
        replay past ``replay_timeout``, or an undelivered return due for a try. Until
        then, events still queued need not be read before the clock work.
        """
        now = self.clock()
        return (any(now - entry["seen"] >= self.config["grace"] for entry in self.in_flight.values())
                or any(now - fired >= self.config["replay_timeout"] for _key, _target, fired in self.replays.values())
                or bool(self._due_undelivered(now)))

    # --- time ----------------------------------------------------------------

    def tick(self):
        """
        Judge returns in flight, time out replays, and return the undelivered
        entries due for a replay now (oldest first).
        """
        now = self.clock()
        for request_id, entry in list(self.in_flight.items()):
            age = now - entry["seen"]
            if age >= self.config["answer_timeout"]:
                self.in_flight.pop(request_id)
                self._undelivered(entry, f"no answer from the minion's main process in {age:.0f} s")
            elif age >= self.config["grace"]:
                self._persist(entry)
                self._judge(request_id)
                if request_id in self.in_flight and self._switched_since(entry):
                    self.in_flight.pop(request_id)
                    self._undelivered(entry, f"the minion connected to {self.hint or 'a master'} while sending it "
                                             "(Salt drops a return caught in a change of master)")
        for request_id, (key, target, fired) in list(self.replays.items()):
            if now - fired >= self.config["replay_timeout"]:
                self.timed_out[request_id] = self.replays.pop(request_id)
                while len(self.timed_out) > TIMED_OUT_KEPT:
                    self.timed_out.popitem(last=False)
                if key in self.undelivered:
                    self._retry_later(self.undelivered[key], f"no answer to the replay to {target}")
        return sorted(self._due_undelivered(now), key=lambda entry: entry["seen"])

    def _judge(self, request_id):
        """A return in flight whose master the minion is no longer connected to was skipped: undelivered."""
        entry = self.in_flight[request_id]
        connected = self.locate()
        if connected and entry["master"] not in connected:
            self.in_flight.pop(request_id)
            self._undelivered(entry, f"the minion moved from {entry['master']} to {connected[0]} before it returned")

    def _switched_since(self, entry):
        """The minion connected to a master after ``entry`` was handed to the main process."""
        return self.connected_at is not None and self.connected_at > entry["seen"]

    def target(self):
        """The master to replay to: the one the bus named if the daemon is connected to it, else the first; or None."""
        connected = self.locate()
        if self.hint in connected:
            return self.hint
        return connected[0] if connected else None

    def due_replays(self, no_master_retry=1.0):
        """
        :meth:`tick`, then a replay ``(tag, load)`` to fire for each return due, to
        :meth:`target`; with no master connected they wait ``no_master_retry`` seconds.
        """
        fired = []
        for entry in self.tick():
            target = self.target()
            if target is None:
                self.postpone(entry, no_master_retry)
                continue
            fired.append(self.replay(entry, target))
        return fired

    def replay(self, entry, target):
        """Mark ``entry`` as replayed to ``target`` now; returns ``(tag, load)`` to fire."""
        request_id = str(uuid.uuid4())
        self.replays[request_id] = (entry["key"], target, self.clock())
        entry["attempts"] = entry.get("attempts", 0) + 1
        self._persist(entry, force=True)  # the attempt counts also across a restart
        load = replay_load(entry["load"], self.minion_id, entry["master"], entry.get("reason"))
        return f"{PAYLOAD_TAG}{request_id}/{target}", load

    def postpone(self, entry, seconds):
        """No master to replay to now: look again in ``seconds``."""
        entry["next_try"] = self.clock() + seconds

    def enforce_bounds(self):
        """Apply ``max_age``/``max_bytes`` to the undelivered returns (dropped ones are recorded)."""
        replaying = self._replaying()
        entries = [entry for key, entry in self.undelivered.items() if key not in replaying]
        _kept, dropped = self.ledger.enforce(entries, self.config["max_age"], self.config["max_bytes"], self.clock())
        for entry in dropped:
            self.undelivered.pop(entry["key"], None)
        return dropped

    def flush(self):
        """On shutdown: every return still in flight goes to the ledger (at least once)."""
        for entry in list(self.in_flight.values()):
            self._persist(entry)

    # --- helpers -------------------------------------------------------------

    def _replaying(self):
        """Keys of the undelivered returns whose replay is out."""
        return {key for key, _target, _fired in self.replays.values()}

    def _due_undelivered(self, now):
        """The undelivered returns due for a try at ``now`` (none whose replay is out)."""
        replaying = self._replaying()
        return [entry for key, entry in self.undelivered.items() if key not in replaying and entry["next_try"] <= now]

    def _undelivered(self, entry, reason):
        entry["reason"] = reason
        entry["next_try"] = 0
        self.undelivered[entry["key"]] = entry
        self._persist(entry, force=True)
        log.warning("salt-ha returns: the return of job %s was not delivered: %s", entry["load"].get("jid"), reason)

    def _retry_later(self, entry, reason):
        delay = min(self.config["retry_max"], 2.0 ** min(entry.get("attempts", 1), 16))
        entry["next_try"] = self.clock() + delay
        log.warning("salt-ha returns: job %s: %s; next try in %.0f s", entry["load"].get("jid"), reason, delay)
        self._persist(entry, force=True)

    def _persist(self, entry, force=False):
        if entry["persisted"] and not force:
            return
        stored = {k: v for k, v in entry.items() if k not in ("persisted", "next_try", "size")}
        try:
            entry["size"] = self.ledger.save(stored)
            entry["persisted"] = True
        except (OSError, ValueError) as err:
            log.error("salt-ha returns: cannot write job %s to the ledger (kept in memory only): %s",
                      entry["load"].get("jid"), err)


def ledger_report(opts):
    """
    What ``salt-call ha.returns`` shows: ``{"enabled", "config_error", "directory",
    "pending": [...], "replayed": [...], "dropped": [...], "counts", "findings"}``.
    Pending entries name the job, its function, the master it was published by and
    why it is undelivered (never the return data); replayed and dropped ones are the
    newest first, as the engine recorded them.
    """
    options = configured_options(opts)
    config_error = None
    try:
        directory = engine_config(options, opts)["directory"]
    except SaltInvocationError as err:
        config_error = str(err)
        directory = default_directory(opts)
    ledger = ha_ledger.Ledger(directory, opts.get("id"))
    entries, findings = ledger.load()
    history = ledger.read_history()
    return {
        "enabled": options is not None,
        "config_error": config_error,
        "directory": directory,
        "pending": [{**ha_ledger.summary(entry), "bytes": entry["size"]} for entry in entries],
        "replayed": history["replayed"],
        "dropped": history["dropped"],
        "counts": {**history["counts"], "pending": len(entries)},
        "findings": findings,
    }
