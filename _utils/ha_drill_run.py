"""
A failover drill, run from one master (``salt-run ha.drill``): gates, the move,
the measure, the stop conditions, the restore, the returns counted, the report.

The drilling master reaches itself directly and every peer through its salt-api
(``ha.local_drill``, :mod:`ha_drill_local`); masters are named as ``ha.drift``
names them (this master's id, the peers' ``ha:peers`` names). Times a peer reports
are taken as they are: masters keep NTP time. The offset of each peer's clock is
estimated on the quickest call (half its round trip is the error bound); an
offset beyond 0.5 s is a note of the report.

``mode=minion``: the canaries leave the master they are connected to
(``ha.leave_master``, published through it); every other master pings them until
each answers there; its RTO is the time from the leave's publication to that
answer. Then each goes back (``ha.leave_master`` through the master it is on
now, until it is where it started, at most one hop per master).

``mode=hang``: the target master is frozen for ``duration`` seconds by its own
watchdog (:mod:`ha_drill_watchdog`); every minion connected to it is measured
from the freeze to its answer through another master (the ``ha`` beacon moves
them); the watchdog thaws the target; the minions are then moved back.

Stop conditions: a master that is not the target stops answering (checked every
second while minions move), or more than ``max_failed`` minions without an
answer within ``budget`` seconds. Either aborts: nothing more is moved, what was
moved is moved back, the report says ``aborted`` and why.
"""

import dataclasses
import datetime
import fnmatch
import logging
import threading
import time

import salt.utils.event
from salt.exceptions import CommandExecutionError

import ha_drill
import ha_drill_history
import ha_drill_local
import ha_jobs
import ha_key_model
import ha_keystore
import ha_peers
import ha_probe
import ha_readiness
import ha_sync

log = logging.getLogger(__name__)

CALL_SLACK = 5  # seconds a peer call may take beyond the work it was asked for
MONITOR_INTERVAL = 1.0
MONITOR_MISSES = 2  # consecutive unanswered checks before a master counts as down
LEAD = 1.0  # seconds between starting the watchers and the fault
SETTLE = 3.0  # seconds the watchers go on after the leaves' deadline (a minion leaving just in time lands)
RPO_GRACE = 15  # seconds the drill waits for the probe job's returns after the restore
THAW_GRACE = 20  # seconds after thaw_at within which a frozen master must answer again
LOCAL_PING_TIMEOUT = 2
CLOCK_TOLERANCE = 0.5


class Master:
    """One master of the drill: this one (called directly) or a peer (over salt-api)."""

    def __init__(self, name, opts=None, peer=None):
        self.name, self.opts, self.peer = name, opts, peer
        self.offset = None  # its clock minus ours, from the quickest call (a diagnostic)
        self.offset_rtt = None
        self.token = None
        self.lock = threading.Lock()

    @property
    def is_local(self):
        return self.peer is None

    def call(self, action, seconds=ha_drill_local.LOCATE_TIMEOUT, **kwargs):
        """``ha.local_drill`` ``action`` on this master; its answer (``now``: its clock, sampled for the offset)."""
        if self.is_local:
            return ha_drill_local.run_action(self.opts, action, **kwargs)
        peer = dataclasses.replace(self.peer, timeout=max(self.peer.timeout, seconds + CALL_SLACK))
        sent = time.time()
        with ha_peers.PeerClient(peer) as client:
            client.token = self.token
            answer = client.runner("ha.local_drill", action=action, **kwargs)
            self.token = client.token
        received = time.time()
        if not isinstance(answer, dict) or "now" not in answer:
            raise CommandExecutionError(f"peer {self.name}: ha.local_drill {action}: {runner_error(answer)}")
        self._sample_offset(float(answer["now"]), sent, received)
        return answer

    def _sample_offset(self, their_now, sent, received):
        """Keep the clock offset seen on the quickest round trip (its error: half of it)."""
        rtt = received - sent
        with self.lock:
            if self.offset_rtt is None or rtt < self.offset_rtt:
                self.offset, self.offset_rtt = their_now - (sent + received) / 2, rtt


