"""
Atomic file writes: a temp file in the same folder, fsync, then ``os.replace``.

Readers see the old file or the new one, never a half-written one, even when the
writer is killed. The previous version is kept beside the file as
``<name>.<UTC timestamp>.bak`` (same mode and owner) unless ``backup=False``.
"""

import datetime
import logging
import os
import shutil
import tempfile

log = logging.getLogger(__name__)


def backup_path(path, now=None):
    """Where the previous version of ``path`` is kept."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{path}.{now.strftime('%Y%m%dT%H%M%S.%fZ')}.bak"


def keep_previous(path):
    """Copy ``path`` (mode and owner too) to its backup; return the backup's path."""
    target = backup_path(path)
    shutil.copy2(path, target)
    stat = os.stat(path)
    os.chown(target, stat.st_uid, stat.st_gid)
    os.chmod(target, stat.st_mode & 0o7777)
    return target


def atomic_write(path, data, mode=None, backup=True):
    """
    Replace ``path`` with ``data`` (str or bytes) atomically.

    ``mode`` defaults to the existing file's mode, else 0o644; the owner of an
    existing file is kept. Returns the backup's path, or None when there was no
    previous file or ``backup`` is False.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    previous = os.stat(path) if os.path.exists(path) else None
    if mode is None:
        mode = previous.st_mode & 0o7777 if previous else 0o644
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    saved = None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            if previous:
                os.fchown(handle.fileno(), previous.st_uid, previous.st_gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        saved = keep_previous(path) if previous and backup else None
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, saved):
            if leftover and os.path.exists(leftover):
                os.unlink(leftover)
        raise
    log.debug("Wrote %s atomically (backup: %s)", path, saved)
    return saved
