"""
Transitions of a minion's masters, for the ``ha`` beacon (through ``ha.watch``).

One *tick* is one observation: which master the minion daemon is connected to and
which configured masters answered the application-level probe. :func:`observe`
compares it with the *memory* the previous tick left (plain JSON-able data) and
returns the new memory, the transition events to fire and, when the connected
master hangs, the master to leave. :func:`confirmed_connection` and :func:`tick`
add what the daemon needs (Salt's ``master`` option names each candidate while it
signs in). All of that is pure; :func:`tick_probe` is the lean network probe
(ping only, one thread per master, one ZeroMQ context per process) and
:class:`ProbeWorker` runs it off the minion's main loop.

Transitions (``from``/``to`` are masters for the first three, health levels
``ok``/``degraded``/``lost`` for the next three):

``connected``
    the minion is connected to a master and was not at the previous tick (start-up).
``failover``
    the connected master changed to one that is not the first of the list;
    ``reason`` is ``hang`` (the beacon left a master that stopped answering),
    ``closed`` (the old master does not answer: killed, stopped, unreachable) or
    ``disconnected`` (the old master answers; Salt left it anyway). With the probe
    worker, a change seen while the old master's latest probe said it answers waits
    for a probe round that started after the change (:func:`observe`'s ``probed``):
    a round from before a kill would call a killed master ``disconnected``.
``failback``
    the connected master changed back to the first master of the list.
``lost``
    no master answers any more.
``degraded``
    a master stopped answering while another still answers (also fired when a
    further master goes down while already degraded, and at start-up).
``recovered``
    health improved: ``lost`` → ``degraded``/``ok`` or ``degraded`` → ``ok``.
``flapping``
    a master changed between up and down ``flap_count`` times within
    ``flap_window`` seconds (``master`` names it; ``from``/``to`` are health levels).

Flapping damping (hysteresis, as Nagios does it): every up/down change of a
master's probe result is time-stamped; changes older than ``flap_window`` are
forgotten. When a master has ``flap_count`` changes in the window it is
*flapping*: ``flapping`` fires once, and the master counts as down (it cannot be
trusted as a failover target) whatever its probe says, so its further changes
fire nothing. It stops flapping once it has gone ``flap_window`` seconds without
a change; its real state then counts again (``recovered`` fires if it is up).

Hang detection: the connected master is left when it has answered no probe for
``hang_ticks`` x ``probe_interval`` seconds (:func:`hang_seconds`) while another
master is up (and not flapping): :func:`observe` names it in ``leave`` once. The
silence is measured by the worker's probes, from the start of the first failed
probe to the end of the latest, so a master that stalls for less than that and
answers again (busy, paused) is never left, and the detection does not depend on
the beacon's ``interval``. Without a worker (``ha.watch`` by hand) each failed
observation counts as one ``probe_interval``. A ``leave`` that did not move the
minion is repeated after another ``hang_seconds`` of silence. The ``failover``
that follows carries ``reason: hang`` and ``since`` = the start of the first
failed probe.

Events are held back while the connected master does not answer (they would be
sent to it and lost; a request to a hung master would also sit in the minion's
event handling) and released at the first tick where it answers, usually right
after the failover, each with the ``since`` of its own transition. At most
``PENDING_LIMIT`` are held (the oldest are dropped).

Front doors (a VIP, a balancer or a DNS name in front of several masters): the
master answering the probes of an address may not be the one holding the minion's
connections. The connected master is *suspect* (``memory["suspect"]``) from its first
failed probe until it has answered again for ``VERIFY_SECONDS``, and for that long
after its address's ARP entry changed host (``tick``'s ``neighbours``: a VIP moved
with every probe answered); meanwhile events are held back and the caller checks the
minion's connections to it (``ha_conncheck``: short TCP keepalive, so a connection
the host behind the address no longer holds is reset and Salt reconnects). The probe
worker starts that check itself in the round where the connected master
(:func:`follow_connection`) first fails, without waiting for a tick. A name that
resolves to other addresses than at the previous tick while the minion's publish
connection goes to none of them (:func:`address_moved`: DNS switched) is left like a
hung master, so that Salt resolves it again.

A probe that fails with an unexpected exception (a fault of the probe, not an
answer of the network) is logged as a warning naming the master and the
exception, and leaves that master's memory as it was (:func:`tick`); so does a
result of the worker that is stale (older than ``STALE_ROUNDS`` rounds).

Probes off the loop: a tick runs on the minion's main loop and must never wait on
the network. :func:`probe_worker` keeps one :class:`ProbeWorker` (a daemon thread)
per beacon name in this process; it probes every master each ``probe_interval``
seconds (a round lasts at most ``timeout``) and keeps only its latest round; a
tick reads that (:func:`worker_results`) and never waits. The first tick starts
the worker, a tick with another configuration (masters, ports, timeout,
probe_interval, transport) restarts it; it stops on :func:`stop_worker` (the
beacon's ``close``), when no tick has read it for ``IDLE_SECONDS`` (beacon
disabled or removed), and at interpreter exit. A process forked from the minion
(a job) inherits no running worker: the registry checks ``os.getpid()``.
"""

