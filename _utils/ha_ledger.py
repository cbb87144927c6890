"""
The ``ha_returns`` engine's ledger: job returns not yet delivered, kept on disk.

One file per return in ``<directory>/pending/`` (``<key>.ret``, msgpack, mode 0600,
written atomically: temp file + rename), so a return survives a restart of the
minion. ``<directory>/history.p`` keeps the last replayed and dropped returns and
running counts, for ``salt-call ha.returns``.

A file that does not parse, is not a salt-ha return or holds another minion's
return is never replayed: :meth:`Ledger.load` skips it and reports a finding
naming the file. Bounds (age and total size) are enforced by :meth:`Ledger.enforce`;
what it drops is logged and counted, never silent.
"""

import logging
import os
import re
import time

import salt.payload

import ha_files
import ha_text

log = logging.getLogger(__name__)

FORMAT = "salt-ha-return/1"
HISTORY_FORMAT = "salt-ha-return-history/1"
SUFFIX = ".ret"
KEY_PATTERN = re.compile(r"^[0-9a-f]{32}\Z")  # \Z: "$" would take a trailing newline
HISTORY_KEPT = 100  # replayed and dropped entries each


def entry_size(entry):
    """Bytes the entry takes on disk (its serialized form)."""
    return len(salt.payload.dumps(entry))


