"""
Transitions of a minion's masters, for the ``ha`` beacon (through ``ha.watch``).

One *tick* is one observation: which master the minion daemon is connected to and
which configured masters answered the application-level probe. :func:`observe`
compares it with the state the previous tick left (plain JSON-able data) and
returns the new state, the transition events to fire and, when the connected
master hangs, the master to leave. :func:`confirmed_connection` and :func:`tick`
add what the daemon needs (Salt's ``master`` option names each candidate while it
signs in). All of that is pure; :func:`tick_probe` is the lean network probe of
a tick (ping only, one thread per master, one ZeroMQ context per process).

Transitions (``from``/``to`` are masters for the first three, health levels
``ok``/``degraded``/``lost`` for the next three):

``connected``
    the minion is connected to a master and was not at the previous tick (start-up).
``failover``
    the connected master changed to one that is not the first of the list;
    ``reason`` is ``hang`` (the beacon left a master that stopped answering),
    ``closed`` (the old master does not answer: killed, stopped, unreachable) or
    ``disconnected`` (the old master answers; Salt left it anyway).
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

Hang detection: when the connected master fails the probe on ``hang_ticks``
consecutive ticks while another master is up (and not flapping), :func:`observe`
names it in ``heal`` once; the counter then restarts, so a heal that did not move
the minion is retried after another ``hang_ticks`` ticks. The ``failover`` that
follows carries ``reason: hang`` and ``since`` = the first failed probe.

Events are held back while the connected master does not answer (they would be
sent to it and lost; a request to a hung master would also sit in the minion's
event handling) and released at the first tick where it answers, usually right
after the failover, each with the ``since`` of its own transition. At most
``PENDING_LIMIT`` are held (the oldest are dropped).

A probe that fails with an unexpected exception (a fault of the probe, not an
answer of the network) is logged as a warning naming the master and the
exception, and leaves that master's state as it was (:func:`tick`).
"""

import datetime
import numbers
import os
import time

import ha_connection
import ha_probe

TRANSITIONS = ("connected", "failover", "failback", "lost", "degraded", "recovered", "flapping")
HEALTH_RANK = {"lost": 0, "degraded": 1, "ok": 2}
PENDING_LIMIT = 50

DEFAULTS = {
    "interval": 5,
    "timeout": 2,
    "hang_ticks": 3,
    "failover_on_hang": True,
    "flap_count": 4,
    "flap_window": 60,
}
# Keys Salt's beacon framework adds or handles itself.
FRAMEWORK_KEYS = frozenset({"_beacon_name", "enabled", "beacon_module", "disable_during_state_run", "run_once"})


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def config_to_dict(config):
    """
    The beacon config as one dict: a list of one-key dicts (the usual form) or a dict.

    Raises ``ValueError`` naming the bad value.
    """
    if isinstance(config, dict):
        return dict(config)
    if not isinstance(config, list):
        raise ValueError(f"configuration of the ha beacon must be a list of dicts, not {config!r}")
    merged = {}
    for item in config:
        if not isinstance(item, dict):
            raise ValueError(f"item {item!r} of the ha beacon configuration is not a dict")
        merged.update(item)
    return merged


def settings_from(config):
    """
    Validated settings (defaults filled in) from a beacon config; ``ValueError``
    names the first bad key and value.
    """
    given = config_to_dict(config)
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
        ("hang_ticks", _is_int, lambda v: v >= 1, "an integer >= 1"),
        ("failover_on_hang", lambda v: isinstance(v, bool), lambda v: True, "True or False"),
        ("flap_count", _is_int, lambda v: v >= 2, "an integer >= 2"),
        ("flap_window", _is_number, lambda v: v > 0, "a number of seconds > 0"),
    )
    for key, type_ok, range_ok, expected in checks:
        value = settings[key]
        if not type_ok(value) or not range_ok(value):
            raise ValueError(f"ha beacon option {key}: {value!r} is not {expected}")
    # Salt's beacon framework takes ``interval`` out before it calls the beacon.
    if "interval" in given and settings["timeout"] > settings["interval"]:
        raise ValueError(
            f"ha beacon option timeout: {settings['timeout']!r} is longer than interval "
            f"{settings['interval']!r} (a tick may block for timeout seconds)"
        )
    return settings


def validate(config):
    """``(True, message)`` for a good beacon config, else ``(False, message naming the bad value)``."""
    try:
        settings_from(config)
    except ValueError as err:
        return False, str(err)
    return True, "Valid beacon configuration"