import atexit
import datetime
import itertools
import logging
import numbers
import os
import threading
import time

import salt.utils.beacons

import ha_conncheck
import ha_connection
import ha_probe
import ha_text

log = logging.getLogger(__name__)

TRANSITIONS = ("connected", "failover", "failback", "lost", "degraded", "recovered", "flapping")
HEALTH_RANK = {"lost": 0, "degraded": 1, "ok": 2}
PENDING_LIMIT = 50

# The recommended settings (README, beacon section): a tick every second that
# costs well under a millisecond; probes every 0.5 s off the loop, each waiting up
# to 1 s for an answer; a connected master silent for 4 x 0.5 = 2 s is left (a
# master that stalls for 1.5 s and answers again is not).
DEFAULTS = {
    "interval": 1,
    "timeout": 1,
    "probe_interval": 0.5,
    "hang_ticks": 4,
    "failover_on_hang": True,
    "flap_count": 4,
    "flap_window": 60,
}
# Keys Salt's beacon framework adds or handles itself.
FRAMEWORK_KEYS = frozenset({"_beacon_name", "enabled", "beacon_module", "disable_during_state_run", "run_once"})
# A probe that gets no answer may end a millisecond before its timeout (ZeroMQ
# polls in whole milliseconds): silence this much short of hang_seconds counts.
HANG_SLACK = 0.05


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def beacon_options(config):
    """
    The beacon config as one dict: a list of one-key dicts (the usual form, merged
    with Salt's own ``salt.utils.beacons.list_to_dict``) or a dict.

    Raises ``ValueError`` naming the bad value.
    """
    if isinstance(config, dict):
        return dict(config)
    if not isinstance(config, list):
        raise ValueError(f"configuration of the ha beacon must be a list of dicts, not {config!r}")
    for item in config:
        if not isinstance(item, dict):
            raise ValueError(f"item {item!r} of the ha beacon configuration is not a dict")
    return salt.utils.beacons.list_to_dict(config)


def settings_from(config):
    """
    Validated settings (defaults filled in) from a beacon config; ``ValueError``
    names the first bad key and value.
    """
    given = beacon_options(config)
    unknown = sorted(str(key) for key in given if key not in DEFAULTS and key not in FRAMEWORK_KEYS)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(repr(key) for key in unknown)} for the ha beacon "
            f"(known: {', '.join(sorted(DEFAULTS))})"
        )
    settings = {key: given.get(key, default) for key, default in DEFAULTS.items()}
    checks = (
        ("interval", _is_number, lambda v: v > 0, "a number of seconds > 0"),
        ("timeout", _is_number, lambda v: 0 < v <= 300, "a number of seconds in (0, 300]"),
        ("probe_interval", _is_number, lambda v: 0.1 <= v <= 300, "a number of seconds in [0.1, 300]"),
        ("hang_ticks", _is_int, lambda v: v >= 1, "an integer >= 1"),
        ("failover_on_hang", lambda v: isinstance(v, bool), lambda v: True, "True or False"),
        ("flap_count", _is_int, lambda v: v >= 2, "an integer >= 2"),
        ("flap_window", _is_number, lambda v: v > 0, "a number of seconds > 0"),
    )
    for key, type_ok, range_ok, expected in checks:
        value = settings[key]
        if not type_ok(value) or not range_ok(value):
            raise ValueError(f"ha beacon option {key}: {value!r} is not {expected}")
    return settings


def validate(config):
    """``(True, message)`` for a good beacon config, else ``(False, message naming the bad value)``."""
    try:
        settings_from(config)
    except ValueError as err:
        return False, str(err)
    return True, "Valid beacon configuration"


def hang_seconds(settings):
    """Seconds without an answer after which the connected master is left: ``hang_ticks`` x ``probe_interval``."""
    return settings["hang_ticks"] * settings["probe_interval"]


def new_memory():
    """The memory before the first tick."""
    return {
        "started": False,
        "connected": None,
        "health": None,
        "raw": {},
        "changes": {},
        "flapping": {},
        "hang": None,
        "leaving": None,
        "pending": [],
        "candidate": None,
        "suspect": None,
        "addresses": None,
        "neighbours": None,
        "deferred": None,
    }


def iso(timestamp):
    """A POSIX timestamp as ISO 8601 UTC text."""
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).isoformat()


def health_of(up, total):
    """``ok`` (all up), ``degraded`` (some up) or ``lost`` (none up)."""
    if total and up == total:
        return "ok"
    return "degraded" if up else "lost"


def _track_flapping(memory, raw, now, settings):
    """Update change times and flapping flags; return the masters that started flapping."""
    window_start = now - settings["flap_window"]
    started = []
    for master, up in raw.items():
        changes = [t for t in memory["changes"].get(master, []) if t > window_start]
        if master in memory["raw"] and memory["raw"][master] != up:
            changes.append(now)
        if changes:
            memory["changes"][master] = changes
        else:
            memory["changes"].pop(master, None)
        if master in memory["flapping"]:
            if not changes:
                del memory["flapping"][master]
        elif len(changes) >= settings["flap_count"]:
            memory["flapping"][master] = changes[0]
            started.append(master)
    return started


