"""
Shared bench plumbing: import paths, quiet logging, temp roots, signals, figures.

Benches run as plain scripts (``python bench/probe.py`` from the repo root): this
module puts the repo root (for ``tests.support.lab``) and ``_utils`` (for the
``ha_*`` helpers, as Salt's loader makes them importable) on ``sys.path``.
"""

import contextlib
import copy
import logging
import os
import pathlib
import shutil
import signal
import statistics
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
UTILS_DIR = REPO_ROOT / "_utils"
for _path in (str(REPO_ROOT), str(UTILS_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

log = logging.getLogger("bench")


def quiet_logging(level=logging.WARNING):
    """
    Drop the handlers Salt installs at import (they write to streams salt-factories
    closes, which prints "Logging error" tracebacks); log this process's warnings to
    stderr. The daemons' records, which salt-factories' log server replays into this
    process's loggers, stay in the daemons' own log files.
    """
    import salt._logging.impl  # pylint: disable=import-outside-toplevel

    salt._logging.impl.shutdown_temp_handler()
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)
        handler.close()
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.addFilter(lambda record: record.process == os.getpid())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.root.addHandler(handler)
    logging.root.setLevel(level)
    # Salt logs every expected failure of a bench (timed-out requests, failed DNS) at
    # ERROR: keep them out of the figures.
    logging.getLogger("salt").setLevel(logging.CRITICAL)
    # FactoriesManager logs its own repr at WARNING when it is created.
    logging.getLogger("saltfactories.manager").setLevel(logging.ERROR)


def raise_on_sigterm():
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the daemons (Ctrl-C already does)."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def session(prefix):
    """
    A bench run: quiet logging, SIGTERM as SystemExit (so ``finally`` blocks stop
    the daemons), a temp root (yielded, removed at the end) and the total time
    printed at the end. Keep ``prefix`` short: Salt's IPC sockets live under each
    daemon's root (AF_UNIX: 107 bytes).
    """
    quiet_logging()
    raise_on_sigterm()
    started = time.monotonic()
    with temp_root(prefix) as root:
        yield root
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")


@contextlib.contextmanager
def temp_root(prefix):
    """A ``tempfile.mkdtemp`` directory, removed on exit (also on Ctrl-C)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def local_client(master):
    """A ``salt.client.LocalClient`` talking to ``master`` (a salt-factories master daemon)."""
    import salt.client  # pylint: disable=import-outside-toplevel

    return salt.client.LocalClient(mopts=copy.deepcopy(master.config))


def spread(values):
    """``(median, min, max)`` of a non-empty list of numbers, else ``(None, None, None)``."""
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def fmt(value, unit="s", digits=2):
    """A figure for a table: ``1.23 s``, or ``-`` when there is none."""
    if value is None:
        return "-"
    return f"{value:.{digits}f} {unit}".rstrip()


def print_table(headers, rows):
    """Print a plain fixed-width table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    print(line.format(*headers))
    print(line.format(*("-" * width for width in widths)))
    for row in rows:
        print(line.format(*(str(cell) for cell in row)))


def parse_options(parser, pairs):
    """``["name=value", ...]`` (``--minion-option``) -> ``{name: YAML value}``; a bad pair is a usage error."""
    import salt.utils.yaml  # pylint: disable=import-outside-toplevel

    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            parser.error(f"option {pair!r} is not NAME=VALUE")
        options[name.strip()] = salt.utils.yaml.safe_load(value)
    return options


def drop_test_engine(factory):
    """
    Remove salt-factories' ``pytest`` engine from a minion's config file: one process
    per minion that forwards every event of its bus to the bench (not part of a real
    minion; the start checks read the master's events, not the minion's).
    """
    import salt.utils.yaml  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(factory.config["conf_file"])
    config = salt.utils.yaml.safe_load(path.read_text(encoding="utf-8"))
    config["engines"] = [engine for engine in config.get("engines") or [] if engine != "pytest"]
    path.write_text(salt.utils.yaml.safe_dump(config, default_flow_style=False), encoding="utf-8")