class Ledger:
    """The ledger folder of one minion; ``minion_id`` guards against foreign files."""

    def __init__(self, directory, minion_id):
        self.directory = str(directory)
        self.pending_dir = os.path.join(self.directory, "pending")
        self.history_path = os.path.join(self.directory, "history.p")
        self.minion_id = minion_id

    def path_for(self, key):
        """The file of the entry ``key`` (a uuid4 hex; anything else is refused)."""
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise ValueError(f"ledger key {ha_text.shown(key)} is not 32 hex digits")
        return os.path.join(self.pending_dir, key + SUFFIX)

    def ensure(self):
        """Create the ledger folders (0700)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)  # makedirs gives only the leaf `mode`
        os.makedirs(self.pending_dir, mode=0o700, exist_ok=True)

    def save(self, entry):
        """Write ``entry`` (a dict with ``key``) atomically; raises ``OSError`` (ha_files.WriteError)."""
        self.ensure()
        data = salt.payload.dumps({"format": FORMAT, **entry})
        ha_files.atomic_write(self.path_for(entry["key"]), data, mode=0o600, backup=False)
        return len(data)

    def remove(self, key):
        """Remove the entry ``key``; a missing file is fine, other errors are logged."""
        try:
            os.unlink(self.path_for(key))
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("salt-ha returns: cannot remove ledger entry %s: %s", key, ha_text.describe_error(err))

    def load(self):
        """
        ``(entries, findings)``: the entries in the ledger, oldest first, and one
        finding ``{"path", "reason"}`` per file skipped (corrupt, not a salt-ha
        return, another minion's, unreadable). Skipped files are left in place.
        """
        entries, findings = [], []
        try:
            names = sorted(os.listdir(self.pending_dir))
        except FileNotFoundError:
            return entries, findings
        except OSError as err:
            return entries, [{"path": self.pending_dir, "reason": f"cannot list: {ha_text.describe_error(err)}"}]
        for name in names:
            if name.startswith("."):
                continue  # a temp file of an interrupted write
            path = os.path.join(self.pending_dir, name)
            entry, reason = self._read(path, name)
            if reason:
                findings.append({"path": ha_text.printable(path), "reason": reason})
            else:
                entries.append(entry)
        entries.sort(key=lambda entry: entry["seen"])
        return entries, findings

    def _read(self, path, name):
        """``(entry, None)`` or ``(None, why it is skipped)``."""
        if not name.endswith(SUFFIX) or not KEY_PATTERN.match(name[: -len(SUFFIX)]):
            return None, "not a ledger entry name (<32 hex digits>.ret)"
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as err:
            return None, f"cannot read: {ha_text.describe_error(err)}"
        try:
            entry = salt.payload.loads(data)
        except Exception as err:  # pylint: disable=broad-except
            return None, f"corrupt: {type(err).__name__}"
        return self._checked(entry, name[: -len(SUFFIX)], len(data))

    def _checked(self, entry, key, size):
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None, f"not a salt-ha return (format is not {FORMAT})"
        load = entry.get("load")
        if not isinstance(load, dict) or load.get("cmd") != "_return" or "jid" not in load:
            return None, "holds no job return load"
        if entry.get("minion") != self.minion_id or load.get("id") != self.minion_id:
            return None, f"holds a return of another minion ({ha_text.shown(load.get('id'))}), never replayed here"
        if entry.get("key") != key or not isinstance(entry.get("seen"), (int, float)):
            return None, "its key or time does not match its name"
        return {**entry, "size": size}, None

    def read_history(self):
        """The stored history ``{"replayed": [...], "dropped": [...], "counts": {...}}`` (empty when none)."""
        history = {"replayed": [], "dropped": [], "counts": {"replayed": 0, "dropped": 0}}
        try:
            with open(self.history_path, "rb") as handle:
                stored = salt.payload.loads(handle.read())
        except FileNotFoundError:
            return history
        except Exception as err:  # pylint: disable=broad-except
            log.warning("salt-ha returns: ignoring unreadable history %r: %s", self.history_path, err)
            return history
        if isinstance(stored, dict) and stored.get("format") == HISTORY_FORMAT:
            for name in history:
                if isinstance(stored.get(name), type(history[name])):
                    history[name] = stored[name]
        return history

    def record(self, kind, item):
        """Add ``item`` to the ``kind`` ("replayed" or "dropped") history and count it."""
        history = self.read_history()
        history[kind] = [item, *history[kind]][:HISTORY_KEPT]
        history["counts"][kind] = int(history["counts"].get(kind, 0)) + 1
        try:
            self.ensure()
            ha_files.atomic_write(
                self.history_path, salt.payload.dumps({"format": HISTORY_FORMAT, **history}), mode=0o600, backup=False
            )
        except OSError as err:
            log.warning("salt-ha returns: cannot write the history %r: %s", self.history_path, err)

    def enforce(self, entries, max_age, max_bytes, now=None):
        """
        Drop entries older than ``max_age`` seconds, then the oldest until the rest
        take at most ``max_bytes``. Returns ``(kept, dropped)``; each dropped entry
        is removed from disk, logged as a warning and recorded with its reason.
        """
        now = time.time() if now is None else now
        kept, dropped = [], []
        for entry in sorted(entries, key=lambda entry: entry["seen"]):  # "the oldest" whatever the order given
            if now - entry["seen"] > max_age:
                dropped.append((entry, f"older than max_age ({max_age:g} s)"))
            else:
                kept.append(entry)
        total = sum(entry.get("size", 0) for entry in kept)
        while kept and total > max_bytes:
            oldest = kept.pop(0)
            total -= oldest.get("size", 0)
            dropped.append((oldest, f"ledger over max_bytes ({max_bytes} bytes)"))
        for entry, reason in dropped:
            self.drop(entry, reason, now)
        return kept, [entry for entry, _reason in dropped]

    def drop(self, entry, reason, now=None):
        """Remove ``entry`` for ``reason``: logged, counted, kept in the history."""
        log.warning(
            "salt-ha returns: dropping the undelivered return of job %s (published by %s): %s",
            entry["load"].get("jid"), entry.get("master"), reason,
        )
        self.remove(entry["key"])
        self.record("dropped", {**summary(entry), "reason": reason, "at": time.time() if now is None else now})


def summary(entry):
    """What ``ha.returns`` shows of an entry: no return data, only what identifies it."""
    load = entry["load"]
    return {
        "jid": load.get("jid"),
        "fun": load.get("fun"),
        "master": entry.get("master"),
        "why": entry.get("reason"),
        "seen": entry.get("seen"),
        "attempts": entry.get("attempts", 0),
    }