def _connection_event(previous, connected, primary, raw, memory, now):
    """The connection transition between two ticks, as ``(name, extra, since)`` or None."""
    if not connected or connected == previous:
        return None
    if not previous:
        return "connected", {}, now
    leaving = memory["leaving"]
    if leaving and leaving["master"] == previous:
        return "failover", {"reason": "hang"}, leaving["since"]
    if connected == primary:
        return "failback", {"reason": "failback"}, now
    reason = "disconnected" if raw.get(previous) else "closed"
    return "failover", {"reason": reason}, now


def _health_event(previous, health, newly_down):
    """The health transition between two ticks, or None."""
    if previous is None:
        return None if health == "ok" else health
    if HEALTH_RANK[health] < HEALTH_RANK[previous]:
        return health
    if HEALTH_RANK[health] > HEALTH_RANK[previous]:
        return "recovered"
    if health == "degraded" and newly_down:
        return "degraded"
    return None


def _check_hang(memory, connected, raw, reported, now, settings, silence):
    """
    Track how long the connected master has answered no probe; return it when it
    is time to leave it.

    ``silence`` is the worker's measure for the connected master (``{"since",
    "seconds", "probes"}``: start of the first failed probe, seconds from there to
    the end of the latest, failed probes), or None: this observation is one
    failed probe of ``probe_interval`` seconds.
    """
    if not connected or connected not in raw or raw[connected]:
        memory["hang"] = None
        return None
    hang = memory["hang"] if memory["hang"] and memory["hang"]["master"] == connected else None
    if silence is None:
        silence = {
            "since": hang["since"] if hang else now,
            "seconds": (hang["seconds"] if hang else 0) + settings["probe_interval"],
            "probes": (hang["probes"] if hang else 0) + 1,
        }
    # Seconds of this silence already answered with a leave (a new silence starts at 0),
    # by a tick or by the probe worker (``left`` in its measure).
    left = max(hang["left"] if hang and hang["since"] == silence["since"] else 0, silence.get("left", 0))
    hang = {"master": connected, "since": silence["since"], "seconds": silence["seconds"],
            "probes": silence["probes"], "left": left}
    memory["hang"] = hang
    others_up = any(up for master, up in reported.items() if master != connected)
    due = hang["seconds"] - left >= hang_seconds(settings) - HANG_SLACK
    if not settings["failover_on_hang"] or not due or not others_up:
        return None
    memory["leaving"] = {"master": connected, "at": now, "since": hang["since"]}
    hang["left"] = hang["seconds"]
    return connected


# After the connected master answers again following a silence, its connections stay
# under check (short TCP keepalive, ha_conncheck) and events stay held back this long:
# the master that answers now may not be the one holding the minion's connections (a
# VIP that moved), and an event sent on a dead connection costs Salt 5 s at the switch.
VERIFY_SECONDS = 3


def _track_suspect(suspect, connected, raw, now):
    """
    The connected master's *suspect* record: ``{"master", "since", "answered"}`` from
    its first failed probe until it has answered again for :data:`VERIFY_SECONDS`
    (``answered``: when it first answered again, None while silent); None otherwise.
    """
    if not connected or connected not in raw:
        return None
    if suspect and suspect["master"] != connected:
        suspect = None
    if not raw[connected]:
        return {"master": connected, "since": suspect["since"] if suspect else now, "answered": None}
    if not suspect:
        return None
    answered = suspect["answered"] if suspect["answered"] is not None else now
    if now - answered >= VERIFY_SECONDS:
        return None
    return {**suspect, "answered": answered}


# Longest wait for a probe round that can name a failover's reason (a worker that
# fell behind): the failover then fires with the latest results.
DEFER_LIMIT_SECONDS = 10


def _round_started_after(probed, since, settings):
    """A probe round that ended at ``probed`` started after ``since`` (a round lasts at most ``timeout``)."""
    return probed - settings["timeout"] >= since


def _release_deferred(memory, raw, probed, now, settings, emit, force=False):
    """Fire the failover held for a fresh probe round, once there is one (or ``force``, or too long)."""
    deferred = memory["deferred"]
    if not deferred:
        return
    judged = probed is None or _round_started_after(probed, deferred["since"], settings)
    if not (judged or force or now - deferred["since"] >= DEFER_LIMIT_SECONDS):
        return
    reason = "disconnected" if raw.get(deferred["from"]) else "closed"
    emit("failover", deferred["from"], deferred["to"], deferred["since"], reason=reason)
    memory["deferred"] = None