def runner_error(answer):
    """What a peer's runner answered instead of a result: the exception's last line for a traceback."""
    text = str(answer)
    if text.startswith("Exception occurred in runner"):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else text[:300]
    return f"unexpected answer {text[:200]!r}"


def masters_of(opts, peers):
    """``{name: Master}``: this master and every peer."""
    found = {opts["id"]: Master(opts["id"], opts=opts)}
    found.update((peer.name, Master(peer.name, peer=peer)) for peer in peers)
    return found


def call_all(masters, action, seconds=ha_drill_local.LOCATE_TIMEOUT, **kwargs):
    """``({name: answer}, {name: error text})`` of ``action`` on every master at once."""
    tasks = {name: (lambda m=master: m.call(action, seconds=seconds, **kwargs)) for name, master in masters.items()}
    results = ha_probe.run_concurrently(tasks, seconds + CALL_SLACK)
    answers, errors = {}, {}
    for name in masters:
        result = results.get(name)
        if name not in results:
            errors[name] = f"no answer within {seconds + CALL_SLACK:g} s"
        elif isinstance(result, Exception):
            errors[name] = str(result) or type(result).__name__
        else:
            answers[name] = result
    return answers, errors


def local_master_answers(opts):
    """This master's request server answers an application-level ping (its ret port)."""
    address = opts.get("interface") or "127.0.0.1"
    address = "127.0.0.1" if address in ("0.0.0.0", "::") else address
    try:
        ha_probe.app_ping(address, int(opts.get("ret_port", 4506)), LOCAL_PING_TIMEOUT,
                          opts.get("transport", "zeromq"), None)
        return None
    except (OSError, TimeoutError, ValueError) as err:
        return f"this master's request server does not answer on {address}:{opts.get('ret_port')}: {err}"


class Events:
    """A drill's events on this master's bus (``salt/ha/drill/<id>/...``), held back while it is frozen."""

    def __init__(self, opts, drill_id, progress):
        self.opts, self.drill_id, self.progress = opts, drill_id, progress
        self.held = []
        self.holding = False

    def fire(self, stage, data):
        self.held.append((stage, data))
        if not self.holding:
            self.flush()

    def say(self, message, **data):
        log.info("salt-ha drill %s: %s", self.drill_id, message)
        self.fire("progress", {"message": message, **data})

    def flush(self):
        held, self.held = self.held, []
        if not held:
            return
        for stage, data in held:
            if stage == "progress":
                self.progress(f"ha.drill {self.drill_id}: {data['message']}")
        try:
            with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False) as bus:
                for stage, data in held:
                    bus.fire_event({"id": self.drill_id, **data}, f"salt/ha/drill/{self.drill_id}/{stage}")
        except Exception as err:  # pylint: disable=broad-except  (events are best effort; the report is not)
            log.warning("salt-ha drill %s: could not fire its events: %s", self.drill_id, err)


class Monitor(threading.Thread):
    """Checks every second that the masters other than the target still answer."""

    def __init__(self, opts, masters, target=None):
        super().__init__(daemon=True, name="ha-drill-monitor")
        self.opts, self.masters, self.target = opts, masters, target
        self.misses = {name: 0 for name in masters if name != target}
        self.down = set()
        self.done = threading.Event()

    def check(self, name):
        master = self.masters[name]
        if master.is_local:
            return local_master_answers(self.opts) is None
        try:
            master.call("ping", seconds=LOCAL_PING_TIMEOUT)
            return True
        except Exception:  # pylint: disable=broad-except  (any failure is an unanswered check)
            return False

    def run(self):
        while not self.done.wait(MONITOR_INTERVAL):
            results = ha_probe.run_concurrently({name: (lambda n=name: self.check(n)) for name in self.misses},
                                                LOCAL_PING_TIMEOUT + CALL_SLACK)
            for name in self.misses:
                self.misses[name] = 0 if results.get(name) is True else self.misses[name] + 1
                if self.misses[name] >= MONITOR_MISSES:
                    self.down.add(name)

    def stop(self):
        self.done.set()


