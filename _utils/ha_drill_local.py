"""
A drill's work on one master: what the drilling master asks of itself directly and
of each peer through ``ha.local_drill`` over salt-api.

Every answer carries ``master`` (this master's id) and ``now`` (its POSIX time
when it answered), from which the drilling master corrects for clock offsets.

- ``ping``: this master answers (its request server ran a runner).
- ``locate``: which of ``minions`` answer ``test.ping`` published through this
  master (they are connected here), plus this master's drill settings, whether a
  drill is running here and the state of a freeze.
- ``lint``: the minions' ``ha.lint`` findings, through this master.
- ``publish``: a job for ``minions`` (the probe job whose returns the drill counts).
- ``leave``: publish ``ha.leave_master`` to ``minions``: each leaves this master.
- ``await``: until ``budget`` runs out or every one of ``minions`` has answered,
  publish ``test.ping`` to each one as soon as it signs in here (its
  ``salt/minion/<id>/start`` event on this master's bus), and to those that have
  not answered every ``interval`` seconds (all of them at once at first); answer
  when each first did (its return seen on this master's bus). A ping per sign-in
  rather than a round every quarter second: each ping is a process forked on
  every minion it reaches, at the moment the minions are busiest.
- ``freeze``: freeze this master for ``duration`` seconds from ``delay`` seconds
  on, through the watchdog (:mod:`ha_drill_watchdog`); only with
  ``ha:drill:allow_hang: True`` in this master's config and ``duration`` at most
  ``ha:drill:max_duration``.
"""

import logging
import math
import time

import salt.client
from salt.exceptions import CommandExecutionError, SaltClientError, SaltInvocationError

import ha_drill
import ha_drill_history
import ha_drill_watchdog
import ha_keystore
import ha_validate

log = logging.getLogger(__name__)

ACTIONS = ("ping", "locate", "lint", "publish", "leave", "await", "freeze")
LOCATE_TIMEOUT = 3
LINT_TIMEOUT = 5
AWAIT_INTERVAL = 1.0
AWAIT_WAKE = 0.1  # longest wait for an event while minions remain
MAX_MINIONS_ASKED = 100000
PROBE_FUNCTIONS = ("test.sleep",)
MAX_DELAY = 30


def _minion_list(minions, opts):
    if not isinstance(minions, list) or len(minions) > MAX_MINIONS_ASKED:
        raise SaltInvocationError(f"minions {str(minions)[:80]!r} is not a list of minion ids")
    for minion_id in minions:
        problem = ha_keystore.validate_minion_id(opts, minion_id, resolve=False) if isinstance(minion_id, str) \
            else "not a string"
        if problem:
            raise SaltInvocationError(f"minion id {ha_keystore.shown_id(str(minion_id))} is refused: {problem}")
    return sorted(set(minions))


def _client(opts):
    return salt.client.get_local_client(opts["conf_file"])


def _answer(opts, **fields):
    return {"master": opts.get("id"), "now": time.time(), **fields}


def freeze_path(opts):
    """This master's freeze state file."""
    return ha_drill_history.drill_dir(opts, ha_drill_watchdog.STATE_FILE)


def freeze_state(opts):
    """The last freeze of this master (the watchdog's state file, ``active`` added), or None."""
    state = ha_drill_watchdog.read_state(freeze_path(opts))
    if state is None:
        return None
    return {**state, "active": ha_drill_watchdog.is_active(state)}


def ping(opts):
    """This master answers."""
    return _answer(opts)


def locate(opts, minions, timeout=LOCATE_TIMEOUT):
    """The ``minions`` connected here (they answer ``test.ping`` through this master) and this master's drill state."""
    minions = _minion_list(minions, opts)
    settings = ha_drill.drill_settings(opts)
    connected = []
    if minions:
        with _client(opts) as client:
            answers = client.cmd(minions, "test.ping", tgt_type="list", timeout=timeout, gather_job_timeout=1)
        connected = sorted(minion_id for minion_id, answer in answers.items() if answer is True)
    return _answer(
        opts,
        connected=connected,
        allow_hang=settings.allow_hang,
        max_duration=settings.max_duration,
        running=ha_drill_history.running(opts),
        freeze=freeze_state(opts),
    )