def observe(memory, probes, connected, primary, now, settings, silence=None, probed=None):
    """
    One tick.

    memory
        What the previous call returned (``None`` or :func:`new_memory` at first).
    probes
        ``{master: up}`` for every configured master, from the application-level probe.
    connected
        The master the minion daemon is connected to, or None.
    primary
        The first master of the configured list (the failback target).
    now
        POSIX time of this tick.
    settings
        From :func:`settings_from`.
    silence
        How long the connected master has answered no probe, measured by the
        worker (see :func:`_check_hang`); None: this tick is one failed probe.
    probed
        When the probe round of ``probes`` ended (the worker's; POSIX time), or
        None for probes taken for this tick. A failover to be called
        ``disconnected`` (the old master answered) is held until a round that
        started after the change says whether the old master still answers.

    Returns ``(memory, events, leave)``: the new memory, the events to fire now
    (each with ``tag`` = the transition) and the master to leave because it
    hangs (or None).
    """
    memory = _copy_memory(memory)
    raw = {master: bool(up) for master, up in probes.items()}
    events = []

    def emit(transition, source, target, since, **extra):
        events.append({"tag": transition, "transition": transition, "from": source, "to": target,
                       "since": iso(since), **extra})

    previous_down = [m for m, was_up in memory["raw"].items() if not was_up or m in memory["flapping"]]
    flapping_started = _track_flapping(memory, raw, now, settings)
    reported = {master: up and master not in memory["flapping"] for master, up in raw.items()}
    up = sum(1 for value in reported.values() if value)
    down = [master for master, value in reported.items() if not value]

    previous = memory["connected"]
    change = _connection_event(previous, connected, primary, raw, memory, now)
    _release_deferred(memory, raw, probed, now, settings, emit, force=bool(change))
    if change:
        name, extra, since = change
        if extra.get("reason") == "disconnected" and probed is not None \
                and not _round_started_after(probed, since, settings):
            memory["deferred"] = {"from": previous, "to": connected, "since": since}
        else:
            emit(name, previous, connected, since, **extra)
    if memory["leaving"] and memory["leaving"]["master"] != connected:
        memory["leaving"] = None

    health = health_of(up, len(reported))
    newly_down = [m for m in down if m not in previous_down and m in memory["raw"]]
    transition = _health_event(memory["health"], health, newly_down)
    if transition:
        emit(transition, memory["health"], health, now)
    for master in flapping_started:
        emit("flapping", memory["health"], health, memory["flapping"][master], master=master)

    leave = _check_hang(memory, connected, raw, reported, now, settings, silence)
    memory["suspect"] = _track_suspect(memory.get("suspect"), connected, raw, now)
    for event in events:
        event.update({"up": up, "total": len(reported), "down": list(down)})
    memory.update(started=True, connected=connected, health=health, raw=raw)
    memory["pending"] = (memory["pending"] + events)[-PENDING_LIMIT:]
    if connected in raw and (not raw[connected] or memory["suspect"]):
        return memory, [], leave  # held back: nobody would receive them, or the connection is in doubt
    released, memory["pending"] = memory["pending"], []
    return memory, released, leave


CONFIRM_TICKS = 3


def confirmed_connection(previous, candidate, masters, remotes, seen=1):
    """
    The master to report as connected at this tick.

    While Salt evaluates masters it sets its ``master`` option to each candidate
    before the candidate has accepted the minion; an event fired then is dropped
    (the minion is not connected). A change of master counts only once the
    process holds an ESTABLISHED connection to the candidate's publish port,
    which Salt opens after the authentication succeeded; until then the previous
    master is reported.

    masters
        ``ha.status``-style entries (``master``, ``addresses``, ``publish_port``).
    remotes
        ``{(ip, port)}`` of the process's ESTABLISHED connections, or a callable
        returning them (called only when the master changed).
    seen
        On how many consecutive ticks ``candidate`` was Salt's ``master``. From
        ``CONFIRM_TICKS`` on it counts without the socket proof (a transport or
        a NAT the check does not know must not hide the master forever).
    """
    if not candidate or candidate == previous or seen >= CONFIRM_TICKS:
        return candidate
    entry = next((m for m in masters if m["master"] == candidate), None)
    if entry is None:
        return candidate
    if callable(remotes):
        remotes = remotes()
    addresses = {ha_connection.normalize_ip(address) for address in entry["addresses"]}
    if any(
        ha_connection.normalize_ip(ip) in addresses and port == entry["publish_port"]
        for ip, port in remotes
    ):
        return candidate
    return previous


def configured_entry(connected, endpoints):
    """
    The configured entry for the daemon's ``master`` option, which keeps only the
    host of a ``host:port`` entry (an exact entry wins). None for no master.
    """
    if not connected or not isinstance(connected, str):
        return None
    for match in (lambda ep: ep.master == connected, lambda ep: ep.host == connected):
        for endpoint in endpoints:
            if match(endpoint):
                return endpoint.master
    return connected


def _silence_for(memory, entry, connected, now):
    """
    What :func:`observe` gets as ``silence`` for the connected master's ``entry``:
    the worker's measure, None to count this tick as one probe (no worker), or,
    when the probe itself failed or is stale (``up`` None), the measure the
    memory already holds: no news is no progress of a hang.
    """
    if entry is None:
        return None
    if entry["up"] is None:
        hang = memory.get("hang")
        if hang and hang["master"] == connected:
            return {key: hang[key] for key in ("since", "seconds", "probes")}
        return {"since": now, "seconds": 0, "probes": 0}
    return entry.get("silence")


