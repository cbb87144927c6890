"""
Failover drills (``salt-run ha.drill``): the pure part. The drill's settings and
arguments, the canary minions, the blackout windows, the gates and the report.

A drill moves minions off their master on purpose and measures how long each
takes to answer through another master (its RTO). The orchestration (who is
asked what, in which order) is in :mod:`ha_drill_run`; the receiving side on each
master in :mod:`ha_drill_local`; the detached freeze of ``mode=hang`` in
:mod:`ha_drill_watchdog`; stored reports and metrics in :mod:`ha_drill_history`.
Nothing here touches the network or a file.

Settings, in the master config under ``ha:drill`` (every key optional)::

    ha:
      drill:
        allow_hang: False      # a hang drill may freeze THIS master
        max_minions: 10        # never more canaries than this
        max_percent: 25        # nor more than this share of the minions tgt matches
        max_duration: 120      # the longest freeze of this master a hang drill may ask
        blackout:              # no drill starts inside these windows (master's local time)
          - "Mon-Fri 08:00-18:00"
        history: 50            # stored reports
        textfile: /var/lib/prometheus/node-exporter/salt_ha_drill.prom
"""

import dataclasses
import datetime
import math
import random
import re
import secrets
import statistics

from salt.exceptions import SaltInvocationError

import ha_validate

MODES = ("minion", "hang")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW = re.compile(
    r"^\s*(?P<days>[A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)?\s*"
    r"(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s*$"
)
DRILL_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
MAX_BUDGET = 3600
MAX_WATCH = MAX_BUDGET + 60  # an await window: a budget plus the lead before the fault and the settle after it
MAX_MINIONS_CEILING = 100000


@dataclasses.dataclass(frozen=True)
class DrillSettings:
    """``ha:drill`` of one master's config, validated."""

    allow_hang: bool = False
    max_minions: int = 10
    max_percent: float = 25.0
    max_duration: float = 120.0
    blackout: tuple = ()
    history: int = 50
    textfile: str = None


@dataclasses.dataclass(frozen=True)
class DrillRequest:
    """The arguments of one ``ha.drill`` call, validated."""

    tgt: str
    mode: str
    percent: float
    count: int
    budget: float
    seed: int
    master: str
    duration: float
    max_failed: int
    rpo: bool


