"""
Jobs as every master saw them: one master's job cache read (:func:`local_jobs`,
what peers call as ``ha.local_jobs``) and the views of all masters merged
(:func:`merge_jobs`, :func:`jobs`: ``ha.jobs``). No Salt dunders: every function
takes ``opts`` and, for reading, the job cache's returner functions.

A master's job cache (``master_job_cache``, ``local_cache`` by default) holds,
per jid, a *load* and the minions' returns. The load is the publication when this
master published the job; when it only received returns for a jid it never
published (the minion failed over, or salt-ha's ``ha_returns`` engine replayed
the return here), Salt saves the first return's own load instead: it carries
``return``, ``id`` and ``cmd: _return``, and, when replayed by ``ha_returns``,
``ha_replay: {"from": <publishing master>, "reason": ...}``. Jids come from the
publishing master's UTC clock (Salt 3008), so the time window is read from them.
"""

import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import re

import salt.minion
import salt.payload
import salt.utils.files
import salt.utils.jid
from salt.exceptions import CommandExecutionError, SaltException, SaltInvocationError

import ha_sync
import ha_text

log = logging.getLogger(__name__)

DEFAULT_HOURS = 24
MAX_HOURS = 24 * 366
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100000
# 20 ASCII digits (YYYYMMDDhhmmssffffff), or Salt's ``unique_jid`` form ``<20 digits>_<pid>``.
JID_PATTERN = re.compile(r"[0-9]{20}(_[0-9]+)?")
JID_TIME_FORMAT = "%Y%m%d%H%M%S%f"
# Jobs a master runs for itself, and the gather-job pings of Salt's clients: never listed.
MASTER_JOB_PREFIXES = ("runner.", "wheel.")
IGNORED_FUNCTIONS = ("saltutil.find_job",)
LOCAL_FIELDS = ("master", "returner", "jobs", "total", "left_out")
ENTRY_FIELDS = ("published_here", "returns")
RETURN_FIELDS = ("success", "retcode", "return")
SHOWN_IDS = 10
# A listing (no jid) stops adding jobs once it holds this many returns (about 5 MB of JSON).
MAX_LISTED_RETURNS = 100000


# --- arguments --------------------------------------------------------------------


def validate_jid(jid):
    """
    ``jid`` as Salt's jid string, or None. An int is taken as its digits (Salt's CLI
    reads ``jid=20261127...`` as a number). Salt's own ``is_jid`` also passes
    ``" 000..."``, ``"+000..."`` or full-width digits (it calls ``int()``), so the
    digits are checked here as well.
    """
    if jid is None:
        return None
    if isinstance(jid, int) and not isinstance(jid, bool):
        jid = str(jid)
    if not isinstance(jid, str) or not JID_PATTERN.fullmatch(jid) or not salt.utils.jid.is_jid(jid):
        raise SaltInvocationError(
            f"jid {ha_text.shown(jid)} is not a Salt job id (20 digits, e.g. 20261127101010123456)"
        )
    return jid


def validate_hours(hours):
    """``hours`` as a float in (0, MAX_HOURS]."""
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not math.isfinite(hours):
        raise SaltInvocationError(f"hours {ha_text.shown(hours)} is not a number of hours")
    if not 0 < hours <= MAX_HOURS:
        raise SaltInvocationError(f"hours {hours!r} is out of range (0-{MAX_HOURS}]")
    return float(hours)


def validate_limit(limit):
    """``limit`` as an int in [1, MAX_LIMIT]."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise SaltInvocationError(f"limit {ha_text.shown(limit)} is not a whole number of jobs")
    if not 1 <= limit <= MAX_LIMIT:
        raise SaltInvocationError(f"limit {limit!r} is out of range (1-{MAX_LIMIT})")
    return limit


# --- one master's job cache ------------------------------------------------------------


def jid_time(jid):
    """The UTC time a jid was made (a ``datetime``), or None when its digits are no date."""
    try:
        return datetime.datetime.strptime(str(jid)[:20], JID_TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def start_time(jid):
    """``2026-11-27T10:10:10.123456Z``: the jid's time, or None."""
    when = jid_time(jid)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if when else None