def tick(memory, masters, current, primary, now, settings, remotes=None, neighbours=None, probed=None):
    """
    One tick as the beacon runs it: :func:`confirmed_connection` (when ``remotes``
    is given: from inside the daemon) then :func:`observe`.

    masters
        :func:`tick_probe` entries, or the worker's (:func:`worker_results`, which
        add ``silence``). A master whose probe failed with a fault of the probe
        itself or whose result is stale (``up`` None) keeps the memory it had at
        the previous tick (down when it had none): that is no news about the
        master, and must not move the minion.
    current
        The configured entry of Salt's ``master`` option now (:func:`configured_entry`).
    remotes
        With it (from inside the daemon), a change of master counts once confirmed
        (:func:`confirmed_connection`), and a name that moved is left (:func:`address_moved`).
    neighbours
        A callable ``addresses -> {ip: link-layer address}`` (``ha_conncheck.neighbours``):
        when the connected master's address is at another host than at the previous
        tick (a VIP that moved, even without a failed probe), the master becomes
        *suspect* for :data:`VERIFY_SECONDS` (its connections are checked).
    probed
        When the worker's round of ``masters`` ended (None: probed for this tick);
        see :func:`observe`.

    Returns ``(memory, events, leave)``; ``leave`` is ``current`` or None (never a
    master Salt is no longer on).
    """
    memory = memory or {}
    pending = memory.get("candidate") or {}
    seen = pending.get("ticks", 0) + 1 if pending.get("master") == current else 1
    connected = current
    if remotes is not None:
        connected = confirmed_connection(memory.get("connected"), current, masters, remotes, seen)
    memory = _note_worker_leave(memory, masters)
    previous = memory.get("raw") or {}
    probes = {
        entry["master"]: previous.get(entry["master"], False) if entry["up"] is None else entry["up"]
        for entry in masters
    }
    entry = next((entry for entry in masters if entry["master"] == connected), None)
    silence = _silence_for(memory, entry, connected, now)
    same_master = memory.get("connected") == connected
    previous_addresses = memory.get("addresses") if same_master else None
    previous_neighbours = memory.get("neighbours") if same_master else None
    memory, events, leave = observe(memory, probes, connected, primary, now, settings, silence, probed)
    memory["candidate"] = None if connected == current else {"master": current, "ticks": seen}
    if entry is not None and entry.get("addresses"):
        if neighbours is not None:
            _check_neighbours(memory, previous_neighbours, neighbours(entry["addresses"]), connected, now)
        memory["addresses"] = list(entry["addresses"])
        if remotes is not None and leave is None and address_moved(previous_addresses, entry, remotes):
            log.warning(
                "salt-ha: master %r now resolves to %s, and this minion's connection goes elsewhere; reconnecting",
                connected, ", ".join(entry["addresses"]),
            )
            leave = connected
    return memory, events, (leave if leave == current else None)


def _note_worker_leave(memory, masters):
    """
    The probe worker left the master the memory says the minion is on (its silence
    carries ``left``): the failover that follows, maybe seen only now, is a ``hang``.
    """
    connected = memory.get("connected")
    entry = next((item for item in masters if item["master"] == connected), None)
    silence = (entry or {}).get("silence") or {}
    leaving = memory.get("leaving") or {}
    if not silence.get("left") or (leaving.get("master") == connected and leaving.get("since") == silence["since"]):
        return memory
    return {**memory, "leaving": {"master": connected, "at": silence["since"] + silence["left"],
                                  "since": silence["since"]}}


def _check_neighbours(memory, previous, seen, connected, now):
    """Keep the connected master's neighbour entries; make it suspect when one of them changed host."""
    memory["neighbours"] = seen
    moved = sorted(ip for ip, mac in seen.items() if previous and ip in previous and previous[ip] != mac)
    if moved and not memory.get("suspect"):
        log.info("salt-ha: %s of master %r is at another host now; checking the minion's connections", moved, connected)
        memory["suspect"] = {"master": connected, "since": now, "answered": now}


def address_moved(previous, entry, remotes):
    """
    True when the connected master's name resolves to other addresses than at the
    previous tick (``previous``; None: unknown) while it answers, and none of this
    process's connections to its publish port goes to one of them: the name was
    moved (DNS switched to another master) and the minion still holds the old one.

    remotes
        ``{(ip, port)}`` of the process's ESTABLISHED connections, or a callable
        returning them (called only when the addresses changed).
    """
    if previous is None or not entry.get("up") or not entry.get("addresses"):
        return False
    addresses = {ha_connection.normalize_ip(address) for address in entry["addresses"]}
    if addresses == {ha_connection.normalize_ip(address) for address in previous}:
        return False
    if callable(remotes):
        remotes = remotes()
    publish = {ha_connection.normalize_ip(ip) for ip, port in remotes if port == entry["publish_port"]}
    return bool(publish) and not publish & addresses