def new_state():
    """The state before the first tick."""
    return {
        "started": False,
        "connected": None,
        "health": None,
        "raw": {},
        "changes": {},
        "flapping": {},
        "hang": None,
        "healing": None,
        "pending": [],
        "candidate": None,
    }


def iso(timestamp):
    """A POSIX timestamp as ISO 8601 UTC text."""
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).isoformat()


def health_of(up, total):
    """``ok`` (all up), ``degraded`` (some up) or ``lost`` (none up)."""
    if total and up == total:
        return "ok"
    return "degraded" if up else "lost"


def _track_flapping(state, raw, now, settings):
    """Update change times and flapping flags; return the masters that started flapping."""
    window_start = now - settings["flap_window"]
    started = []
    for master, up in raw.items():
        changes = [t for t in state["changes"].get(master, []) if t > window_start]
        if master in state["raw"] and state["raw"][master] != up:
            changes.append(now)
        if changes:
            state["changes"][master] = changes
        else:
            state["changes"].pop(master, None)
        if master in state["flapping"]:
            if not changes:
                del state["flapping"][master]
        elif len(changes) >= settings["flap_count"]:
            state["flapping"][master] = changes[0]
            started.append(master)
    return started


def _connection_event(previous, connected, primary, raw, state, now):
    """The connection transition between two ticks, as ``(name, extra, since)`` or None."""
    if not connected or connected == previous:
        return None
    if not previous:
        return "connected", {}, now
    healing = state["healing"]
    if healing and healing["master"] == previous:
        return "failover", {"reason": "hang"}, healing["since"]
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


def _check_hang(state, connected, raw, reported, now, settings):
    """Count failed probes of the connected master; return it when it is time to leave it."""
    if not connected or connected not in raw or raw[connected]:
        state["hang"] = None
        return None
    hang = state["hang"]
    if not hang or hang["master"] != connected:
        hang = {"master": connected, "count": 0, "since": now}
    hang["count"] += 1
    state["hang"] = hang
    others_up = any(up for master, up in reported.items() if master != connected)
    if not settings["failover_on_hang"] or hang["count"] < settings["hang_ticks"] or not others_up:
        return None
    state["healing"] = {"master": connected, "at": now, "since": hang["since"]}
    hang["count"] = 0
    return connected


def observe(state, probes, connected, primary, now, settings):
    """
    One tick.

    state
        What the previous call returned (``None`` or :func:`new_state` at first).
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

    Returns ``(state, events, heal)``: the new state, the events to fire now
    (each with ``tag`` = the transition) and the master to leave because it hangs
    (or None).
    """
    state = _copy_state(state)
    raw = {master: bool(up) for master, up in probes.items()}
    events = []

    def emit(transition, source, target, since, **extra):
        events.append({"tag": transition, "transition": transition, "from": source, "to": target,
                       "since": iso(since), **extra})

    previous_down = [m for m, was_up in state["raw"].items() if not was_up or m in state["flapping"]]
    flapping_started = _track_flapping(state, raw, now, settings)
    reported = {master: up and master not in state["flapping"] for master, up in raw.items()}
    up = sum(1 for value in reported.values() if value)
    down = [master for master, value in reported.items() if not value]

    previous = state["connected"]
    change = _connection_event(previous, connected, primary, raw, state, now)
    if change:
        name, extra, since = change
        emit(name, previous, connected, since, **extra)
    if state["healing"] and state["healing"]["master"] != connected:
        state["healing"] = None

    health = health_of(up, len(reported))
    newly_down = [m for m in down if m not in previous_down and m in state["raw"]]
    transition = _health_event(state["health"], health, newly_down)
    if transition:
        emit(transition, state["health"], health, now)
    for master in flapping_started:
        emit("flapping", state["health"], health, state["flapping"][master], master=master)

    heal = _check_hang(state, connected, raw, reported, now, settings)
    for event in events:
        event.update({"up": up, "total": len(reported), "down": list(down)})
    state.update(started=True, connected=connected, health=health, raw=raw)
    state["pending"] = (state["pending"] + events)[-PENDING_LIMIT:]
    if connected in raw and not raw[connected]:
        return state, [], heal  # held back: nobody would receive them
    released, state["pending"] = state["pending"], []
    return state, released, heal


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


