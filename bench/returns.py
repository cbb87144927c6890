"""
Bench: job returns across a failover, stock Salt against the ``ha_returns`` engine (issue 10).

Topology (tests/support/lab.py): masters A (127.0.0.1) and B (127.0.0.2), one shared
key pair, identical random ports (never Salt's 4505/4506, as with the lab's
``SALT_HA_LAB_RANDOM_PORTS=1``), ``--minions`` failover minions ``master: [A, B]``
(keys accepted on both masters before start; no ``master_alive_interval``: the
ZeroMQ monitor moves a minion off a killed master). One lab per variant, used by
both parts and every repetition of that variant:

  stock   Salt 3008 as shipped
  engine  every minion with ``engines: [{ha_returns: {}}]`` (the engine's defaults)

Part 1, overhead when nothing fails (before any failover): ``--pings`` ``test.ping``
jobs through A, job i to minion i mod M, published asynchronously in batches of
``--batch`` (each batch waits, bounded, for its returns). Figures:
  - ``ret`` events per (jid, minion) on A and on B: exactly one each on A, none on
    B, none carrying ``ha_replay`` (the master got one ``_return`` per job: no extra
    round trip), and the same count over the whole run at the end;
  - CPU of the engine processes (all threads, ``/proc/<pid>/task/*/schedstat``, ns)
    over the burst and 2 s after it, per job: raw, and net of the engines' idle
    rate (measured over 5 s before and 3 s after the burst). The idle rate is a
    fixed cost per minion (the engine wakes up every 0.2 s), reported apart. Goal:
    < 1 ms CPU per job, judged on the net figure. For context, the minion main
    processes' CPU per job in both variants (different labs: noisy).
  The engine process is found by pid, never by name: among the minion daemon's
  descendants (salt-factories' pid, psutil ``children``), the one whose name or
  command line contains ``ha_returns``, else (Salt 3008 does not retitle engine
  processes here) the one the minion log names in ``Started
  'Engine(...ha_returns)' with pid N``. Nothing is ever signalled but masters.

Part 2, failover, ``--reps`` repetitions alternating the master that dies (A in
repetitions 1 and 3, B, restarted meanwhile, in 2: the minions fail over A -> B ->
A): every minion answers ``test.ping`` through the doomed master D; ``--jobs``
``test.sleep`` jobs go out through D (LocalClient ``cmd_async``; job i to minion
i mod M, or to every minion with ``--all-minions``); D's process tree is SIGKILLed
``--kill-after`` s after the last publication. Job i's sleep is chosen when it is
published so that it ends ``--outlive`` + i/(N-1) x ``--sleep-spread`` s after the
planned kill (the rest of the publishing time is predicted from the pace so far;
whole seconds, rounded up: ``test.sleep`` sleeps ``int(length)``). Then the bench
waits, bounded (the last job's end + ``--wait`` s), for a
``salt/job/<jid>/ret/<minion>`` event on the survivor S for every return in flight,
from salt-factories' event listener (stamps are the masters' own).
  - in flight: the job ran (its ``<cachedir>/proc/<jid>`` file was seen, polled
    from the first publication on, or its job process logged its return) and its
    return neither reached D before the kill nor was handed over before it
    (minion log); the rest is counted apart;
  - lost: in flight and no ``ret`` on S before the deadline;
  - duplicates: more than one ``ret`` event for one (jid, minion) on both masters
    over the variant's whole run (tallied at the end, so late replays count).
  - not stored: delivered (a ``ret`` event on S) but not in S's job cache
    (``<master_job_cache>.get_jid``, what ``jobs.lookup_jid`` reads), looked up until
    every delivered return is there or ``--wait`` s passed. Salt fires the ``ret``
    event before it stores the return, and a store can fail (saltstack/salt#68508):
    the event alone is not proof that the return was kept.
  Goal: 0 lost and 0 not stored with the engine (stock Salt: all of those in flight).

Replay delay, per return in flight that reached S: the ``ret`` stamp on S minus the
moment the return could first be delivered, the later of
  - the job's end: the time of its job process's log line ``Returning information
    for job: <jid>`` in the minion's log (the moment it hands its return to the
    minion's main process, which under stock Salt skips it: tagged for D). The
    proc file's mtime + the whole seconds slept is shown as a cross-check;
  - the minion's reconnection: S's stamp of the minion's ``salt/minion/<id>/start``
    event after the kill (the minion fires it through its new request channel to
    S once it has authenticated there: from then on a return can reach S).
Both clocks are this host's (loopback). Delays are shown apart for returns whose
job ended after the reconnection and before it. Goals: median <= 1 s, max <= 3 s.
From the minion logs, the engine's stages: job return -> judged undelivered ("was
not delivered"), -> replay fired ("replaying"), -> ``ret`` on S; replays per return
and "next try" lines; the engine's CPU during the repetition. For a repetition
with the engine that lost or duplicated a return, its log lines are printed.

Usage (from the repo root): ``.venv/bin/python bench/returns.py [--jobs 20]
[--minions 5] [--reps 3] [--pings 200] [--all-minions] [--keep-logs DIR]``
(~5 min on 2 CPUs). Starts only its own daemons, stops them by pid through
salt-factories (also on Ctrl-C / SIGTERM), loopback only.
"""