def plain(value):
    """``value`` as JSON-able data: tuples and sets as lists, keys as strings, bytes decoded, the rest ``str``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(item) for item in value), key=repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def load_digest(load):
    """sha256 of a load: masters reading one job store see the very same load."""
    return hashlib.sha256(json.dumps(plain(load), sort_keys=True).encode()).hexdigest()


def is_return_load(load):
    """True for a load Salt saved from a return (``return`` and ``id``), not from a publication."""
    return isinstance(load, dict) and "return" in load and "id" in load


def replay_mark(load):
    """``{"from", "reason", "minion"}`` of an ``ha_returns`` replay, or None."""
    mark = load.get("ha_replay") if is_return_load(load) else None
    if not isinstance(mark, dict):
        return None
    return {"from": plain(mark.get("from")), "reason": plain(mark.get("reason")), "minion": plain(load.get("id"))}


def return_record(record, with_return):
    """One minion's stored return: ``{"success", "retcode"}`` (+ ``return``)."""
    record = record if isinstance(record, dict) else {"return": record}
    shaped = {"success": plain(record.get("success")), "retcode": plain(record.get("retcode"))}
    if with_return:
        shaped["return"] = plain(record.get("return"))
    return shaped


def job_entry(jid, load, returns, with_returns=False):
    """What this master holds for one jid (see :func:`local_jobs` for the fields)."""
    load = load if isinstance(load, dict) else {}
    returns = returns if isinstance(returns, dict) else {}
    received = is_return_load(load)
    published = bool(load) and not received
    minions = load.get("Minions") if published else None
    return {
        "fun": plain(load.get("fun")),
        "arg": plain(load.get("arg", load.get("fun_args", []))),
        "tgt": plain(load.get("tgt")),
        "tgt_type": plain(load.get("tgt_type")) if "tgt" in load else None,
        "user": plain(load.get("user")),
        "start_time": start_time(jid),
        "published_here": published,
        "expected": sorted(str(minion) for minion in minions) if isinstance(minions, (list, tuple)) else None,
        "replay": replay_mark(load),
        "load_digest": load_digest(load) if load else None,
        "returns": {str(minion): return_record(record, with_returns) for minion, record in sorted(returns.items())},
    }


def listed_kind(info):
    """``"minion"`` for a job to list, ``"ignored"`` for the master's own and find_job jobs."""
    fun = info.get("Function") if isinstance(info, dict) else None
    if isinstance(fun, str) and (fun.startswith(MASTER_JOB_PREFIXES) or fun in IGNORED_FUNCTIONS):
        return "ignored"
    return "minion"


def local_cache_load(opts, jid):
    """
    The raw ``.load.p`` of ``jid`` in this master's ``local_cache`` ({} when none).

    Salt 3008.4's ``local_cache.get_load`` raises ``CommandExecutionError
    (".minions.p does not exist")`` for a load saved without a target, which is
    what a return for a jid this master never published leaves (Salt saves that
    return's load and no minion list); the load itself is intact.
    """
    folder = salt.utils.jid.jid_dir(jid, os.path.join(opts["cachedir"], "jobs"), opts.get("hash_type", "sha256"))
    path = os.path.join(folder, ".load.p")
    if not os.path.isfile(path):
        return {}
    with salt.utils.files.fopen(path, "rb") as handle:
        return salt.payload.load(handle) or {}


def empty_local_cache(opts, cache):
    """True for a ``local_cache`` that never stored a job (Salt's ``get_jids`` raises FileNotFoundError)."""
    return cache == "local_cache" and bool(opts.get("cachedir")) and not os.path.isdir(
        os.path.join(opts["cachedir"], "jobs")
    )


def read_load(opts, cache, get_load, jid):
    """``get_load(jid)``; for ``local_cache``, the raw load when Salt's reader fails on it (see above)."""
    try:
        return get_load(jid)
    except CommandExecutionError as err:
        if cache != "local_cache":
            raise
        log.debug("local_cache.get_load(%s) failed (%s): reading its .load.p", jid, err)
        return local_cache_load(opts, jid)