def lint(opts, minions, timeout=LINT_TIMEOUT):
    """``{"lint": {minion: findings or error}}`` of the minions' ``ha.lint``, through this master."""
    minions = _minion_list(minions, opts)
    if not minions:
        return _answer(opts, lint={})
    with _client(opts) as client:
        answers = client.cmd(minions, "ha.lint", tgt_type="list", timeout=timeout, gather_job_timeout=2)
    return _answer(opts, lint=answers)


def publish(opts, minions, fun, arg=()):
    """Publish ``fun`` (a probe job) to ``minions`` without waiting: ``{"jid", "published_at"}``."""
    minions = _minion_list(minions, opts)
    if fun not in PROBE_FUNCTIONS:
        raise SaltInvocationError(f"fun {fun!r} is not a drill probe job ({', '.join(PROBE_FUNCTIONS)})")
    return _run_job(opts, minions, fun, list(arg))


def leave(opts, minions, not_after=None):
    """
    Publish ``ha.leave_master`` to ``minions``: ``{"jid", "published_at"}``. With
    ``not_after`` (POSIX time), a minion that runs the job later does nothing (a
    minion that was stuck must not leave once the drill has moved on).
    """
    arg = [] if not_after is None else [f"not_after={float(not_after):.3f}"]
    return _run_job(opts, _minion_list(minions, opts), "ha.leave_master", arg)


def _run_job(opts, minions, fun, arg):
    if not minions:
        return _answer(opts, jid=None, published_at=None)
    try:
        with _client(opts) as client:
            published_at = time.time()
            pub = client.run_job(minions, fun, arg=arg, tgt_type="list", timeout=5)
    except SaltClientError as err:
        raise CommandExecutionError(f"{opts.get('id')} cannot publish {fun}: {err}") from err
    if not pub or not pub.get("jid"):
        raise CommandExecutionError(f"{opts.get('id')} could not publish {fun} to {len(minions)} minion(s)")
    return _answer(opts, jid=pub["jid"], published_at=published_at)


class AwaitState:
    """
    What ``await`` knows: the minions still to answer, when each was last pinged,
    the ping jobs, the answers. Pure: :func:`await_minions` feeds it this master's
    events and the clock.
    """

    def __init__(self, minions, interval):
        self.remaining = set(minions)
        self.interval = interval
        self.pinged = {}  # minion -> monotonic time of its last ping
        self.jids = set()
        self.answers = {}  # minion -> POSIX time of its first answer

    def due(self, now):
        """The minions to ping on the round: not pinged within ``interval`` seconds (monotonic ``now``)."""
        return sorted(m for m in self.remaining if now - self.pinged.get(m, -math.inf) >= self.interval)

    def next_round(self, now):
        """Seconds until the next round is due (0 when one is)."""
        if not self.remaining:
            return math.inf
        return max(0.0, min(self.pinged.get(m, -math.inf) for m in self.remaining) + self.interval - now)

    def sent(self, minions, jid, now):
        """A ping to ``minions`` was published (``jid``, None when it failed)."""
        if jid:
            self.jids.add(jid)
        for minion_id in minions:
            self.pinged[minion_id] = now

    def on_event(self, tag, answered_at):
        """
        One event of this master's bus: records an answer to a ping; returns the
        minion to ping now when ``tag`` says it signed in here (else None).
        """
        parts = tag.split("/") if isinstance(tag, str) else []
        if len(parts) == 5 and parts[:2] == ["salt", "job"] and parts[2] in self.jids and parts[3] == "ret":
            if parts[4] in self.remaining:
                self.answers[parts[4]] = answered_at
                self.remaining.discard(parts[4])
            return None
        if len(parts) == 4 and parts[:2] == ["salt", "minion"] and parts[3] == "start" and parts[2] in self.remaining:
            return parts[2]
        return None