import argparse
import collections
import contextlib
import datetime
import io
import math
import pathlib
import re
import shutil
import statistics
import time

import _common  # sys.path: repo root and _utils
import psutil

GOAL_MEDIAN, GOAL_MAX, GOAL_CPU_MS = 1.0, 3.0, 1.0
VARIANTS = ("stock", "engine")
ENGINE_OVERRIDES = {"engines": [{"ha_returns": {}}]}
ENGINE_MARK = "ha_returns"
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
LOG_MARKS = {
    # the job process hands its return to the minion's main process
    "returning": re.compile(r"Returning information for job: (\d{20})"),
    # the engine (WARNING / INFO lines of _engines/ha_returns.py and _utils/ha_returns.py)
    "judged": re.compile(r"salt-ha returns: the return of job (\d{20}) was not delivered"),
    "replaying": re.compile(r"salt-ha returns: replaying the return of job (\d{20})"),
    "delivered": re.compile(r"salt-ha returns: delivered the return of job (\d{20})"),
    "retry": re.compile(r"salt-ha returns: job (\d{20}): .*next try"),
    # Salt itself
    "skipped": re.compile(r"(Skipping req for other master: cmd=_return)"),
    "failed": re.compile(r"failed to return the job information for job (\d{20})"),
}
RET_TAG = "salt/job/*/ret/*"
POLL = 0.1
IDLE_BEFORE, IDLE_AFTER = 5.0, 3.0  # seconds of quiet measured around the overhead burst
FIRST_PACE = 0.3  # seconds per publication assumed before the first one is measured
MAX_PACE = 2.0
ENGINE_STARTED = re.compile(r"Started 'Engine\([^']*ha_returns[^']*\)' with pid (\d+)")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="test.sleep jobs in flight per repetition (default 20)")
    parser.add_argument("--minions", type=int, default=5, help="failover minions (default 5)")
    parser.add_argument("--all-minions", action="store_true",
                        help="every job to every minion: jobs x minions returns in flight (default: job i to "
                             "minion i mod M)")
    parser.add_argument("--reps", type=int, default=3, help="failover repetitions per variant (default 3)")
    parser.add_argument("--kill-after", type=float, default=1.0,
                        help="seconds from the last publication to the SIGKILL (default 1)")
    parser.add_argument("--outlive", type=float, default=2.0,
                        help="seconds the shortest job is planned to outlive the kill (default 2)")
    parser.add_argument("--sleep-spread", type=float, default=4.0,
                        help="the jobs' planned ends spread over outlive .. outlive + this, after the kill (default 4)")
    parser.add_argument("--wait", type=float, default=8.0,
                        help="seconds after the last job's end to wait for returns on the survivor (default 8)")
    parser.add_argument("--pings", type=int, default=200, help="test.ping jobs of the overhead part (default 200)")
    parser.add_argument("--batch", type=int, default=20, help="test.ping jobs published per batch (default 20)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list of stock,engine (default both)")
    parser.add_argument("--keep-logs", default="", metavar="DIR",
                        help="copy the daemons' log files to DIR (created) before each lab is torn down")
    args = parser.parse_args()
    if not 1 <= args.jobs <= 500:
        parser.error("--jobs must be between 1 and 500")
    if not 1 <= args.minions <= 20:
        parser.error("--minions must be between 1 and 20")
    if not 1 <= args.reps <= 10:
        parser.error("--reps must be between 1 and 10")
    if not 0.2 <= args.kill_after <= 30:
        parser.error("--kill-after must be between 0.2 and 30")
    if not 0.5 <= args.outlive <= 60:
        parser.error("--outlive must be between 0.5 and 60")
    if not 0 <= args.sleep_spread <= 60:
        parser.error("--sleep-spread must be between 0 and 60")
    if not 1 <= args.wait <= 120:
        parser.error("--wait must be between 1 and 120")
    if not 0 <= args.pings <= 5000:
        parser.error("--pings must be between 0 and 5000")
    if not 1 <= args.batch <= 200:
        parser.error("--batch must be between 1 and 200")
    wanted = [name.strip() for name in args.variants.split(",") if name.strip()]
    if not wanted or set(wanted) - set(VARIANTS):
        parser.error(f"--variants must name some of {', '.join(VARIANTS)}")
    args.wanted = [name for name in VARIANTS if name in wanted]
    return args


# --- lab ---------------------------------------------------------------------



def build_lab(lablib, env, root, variant, count):
    lab = lablib.Lab(env.manager, root, ports=lablib.random_shared_ports((lablib.LOOPBACK_A, lablib.LOOPBACK_B)))
    lab.add_master("a", lablib.LOOPBACK_A)
    lab.add_master("b", lablib.LOOPBACK_B)
    overrides = dict(ENGINE_OVERRIDES) if variant == "engine" else {}
    for index in range(count):
        lab.add_failover_minion(f"rt{variant[0]}{index}", alive_interval=None, overrides=overrides)
    return lab


def quietly(call, *args, **kwargs):
    """Call, swallowing LocalClient's prints ("No minions matched the target")."""
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args, **kwargs)