def returner_functions(returners, cache):
    """``(get_jids, get_load, get_jid)`` of the job cache ``cache``, or a clear error."""
    functions = []
    for name in ("get_jids", "get_load", "get_jid"):
        try:
            functions.append(returners[f"{cache}.{name}"])
        except KeyError as err:
            raise CommandExecutionError(
                f"master_job_cache {cache!r} cannot be read: its returner has no {name} (or did not load)"
            ) from err
    return functions


def read_job_cache(opts, returners, jid, hours, limit, now):
    """The body of :func:`local_jobs`, with the returner functions given."""
    cache = opts.get("master_job_cache") or "local_cache"
    get_jids, get_load, get_jid = returner_functions(returners, cache)
    view = {
        "master": opts.get("id"),
        "returner": cache,
        "job_cache": bool(opts.get("job_cache", True)),
        "ext_job_cache": opts.get("ext_job_cache") or None,
        "jid": jid,
        "hours": hours,
        "limit": limit,
        "total": 0,
        "left_out": 0,
        "ignored": 0,
        "jobs": {},
    }
    try:
        if jid is not None:
            load, returns = read_load(opts, cache, get_load, jid), get_jid(jid)
            if load or returns:
                view["jobs"][jid] = job_entry(jid, load, returns, with_returns=True)
            view["total"] = len(view["jobs"])
            return view
        known = {} if empty_local_cache(opts, cache) else get_jids() or {}
        if isinstance(known, (list, tuple, set)):  # some returners list jids only
            known = {str(found): {} for found in known}
        cutoff = (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(hours=hours)
        wanted = []
        for found, info in known.items():
            when = jid_time(found)
            if when is None or when < cutoff:
                continue
            if listed_kind(info) == "ignored":
                view["ignored"] += 1
            else:
                wanted.append(str(found))
        wanted.sort(reverse=True)
        view["total"], listed_returns = len(wanted), 0
        for found in wanted[:limit]:
            if listed_returns >= MAX_LISTED_RETURNS:
                break  # a few jobs to very many minions: keep the answer a few MB
            view["jobs"][found] = job_entry(found, read_load(opts, cache, get_load, found), get_jid(found))
            listed_returns += len(view["jobs"][found]["returns"])
        view["left_out"] = len(wanted) - len(view["jobs"])
    except (SaltException, OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise CommandExecutionError(f"reading job cache {cache!r} failed: {ha_text.describe_error(err)}") from err
    return view


@contextlib.contextmanager
def job_cache_returners(opts):
    """The returner functions of a ``MasterMinion``, as Salt's ``jobs`` runner reads the job cache."""
    mminion = salt.minion.MasterMinion(opts, states=False, rend=False, matcher=False)
    try:
        yield mminion.returners
    finally:
        mminion.destroy()
        # Salt 3008.4's MasterMinion.__del__ logs "unclosed MasterMinion" at warning level even
        # after destroy(), which leaves {} where __del__ looks for None: leave it None.
        mminion.returners = mminion.functions = mminion.utils = None


def local_jobs(opts, jid=None, hours=DEFAULT_HOURS, limit=DEFAULT_LIMIT, returners=None, now=None):
    """
    This master's jobs, from its ``master_job_cache`` (see the runner's
    ``ha.local_jobs`` for the shape). ``returners``: the loaded returner functions
    (default: a ``salt.minion.MasterMinion``'s, as Salt's ``jobs`` runner does);
    ``now``: the end of the window (a UTC ``datetime``, default now).
    """
    jid, hours, limit = validate_jid(jid), validate_hours(hours), validate_limit(limit)
    if returners is not None:
        return read_job_cache(opts, returners, jid, hours, limit, now)
    with job_cache_returners(opts) as loaded:
        return read_job_cache(opts, loaded, jid, hours, limit, now)


# --- a peer's answer -----------------------------------------------------------------------


def checked_view(answer):
    """A peer's ``ha.local_jobs`` answer when its shape is right, else a garbage error."""
    view = ha_sync.checked(answer, LOCAL_FIELDS, "ha.local_jobs")
    jobs_found = view["jobs"]
    if not isinstance(jobs_found, dict):
        raise CommandExecutionError("ha.local_jobs: the peer answered garbage jobs")
    for found, entry in jobs_found.items():
        if (
            not isinstance(found, str)
            or not JID_PATTERN.fullmatch(found)
            or not isinstance(entry, dict)
            or any(field not in entry for field in ENTRY_FIELDS)
            or not isinstance(entry["returns"], dict)
            or not all(isinstance(record, dict) for record in entry["returns"].values())
        ):
            raise CommandExecutionError(f"ha.local_jobs: the peer answered a garbage job {ha_text.shown(found)}")
    return view


def peer_jobs(client, jid, hours, limit):
    """A peer's ``ha.local_jobs``, its shape checked."""
    return checked_view(client.runner("ha.local_jobs", jid=jid, hours=hours, limit=limit))


# --- the merge --------------------------------------------------------------------------------


def shown_ids(ids):
    ids = sorted(ids)
    text = ", ".join(ha_text.printable(minion) for minion in ids[:SHOWN_IDS])
    return text + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


class JobMerge:
    """
    One jid merged over the masters that hold it (``entries``: ``{master: entry of
    its view}``); ``failed``: ``{master: error}`` of those that did not answer;
    ``stores``: ``{master: its master_job_cache}``. ``kinds`` collects what the
    findings report: ``(kind, detail)``.
    """

    def __init__(self, jid, entries, failed, stores=None):
        self.jid, self.entries, self.failed = jid, entries, failed
        self.stores = stores or {}
        self.notes, self.kinds = [], []

    def shared_store(self):
        """
        The masters that read this job from one store: they hold the very same load
        (byte-identical: one file on a shared filesystem, one database row). Private
        stores never do: a master saves a publication only for its own jobs, and a
        return's load names the minion (and, when ``ha_returns`` replayed it, carries
        its mark), so their loads differ.
        """
        groups = {}
        for name, entry in self.entries.items():
            if entry.get("load_digest"):
                groups.setdefault(entry["load_digest"], []).append(name)
        shared = sorted(name for names in groups.values() if len(names) > 1 for name in names)
        if shared:
            self.notes.append(f"{', '.join(shared)} read this job from one job store: each return is shown once")
            self.kinds.append(("shared_store", shared))
        return shared or None

    def publishers(self):
        """``(published_by, publication entries)``: one publication read by several masters counts once."""
        publications = {name: entry for name, entry in self.entries.items() if entry["published_here"]}
        if not publications:
            return None, []
        names = sorted(publications)
        if len(names) > 1 and len({entry.get("load_digest") for entry in publications.values()}) == 1:
            self.notes.append("the shared job store does not record which master published the job")
            return None, [publications[names[0]]]
        if len(names) > 1:
            self.notes.append(f"{len(names)} masters published a job with this jid: {', '.join(names)}")
            self.kinds.append(("published_twice", names))
        return names, [publications[name] for name in names]

    def minions(self):
        """``{minion: {"masters", "success", "retcode"(, "return")}}``: one entry per minion, all its masters."""
        merged = {}
        for name, entry in self.entries.items():
            for minion, record in entry["returns"].items():
                known = merged.get(minion)
                if known is None:
                    merged[minion] = {"masters": [name], **{key: record[key] for key in RETURN_FIELDS if key in record}}
                    continue
                known["masters"].append(name)
                if any(record.get(key) != known.get(key) for key in RETURN_FIELDS if key in record):
                    known["differs"] = True
        for minion, entry in merged.items():
            if entry.get("differs"):
                where = ", ".join(entry["masters"])
                self.notes.append(f"the returns of {ha_text.printable(minion)} differ between {where}")
                self.kinds.append(("returns_differ", minion))
        return dict(sorted(merged.items()))

    def replays(self):
        return [{"master": name, **entry["replay"]} for name, entry in self.entries.items() if entry.get("replay")]

    def unknown_publisher(self, replays):
        """Say why no answering master holds the publication, with what the replay marks name."""
        named = sorted({str(replay["from"]) for replay in replays if replay.get("from")})
        down = {name: error for name, error in self.failed.items() if name in named or not named}
        text = "no reachable master holds the publication of this job"
        if named:
            text += f"; the ha_returns replay names {', '.join(named)} as its publisher"
        databases = sorted({self.stores.get(name) for name in self.entries} - {None, "local_cache"})
        if databases:
            text += (
                f" ({', '.join(databases)} keeps the load of the latest return in place of the publication:"
                " Salt saves the load at every return except with local_cache)"
            )
        if down:
            text += "; not answering: " + "; ".join(f"{name} ({error})" for name, error in sorted(down.items()))
        self.notes.append(text)
        self.kinds.append(("publisher_unknown", named))

    def report(self):
        shared = self.shared_store()
        published_by, publications = self.publishers()
        replays = self.replays()
        if not publications:
            self.unknown_publisher(replays)
        source = publications[0] if publications else next(iter(self.entries.values()))
        minions = self.minions()
        expected = None
        if publications and all(entry.get("expected") is not None for entry in publications):
            expected = sorted({minion for entry in publications for minion in entry["expected"]})
        missing = sorted(set(expected) - set(minions)) if expected is not None else None
        if publications and expected is None:
            self.notes.append("the publication does not list the minions it expected: missing minions unknown")
        if missing:
            self.kinds.append(("missing", missing))
        return {
            "fun": source.get("fun"),
            "arg": source.get("arg"),
            "tgt": source.get("tgt") if publications else None,
            "tgt_type": source.get("tgt_type") if publications else None,
            "user": source.get("user") if publications else None,
            "start_time": start_time(self.jid),
            "published_by": published_by,
            "shared_store": shared,
            "minions": minions,
            "missing": missing,
            "replayed": replays,
            "note": "; ".join(self.notes) or None,
        }


def master_summary(view):
    return {
        "answered": True,
        "error": None,
        "returner": view.get("returner"),
        "listed": len(view["jobs"]),
        "total": view.get("total"),
        "left_out": view.get("left_out", 0),
    }


def finding(severity, message, jid=None):
    return {"severity": severity, "jid": jid, "message": message}


def view_findings(masters, views):
    """Findings about whole masters: not answering, no job cache, jobs left out."""
    findings = []
    for name, entry in masters.items():
        if not entry["answered"]:
            findings.append(finding(
                "warning", f"{name} did not answer: {entry['error']}; its jobs and returns are not in this report"
            ))
    for name, view in views.items():
        if view.get("job_cache") is False or view.get("ext_job_cache"):
            findings.append(finding(
                "warning",
                f"{name} keeps no returns in its job cache (job_cache: False or ext_job_cache is set): its returns"
                " are elsewhere",
            ))
        if view.get("left_out"):
            findings.append(finding(
                "info",
                f"{name} listed only its newest {len(view['jobs'])} of {view['total']} jobs (limit, or"
                f" {MAX_LISTED_RETURNS} returns): older jobs lack its data here",
            ))
    return findings


# kind: (severity, what one job's finding says of ``detail``, what the summary of a listing says)
JOB_FINDINGS = {
    "missing": ("warning", lambda detail: f"{len(detail)} minion(s) returned on no master: {shown_ids(detail)}",
                "minions returned on no master (see missing)"),
    "publisher_unknown": ("warning", lambda detail: "no reachable master holds its publication"
                          + (f" (the ha_returns replay names {', '.join(detail)})" if detail else ""),
                          "no reachable master holds the publication (see note)"),
    "published_twice": ("warning", lambda detail: f"published by {len(detail)} masters: {', '.join(detail)}",
                        "published by several masters (see published_by)"),
    "returns_differ": ("warning", lambda detail: f"the returns of {ha_text.printable(detail)} differ between masters",
                       "returns differ between masters (see minions)"),
    "shared_store": ("info", lambda detail: f"{', '.join(detail)} read it from one job store",
                     "read from a job store several masters share (see shared_store)"),
}


def job_findings(kinds_by_jid, funs, detailed):
    """
    Findings of the merged jobs: one per job and kind when ``detailed`` (``ha.jobs
    jid=...``), else one per kind naming how many jobs and the newest few.
    """
    findings = []
    if detailed:
        for found, kinds in kinds_by_jid.items():
            for kind, detail in kinds:
                severity, describe, _ = JOB_FINDINGS[kind]
                findings.append(finding(severity, f"{funs[found]}: {describe(detail)}", found))
        return findings
    for kind, (severity, _, summary) in JOB_FINDINGS.items():
        jids = [found for found, kinds in kinds_by_jid.items() if any(k == kind for k, _ in kinds)]
        if jids:
            newest = ", ".join(jids[:5]) + (", ..." if len(jids) > 5 else "")
            findings.append(finding(severity, f"{len(jids)} job(s): {summary}: {newest}"))
    return findings


def merge_jobs(views, failed, jid=None, hours=DEFAULT_HOURS, limit=DEFAULT_LIMIT, master=None):
    """
    The ``ha.jobs`` report from every master's ``ha.local_jobs`` view (``{name:
    view}``, this master first) and the masters that did not answer (``{name:
    error}``). See the runner's ``ha.jobs`` for the shape.
    """
    masters = {name: master_summary(view) for name, view in views.items()}
    masters.update(
        (name, {"answered": False, "error": error, "returner": None, "listed": 0, "total": None, "left_out": 0})
        for name, error in failed.items()
    )
    jids = sorted({found for view in views.values() for found in view["jobs"]}, reverse=True)
    findings = view_findings(masters, views)
    report = {"master": master, "jid": jid, "hours": hours, "limit": limit, "masters": masters, "jobs": {},
              "left_out": max(0, len(jids) - limit)}
    stores = {name: view.get("returner") for name, view in views.items()}
    kinds_by_jid = {}
    for found in jids[:limit]:
        holding = {name: view["jobs"][found] for name, view in views.items() if found in view["jobs"]}
        merge = JobMerge(found, holding, failed, stores)
        report["jobs"][found] = merge.report()
        kinds_by_jid[found] = merge.kinds
    funs = {found: job["fun"] for found, job in report["jobs"].items()}
    report["findings"] = findings + job_findings(kinds_by_jid, funs, detailed=jid is not None)
    return report


def jobs(opts, peers, progress, jid=None, hours=DEFAULT_HOURS, limit=DEFAULT_LIMIT, returners=None):
    """
    ``ha.jobs``: this master's :func:`local_jobs` and every peer's ``ha.local_jobs``
    (read at once, one thread each), merged by :func:`merge_jobs`. A master that
    fails (this one included) is reported in ``masters``, never hiding the others.
    """
    jid, hours, limit = validate_jid(jid), validate_hours(hours), validate_limit(limit)
    here = opts.get("id")
    progress(f"ha.jobs: reading the job caches of {1 + len(peers)} masters")

    def peer_work(client):
        view = peer_jobs(client, jid, hours, limit)
        progress(f"ha.jobs: {client.peer.name}: {len(view['jobs'])} jobs")
        return view

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        local = pool.submit(local_jobs, opts, jid=jid, hours=hours, limit=limit, returners=returners)
        results = ha_sync.for_each_peer(peers, peer_work, progress)
        views, failed = {}, {}
        try:
            views[here] = local.result()
        except CommandExecutionError as err:
            log.warning("ha.jobs: this master's job cache: %s", err)
            failed[here] = str(err)
    for name, (view, error) in results.items():
        if error:
            failed[name] = error
        else:
            views[name] = view
    return merge_jobs(views, failed, jid=jid, hours=hours, limit=limit, master=here)
