"""
Atomic file writes: a temp file in the same folder, fsync, then ``os.replace``.

Readers see the old file or the new one, never a half-written one, even when the
writer is killed. The previous version is kept beside the file as
``<name>.<UTC timestamp>.bak`` (same mode and owner) unless ``backup=False``.

:func:`atomic_write_all` replaces several files together (a key pair): every
file is staged before the first one is replaced, and when one cannot be
replaced the files already replaced get their previous version back.
"""

import dataclasses
import datetime
import logging
import os
import shutil
import tempfile

log = logging.getLogger(__name__)


class WriteError(OSError):
    """
    Writing a set of files failed at ``path`` (``step``: staging, backup, replacing).

    ``restored``: files that had been replaced and got their previous version back.
    ``unrestored``: ``{path: why}`` for files the rollback could not restore (they
    hold the new content; the why names the backup holding the previous one).
    The message names the paths (escaped), never the content.
    """

    def __init__(self, path, step, cause, restored=(), unrestored=None):
        super().__init__(cause.errno, cause.strerror or str(cause), path)
        self.path = path
        self.step = step
        self.cause = cause
        self.restored = tuple(restored)
        self.unrestored = dict(unrestored or {})

    def __str__(self):
        text = f"cannot write {self.path!r} ({self.step}): {self.strerror}"
        if self.unrestored:
            broken = "; ".join(f"{path!r} {why}" for path, why in self.unrestored.items())
            return f"{text}; ROLLBACK FAILED: {broken}"
        if self.restored:
            names = ", ".join(repr(path) for path in self.restored)
            return f"{text}; rolled back: {names} hold their previous version again, nothing changed"
        return f"{text}; nothing changed"


@dataclasses.dataclass
class StagedFile:
    """One file of a transaction: its real path, temp file, previous state, rollback copy."""

    path: str
    tmp: str = None
    previous: os.stat_result = None
    copy: str = None
    replaced: bool = False


def backup_path(path, now=None):
    """Where the previous version of ``path`` is kept."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{path}.{now.strftime('%Y%m%dT%H%M%S.%fZ')}.bak"


def keep_previous(path):
    """
    Copy ``path`` to its backup with the same mode and owner; return the backup's path.

    The backup is created with the source's mode from the first byte (``O_EXCL``,
    no umask window), so a private key's backup is never readable by others.
    """
    target = backup_path(path)
    stat = os.stat(path)
    mode = stat.st_mode & 0o7777
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o700)
    try:
        with os.fdopen(fd, "wb") as handle, open(path, "rb") as source:
            shutil.copyfileobj(source, handle)
            os.fchown(handle.fileno(), stat.st_uid, stat.st_gid)
            os.fchmod(handle.fileno(), mode)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        remove_leftover(target)  # no half-written backup
        raise
    return target


def stage(item, data, mode):
    """Write ``data`` to a temp file beside ``item.path`` (mode, owner of the previous file)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if mode is None:
        mode = item.previous.st_mode & 0o7777 if item.previous else 0o644
    fd, item.tmp = tempfile.mkstemp(
        dir=os.path.dirname(item.path), prefix=f".{os.path.basename(item.path)}.", suffix=".tmp"
    )
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        if item.previous:
            os.fchown(handle.fileno(), item.previous.st_uid, item.previous.st_gid)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def remove_leftover(path):
    """Remove a temp file or an unused copy; a failure is logged, never raised."""
    if not path:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("Cannot remove the leftover %r: %s", path, err)


def roll_back(staged):
    """
    Undo a failed transaction: replaced files get their previous version back (the
    rollback copy moved into place) or are removed when they did not exist; temp
    files and unused copies are removed. Returns ``(restored, unrestored)``.
    """
    restored, unrestored = [], {}
    for item in reversed(staged):
        if item.replaced:
            try:
                if item.previous:
                    os.replace(item.copy, item.path)
                    item.copy = None
                else:
                    os.unlink(item.path)
                restored.append(item.path)
            except OSError as err:
                log.error("Cannot restore %r: %s (previous version in %r)", item.path, err, item.copy)
                unrestored[item.path] = f"holds the new version ({err.strerror or err}); " + (
                    f"its previous version is in {item.copy!r}" if item.copy else "it did not exist before"
                )
                item.copy = None  # the only copy of the previous version: keep it
        for leftover in (None if item.replaced else item.tmp, item.copy):
            remove_leftover(leftover)
    return list(reversed(restored)), unrestored


def atomic_write_all(writes, backup=True):
    """
    Replace every file of ``writes`` (``(path, data, mode)`` tuples; see
    :func:`atomic_write`) together: all are staged (temp files beside them) and
    their previous versions copied before the first is replaced. If staging,
    copying or replacing fails, the files already replaced get their previous
    version back, temp files and copies are removed, and :class:`WriteError`
    (an ``OSError``) says which file failed and what the rollback did.

    A symlink is written through: its target is replaced, the link stays.
    Returns the backups' paths in the order of ``writes`` (None for a file that
    did not exist, or every one when ``backup`` is False).
    """
    staged = [StagedFile(os.path.realpath(path)) for path, _data, _mode in writes]
    roll_back_copies = backup or len(staged) > 1
    current, step = None, "staging a temp file"
    try:
        for item, (_path, data, mode) in zip(staged, writes, strict=True):
            current = item
            item.previous = os.stat(item.path) if os.path.exists(item.path) else None
            stage(item, data, mode)
        step = "keeping its previous version"
        for item in staged:
            current = item
            if item.previous and roll_back_copies:
                item.copy = keep_previous(item.path)
        step = "replacing it with the staged file"
        for item in staged:
            current = item
            os.replace(item.tmp, item.path)
            item.replaced = True
    except BaseException as err:
        restored, unrestored = roll_back(staged)
        if isinstance(err, OSError):
            raise WriteError(current.path, step, err, restored, unrestored) from err
        raise
    saved = [item.copy if backup else None for item in staged]
    if not backup:
        for item in staged:
            remove_leftover(item.copy)
    for item, kept in zip(staged, saved, strict=True):
        log.debug("Wrote %r atomically (backup: %r)", item.path, kept)
    return saved


def atomic_write(path, data, mode=None, backup=True):
    """
    Replace ``path`` with ``data`` (str or bytes) atomically.

    ``mode`` defaults to the existing file's mode, else 0o644; the owner of an
    existing file is kept. Returns the backup's path, or None when there was no
    previous file or ``backup`` is False. Raises :class:`WriteError` (an
    ``OSError``) when the file cannot be written; it is then unchanged.
    """
    return atomic_write_all([(path, data, mode)], backup=backup)[0]