# The memory per beacon name, for the life of the process: Salt re-creates the
# beacon module (and its module-level globals) on every pillar or module refresh,
# which would otherwise reset the hang measure and fire ``connected`` again.
MEMORY = {}

_SHARED_CONTEXT = {"pid": None, "context": None}


def shared_zmq_context():
    """One ZeroMQ context per process for the probes (a forked child makes its own)."""
    import zmq  # pylint: disable=import-outside-toplevel

    if _SHARED_CONTEXT["pid"] != os.getpid():
        _SHARED_CONTEXT.update(pid=os.getpid(), context=zmq.Context())
    return _SHARED_CONTEXT["context"]


def tick_probe(endpoints, timeout, transport="zeromq"):
    """
    The probe of a beacon round: ``ha_probe.probe_endpoints`` (the probe of
    ``ha.status``) without the publish-port check, with one ZeroMQ context for the
    process's life, concurrently, bounded by ``timeout``.

    Returns one ``ha.status`` ``masters`` entry per endpoint, in order (enough for
    ``ha_connection.mark_connected``), where ``up`` is True (answered), False (no
    address, refused, no answer within ``timeout``: ``error`` says which) or None
    when the probe itself failed with an unexpected exception (``fault``): that is
    logged as a warning and ``error`` names its type and message (:func:`tick`
    then keeps the master's previous memory).
    """
    entries = ha_probe.probe_endpoints(endpoints, timeout, transport, context=shared_zmq_context(), publish=False)
    for entry in entries:
        if entry["fault"]:
            entry["up"] = None
    return entries


def _copy_memory(memory):
    fresh = new_memory()
    if not memory:
        return fresh
    fresh.update(memory)
    fresh["raw"] = dict(fresh["raw"])
    fresh["changes"] = {master: list(times) for master, times in fresh["changes"].items()}
    fresh["flapping"] = dict(fresh["flapping"])
    fresh["hang"] = dict(fresh["hang"]) if fresh["hang"] else None
    fresh["leaving"] = dict(fresh["leaving"]) if fresh["leaving"] else None
    fresh["pending"] = list(fresh["pending"])
    fresh["suspect"] = dict(fresh["suspect"]) if fresh.get("suspect") else None
    fresh["deferred"] = dict(fresh["deferred"]) if fresh.get("deferred") else None
    return fresh


# --- probes off the minion's main loop ------------------------------------------

# A round older than this many round lengths is stale: its masters count as
# unknown (``up`` None), never as up.
STALE_ROUNDS = 3
# A worker that no tick has read for this long stops (the beacon was disabled or
# removed); a beacon whose ticks come further apart gets 3 times its longest gap.
IDLE_SECONDS = 60
# How long stopping waits for a worker's round at most (at interpreter exit).
STOP_WAIT_SECONDS = 3
_ROUND_NUMBERS = itertools.count(1)
_WORKERS = {}


def worker_key(endpoints, settings, transport):
    """What a worker probes and how: a tick with another key restarts it."""
    masters = tuple((ep.master, ep.host, ep.ret_port, ep.publish_port) for ep in endpoints)
    return masters, settings["timeout"], settings["probe_interval"], transport


def round_seconds(settings):
    """The longest a probe round takes: ``probe_interval``, or ``timeout`` when a master does not answer."""
    return max(settings["probe_interval"], settings["timeout"] + ha_probe.COLLECT_SLACK)


# A probe round longer than its bound by this much ran while the probing process itself
# was paused: it is no news about the masters (ProbeWorker._discount_own_stall).
STALL_SECONDS = 1.0

WORKER_LEAVE_LOG = (
    "salt-ha: master %r failed %s consecutive probes while another master answers; the probe thread leaves it"
)


def worker_leave_due(entries, connected, settings, flapping=(), left=None):
    """
    The probe worker's own hang check at the end of a round (the tick that would
    leave comes up to the beacon's ``interval`` later): the connected master's
    entry when it failed this round and its silence reached :func:`hang_seconds`
    (again, after a leave of the same silence: ``left`` is the worker's last leave,
    ``{"master", "since", "seconds"}``) while another master that is not
    ``flapping`` answered this round, with ``failover_on_hang``; else None.
    """
    if not connected or not settings["failover_on_hang"]:
        return None
    entry = next((item for item in entries if item["master"] == connected), None)
    if entry is None or entry["up"] is not False or not entry.get("silence"):
        return None
    silence = entry["silence"]
    done = left["seconds"] if left and left["master"] == connected and left["since"] == silence["since"] else 0
    if silence["seconds"] - done < hang_seconds(settings) - HANG_SLACK:
        return None
    if not any(item["up"] and item["master"] != connected and item["master"] not in flapping for item in entries):
        return None
    return entry


def _silence_after(previous, entry, started, finished):
    """A master's silence after a round: None when it answered, else ``{"since", "seconds", "probes"}``."""
    if entry["up"]:
        return None
    if entry["up"] is None:
        return previous  # a fault of the probe: no news
    if previous is None:
        return {"since": started, "seconds": finished - started, "probes": 1}
    return {"since": previous["since"], "seconds": finished - previous["since"], "probes": previous["probes"] + 1}