def _whole(value, what, minimum, maximum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise SaltInvocationError(f"{what} {value!r} is not a whole number")
    if not minimum <= value <= maximum:
        raise SaltInvocationError(f"{what} {value!r} is out of range ({minimum}-{maximum})")
    return value


def _percent(value, what):
    number = ha_validate.validate_timeout(value, what=what, maximum=100)
    return number


def parse_window(text):
    """
    One blackout window, ``"[days] HH:MM-HH:MM"``: days as ``Mon``, ``Mon-Fri`` or
    ``Sat,Sun`` (every day when left out), times in the master's local time; a
    window whose end is before its start runs past midnight (``22:00-02:00``).
    Returns ``(frozenset of weekday numbers, start minute, end minute)``.
    """
    match = WINDOW.match(text) if isinstance(text, str) else None
    if not match:
        raise SaltInvocationError(
            f"ha:drill:blackout window {text!r} is not '[Mon-Fri] HH:MM-HH:MM' (days optional)"
        )
    days = set(range(7))
    if match.group("days"):
        days = set()
        for part in match.group("days").lower().split(","):
            first, _, last = part.partition("-")
            if first not in DAYS or (last and last not in DAYS):
                raise SaltInvocationError(f"ha:drill:blackout window {text!r}: {part!r} is not a day (Mon-Sun)")
            start, end = DAYS.index(first), DAYS.index(last or first)
            days.update(day % 7 for day in range(start, end + 1 if end >= start else end + 8))
    minutes = []
    for clock in (match.group("start"), match.group("end")):
        hours, mins = (int(part) for part in clock.split(":"))
        if hours > 24 or mins > 59 or (hours == 24 and mins):
            raise SaltInvocationError(f"ha:drill:blackout window {text!r}: {clock!r} is not a time of day")
        minutes.append(hours * 60 + mins)
    return frozenset(days), minutes[0], minutes[1]


def in_window(window, now):
    """True when the local ``datetime`` ``now`` falls inside the parsed ``window``."""
    days, start, end = window
    minute = now.hour * 60 + now.minute
    if start <= end:
        return now.weekday() in days and start <= minute < end
    # Past midnight: the evening part belongs to the listed day, the morning part to the day after.
    return (now.weekday() in days and minute >= start) or ((now.weekday() - 1) % 7 in days and minute < end)


def drill_settings(opts):
    """The validated ``ha:drill`` settings of ``opts``; a bad one raises, naming it."""
    section = (opts.get("ha") or {}).get("drill") or {}
    if not isinstance(section, dict):
        raise SaltInvocationError(f"ha:drill {str(section)[:80]!r} is not a mapping")
    defaults = DrillSettings()
    unknown = sorted(set(section) - {field.name for field in dataclasses.fields(DrillSettings)})
    if unknown:
        raise SaltInvocationError(f"ha:drill: unknown setting(s) {', '.join(map(repr, unknown))}")
    blackout = section.get("blackout") or []
    if isinstance(blackout, str) or not isinstance(blackout, list):
        raise SaltInvocationError(f"ha:drill:blackout {blackout!r} is not a list of windows")
    for window in blackout:
        parse_window(window)
    textfile = section.get("textfile")
    if textfile is not None and (not isinstance(textfile, str) or not textfile.startswith("/")):
        raise SaltInvocationError(f"ha:drill:textfile {textfile!r} is not an absolute path")
    return DrillSettings(
        allow_hang=ha_validate.validate_flag(section.get("allow_hang", defaults.allow_hang), "ha:drill:allow_hang"),
        max_minions=_whole(section.get("max_minions", defaults.max_minions), "ha:drill:max_minions", 1,
                           MAX_MINIONS_CEILING),
        max_percent=_percent(section.get("max_percent", defaults.max_percent), "ha:drill:max_percent"),
        max_duration=ha_validate.validate_timeout(
            section.get("max_duration", defaults.max_duration), what="ha:drill:max_duration", maximum=MAX_BUDGET
        ),
        blackout=tuple(blackout),
        history=_whole(section.get("history", defaults.history), "ha:drill:history", 1, 10000),
        textfile=textfile,
    )


def drill_request(tgt="*", mode="minion", percent=10, count=None, budget=60, seed=None, master=None,
                  duration=30, max_failed=0, rpo=True):
    """The validated arguments of ``ha.drill``; a bad one raises ``SaltInvocationError`` naming it."""
    if not isinstance(tgt, str) or not tgt.strip():
        raise SaltInvocationError(f"tgt {tgt!r} is not a glob of minion ids")
    if mode not in MODES:
        raise SaltInvocationError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if count is not None:
        count = _whole(count, "count", 1, MAX_MINIONS_CEILING)
    if seed is None:
        seed = secrets.randbelow(2**31)
    seed = _whole(seed, "seed", 0, 2**63 - 1)
    if master is not None and (not isinstance(master, str) or not master.strip()):
        raise SaltInvocationError(f"master {master!r} is not a master id")
    return DrillRequest(
        tgt=tgt,
        mode=mode,
        percent=_percent(percent, "percent"),
        count=count,
        budget=ha_validate.validate_timeout(budget, what="budget", maximum=MAX_BUDGET),
        seed=seed,
        master=master,
        duration=ha_validate.validate_timeout(duration, what="duration", maximum=MAX_BUDGET),
        max_failed=_whole(max_failed, "max_failed", 0, MAX_MINIONS_CEILING),
        rpo=ha_validate.validate_flag(rpo, "rpo"),
    )


def new_drill_id(now=None):
    """A drill id: UTC time and 6 random hex digits (``20261127T101500Z-3fa9c1``)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def canary_count(matched, request, settings):
    """How many canaries a minion drill takes among ``matched`` minions, and the limit that decided it."""
    if not matched:
        return 0, "no minion matched"
    wanted = request.count if request.count is not None else max(1, math.ceil(matched * request.percent / 100))
    by_share = max(1, math.floor(matched * settings.max_percent / 100))
    limits = [(wanted, "asked"), (matched, "minions available"), (settings.max_minions, "ha:drill:max_minions"),
              (by_share, "ha:drill:max_percent")]
    return min(limits, key=lambda item: item[0])


def choose_canaries(candidates, request, settings):
    """
    The canary minions of a minion drill: a reproducible random sample (``seed``)
    of the sorted ``candidates``, sized by ``percent`` or ``count`` and capped by
    ``max_minions`` and ``max_percent``. Returns ``(sorted ids, why that many)``.
    """
    ordered = sorted(candidates)
    size, decided_by = canary_count(len(ordered), request, settings)
    return sorted(random.Random(request.seed).sample(ordered, size)), decided_by


def blackout_gate(settings, now):
    """The blackout gate: refused while the local ``datetime`` ``now`` is inside a window."""
    for window in settings.blackout:
        if in_window(parse_window(window), now):
            return gate("blackout", False, f"inside the blackout window {window!r} (now {now:%a %H:%M})",
                        "wait for the window to end, or change ha:drill:blackout")
    return gate("blackout", True)


def gate(name, ok, reason=None, fix=None, **details):
    """One gate's result: ``{"gate", "ok", "reason", "fix", ...details}``."""
    return {"gate": name, "ok": bool(ok), "reason": reason, "fix": fix, **details}


def refusals(gates):
    """The gates that refuse the drill."""
    return [item for item in gates if not item["ok"]]


def rto_summary(values):
    """``{"p50", "p95", "max"}`` of the RTOs in seconds (None each when there is none)."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    rank = max(0, math.ceil(0.95 * len(ordered)) - 1)
    return {"p50": round(statistics.median(ordered), 3), "p95": round(ordered[rank], 3), "max": round(ordered[-1], 3)}


def minion_entry(origin, to=None, rto_s=None, ok=False, error=None, **extra):
    """One minion's line of the report."""
    return {"from": origin, "to": to, "rto_s": None if rto_s is None else round(rto_s, 3),
            "ok": bool(ok), "error": error, **extra}


def stop_reason(minions, request, masters_down):
    """Why the drill must stop (a stop condition), or None."""
    if masters_down:
        return f"master(s) not the drill's target stopped answering: {', '.join(sorted(masters_down))}"
    failed = [name for name, entry in minions.items() if not entry["ok"]]
    if len(failed) > request.max_failed:
        return (f"{len(failed)} minion(s) did not answer through another master within {request.budget:g} s "
                f"(max_failed {request.max_failed}): {', '.join(sorted(failed)[:10])}")
    return None


def plan(request, settings, drill_id, masters, canaries, origins, target=None, decided_by=None):
    """What the drill is going to do (the ``test=True`` answer and the start event)."""
    return {
        "id": drill_id,
        "mode": request.mode,
        "tgt": request.tgt,
        "seed": request.seed,
        "budget": request.budget,
        "max_failed": request.max_failed,
        "masters": sorted(masters),
        "target": target,
        "duration": request.duration if request.mode == "hang" else None,
        "canaries": sorted(canaries),
        "origins": {minion: origins.get(minion) for minion in sorted(canaries)},
        "canaries_decided_by": decided_by,
        "max_minions": settings.max_minions,
        "max_percent": settings.max_percent,
    }


def report(drill_id, request, gates, minions, started, ended, aborted=None, restored=None,
           returns=None, plan_data=None, test=False, notes=()):
    """The drill's report, as DESIGN.md names its keys (``started``/``ended``: POSIX times)."""
    rtos = [entry["rto_s"] for entry in minions.values() if entry.get("ok") and entry.get("rto_s") is not None]
    returns = returns or {}
    return {
        "id": drill_id,
        "mode": request.mode,
        "test": bool(test),
        "result": not test and not aborted and not refusals(gates) and restored is not False
                  and all(entry["ok"] for entry in minions.values()) and bool(minions),
        "gates": gates,
        "plan": plan_data,
        "minions": minions,
        "rto": rto_summary(rtos),
        "failed": sorted(name for name, entry in minions.items() if not entry["ok"]),
        "jobs_in_flight": returns.get("in_flight", 0),
        "returns_lost": returns.get("lost"),
        "aborted": aborted,
        "restored": restored,
        "started": round(started, 3),
        "ended": round(ended, 3) if ended is not None else None,
        "notes": list(notes),
    }