def await_minions(opts, minions, budget, interval=AWAIT_INTERVAL):
    """
    Ping ``minions`` through this master until each answered or ``budget`` seconds
    passed: ``{"started", "answers": {minion: POSIX time of its first answer}}``.
    """
    state = AwaitState(_minion_list(minions, opts), ha_validate.validate_timeout(interval, what="interval", maximum=10))
    budget = ha_validate.validate_timeout(budget, what="budget", maximum=ha_drill.MAX_WATCH)
    started = time.time()
    deadline = time.monotonic() + budget
    with _client(opts) as client:

        def ping(minion_ids):
            pub = client.run_job(minion_ids, "test.ping", tgt_type="list", listen=True, timeout=5)
            state.sent(minion_ids, (pub or {}).get("jid"), time.monotonic())

        while state.remaining and time.monotonic() < deadline:
            due = state.due(time.monotonic())
            if due:
                ping(due)
            wait = min(AWAIT_WAKE, state.next_round(time.monotonic()), max(0.0, deadline - time.monotonic()))
            event = client.event.get_event(wait=max(0.01, wait), tag="salt/", match_type="startswith", full=True)
            signed_in = state.on_event(event.get("tag"), time.time()) if isinstance(event, dict) else None
            if signed_in is not None:
                ping([signed_in])
    return _answer(opts, started=started, answers=state.answers, missing=sorted(state.remaining))


def freeze(opts, drill_id, duration, delay=1.0):
    """
    Freeze this master for ``duration`` s from ``delay`` s on, through a detached
    watchdog: ``{"freeze_at", "thaw_at", "watchdog_pid", "master_pid"}``.
    """
    settings = ha_drill.drill_settings(opts)
    if not settings.allow_hang:
        raise CommandExecutionError(
            f"{opts.get('id')} does not allow hang drills: set ha:drill:allow_hang: True in its master config"
        )
    if not isinstance(drill_id, str) or not ha_drill.DRILL_ID.match(drill_id):
        raise SaltInvocationError(f"drill id {drill_id!r} is not a drill id")
    duration = ha_validate.validate_timeout(duration, what="duration", maximum=settings.max_duration)
    delay = ha_validate.validate_timeout(delay, what="delay", maximum=MAX_DELAY)
    current = freeze_state(opts)
    if current and current["active"]:
        raise CommandExecutionError(f"{opts.get('id')} is already frozen by drill {current.get('drill')}")
    try:
        pid = ha_drill_watchdog.master_pid(opts.get("pidfile"))
        now = time.time()
        state = ha_drill_watchdog.schedule_freeze(freeze_path(opts), drill_id, pid, now + delay,
                                                  now + delay + duration)
    except (ValueError, RuntimeError, OSError) as err:
        raise CommandExecutionError(f"{opts.get('id')} cannot schedule the freeze: {err}") from err
    log.warning("salt-ha drill %s: this master freezes at %.3f for %g s (watchdog pid %s)",
                drill_id, state["freeze_at"], duration, state["watchdog_pid"])
    return _answer(opts, **{key: state[key] for key in ("freeze_at", "thaw_at", "watchdog_pid", "master_pid")})


def run_action(opts, action, minions=None, **kwargs):
    """Dispatch ``ha.local_drill``'s ``action`` (see the module docstring)."""
    if action not in ACTIONS:
        raise SaltInvocationError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if action == "ping":
        return ping(opts)
    if action == "freeze":
        return freeze(opts, kwargs.get("drill_id"), kwargs.get("duration"), kwargs.get("delay", 1.0))
    minions = [] if minions is None else minions
    if action == "locate":
        return locate(opts, minions)
    if action == "lint":
        return lint(opts, minions)
    if action == "publish":
        return publish(opts, minions, kwargs.get("fun"), kwargs.get("arg") or ())
    if action == "leave":
        return leave(opts, minions, kwargs.get("not_after"))
    return await_minions(opts, minions, kwargs.get("budget", 60), kwargs.get("interval", AWAIT_INTERVAL))