# --- locating and gates ---------------------------------------------------------


@dataclasses.dataclass
class Survey:
    """Where the minions are and what the masters said, just before acting."""

    answers: dict
    errors: dict
    origins: dict  # minion -> master it answers through

    def up(self):
        return sorted(self.answers)


def survey(opts, masters, minions):
    """Locate ``minions`` on every master (and this master's own request server)."""
    answers, errors = call_all(masters, "locate", minions=sorted(minions))
    local_problem = local_master_answers(opts)
    if local_problem:
        answers.pop(opts["id"], None)
        errors[opts["id"]] = local_problem
    origins = {}
    for name, answer in sorted(answers.items()):
        for minion_id in answer.get("connected") or []:
            origins.setdefault(minion_id, name)
    return Survey(answers, errors, origins)


def matched_minions(opts, tgt):
    """The minions accepted on this master whose id matches the glob ``tgt``."""
    return sorted(m for m in ha_keystore.KeyStore(opts).keys()["accepted"] if fnmatch.fnmatch(m, tgt))


def master_gates(opts, found, settings, now_local):
    """Gates about the masters: all up, no drill or freeze anywhere, not in a blackout window."""
    gates = [ha_drill.gate(
        "masters_up", not found.errors,
        "; ".join(f"{name}: {error}" for name, error in sorted(found.errors.items())) or None,
        "bring every master (and its salt-api) back before drilling" if found.errors else None,
        up=found.up(),
    )]
    busy = {name: answer.get("running") for name, answer in found.answers.items() if answer.get("running")}
    gates.append(ha_drill.gate(
        "no_other_drill", not busy,
        "; ".join(f"drill {info.get('id')} runs on {name}" for name, info in sorted(busy.items())) or None,
        "wait for it to end (salt-run ha.drill_history shows it then)" if busy else None,
    ))
    frozen = {name: answer["freeze"] for name, answer in found.answers.items()
              if (answer.get("freeze") or {}).get("active")}
    gates.append(ha_drill.gate(
        "no_freeze", not frozen,
        "; ".join(f"{name} is frozen by drill {state.get('drill')} until {state.get('thaw_at')}"
                  for name, state in sorted(frozen.items())) or None,
        "wait for its watchdog to thaw it" if frozen else None,
    ))
    gates.append(ha_drill.blackout_gate(settings, now_local))
    return gates


def readiness_gate(opts, peers, masters, canaries, origins, progress, unanswered=()):
    """Would failover work for every canary (``ha.readiness``'s rules, lint asked where each is connected)?"""
    if not canaries:
        return ha_drill.gate("minions_ready", False, "no minion to drill", "check tgt, and that the minions run")
    if unanswered:
        return ha_drill.gate("minions_ready", False, "not checked: not every master answers",
                             "bring every master back, then run the drill again")
    inventories, unreachable = ha_sync.inventories(opts, peers, progress, trees=False, keys=True)
    lint = {}
    for name, minion_ids in grouped_by_master(canaries, origins):
        try:
            lint.update(masters[name].call("lint", seconds=ha_drill_local.LINT_TIMEOUT, minions=minion_ids)["lint"])
        except Exception as err:  # pylint: disable=broad-except  (reported as the minions' reason)
            lint.update({minion_id: f"ha.lint through {name} failed: {err}" for minion_id in minion_ids})
    key_model = ha_key_model.master_key_model(inventories)
    not_ready = {}
    for minion_id in canaries:
        findings = lint.get(minion_id) or ha_readiness.LintUnavailable(
            f"the minion did not answer ha.lint through {origins[minion_id]}", "check the minion")
        reasons = ha_readiness.minion_readiness(minion_id, inventories, origins[minion_id], findings,
                                                key_model["problems"], key_model)
        reasons += [{"reason": f"master {name} not checked: {error}", "fix": "bring its salt-api back"}
                    for name, error in sorted(unreachable.items())]
        if reasons:
            not_ready[minion_id] = reasons
    return ha_drill.gate(
        "minions_ready", not not_ready,
        "; ".join(f"{minion_id}: {reasons[0]['reason']}" for minion_id, reasons in sorted(not_ready.items())) or None,
        "; ".join(f"{minion_id}: {reasons[0]['fix']}" for minion_id, reasons in sorted(not_ready.items())) or None,
        not_ready=not_ready,
    )


