"""
Where drills leave their traces on a master: the lock that lets one drill run at a
time, the stored reports (``ha.drill_history``) and the Prometheus metrics of the
last drills (a node-exporter textfile, and the lines the ``ha_health`` engine serves).

Everything lives under ``<cachedir>/ha_drill/`` (0700): ``lock`` (an ``fcntl``
lock, released by the kernel when the drilling process dies, even by SIGKILL),
``running.json`` (which drill holds it), ``history/<id>.json`` (0600, one report
each, written atomically, the oldest removed beyond ``ha:drill:history``).
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import time

from salt.exceptions import CommandExecutionError

import ha_drill
import ha_files

log = logging.getLogger(__name__)

FOLDER = "ha_drill"
HISTORY = "history"
LOCK = "lock"
RUNNING = "running.json"
METRIC_FAMILIES = (
    ("salt_ha_drill_rto_seconds", "Seconds until each drilled minion answered through another master, last drill"),
    ("salt_ha_drill_failed_minions", "Minions that did not answer through another master in time, last drill"),
    ("salt_ha_drill_last_success_timestamp_seconds", "When the last drill that passed ended (POSIX time)"),
)


def drill_dir(opts, *parts):
    """``<cachedir>/ha_drill[/parts]``, the folder created 0700 when missing."""
    folder = os.path.join(opts["cachedir"], FOLDER)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, *parts)


class DrillRunning(CommandExecutionError):
    """Another drill holds this master's drill lock."""


def _locked(handle):
    """Take the exclusive lock on ``handle`` without waiting: False when another process holds it."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise CommandExecutionError(f"cannot lock {handle.name}: {err}") from err
        return False
    return True


def running(opts):
    """The drill running on this master (``{"id", "pid", "since"}``), or None."""
    with open(drill_dir(opts, LOCK), "a+", encoding="utf-8") as handle:
        if not _locked(handle):
            return _read_json(drill_dir(opts, RUNNING)) or {"id": None, "pid": None, "since": None}
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def drill_lock(opts, drill_id):
    """Hold this master's drill lock for the block; :class:`DrillRunning` when another drill has it."""
    with open(drill_dir(opts, LOCK), "a+", encoding="utf-8") as handle:
        if not _locked(handle):
            holder = _read_json(drill_dir(opts, RUNNING)) or {}
            raise DrillRunning(f"drill {holder.get('id')} (pid {holder.get('pid')}) is running on this master")
        try:
            ha_files.atomic_write(drill_dir(opts, RUNNING),
                                  json.dumps({"id": drill_id, "pid": os.getpid(), "since": time.time()}),
                                  mode=0o600, backup=False)
            yield handle.name
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(drill_dir(opts, RUNNING))
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def save(opts, report, keep):
    """Store ``report`` as ``history/<id>.json`` (0600, atomic); keep the newest ``keep``."""
    if not ha_drill.DRILL_ID.match(str(report.get("id"))):
        raise CommandExecutionError(f"drill id {report.get('id')!r} is not a drill id")
    folder = drill_dir(opts, HISTORY)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"{report['id']}.json")
    ha_files.atomic_write(path, json.dumps(report, sort_keys=True, default=str), mode=0o600, backup=False)
    for old in _report_files(folder)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, old))
    return path


def _report_files(folder):
    """Report file names, newest first (ids start with their UTC time)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted((name for name in names if ha_drill.DRILL_ID.match(name[:-5]) and name.endswith(".json")),
                  reverse=True)


def history(opts, limit=10):
    """The stored reports, newest first; unreadable files are listed as ``{"id", "error"}``."""
    folder = drill_dir(opts, HISTORY)
    reports = []
    for name in _report_files(folder)[:limit]:
        loaded = _read_json(os.path.join(folder, name))
        reports.append(loaded if isinstance(loaded, dict) else {"id": name[:-5], "error": "unreadable report"})
    return reports


def metric_families(reports):
    """
    The drill metric families of ``reports`` (newest first), as ``[(name, help,
    label names, [(labels, value)])]``: per mode, the last drill's RTO quantiles
    (``quantile`` 0.5, 0.95 and 1 for the max) and failed minions, and the end time
    of the last drill that passed.
    ``test=True`` runs are not drills.
    """
    latest, passed = {}, {}
    for item in reports:
        mode = item.get("mode")
        if mode not in ha_drill.MODES or item.get("test"):
            continue
        latest.setdefault(mode, item)
        if item.get("result") and item.get("ended"):
            passed.setdefault(mode, item)
    rto, failed, success = [], [], []
    for mode, item in sorted(latest.items()):
        for quantile, key in (("0.5", "p50"), ("0.95", "p95"), ("1", "max")):
            value = (item.get("rto") or {}).get(key)
            if value is not None:
                rto.append(({"mode": mode, "quantile": quantile}, value))
        failed.append(({"mode": mode}, len(item.get("failed") or [])))
    for mode, item in sorted(passed.items()):
        success.append(({"mode": mode}, item["ended"]))
    labels = (("mode", "quantile"), ("mode",), ("mode",))
    return [(name, help_text, names, samples)
            for (name, help_text), names, samples in zip(METRIC_FAMILIES, labels, (rto, failed, success), strict=True)]


def metric_lines(reports):
    """The families of :func:`metric_families` as Prometheus text lines (gauges)."""
    lines = []
    for name, help_text, _names, samples in metric_families(reports):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for labels, value in samples:
            shown = ",".join(f'{key}="{val}"' for key, val in labels.items())
            lines.append(f"{name}{{{shown}}} {value}")
    return lines


def metrics_text(opts, limit=200):
    """The drill metric families of this master's stored reports, as exposition text."""
    return "\n".join(metric_lines(history(opts, limit=limit))) + "\n"


def write_textfile(opts, path):
    """Write the drill metrics to ``path`` atomically (0644, node-exporter's textfile collector reads it)."""
    ha_files.atomic_write(path, metrics_text(opts), mode=0o644, backup=False)
    return path