def tick(state, masters, current, primary, now, settings, remotes=None):
    """
    One tick as the beacon runs it: :func:`confirmed_connection` (when ``remotes``
    is given: from inside the daemon) then :func:`observe`.

    masters
        :func:`tick_probe` entries. A master whose probe failed with a fault of
        the probe itself (``up`` None) keeps the state it had at the previous
        tick (down when it had none): a bug in the probe is no news about the
        master, and must not move the minion.
    current
        The configured entry of Salt's ``master`` option now (:func:`configured_entry`).

    Returns ``(state, events, heal)``; ``heal`` is ``current`` or None (never a
    master Salt is no longer on).
    """
    state = state or {}
    pending = state.get("candidate") or {}
    seen = pending.get("ticks", 0) + 1 if pending.get("master") == current else 1
    connected = current
    if remotes is not None:
        connected = confirmed_connection(state.get("connected"), current, masters, remotes, seen)
    previous = state.get("raw") or {}
    probes = {
        entry["master"]: previous.get(entry["master"], False) if entry["up"] is None else entry["up"]
        for entry in masters
    }
    state, events, heal = observe(state, probes, connected, primary, now, settings)
    state["candidate"] = None if connected == current else {"master": current, "ticks": seen}
    return state, events, (heal if heal == current else None)


# The last state per beacon name, for the life of the process: Salt re-creates the
# beacon module (and its module-level dict) on every pillar or module refresh,
# which would otherwise reset the hang count and fire ``connected`` again.
STATES = {}

_SHARED_CONTEXT = {"pid": None, "context": None}


def shared_zmq_context():
    """One ZeroMQ context per process for the ticks (a forked child makes its own)."""
    import zmq  # pylint: disable=import-outside-toplevel

    if _SHARED_CONTEXT["pid"] != os.getpid():
        _SHARED_CONTEXT.update(pid=os.getpid(), context=zmq.Context())
    return _SHARED_CONTEXT["context"]


def tick_probe(endpoints, timeout, transport="zeromq"):
    """
    The lean probe of a beacon tick: the application-level ping of each master's
    ret port (``ha_probe.app_ping``), concurrently, bounded by ``timeout``; one
    thread per master, one ZeroMQ context for the process's life, DNS only for
    names (``ha_probe.resolve_each``), no publish-port check. ``ha.status`` keeps
    the full probe.

    Returns one ``{"master", "addresses", "ret_port", "publish_port", "up",
    "error"}`` per endpoint, in order (enough for ``ha_connection.mark_connected``).
    ``up`` is True (answered), False (no address, refused, no answer within
    ``timeout``: ``error`` says which) or None when the probe itself failed with
    an unexpected exception: that is logged as a warning and ``error`` names its
    type and message (:func:`tick` then keeps the master's previous state).
    """
    deadline = time.monotonic() + timeout

    def remaining():
        return max(0.001, deadline - time.monotonic())

    names = [endpoint.host for endpoint in endpoints if not endpoint.is_ip]
    resolved = ha_probe.resolve_each(names, timeout) if names else {}
    context = shared_zmq_context()
    entries, tasks = [], {}
    for index, endpoint in enumerate(endpoints):
        lookup = [endpoint.host] if endpoint.is_ip else resolved[endpoint.host]
        addresses = lookup if isinstance(lookup, list) else []
        entries.append(
            {
                "master": endpoint.master,
                "addresses": addresses,
                "ret_port": endpoint.ret_port,
                "publish_port": endpoint.publish_port,
                "up": False,
                "error": None if addresses else ha_probe.printable(lookup or f"no address for {endpoint.host!r}"),
            }
        )
        if addresses:
            tasks[index] = lambda ep=endpoint, address=addresses[0]: ha_probe.app_ping(
                address, ep.ret_port, remaining(), transport, context
            )
    found = ha_probe.run_concurrently(tasks, remaining() + ha_probe.COLLECT_SLACK)
    for index in tasks:
        entry = entries[index]
        error = ha_probe.check_error(found, index, entry["master"], timeout, name="ping")
        if error is not None:
            error = f"ret port {entry['ret_port']}: {error}"
        entry["up"] = None if ha_probe.is_fault(found.get(index)) else error is None
        entry["error"] = error
    return entries


def _copy_state(state):
    fresh = new_state()
    if not state:
        return fresh
    fresh.update(state)
    fresh["raw"] = dict(fresh["raw"])
    fresh["changes"] = {master: list(times) for master, times in fresh["changes"].items()}
    fresh["flapping"] = dict(fresh["flapping"])
    fresh["hang"] = dict(fresh["hang"]) if fresh["hang"] else None
    fresh["healing"] = dict(fresh["healing"]) if fresh["healing"] else None
    fresh["pending"] = list(fresh["pending"])
    return fresh