class ProbeWorker:
    """
    Probes the masters of one beacon in a daemon thread, every ``probe_interval``
    seconds (each round bounded by ``timeout``), keeping only its latest round.

    ``latest`` is None until the first round ends, then ``{"round", "started",
    "finished", "clock", "entries"}`` (POSIX start and end, ``time.monotonic`` of
    the end, :func:`tick_probe` entries each with ``silence``), replaced whole at
    every round: a reader needs no lock, and a process forked while a round runs
    inherits no lock held by it.
    """

    def __init__(self, name, endpoints, settings, transport, previous=None):
        self.name = name
        self.endpoints = list(endpoints)
        self.timeout = settings["timeout"]
        self.probe_interval = settings["probe_interval"]
        self.transport = transport
        self.key = worker_key(endpoints, settings, transport)
        self.pid = os.getpid()
        self.exit = None  # why the thread ended: stopped, idle or fault
        same = previous is not None and previous.key == self.key
        # The results of a worker with the same key (stopped by a beacon refresh)
        # serve the ticks until this one's first round ends, while they are fresh.
        self.latest = previous.latest if same else None
        self.read_at = time.monotonic()
        self.longest_gap = previous.longest_gap if same else 0.0
        # The master the minion is connected to (set by the ticks, follow_connection):
        # a round in which it fails puts its connections under check at once.
        self.connected = previous.connected if previous is not None else None
        # Set by the ticks too (follow_connection): the masters the beacon counts as
        # flapping, and what leaves a hung master (None: the worker never leaves).
        self.flapping = previous.flapping if previous is not None else frozenset()
        self.on_hang = previous.on_hang if previous is not None else None
        self.settings = dict(settings)
        self.left = previous.left if same else None  # the worker's last leave: {"master", "since", "seconds"}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"salt-ha-probe-{name}", daemon=True)

    def start(self):
        """Start the thread; returns the worker."""
        self._thread.start()
        return self

    def running(self):
        """True while the thread runs in this process (never in a forked child)."""
        return self.pid == os.getpid() and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, wait=0):
        """Ask the thread to stop after its round; wait up to ``wait`` seconds for it (this process only)."""
        self._stop.set()
        if wait and self.pid == os.getpid() and self._thread.is_alive():
            self._thread.join(wait)

    def read(self):
        """The latest round (or None), noting that a tick read it."""
        now = time.monotonic()
        self.longest_gap = max(self.longest_gap, now - self.read_at)
        self.read_at = now
        return self.latest

    def wait_for_round(self, after, timeout):
        """
        For tests and benches: wait (bounded by ``timeout``) until a round
        numbered above ``after`` has ended; True when one has.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest
            if latest is not None and latest["round"] > after:
                return True
            time.sleep(0.005)
        return False

    def _idle(self):
        limit = max(IDLE_SECONDS, 3 * self.longest_gap)
        return time.monotonic() - self.read_at > limit

    def _round(self, silences):
        started, began = time.time(), time.monotonic()
        try:
            entries = tick_probe(self.endpoints, self.timeout, self.transport)
        except Exception as err:  # pylint: disable=broad-except  (a fault of the probe: no news, keep probing)
            fault = ha_text.log_fault(log, f"the probe round of the ha beacon {self.name!r}", err)
            entries = [
                {**ha_probe.blank_entry(ep), "up": None, "fault": True, "error": f"probe failed: {fault}"}
                for ep in self.endpoints
            ]
        finished = time.time()
        self._discount_own_stall(entries, silences, time.monotonic() - began)
        for entry in entries:
            entry["silence"] = silences[entry["master"]] = _silence_after(
                silences.get(entry["master"]), entry, started, finished
            )
        self._check_connection(entries)
        self._leave_if_hung(entries)
        self.latest = {
            "round": next(_ROUND_NUMBERS),
            "started": started,
            "finished": finished,
            "clock": time.monotonic(),
            "entries": entries,
        }
        return began

    def _discount_own_stall(self, entries, silences, took):
        """
        A round that took longer than its own bound (``timeout``) plus :data:`STALL_SECONDS`
        ran while this process was paused (SIGSTOP, a suspended VM, starved): its failed
        probes say nothing about the masters (no news, ``up`` None), and no silence is
        measured across the gap (a hang is measured again from the next round).
        """
        if took <= self.timeout + ha_probe.COLLECT_SLACK + STALL_SECONDS:
            return
        log.info("salt-ha: a probe round of the ha beacon %r took %.1f s: this process was paused; "
                 "its failures do not count", self.name, took)
        silences.clear()
        for entry in entries:
            if entry["up"] is False:
                entry.update(up=None, error=f"no news: the probe round took {took:.1f} s (this process was paused)")

    def _check_connection(self, entries):
        """The connected master failed this round: check its connections now (ha_conncheck), not at the next tick."""
        entry = next((e for e in entries if e["master"] == self.connected and e["up"] is False), None)
        if entry is not None:
            ha_conncheck.follow(self.name, (entry["publish_port"], entry["ret_port"]))

    def _leave_if_hung(self, entries):
        """
        The connected master hangs (:func:`worker_leave_due`): leave it now through
        ``on_hang``, not at the next tick. The entry's ``silence`` gets ``left`` (its
        seconds when left), which tells the ticks the leave happened.
        """
        entry = worker_leave_due(entries, self.connected, self.settings, self.flapping, self.left)
        if entry is not None and self.on_hang is not None:
            silence = entry["silence"]
            log.warning(WORKER_LEAVE_LOG, entry["master"], silence["probes"])
            try:
                self.on_hang(entry["master"])
            except Exception as err:  # pylint: disable=broad-except  (not marked left: the tick's own check leaves it)
                ha_text.log_fault(log, f"the leave of the hung master {entry['master']!r}", err)
            else:
                self.left = {"master": entry["master"], "since": silence["since"], "seconds": silence["seconds"]}
        for item in entries:
            left = self.left
            if left and item["master"] == left["master"] and (item.get("silence") or {}).get("since") == left["since"]:
                item["silence"] = {**item["silence"], "left": left["seconds"]}

    def _run(self):
        silences = {}
        try:
            while not self._stop.is_set():
                began = self._round(silences)
                if self._idle():
                    self.exit = "idle"
                    log.debug("salt-ha: no tick of the ha beacon %r read its probes for a while; stopping", self.name)
                    return
                self._stop.wait(max(0.0, began + self.probe_interval - time.monotonic()))
            self.exit = "stopped"
        except Exception as err:  # pylint: disable=broad-except  (logged; the next tick starts a new worker)
            self.exit = "fault"
            ha_text.log_fault(log, f"the probe worker of the ha beacon {self.name!r}", err)


def probe_worker(name, endpoints, settings, transport="zeromq"):
    """
    The running :class:`ProbeWorker` of beacon ``name`` in this process for this
    configuration: started when there is none (or only one inherited from a
    parent process), restarted when it stopped or the configuration changed.
    """
    worker = _WORKERS.get(name)
    if worker is not None and worker.pid != os.getpid():
        worker = None  # a forked child: the parent's thread does not exist here
    key = worker_key(endpoints, settings, transport)
    if worker is not None and worker.key == key and worker.running():
        return worker
    if worker is not None:
        if worker.key != key:
            log.debug("salt-ha: the ha beacon %r has a new configuration; restarting its probe worker", name)
        elif worker.exit == "fault":
            log.warning("salt-ha: the probe worker of the ha beacon %r had failed; restarting it", name)
        worker.stop()
    worker = ProbeWorker(name, endpoints, settings, transport, previous=worker).start()
    _WORKERS[name] = worker
    return worker


def worker_results(name, endpoints, settings, transport="zeromq"):
    """
    What a tick of beacon ``name`` sees, without waiting: ``(entries, finished)``,
    the latest round's entries (each with ``silence``) and its POSIX end time, or
    ``(None, None)`` before the first round ended. A round older than
    ``STALE_ROUNDS`` x :func:`round_seconds` is stale: every master is ``up`` None
    (unknown: :func:`tick` keeps its memory) with an ``error`` saying how old.
    """
    latest = probe_worker(name, endpoints, settings, transport).read()
    if latest is None:
        return None, None
    age = time.monotonic() - latest["clock"]
    if age <= STALE_ROUNDS * round_seconds(settings):
        return [dict(entry) for entry in latest["entries"]], latest["finished"]
    error = f"no probe result for {age:.1f} s (the probe worker is behind)"
    return [dict(entry, up=None, error=error) for entry in latest["entries"]], latest["finished"]


def follow_connection(name, master, flapping=(), on_hang=None):
    """
    Tell the probe worker of beacon ``name`` (this process) which master the minion is
    connected to: a probe round in which that master does not answer puts the minion's
    connections to it under check at once (:func:`ha_conncheck.follow`), and one that
    ends its hang (:func:`worker_leave_due`, with the masters the beacon counts as
    ``flapping``) calls ``on_hang(master)`` at once.
    """
    worker = _WORKERS.get(name)
    if worker is not None and worker.pid == os.getpid():
        worker.connected = master
        worker.flapping = frozenset(flapping)
        worker.on_hang = on_hang


def stop_worker(name, wait=0):
    """
    Stop the probe worker of beacon ``name`` in this process, if any (its last
    results stay for a restart); True when one was running.
    """
    worker = _WORKERS.get(name)
    if worker is None or worker.pid != os.getpid() or not worker.running():
        return False
    worker.stop(wait)
    return True


def running_workers():
    """Names of the beacons whose probe worker runs in this process."""
    return sorted(name for name, worker in _WORKERS.items() if worker.running())


@atexit.register
def stop_workers(wait=STOP_WAIT_SECONDS):
    """Stop every probe worker of this process, waiting up to ``wait`` seconds in all (also at exit)."""
    deadline = time.monotonic() + wait
    workers = [worker for worker in _WORKERS.values() if worker.pid == os.getpid()]
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.stop(max(0.001, deadline - time.monotonic()))