def all_answer(client, minion_ids, seconds):
    """Bounded: synchronous ``test.ping`` to every minion until all answer; True when they did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ret = quietly(client.cmd, list(minion_ids), "test.ping", tgt_type="list", timeout=5, gather_job_timeout=1)
        except Exception as err:  # pylint: disable=broad-except
            _common.log.debug("test.ping failed: %s", err)
            ret = {}
        if all(ret.get(minion_id) is True for minion_id in minion_ids):
            return True
        time.sleep(0.5)
    return False


def publish(client, minion_ids, fun, arg):
    """``cmd_async`` (bounded retries); the jid."""
    for _ in range(3):
        try:
            jid = quietly(client.cmd_async, list(minion_ids), fun, arg, tgt_type="list")
        except Exception as err:  # pylint: disable=broad-except
            _common.log.warning("publishing %s failed: %s", fun, err)
            jid = None
        if jid:
            return str(jid)
        time.sleep(0.2)
    raise RuntimeError(f"could not publish {fun} to {minion_ids}")


def ret_events(env, master, after):
    """``{(jid, minion): [events]}`` of every ``ret`` event on ``master`` after POSIX ``after``."""
    found = collections.defaultdict(list)
    for event in env.event_listener.get_events([(master.id, RET_TAG)], after_time=after):
        parts = event.tag.split("/")
        if len(parts) == 5:
            found[(parts[2], parts[4])].append(event)
    return found


def job_cache_reader(master):
    """A function ``jid -> {minion ids whose return master's job cache holds}``."""
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.loader  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(master.config_file)
    get_jid = salt.loader.returners(opts, {})[f"{opts['master_job_cache']}.get_jid"]

    def holders(jid):
        try:
            return set(get_jid(jid) or {})
        except Exception:  # pylint: disable=broad-except  (a half-written job: not stored yet)
            return set()

    return holders


def stored_returns(master, pairs, seconds):
    """The ``(jid, minion)`` of ``pairs`` found in ``master``'s job cache, looked up for at most ``seconds``."""
    holders, stored = job_cache_reader(master), set()
    deadline = time.monotonic() + seconds
    while True:
        for jid in {jid for jid, _minion in pairs - stored}:
            found = holders(jid)
            stored.update(pair for pair in pairs if pair[0] == jid and pair[1] in found)
        if stored == pairs or time.monotonic() >= deadline:
            return stored
        time.sleep(0.5)


def first_stamps(env, master, tag_of, minion_ids, after):
    """``{minion: first stamp (POSIX) of tag_of(minion) on master after ``after``}``."""
    stamps = {}
    for minion_id in minion_ids:
        events = env.event_listener.get_events([(master.id, tag_of(minion_id))], after_time=after)
        if events:
            stamps[minion_id] = min(event.stamp.timestamp() for event in events)
    return stamps


def engine_processes(minion):
    """
    The ``ha_returns`` engine process among the minion daemon's descendants (psutil,
    from salt-factories' pid): the child whose name or command line contains
    ``ha_returns``; Salt 3008 does not retitle its engine processes here (no
    setproctitle call reaches them), so failing that, the child whose pid the minion
    log names in ``Started 'Engine(...ha_returns)' with pid N``. Nothing is signalled.
    """
    try:
        children = psutil.Process(minion.pid).children(recursive=True)
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return []
    found, by_pid = [], {}
    for child in children:
        try:
            by_pid[child.pid] = child
            if ENGINE_MARK in " ".join(child.cmdline()) or ENGINE_MARK in child.name():
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if found:
        return found
    log_file = pathlib.Path(minion.config.get("log_file") or "")
    text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    pids = [int(pid) for pid in ENGINE_STARTED.findall(text)]
    return [by_pid[pid] for pid in pids[-1:] if pid in by_pid]


def describe_children(minion):
    """The minion daemon's descendants as ``pid name cmdline`` (for an error message)."""
    try:
        children = psutil.Process(minion.pid).children(recursive=True)
    except (psutil.NoSuchProcess, TypeError, ValueError) as err:
        return f"(none: {err})"
    shown = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            shown.append(f"{child.pid} {child.name()!r} {' '.join(child.cmdline())[:80]!r}")
    return "; ".join(shown)


def keep_logs(lab, variant, args):
    """``--keep-logs``: copy every daemon's log file to ``DIR/<variant>-<daemon id>.log``."""
    if not args.keep_logs:
        return
    target = pathlib.Path(args.keep_logs)
    target.mkdir(parents=True, exist_ok=True)
    for daemon in [*lab.masters.values(), *lab.minions.values()]:
        source = pathlib.Path(daemon.config.get("log_file") or "")
        if source.is_file():
            shutil.copyfile(source, target / f"{variant}-{daemon.id}.log")


def task_cpu(pid):
    """
    CPU seconds of every thread of ``pid`` from ``/proc/<pid>/task/*/schedstat``
    (nanoseconds: psutil's clock ticks are 10 ms, too coarse for a few seconds of
    an idle engine); None where that is not readable.
    """
    total = 0
    try:
        for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def cpu_seconds(processes):
    """Summed CPU seconds (all threads) of ``processes`` (None if one is gone)."""
    total = 0.0
    for process in processes:
        seconds = task_cpu(process.pid)
        if seconds is None:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                return None
            seconds = times.user + times.system
        total += seconds
    return total


def minion_mains(minions):
    processes = []
    for minion in minions:
        with contextlib.suppress(psutil.NoSuchProcess, TypeError, ValueError):
            processes.append(psutil.Process(minion.pid))
    return processes


def log_time(stamp):
    """POSIX time of a Salt log record's ``asctime`` (local time, milliseconds)."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


class LogTail:
    """What the minions wrote to their log files since the last :meth:`mark`."""

    def __init__(self, minions):
        self.paths = {minion.id: pathlib.Path(minion.config["log_file"]) for minion in minions}
        self.offsets = {}
        self.mark()

    def mark(self):
        for minion_id, path in self.paths.items():
            self.offsets[minion_id] = path.stat().st_size if path.exists() else 0

    def texts(self):
        """``{minion: text written since the mark}``."""
        found = {}
        for minion_id, path in self.paths.items():
            if not path.exists():
                continue
            with path.open("rb") as handle:
                handle.seek(self.offsets[minion_id])
                found[minion_id] = handle.read().decode("utf-8", "replace")
        return found


def parse_logs(texts):
    """
    ``(marks, lines)``: ``marks[kind][(jid, minion)]`` = POSIX times of the log lines
    of ``kind`` (see LOG_MARKS; ``skipped`` is keyed by minion only), and the
    engine's warnings and Salt's skip / failed-return lines, for display.
    """
    marks = {kind: collections.defaultdict(list) for kind in LOG_MARKS}
    lines = []
    for minion_id, text in texts.items():
        for line in text.splitlines():
            stamp = LOG_TIME.match(line)
            if not stamp:
                continue
            for kind, pattern in LOG_MARKS.items():
                found = pattern.search(line)
                if found:
                    key = minion_id if kind == "skipped" else (found.group(1), minion_id)
                    marks[kind][key].append(log_time(stamp.group(1)))
                    if kind not in ("returning", "replaying"):
                        lines.append(f"{minion_id}: {line.strip()}")
                    break
    return marks, lines


# --- part 1: overhead --------------------------------------------------------


def idle_rate(engines, seconds):
    """CPU seconds per second of the engines together over ``seconds`` of quiet (None without engines)."""
    if not engines:
        time.sleep(seconds)
        return None
    before, began = cpu_seconds(engines), time.monotonic()
    time.sleep(seconds)
    after = cpu_seconds(engines)
    if before is None or after is None:
        return None
    return (after - before) / (time.monotonic() - began)


def overhead(env, lab, variant, args, engines):
    """Part 1; a dict of figures."""
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    minion_ids = list(lab.minions)
    mains = minion_mains(lab.minions.values())
    result = {"variant": variant, "jobs": args.pings, "error": None}
    client = _common.local_client(master_a)
    try:
        time.sleep(1.0)
        idle_before = idle_rate(engines, IDLE_BEFORE)
        started_wall, started = time.time(), time.monotonic()
        engine_cpu, main_cpu = cpu_seconds(engines), cpu_seconds(mains)
        pairs = []  # (jid, minion): job i goes to minion i mod M
        remaining = args.pings
        while remaining > 0:
            batch = []
            for _ in range(min(args.batch, remaining)):
                minion_id = minion_ids[len(pairs) % len(minion_ids)]
                pairs.append((publish(client, [minion_id], "test.ping", []), minion_id))
                batch.append(pairs[-1])
            remaining -= len(batch)
            expected = set(batch)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if expected <= set(ret_events(env, master_a, started_wall)):
                    break
                time.sleep(POLL)
        burst = time.monotonic() - started
        time.sleep(2.0)  # the engine's grace (1 s) and any late event
        engine_after, main_after = cpu_seconds(engines), cpu_seconds(mains)
        window = time.monotonic() - started
        idle_after = idle_rate(engines, IDLE_AFTER)
        seen_a = ret_events(env, master_a, started_wall)
        seen_b = ret_events(env, master_b, started_wall)
        counts = [len(seen_a.get(pair, [])) for pair in pairs]
        result.update(
            burst=burst,
            missing=sum(1 for count in counts if count == 0),
            extra=sum(count - 1 for count in counts if count > 1),
            on_b=sum(len(seen_b.get(pair, [])) for pair in pairs),
            replay_marked=sum(1 for pair in pairs for event in seen_a.get(pair, []) if "ha_replay" in event.data),
            pairs=pairs,
        )
        if engines and None not in (engine_cpu, engine_after, idle_before, idle_after):
            idle = (idle_before * IDLE_BEFORE + idle_after * IDLE_AFTER) / (IDLE_BEFORE + IDLE_AFTER)
            result["idle_ms_per_s"] = idle * 1000 / len(engines)
            result["idle_spread"] = (idle_before * 1000 / len(engines), idle_after * 1000 / len(engines))
            result["engine_ms_per_job"] = (engine_after - engine_cpu) * 1000 / len(pairs)
            result["engine_ms_per_job_net"] = (engine_after - engine_cpu - idle * window) * 1000 / len(pairs)
        if main_cpu is not None and main_after is not None and pairs:
            result["main_ms_per_job"] = (main_after - main_cpu) * 1000 / len(pairs)
    finally:
        client.destroy()
    return result


# --- part 2: failover --------------------------------------------------------


def targets_of(index, minion_ids, spread):
    return [minion_ids[index % len(minion_ids)]] if spread else list(minion_ids)


def publish_jobs(client, args, minion_ids, between):
    """
    Publish the repetition's ``test.sleep`` jobs; ``({(jid, minion): sleep}, published wall time)``.
    Job i sleeps so that it ends ``--outlive`` + i/(N-1) x ``--sleep-spread`` s after
    the planned kill (``--kill-after`` s after the last publication): the time still
    needed to publish the jobs after it is predicted from the pace so far.
    ``between(jobs)`` is called after each publication.
    """
    jobs = {}
    first = time.monotonic()
    published_wall = time.time()
    for index in range(args.jobs):
        pace = (time.monotonic() - first) / index if index else FIRST_PACE
        share = index / (args.jobs - 1) if args.jobs > 1 else 0.0
        to_kill = args.kill_after + (args.jobs - 1 - index) * min(pace, MAX_PACE)
        # test.sleep sleeps int(length) seconds: whole seconds, rounded up.
        sleep = math.ceil(to_kill + args.outlive + args.sleep_spread * share)
        targets = targets_of(index, minion_ids, not args.all_minions)
        jid = publish(client, targets, "test.sleep", [sleep])
        for minion_id in targets:
            jobs[(jid, minion_id)] = sleep
        between(jobs)
    return jobs, published_wall


def proc_file(minion, jid):
    return pathlib.Path(minion.config["cachedir"]) / "proc" / jid


def look_for_starts(lab, jobs, started, skip=()):
    """Record the mtime of every job's proc file not seen yet (it exists while the job runs)."""
    for pair in jobs:
        if pair not in started and pair not in skip:
            with contextlib.suppress(OSError):
                started[pair] = proc_file(lab.minions[pair[1]], pair[0]).stat().st_mtime


def classify(jobs, started, before, marks, kill_wall):
    """
    ``(early, in_flight)`` sets of (jid, minion): early when the return reached D before
    the kill or its job process handed it over before the kill (minion log); in flight
    when the job ran (proc file or log) and it is not early.
    """
    returning = marks["returning"]
    early = {pair for pair in jobs if before.get(pair) or min(returning.get(pair, [kill_wall])) < kill_wall}
    in_flight = {pair for pair in jobs if (pair in started or returning.get(pair)) and pair not in early}
    return early, in_flight


def failover_rep(env, lab, lablib, variant, rep, args, tail, engines):
    """One repetition: publish through D, kill D, count returns on S; a dict of figures."""
    names = ("a", "b") if rep % 2 == 1 else ("b", "a")
    dying, survivor = lab.masters[names[0]], lab.masters[names[1]]
    minion_ids = list(lab.minions)
    result = {"variant": variant, "rep": rep, "dying": names[0].upper(), "error": None}
    client = _common.local_client(dying)
    try:
        if not all_answer(client, minion_ids, 60):
            result["error"] = f"not every minion answers through {result['dying']} before the fault"
            return result
        tail.mark()
        cpu_before, rep_began = cpu_seconds(engines), time.monotonic()
        started = {}  # (jid, minion) -> mtime of the job's proc file (POSIX)
        jobs, published_wall = publish_jobs(
            client, args, minion_ids, lambda jobs: look_for_starts(lab, jobs, started))
    finally:
        client.destroy()
    result["publish_seconds"] = time.time() - published_wall
    kill_at = time.monotonic() + args.kill_after
    while time.monotonic() < kill_at:
        look_for_starts(lab, jobs, started)
        time.sleep(min(POLL, max(0.0, kill_at - time.monotonic())))
    kill_wall = time.time()
    lablib.kill(dying)
    result["kill_seconds"] = time.time() - kill_wall
    before = ret_events(env, dying, published_wall)
    # A job the minion received before the kill may start after it (forks are slow
    # on a busy host): it is in flight too, so proc files are looked for until the end.
    # A return is in flight unless it reached D before the kill or its job process
    # handed it over before the kill (minion log).
    deadline = kill_wall + max(jobs.values()) + args.wait
    while True:
        look_for_starts(lab, jobs, started)
        marks, lines = parse_logs(tail.texts())
        early, in_flight = classify(jobs, started, before, marks, kill_wall)
        seen = ret_events(env, survivor, kill_wall)
        complete = len(in_flight) + len(early) == len(jobs)
        if complete:
            ends = [min(marks["returning"].get(p, [started.get(p, kill_wall) + jobs[p]])) for p in in_flight]
            deadline = min(deadline, max(ends, default=time.time()) + args.wait)
        if (complete and all(seen.get(pair) for pair in in_flight)) or time.time() >= deadline:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate right behind the first delivery
    seen = ret_events(env, survivor, kill_wall)
    cpu_after = cpu_seconds(engines)
    if engines and cpu_before is not None and cpu_after is not None:
        result["engine_cpu"] = cpu_after - cpu_before
        result["engine_cpu_share"] = (cpu_after - cpu_before) / (time.monotonic() - rep_began) / len(engines)
    marks, lines = parse_logs(tail.texts())
    early, in_flight = classify(jobs, started, before, marks, kill_wall)
    started_before_kill = {pair for pair in started if started[pair] <= kill_wall}
    starts = first_stamps(env, survivor, lambda m: f"salt/minion/{m}/start", minion_ids, kill_wall)
    delivered = {pair for pair in in_flight if seen.get(pair)}
    stored = stored_returns(survivor, delivered, args.wait)
    result.update(
        jobs=jobs, kill_wall=kill_wall, log=lines,
        returns=len(jobs), returned_early=len(early), in_flight=len(in_flight),
        started_after_kill=len(in_flight - started_before_kill),
        not_started=sorted(pair for pair in jobs if pair not in in_flight and pair not in early),
        delivered=len(delivered), lost=sorted(in_flight - delivered), not_stored=sorted(delivered - stored),
        duplicates=sum(len(seen.get(pair, [])) - 1 for pair in jobs if len(seen.get(pair, [])) > 1),
        replay_marked=sum(1 for pair in delivered if any("ha_replay" in e.data for e in seen[pair])),
        failover=[stamp - kill_wall for stamp in starts.values()],
        no_start_event=sorted(set(minion_ids) - set(starts)),
        skipped=sum(len(times) for times in marks["skipped"].values()),
        failed=sum(1 for pair in jobs if marks["failed"].get(pair)),
        retries=sum(len(marks["retry"].get(pair, [])) for pair in jobs),
    )
    # When each in-flight return was handed over by its job process, relative to the kill.
    ends, from_log = {}, 0
    for pair in in_flight:
        returning = marks["returning"].get(pair)
        if returning:
            ends[pair], from_log = min(returning), from_log + 1
        else:
            ends[pair] = started[pair] + jobs[pair]  # in flight, so the job started: proc file or log
    result["ends_from_log"] = from_log
    result["end_after_kill"] = _common.spread([end - kill_wall for end in ends.values()])
    result["estimate_gap"] = [ends[p] - (started[p] + jobs[p]) for p in in_flight
                              if marks["returning"].get(p) and p in started]
    delays = {"after": [], "before": []}
    stages = {"judge": [], "replay": [], "send": [], "replays": []}
    reasons = collections.Counter()
    for pair in sorted(delivered):
        first = min(seen[pair], key=lambda event: event.stamp)
        arrived = first.stamp.timestamp()
        reconnected = starts.get(pair[1], kill_wall)
        could = max(ends[pair], reconnected)
        delays["after" if ends[pair] >= reconnected else "before"].append(arrived - could)
        marker = first.data.get("ha_replay") or {}
        reasons[str(marker.get("reason", "(no ha_replay)")).split(" from ")[0][:60]] += 1
        judged, replaying = marks["judged"].get(pair), marks["replaying"].get(pair)
        if judged:
            stages["judge"].append(min(judged) - ends[pair])
        if judged and replaying:
            stages["replay"].append(min(replaying) - min(judged))
        if replaying:
            fired = [t for t in replaying if t <= arrived + 0.05]  # the replay this ret event answers
            if fired:
                stages["send"].append(arrived - max(fired))
            stages["replays"].append(len(replaying))
    result["delays"] = delays["after"] + delays["before"]
    result["delays_after"], result["delays_before"] = delays["after"], delays["before"]
    result["stages"] = stages
    result["reasons"] = dict(reasons)
    # The dead master comes back (the next repetition kills the survivor).
    try:
        dying.start()
    except Exception as err:  # pylint: disable=broad-except
        result["restart_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    return result


def tally(env, lab, since, pairs):
    """Every ``ret`` event for ``pairs`` on both masters since ``since``: ``{pair: count}``."""
    counts = collections.Counter()
    for master in lab.masters.values():
        for pair, events in ret_events(env, master, since).items():
            if pair in pairs:
                counts[pair] += len(events)
    return counts


def find_engines(lab, variant, args):
    engines = []
    if variant != "engine":
        return engines
    for minion in lab.minions.values():
        found = engine_processes(minion)
        if len(found) != 1:
            keep_logs(lab, variant, args)
            raise RuntimeError(f"{minion.id}: {len(found)} ha_returns engine processes found among "
                               f"{describe_children(minion)}")
        engines.extend(found)
    return engines


def run_variant(lablib, root, variant, args):
    """One lab: part 1 then the repetitions of part 2; ``(overhead result, [rep results], extra)``."""
    reps, over, extra = [], None, {}
    with lablib.StandaloneFactories(root / "f", event_seconds=3600) as env:
        lab = build_lab(lablib, env, root / "lab", variant, args.minions)
        began = time.time()
        with lablib.RunningDaemons(lablib.daemons(lab)):
            client = _common.local_client(lab.masters["a"])
            try:
                if not all_answer(client, list(lab.minions), 90):
                    raise RuntimeError("the minions do not all answer through A after start")
            finally:
                client.destroy()
            engines = find_engines(lab, variant, args)
            if engines:
                first = next(iter(lab.minions.values()))
                extra["engine_process"] = f"pid {engines[0].pid} (a child of {first.id}'s daemon, pid {first.pid})"
            extra["setup"] = time.time() - began
            if args.pings:
                over = overhead(env, lab, variant, args, engines)
                print(f"  [{variant}] overhead: {describe_overhead(over)}", flush=True)
            tail = LogTail(lab.minions.values())
            for rep in range(1, args.reps + 1):
                started = time.monotonic()
                try:
                    result = failover_rep(env, lab, lablib, variant, rep, args, tail, engines)
                except Exception as err:  # pylint: disable=broad-except
                    result = {"variant": variant, "rep": rep, "error": f"{type(err).__name__}: {str(err)[:300]}"}
                result["seconds"] = time.monotonic() - started
                reps.append(result)
                print(f"  [{variant}] rep {rep}: {describe_rep(result)}", flush=True)
                if result.get("restart_error"):
                    print(f"  [{variant}] restarting {result['dying']} failed: {result['restart_error']}", flush=True)
                if result.get("error") or result.get("restart_error"):
                    break
            # Late replays or duplicates of any repetition's jobs, on both masters.
            time.sleep(1.0)
            pairs = {pair for result in reps for pair in result.get("jobs", {})}
            counts = tally(env, lab, began, pairs)
            extra["duplicates"] = sum(count - 1 for count in counts.values() if count > 1)
            extra["duplicated_pairs"] = sorted(pair for pair, count in counts.items() if count > 1)
            if over and over.get("pairs"):
                extra["ping_total_events"] = sum(tally(env, lab, began, set(over["pairs"])).values())
            extra["engines_alive_at_end"] = all(p.is_running() for p in engines) if engines else None
            keep_logs(lab, variant, args)
    return over, reps, extra


# --- report ------------------------------------------------------------------


def describe_overhead(over):
    if over is None:
        return "skipped"
    if over.get("error"):
        return f"ERROR {over['error']}"
    text = (f"{over['jobs']} test.ping jobs (job i to minion i mod M) in {over['burst']:.1f} s; "
            f"ret events on A missing {over['missing']}, extra {over['extra']}, on B {over['on_b']}, "
            f"with ha_replay {over['replay_marked']}")
    if "engine_ms_per_job" in over:
        text += (f"; engine CPU per job {over['engine_ms_per_job_net']:.3f} ms net of idle, "
                 f"{over['engine_ms_per_job']:.3f} ms raw (idle {over['idle_ms_per_s']:.2f} ms/s per engine: "
                 f"{over['idle_spread'][0]:.2f} before, {over['idle_spread'][1]:.2f} after)")
    if "main_ms_per_job" in over:
        text += f"; minion main process CPU {over['main_ms_per_job']:.2f} ms/job"
    return text


def describe_rep(result):
    if result.get("error"):
        return f"ERROR {result['error']}"
    med, _low, high = _common.spread(result["delays"])
    fail_med = _common.spread(result["failover"])[0]
    end_med, end_low, end_high = result["end_after_kill"]
    text = (f"{result['dying']} killed; {result['returns']} returns, {result['in_flight']} in flight "
            f"({result['returned_early']} returned before the kill, {result['started_after_kill']} started "
            f"after it, {len(result['not_started'])} never started: publication lost with D); delivered to the "
            f"survivor {result['delivered']}, LOST {len(result['lost'])}, not in its job cache "
            f"{len(result['not_stored'])}, duplicates {result['duplicates']}; ")
    if result["delays"]:
        text += f"delay med {med:.2f} s max {high:.2f} s; "
    text += (f"failover (start event) med {_common.fmt(fail_med)}; returns handed over "
             f"{_common.fmt(end_low)} .. {_common.fmt(end_high)} after the kill (med {_common.fmt(end_med)}); "
             f"publishing {result['publish_seconds']:.1f} s")
    if "engine_cpu" in result:
        text += f"; engine CPU {result['engine_cpu']:.2f} s ({100 * result['engine_cpu_share']:.0f} % per engine)"
    return text + f"; took {result['seconds']:.0f} s"


def fmt_spread(values, unit="s"):
    med, low, high = _common.spread(values)
    if med is None:
        return "-"
    return f"med {med:.2f} {unit} ({low:.2f}-{high:.2f}, n={len(values)})"


def report(results, args):
    print()
    target = "each job to every minion" if args.all_minions else "job i to minion i mod M"
    print(f"salt-ha bench/returns.py: {args.jobs} test.sleep jobs ({target}) on {args.minions} minions per "
          f"repetition, the publishing master SIGKILLed {args.kill_after:g} s after the last publication, jobs "
          f"planned to end {args.outlive:g}-{args.outlive + args.sleep_spread:g} s after it; {args.reps} "
          "repetition(s) per variant, one lab per variant")
    print()
    rows = []
    for variant, (_over, reps, extra) in results.items():
        good = [r for r in reps if not r.get("error")]
        delays = [d for r in good for d in r["delays"]]
        rep_medians = [statistics.median(r["delays"]) for r in good if r["delays"]]
        med, _low, high = _common.spread(delays)
        rows.append([
            variant, f"{len(good)}/{len(reps)}", "/".join(str(r["in_flight"]) for r in good) or "-",
            "/".join(str(len(r["lost"])) for r in good) or "-",
            "/".join(str(len(r["not_stored"])) for r in good) or "-", extra.get("duplicates", "-"),
            _common.fmt(med), _common.fmt(statistics.median(rep_medians) if rep_medians else None),
            _common.fmt(high), _common.fmt(_common.spread([f for r in good for f in r["failover"]])[0]),
        ])
    _common.print_table(["variant", "reps ok", "in flight", "lost", "not stored", "duplicates", "delay med",
                         "med of rep meds", "delay max", "failover med"], rows)
    print("  delay = ret stamp on the survivor - max(job process's 'Returning information for job' log time, "
          "survivor's stamp of salt/minion/<id>/start after the kill)")
    for variant, (_over, reps, extra) in results.items():
        for result in reps:
            if result.get("error"):
                print(f"  {variant} rep {result['rep']}: ERROR {result['error']}")
                continue
            stages = result["stages"]
            print(f"  {variant} rep {result['rep']}: returns ended after the minion reconnected: delay "
                  f"{fmt_spread(result['delays_after'])}; ended before it: {fmt_spread(result['delays_before'])}")
            print(f"    Salt: {result['skipped']} 'Skipping req for other master', {result['failed']} 'failed to "
                  f"return'; job end from the log for {result['ends_from_log']}/{result['in_flight']} (log time - "
                  f"(proc mtime + sleep) {fmt_spread(result['estimate_gap'])})")
            if variant == "engine":
                print(f"    engine: reasons {result['reasons'] or '-'}; ret with ha_replay {result['replay_marked']}; "
                      f"returned -> judged undelivered {fmt_spread(stages['judge'])}; judged -> replayed "
                      f"{fmt_spread(stages['replay'])}; replayed -> ret on survivor {fmt_spread(stages['send'])}; "
                      f"replays per return {fmt_spread(stages['replays'], '')}; 'next try' lines {result['retries']}")
            if result["no_start_event"]:
                print(f"    no start event on the survivor from {result['no_start_event']}")
            trouble = ((variant == "engine" and (result["lost"] or result["not_stored"] or result["duplicates"]))
                       or result["not_started"])
            if trouble:
                print(f"    lost {result['lost'][:10]}, not stored {result['not_stored'][:10]}, "
                      f"never started {result['not_started'][:10]}")
                for line in [line for line in result["log"] if "salt-ha" in line][-30:]:
                    print(f"    log: {line[:300]}")
        if extra.get("engine_process"):
            print(f"  {variant}: engine process found by pid: {extra['engine_process']}; all alive at the end: "
                  f"{extra.get('engines_alive_at_end')}")
        if extra.get("duplicated_pairs"):
            print(f"  {variant}: duplicated (jid, minion): {extra['duplicated_pairs'][:10]}")
    print()
    print("overhead, no failover (before the first failover of each lab):")
    for variant, (over, _reps, extra) in results.items():
        print(f"  {variant}: {describe_overhead(over)}; ret events for those jobs on both masters over the whole "
              f"run {extra.get('ping_total_events', '-')}")
    print()
    verdicts(results)


def verdicts(results):
    stock, engine = results.get("stock"), results.get("engine")
    if stock:
        good = [r for r in stock[1] if not r.get("error")]
        all_lost = bool(good) and all(len(r["lost"]) == r["in_flight"] for r in good)
        print(f"stock Salt loses every return in flight: {'yes' if all_lost else 'NO'} "
              f"({sum(len(r['lost']) for r in good)} of {sum(r['in_flight'] for r in good)})")
    if not engine:
        return
    over, reps, extra = engine
    good = [r for r in reps if not r.get("error")]
    lost = sum(len(r["lost"]) for r in good)
    not_stored = sum(len(r["not_stored"]) for r in good)
    verdict = "met" if good and len(good) == len(reps) and lost == 0 and not_stored == 0 else "MISSED"
    print(f"goal: 0 returns lost with the engine: {verdict} ({lost} lost of {sum(r['in_flight'] for r in good)}, "
          f"{not_stored} delivered but not in the survivor's job cache; {extra.get('duplicates', 0)} duplicate(s))")
    delays = [d for r in good for d in r["delays"]]
    if delays:
        med, _low, high = _common.spread(delays)
        print(f"goal: replay delay median <= {GOAL_MEDIAN:g} s: {'met' if med <= GOAL_MEDIAN else 'MISSED'} "
              f"({med:.2f} s); max <= {GOAL_MAX:g} s: {'met' if high <= GOAL_MAX else 'MISSED'} ({high:.2f} s)")
    if over and "engine_ms_per_job_net" in over:
        net = over["engine_ms_per_job_net"]
        print(f"goal: engine CPU < {GOAL_CPU_MS:g} ms per job: {'met' if net < GOAL_CPU_MS else 'MISSED'} "
              f"({net:.3f} ms net of idle; {over['engine_ms_per_job']:.3f} ms raw over the burst; "
              f"idle {over.get('idle_ms_per_s') or 0:.2f} ms/s per minion whatever the jobs)")
    if over and "missing" in over:
        ok = over["missing"] == 0 and over["extra"] == 0 and over["on_b"] == 0 and over["replay_marked"] == 0
        print(f"goal: one ret event per job with the engine when nothing fails: {'met' if ok else 'MISSED'}")


def main():
    args = parse_args()
    results = {}
    with _common.session("sha-rt-") as root:
        from tests.support import lab as lablib  # pylint: disable=import-outside-toplevel

        for variant in args.wanted:
            started = time.monotonic()
            print(f"[{variant}] lab of 2 masters and {args.minions} minions", flush=True)
            try:
                results[variant] = run_variant(lablib, root / variant[0], variant, args)
            except Exception as err:  # pylint: disable=broad-except
                print(f"[{variant}] ERROR {type(err).__name__}: {str(err)[:300]}", flush=True)
                results[variant] = (None, [{"variant": variant, "rep": 0, "error": str(err)[:300]}], {})
            print(f"[{variant}] done in {time.monotonic() - started:.0f} s", flush=True)
        report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
