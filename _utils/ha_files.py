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
    """
    Copy ``path`` to its backup with the same mode and owner; return the backup's path.

    The backup is created with the source's mode from the first byte (``O_EXCL``,
    no umask window), so a private key's backup is never readable by others.
    """
    target = backup_path(path)
    stat = os.stat(path)
    mode = stat.st_mode & 0o7777
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o700)
    with os.fdopen(fd, "wb") as handle, open(path, "rb") as source:
        shutil.copyfileobj(source, handle)
        os.fchown(handle.fileno(), stat.st_uid, stat.st_gid)
        os.fchmod(handle.fileno(), mode)
        handle.flush()
        os.fsync(handle.fileno())
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