def capacity_gate(found, request, target, origins, canaries):
    """Enough masters are left to take the minions."""
    up = set(found.up())
    if request.mode == "hang":
        others = sorted(up - {target})
        ok = bool(others)
        return ha_drill.gate("masters_left", ok, None if ok else f"no master but {target} answers",
                             None if ok else "bring another master up first", left=others)
    stranded = sorted(m for m in canaries if not up - {origins[m]})
    return ha_drill.gate("masters_left", not stranded,
                         f"no other master answers for {', '.join(stranded)}" if stranded else None,
                         "bring another master up first" if stranded else None, left=sorted(up))


def hang_gate(found, request, target):
    """The target master exists, answers, allows a hang drill this long, and has minions to measure."""
    answer = found.answers.get(target)
    if answer is None:
        reason = found.errors.get(target, f"{target} is not this master nor one of its ha:peers")
        return ha_drill.gate("hang_allowed", False, f"target {target}: {reason}", "name a master that answers")
    if not answer.get("allow_hang"):
        return ha_drill.gate("hang_allowed", False, f"{target} does not allow hang drills",
                             f"set ha:drill:allow_hang: True in {target}'s master config (staging, or a window)")
    if request.duration > float(answer.get("max_duration") or 0):
        return ha_drill.gate("hang_allowed", False,
                             f"duration {request.duration:g} s is above {target}'s ha:drill:max_duration "
                             f"{answer.get('max_duration')}", "ask for a shorter duration")
    if not answer.get("connected"):
        return ha_drill.gate("hang_allowed", False, f"no minion matching the target is connected to {target}",
                             "check tgt, or drill a master that has minions")
    return ha_drill.gate("hang_allowed", True)


# --- moving and measuring ----------------------------------------------------------


class Watch:
    """
    ``await`` on every master but the one each minion leaves, started in threads.

    The watchers start ``lead`` seconds before the fault and watch for ``lead`` +
    ``budget`` + :data:`SETTLE` seconds. ``not_after`` (our clock) is the deadline
    a leave carries: a minion that runs its leave later does nothing, and one that
    runs it just in time is still seen where it lands, so the drill never stops
    watching a minion that may yet move.
    """

    def __init__(self, masters, minions_by_master, budget, lead):
        self.results, self.errors = {}, {}
        self.threads = []
        self.not_after = time.time() + lead + budget
        self.window = lead + budget + SETTLE
        for name, minion_ids in minions_by_master.items():
            if minion_ids:
                thread = threading.Thread(target=self._run, args=(masters[name], minion_ids), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _run(self, master, minion_ids):
        try:
            self.results[master.name] = master.call("await", seconds=self.window, minions=minion_ids,
                                                    budget=self.window)
        except Exception as err:  # pylint: disable=broad-except  (a master that fails is a finding)
            self.errors[master.name] = str(err) or type(err).__name__

    def wait(self, monitor=None):
        """Until every watcher ended (bounded by its window + slack) or the monitor saw a master go down."""
        deadline = time.monotonic() + self.window + CALL_SLACK
        while time.monotonic() < deadline and any(thread.is_alive() for thread in self.threads):
            if monitor is not None and monitor.down:
                return
            time.sleep(0.1)

    def first_answers(self, masters):
        """``{minion: (master, answer time on our clock)}``: the first master each answered through."""
        found = {}
        for name, result in self.results.items():
            for minion_id, when in (result.get("answers") or {}).items():
                local = float(when)  # the masters keep NTP time
                if minion_id not in found or local < found[minion_id][1]:
                    found[minion_id] = (name, local)
        return found


def watchers_for(masters, up, minions, origins, exclude=()):
    """``{master: [minions to watch there]}``: every up master except each minion's origin and ``exclude``."""
    return {name: sorted(m for m in minions if origins[m] != name)
            for name in up if name in masters and name not in exclude}


def measure(masters, watch, minions, origins, t0, budget):
    """Each minion's report line from the watchers' answers (``t0``: ``{minion: fault time, our clock}``)."""
    first = watch.first_answers(masters)
    lines = {}
    for minion_id in sorted(minions):
        if minion_id in first:
            name, when = first[minion_id]
            rto = max(0.0, when - t0[minion_id])
            lines[minion_id] = ha_drill.minion_entry(origins[minion_id], name, rto, ok=rto <= budget)
        else:
            errors = "; ".join(f"{name}: {error}" for name, error in sorted(watch.errors.items()))
            lines[minion_id] = ha_drill.minion_entry(
                origins[minion_id], error=f"did not answer through another master within {budget:g} s"
                + (f" (watchers failed: {errors})" if errors else ""))
    return lines


def grouped_by_master(minions, where):
    """``[(master, [minions on it])]`` sorted by master, from ``where`` (``{minion: master}``)."""
    groups = {}
    for minion_id in sorted(minions):
        groups.setdefault(where[minion_id], []).append(minion_id)
    return sorted(groups.items())


def leave_through(masters, minions, current, not_after):
    """
    Publish ``ha.leave_master`` to each minion through the master it is on, to be
    run by ``not_after`` (POSIX time) or not at all: ``{minion: leave time}``.
    """
    sent = {}
    for name, minion_ids in grouped_by_master(minions, current):
        answer = masters[name].call("leave", minions=minion_ids, not_after=not_after)
        when = float(answer.get("published_at") or time.time())
        sent.update((minion_id, when) for minion_id in minion_ids)
    return sent


def move_back(masters, up, minions, origins, current, budget, events):
    """
    Move each minion from where it is (``current``) back to its origin: leave,
    watch every other master, at most one hop per master. Returns ``{minion:
    master it is on at the end (None when unknown)}``.
    """
    where = dict(current)
    for hop in range(len(masters)):
        away = sorted(m for m in minions if where.get(m) is not None and where[m] != origins[m])
        if not away:
            break
        events.say(f"moving {len(away)} minion(s) back (hop {hop + 1})", minions=away)
        watch = Watch(masters, {name: sorted(m for m in away if where[m] != name) for name in up}, budget, LEAD)
        time.sleep(LEAD)
        try:
            leave_through(masters, away, where, watch.not_after)
        except Exception as err:  # pylint: disable=broad-except  (reported: the restore is incomplete)
            log.warning("salt-ha drill: moving minions back failed: %s", err)
            break
        watch.wait()
        first = watch.first_answers(masters)
        for minion_id in away:
            where[minion_id] = first[minion_id][0] if minion_id in first else None
    return where


def relocate(masters, minions, origins):
    """Where each minion answers now, for the report's ``restored`` check."""
    answers, _errors = call_all(masters, "locate", minions=sorted(minions))
    where = {}
    for name in sorted(answers):
        for minion_id in answers[name].get("connected") or []:
            if where.get(minion_id) != origins.get(minion_id):
                where[minion_id] = name
    return where


# --- returns of the probe job (RPO) -------------------------------------------------


def publish_probe(masters, minions, origins, seconds):
    """A ``test.sleep`` job for every minion, through its master, to be in flight at the fault: ``{jid: [minions]}``."""
    jobs = {}
    for name, minion_ids in grouped_by_master(minions, origins):
        answer = masters[name].call("publish", minions=minion_ids, fun="test.sleep", arg=[seconds])
        if answer.get("jid"):
            jobs[answer["jid"]] = sorted(minion_ids)
    return jobs


def returns_found(opts, masters, jid):
    """``{minion: [masters holding its return of jid]}``."""
    found = {}
    for name, master in sorted(masters.items()):
        try:
            if master.is_local:
                view = ha_jobs.local_jobs(opts, jid=jid)
            else:
                with ha_peers.PeerClient(master.peer) as client:
                    view = client.runner("ha.local_jobs", jid=jid)
        except Exception as err:  # pylint: disable=broad-except  (an unreadable master counts nothing)
            log.warning("salt-ha drill: cannot read job %s on %s: %s", jid, name, err)
            continue
        for minion_id in ((view.get("jobs") or {}).get(jid) or {}).get("returns") or {}:
            found.setdefault(minion_id, []).append(name)
    return found


def count_returns(opts, masters, jobs, grace=RPO_GRACE):
    """
    ``{"in_flight", "lost", "landed": {minion: [masters]}}`` of the probe jobs
    ``{jid: [minions]}``, once every return is found or ``grace`` s passed.
    """
    expected = {minion_id: jid for jid, minion_ids in jobs.items() for minion_id in minion_ids}
    landed = {}
    deadline = time.monotonic() + grace
    while True:
        for jid, minion_ids in jobs.items():
            found = returns_found(opts, masters, jid)
            landed.update((minion_id, found[minion_id]) for minion_id in minion_ids if minion_id in found)
        if len(landed) == len(expected) or time.monotonic() >= deadline:
            break
        time.sleep(1)
    return {"in_flight": len(expected), "lost": len(expected) - len(landed),
            "landed": {minion_id: landed.get(minion_id, []) for minion_id in sorted(expected)}}


# --- the drill ---------------------------------------------------------------------------


@dataclasses.dataclass
class Drill:
    """One drill's context."""

    opts: dict
    peers: list
    request: ha_drill.DrillRequest
    settings: ha_drill.DrillSettings
    progress: object
    drill_id: str = dataclasses.field(default_factory=ha_drill.new_drill_id)

    def __post_init__(self):
        self.masters = masters_of(self.opts, self.peers)
        self.events = Events(self.opts, self.drill_id, self.progress)
        self.notes = []

    def target_name(self):
        """The master a hang drill freezes: ``master=`` (this master's id or a peer's name), else this master."""
        return self.request.master or self.opts["id"]


def prepare(drill):
    """Survey, choose, gate: ``(gates, plan, survey, canaries)``."""
    request, settings = drill.request, drill.settings
    matched = matched_minions(drill.opts, request.tgt)
    found = survey(drill.opts, drill.masters, matched)
    now_local = datetime.datetime.now()
    gates = master_gates(drill.opts, found, settings, now_local)
    target, decided_by = None, None
    if request.mode == "hang":
        target = drill.target_name()
        canaries = sorted(m for m, origin in found.origins.items() if origin == target)
        gates.append(hang_gate(found, request, target))
    else:
        canaries, decided_by = ha_drill.choose_canaries(list(found.origins), request, settings)
    gates.append(capacity_gate(found, request, target, found.origins, canaries))
    gates.append(readiness_gate(drill.opts, drill.peers, drill.masters, canaries, found.origins, drill.progress,
                                unanswered=found.errors))
    plan = ha_drill.plan(request, settings, drill.drill_id, found.up(), canaries, found.origins, target,
                         decided_by)
    plan["matched"] = len(matched)
    plan["not_connected"] = sorted(set(matched) - set(found.origins))[:50]
    return gates, plan, found, canaries


def run(opts, peers, request, progress, test=False):
    """Run (or with ``test`` only gate and plan) one drill; the report."""
    settings = ha_drill.drill_settings(opts)
    drill = Drill(opts, peers, request, settings, progress)
    started = time.time()
    gates, plan, found, canaries = prepare(drill)
    if test:
        return ha_drill.report(drill.drill_id, request, gates, {}, started, time.time(), plan_data=plan, test=True)
    result = None
    if not ha_drill.refusals(gates):
        try:
            with ha_drill_history.drill_lock(opts, drill.drill_id):
                result = act(drill, gates, plan, found, canaries, started)
        except ha_drill_history.DrillRunning as err:
            gates.append(ha_drill.gate("no_other_drill", False, str(err), "wait for it to end"))
    if result is None:
        result = ha_drill.report(drill.drill_id, request, gates, {}, started, time.time(), plan_data=plan,
                                 aborted="refused by its gates: " + "; ".join(
                                     item["reason"] or item["gate"] for item in ha_drill.refusals(gates)))
    keep(opts, settings, result)
    drill.events.fire("end", {key: result[key] for key in ("mode", "result", "rto", "failed", "returns_lost",
                                                           "aborted", "restored")})
    drill.events.flush()
    return result


def keep(opts, settings, result):
    """Store the report and refresh the metrics textfile (failures are logged, never fatal)."""
    try:
        ha_drill_history.save(opts, result, settings.history)
        if settings.textfile:
            ha_drill_history.write_textfile(opts, settings.textfile)
    except OSError as err:
        log.warning("salt-ha drill %s: could not store its report: %s", result["id"], err)


def act(drill, gates, plan, found, canaries, started):
    """The drill itself, once its gates passed."""
    request = drill.request
    drill.events.fire("start", {"plan": plan})
    jobs = {}
    if request.rpo:
        try:
            jobs = publish_probe(drill.masters, canaries, found.origins, round(LEAD + 3))
        except Exception as err:  # pylint: disable=broad-except  (no RPO figure; the drill goes on)
            drill.notes.append(f"the probe job could not be published, returns not counted: {err}")
    if request.mode == "hang":
        minions, aborted, thawed = fault_hang(drill, found, canaries)
    else:
        minions, aborted = fault_minion(drill, found, canaries)
        thawed = None
    drill.events.say("moving the minions back")
    current = {m: minions[m]["to"] if minions[m]["to"] else found.origins[m] for m in canaries}
    up = [name for name in found.up() if thawed is not False or name != plan["target"]]
    move_back(drill.masters, up, canaries, found.origins, current, request.budget, drill.events)
    where = relocate(drill.masters, canaries, found.origins)
    for minion_id in canaries:
        minions[minion_id]["back"] = where.get(minion_id) == found.origins[minion_id] if minion_id in where else None
        if minion_id not in where:
            drill.notes.append(f"{minion_id} answers through no master after the drill")
    moved = [m for m in canaries if minions[m]["to"]]
    restored = (all(minions[m]["back"] for m in moved) and all(minions[m]["back"] is not False for m in canaries)
                and thawed is not False)
    returns = count_returns(drill.opts, drill.masters, jobs) if jobs else {"in_flight": 0, "lost": 0}
    for minion_id, landed in (returns.get("landed") or {}).items():
        minions[minion_id]["return_arrived"] = bool(landed)
        minions[minion_id]["return_on"] = landed
    notes = list(drill.notes) + clock_notes(drill.masters)
    if thawed is not None:
        notes.append(f"{plan['target']} {'answers again' if thawed else 'does not answer after its thaw'}")
    return ha_drill.report(drill.drill_id, request, gates, minions, started, time.time(), aborted=aborted,
                           restored=restored, returns=returns, plan_data=plan, notes=notes)


def clock_notes(masters, tolerance=CLOCK_TOLERANCE):
    """Notes on masters whose clock seems off ours by more than ``tolerance`` s (RTOs through them are off too)."""
    return [f"the clock of {name} seems {master.offset:+.2f} s off this master's (+/- {master.offset_rtt / 2:.2f} s): "
            "times it reported are off as much; keep the masters on NTP"
            for name, master in sorted(masters.items())
            if master.offset is not None and abs(master.offset) - master.offset_rtt / 2 > tolerance]


def run_fault(drill, found, canaries, watching, fault, what):
    """
    Start the watchers on the masters ``watching`` and the monitor, call
    ``fault(watch)`` (it returns ``{minion: fault time}``), wait for the answers and
    measure: ``(report lines, abort reason or None)``. A fault that fails aborts.
    """
    request, masters = drill.request, drill.masters
    watch = Watch(masters, watchers_for(masters, watching, canaries, found.origins), request.budget, LEAD)
    monitor = Monitor(drill.opts, {name: masters[name] for name in watching})
    monitor.start()
    try:
        t0 = fault(watch)
        watch.wait(monitor)
    except Exception as err:  # pylint: disable=broad-except  (the drill aborts and restores)
        lines = {m: ha_drill.minion_entry(found.origins[m], error=f"{what} failed: {err}") for m in canaries}
        return lines, f"{what} failed: {err}"
    finally:
        monitor.stop()
    lines = measure(masters, watch, canaries, found.origins, t0, request.budget)
    return lines, ha_drill.stop_reason(lines, request, monitor.down)


def fault_minion(drill, found, canaries):
    """Mode minion: the canaries leave their master; ``(report lines, abort reason)``."""

    def leave(watch):
        time.sleep(LEAD)  # the watchers are pinging by now
        drill.events.say(f"{len(canaries)} minion(s) leave their master", minions=canaries)
        return leave_through(drill.masters, canaries, found.origins, watch.not_after)

    lines, aborted = run_fault(drill, found, canaries, found.up(), leave, "the leave")
    if aborted:
        drill.events.say(f"aborted: {aborted}")
    return lines, aborted


def fault_hang(drill, found, canaries):
    """Mode hang: the target freezes; ``(report lines, abort reason, target answers again)``."""
    request, masters = drill.request, drill.masters
    target = drill.target_name()
    thaw = {}

    def freeze(_watch):
        drill.events.say(f"{target} freezes for {request.duration:g} s; {len(canaries)} minion(s) on it",
                         minions=canaries)
        answer = masters[target].call("freeze", drill_id=drill.drill_id, duration=request.duration, delay=LEAD)
        thaw["at"] = float(answer["thaw_at"])
        drill.events.holding = masters[target].is_local  # this master's bus is frozen with it
        return dict.fromkeys(canaries, float(answer["freeze_at"]))

    others = [name for name in found.up() if name != target]
    lines, aborted = run_fault(drill, found, canaries, others, freeze, f"the freeze of {target}")
    thawed = wait_for_thaw(drill, target, thaw["at"]) if "at" in thaw else True
    drill.events.holding = False
    drill.events.flush()
    if aborted:
        drill.events.say(f"aborted: {aborted}")
    return lines, aborted, thawed


def wait_for_thaw(drill, target, thaw_at):
    """Wait for the watchdog's thaw, then until ``target`` answers again (bounded): True when it does."""
    time.sleep(max(0.0, thaw_at - time.time()))
    deadline = time.monotonic() + THAW_GRACE
    master = drill.masters[target]
    while time.monotonic() < deadline:
        try:
            if master.is_local:
                if local_master_answers(drill.opts) is None:
                    return True
            else:
                master.call("ping", seconds=LOCAL_PING_TIMEOUT)
                return True
        except Exception:  # pylint: disable=broad-except  (not yet)
            pass
        time.sleep(0.5)
    return False
