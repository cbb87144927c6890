"""
Minion keys of this master, read and written through Salt's key store.

Salt 3008 keeps minion keys in a cache driver (``keys.cache_driver``). The default,
``localfs_key``, keeps the legacy layout ``pki_dir/minions`` (accepted),
``minions_pre`` (pending), ``minions_rejected`` and ``minions_denied``.

Any other driver is read and written through ``salt.cache.Cache(opts,
driver=keys.cache_driver)``. ``localfs_key`` is read and written directly in its
own layout, because its ``store`` creates its temp file as ``tmpXXXXXXXX`` inside
``minions/`` and removes the old status before writing the new one (a process
killed mid-write leaves a half-written file that Salt lists as an accepted minion
named ``tmp...``), and because its ``list_all`` is slow (a ``realpath`` per key).
salt-ha stages each key in a dot-named temp file (never listed by Salt), flushes
the batch, renames, then removes the pending copy (:meth:`KeyStore.accept_many`).

Everything that arrives from a peer is validated here (:func:`validate_minion_id`,
:func:`validate_key`) and every change happens under :func:`store_lock` (fcntl), so
two syncs cannot interleave.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import tempfile
import time
import unicodedata

import salt.cache
import salt.utils.files
import salt.utils.verify
from salt.exceptions import CommandExecutionError, SaltCacheError

import ha_files
import ha_keys
import ha_text

log = logging.getLogger(__name__)

STATUS_DIRS = {
    "accepted": "minions",
    "pending": "minions_pre",
    "rejected": "minions_rejected",
    "denied": "minions_denied",
}
LOCAL_DRIVER = "localfs_key"
LOCK_NAME = ".salt-ha-keys.lock"
BACKUP_DIR = ".salt-ha-backups"
STAGE_PREFIX = ".salt-ha-"
FINGERPRINT_CACHE = ".salt-ha-fingerprints.json"
MAX_ID_BYTES = 255  # a file name
MAX_PEM_BYTES = 16384
LOCK_TIMEOUT = 60
KEY_FILE_MODE = 0o644


# Characters no minion id may hold: controls (C0, DEL, C1), format characters (bidi
# overrides and isolates, zero-width), line and paragraph separators, and the lone
# surrogates Python uses for file-name bytes that are not valid UTF-8.
UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))
# Exactly one public key PEM block, nothing around it but whitespace.
PUBLIC_PEM = re.compile(
    r"\s*-----BEGIN ((?:RSA )?)PUBLIC KEY-----\r?\n"
    r"(?:[A-Za-z0-9+/=]+\r?\n)+"
    r"-----END \1PUBLIC KEY-----\s*"
)


def shown_id(minion_id):
    """
    A minion id as reports and logs show it: as it is when printable and short,
    else escaped (``repr``) and shortened, so it cannot forge a log line.
    """
    if isinstance(minion_id, str) and minion_id.isprintable() and len(minion_id) <= ha_text.SHOWN_LIMIT:
        return minion_id
    return ha_text.shown(minion_id)


def first_unsafe_char(text):
    """The first character of ``text`` in :data:`UNSAFE_CATEGORIES`, or None."""
    return next((char for char in text if unicodedata.category(char) in UNSAFE_CATEGORIES), None)


def describe_char(char):
    """``U+202E (RIGHT-TO-LEFT OVERRIDE, category Cf)``; a surrogate says it is a non-UTF-8 byte."""
    category = unicodedata.category(char)
    if category == "Cs":
        return f"a byte that is not valid UTF-8 (U+{ord(char):04X})"
    name = unicodedata.name(char, "unnamed")
    return f"a control, format or separator character U+{ord(char):04X} ({name}, category {category})"


def shown_file_name(name):
    """A file name as bytes when it is not valid UTF-8 (``b'caf\\xe9'``), else escaped text."""
    return ha_text.shown(name) if _is_utf8(name) else ha_text.shown(os.fsencode(name))


def key_pki_dir(opts):
    """
    The folder holding minion keys: ``cluster_pki_dir`` on a master cluster, else
    ``pki_dir``. As Salt 3008.4 resolves it: ``salt.key.Key`` and the ``localfs_key``
    and ``mmap_key`` drivers (``init_kwargs``) read minion keys from
    ``cluster_pki_dir`` whenever ``cluster_id`` is set, and ``apply_master_config``
    sets a missing ``cluster_pki_dir`` to ``pki_dir`` (with a warning) when
    ``cluster_id`` is set; options not run through it get the same fallback here.
    """
    if opts.get("cluster_id"):
        return opts.get("cluster_pki_dir") or opts["pki_dir"]
    return opts["pki_dir"]


def key_store_description(opts):
    """
    Where this master's minion keys are read and written, for returns:
    ``{"pki_dir", "option": "cluster_pki_dir"|"pki_dir", "cluster_id", "driver"}``
    (``cluster_pki_dir`` when ``cluster_id`` is set; ``pki_dir`` there too when
    ``cluster_pki_dir`` is unset and Salt falls back to it).
    """
    clustered = bool(opts.get("cluster_id"))
    return {
        "pki_dir": key_pki_dir(opts),
        "option": "cluster_pki_dir" if clustered and opts.get("cluster_pki_dir") else "pki_dir",
        "cluster_id": opts.get("cluster_id") if clustered else None,
        "driver": opts.get("keys.cache_driver") or LOCAL_DRIVER,
    }


def validate_minion_id(opts, minion_id, resolve=True):
    """
    None when ``minion_id`` is safe to write as a key, else the reason it is not.

    ``resolve=False`` skips Salt's ``valid_id`` and the pki-dir containment check
    (both resolve paths on disk); the sender uses it to leave out ids its peers
    would refuse, the receiver always checks everything.
    """
    if not isinstance(minion_id, str):
        return f"minion id {minion_id!r} is not a string"
    if not minion_id:
        return "minion id is empty"
    if len(minion_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"minion id {minion_id[:40]!r}... is longer than {MAX_ID_BYTES} bytes"
    if "\0" in minion_id:
        return f"minion id {minion_id!r} contains NUL"
    if "/" in minion_id or "\\" in minion_id:
        return f"minion id {minion_id!r} contains a path separator"
    if ".." in minion_id:
        return f"minion id {minion_id!r} contains '..'"
    if minion_id.startswith("."):
        return f"minion id {minion_id!r} starts with '.' (hidden from Salt's key store)"
    unsafe = first_unsafe_char(minion_id)
    if unsafe is not None:
        return f"minion id {ha_text.shown(minion_id)} contains {describe_char(unsafe)}"
    if not resolve:
        return None
    # valid_id resolves <pki_dir>/<id> and refuses what lands outside pki_dir. With
    # no separator, no "..", no leading dot, <pki_dir>/<status folder>/<id> stays in
    # its folder; a symlink planted there is never read (lookup skips symlinks)
    # and os.replace replaces the link itself, never its target.
    if not salt.utils.verify.valid_id(opts, minion_id):
        return f"minion id {minion_id!r} is not a valid minion id (escapes {key_pki_dir(opts)})"
    return None


def pem_shape_problem(pem):
    """
    None when ``pem`` is text shaped as exactly one PEM public key block (whitespace
    around it at most), else the reason; no parse, no key material in the reason.
    Anything holding a ``PRIVATE KEY`` header is refused.
    """
    if not isinstance(pem, str) or not pem.strip():
        return "public key is missing"
    if len(pem) > MAX_PEM_BYTES:
        return f"public key is longer than {MAX_PEM_BYTES} bytes"
    if "PRIVATE KEY" in pem.upper():
        return "public key item holds a PRIVATE KEY block; refused, never stored"
    blocks = max(pem.count("-----BEGIN"), pem.count("-----END"))
    if blocks == 0:
        return "public key is not a PEM public key"
    if blocks > 1:
        return f"public key item must hold exactly one PEM block, not {blocks}"
    if not PUBLIC_PEM.fullmatch(pem):
        return "public key is not a single PEM public key block (extra text, or not base64)"
    return None


def validate_key(pem, fingerprint):
    """
    None when ``pem`` is exactly one PEM public key block (:func:`pem_shape_problem`)
    that parses and whose fingerprint is ``fingerprint``, else the reason.
    """
    problem = pem_shape_problem(pem)
    if problem:
        return problem
    try:
        ha_keys.load_public_key(pem)
    except ValueError:
        return "public key is not a PEM public key"
    if ha_keys.fingerprint(pem) != fingerprint:
        return "public key does not match the fingerprint sent with it"
    return None


@contextlib.contextmanager
def store_lock(opts, timeout=LOCK_TIMEOUT, name=LOCK_NAME):
    """Hold an exclusive fcntl lock on ``<pki_dir>/<name>`` (bounded wait) for the block."""
    path = os.path.join(key_pki_dir(opts), name)
    deadline = time.monotonic() + timeout
    with salt.utils.files.fopen(path, "a+", encoding="utf-8") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise CommandExecutionError(f"cannot lock {path}: {err}") from err
                if time.monotonic() >= deadline:
                    raise CommandExecutionError(
                        f"{path} is locked by another key sync for more than {timeout} s"
                    ) from err
                time.sleep(0.05)
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class KeyStore:
    """
    This master's minion keys, by status, through ``keys.cache_driver``.

    With ``localfs_key`` (Salt's default) the legacy folders are read and written
    directly, as that driver lays them out: its ``list_all``/``fetch`` resolve
    every path (``realpath``) and take ~1.8 s for 10,000 keys, and its ``store``
    is not safe against a kill (see the module docstring). Other drivers are
    used through ``salt.cache``.
    """

    def __init__(self, opts):
        self.opts = opts
        self.driver = opts.get("keys.cache_driver") or LOCAL_DRIVER
        self.local = self.driver == LOCAL_DRIVER
        self.pki_dir = key_pki_dir(opts)
        self.cache = None if self.local else salt.cache.Cache(opts, driver=self.driver)
        # Files skipped by the last reads: [{"path": escaped, "reason"}].
        self.odd_files = []

    def path(self, status, minion_id):
        """Where ``localfs_key`` keeps ``minion_id`` in ``status``."""
        return os.path.join(self.pki_dir, STATUS_DIRS[status], minion_id)

    @staticmethod
    def _read(path):
        try:
            with salt.utils.files.fopen(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _key_entries(self, status):
        """
        The key files of ``status`` as ``localfs_key`` lists them (regular files, no
        symlinks, no dot files). A file whose name is not valid UTF-8 cannot be a
        minion id Salt sends anywhere: it is skipped, named in :attr:`odd_files`.
        """
        folder = os.path.join(self.pki_dir, STATUS_DIRS[status])
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        listed = []
        for entry in entries:
            if entry.name.startswith(".") or entry.is_symlink() or not entry.is_file():
                continue
            if _is_utf8(entry.name):
                listed.append(entry)
            else:
                self._skip_odd_file(status, entry.name)
        return listed

    def _skip_odd_file(self, status, name):
        path = f"{STATUS_DIRS[status]}/{shown_file_name(name)}"
        reason = "the file name is not valid UTF-8, so it is no minion id: skipped (rename or remove it)"
        if not any(odd["path"] == path for odd in self.odd_files):
            log.warning("Key store %s: %s: %s", ha_text.shown(self.pki_dir), path, reason)
            self.odd_files.append({"path": path, "reason": reason})

    def _read_folder(self, status):
        keys = {}
        for entry in self._key_entries(status):
            pem = self._read(entry.path)
            if pem is not None:
                keys[entry.name] = pem
        return keys

    def keys(self):
        """``{status: {minion_id: pem}}`` for every status (empty dicts included)."""
        result = {status: {} for status in ha_keys.KEY_STATUSES}
        try:
            if self.local:
                for status in ha_keys.KEY_STATUSES:
                    result[status] = self._read_folder(status)
                return result
            for minion_id, entry in self.cache.list_all("keys", include_data=True).items():
                status = (entry or {}).get("state")
                if status in result and isinstance(entry.get("pub"), str):
                    result[status][minion_id] = entry["pub"]
            for minion_id, pub in self.cache.list_all("denied_keys").items():
                result["denied"][minion_id] = pub[0] if isinstance(pub, list) else pub
        except (OSError, SaltCacheError) as err:
            raise CommandExecutionError(f"cannot read the key store ({self.driver}): {err}") from err
        return result

    def counts(self):
        """
        ``{status: number of keys}`` for every status. With ``localfs_key`` a directory
        scan per status (no key file is read: cheap enough for every metrics scrape);
        other drivers through :meth:`keys`.
        """
        if not self.local:
            return {status: len(keys) for status, keys in self.keys().items()}
        return {status: len(self._key_entries(status)) for status in ha_keys.KEY_STATUSES}

    def fingerprints(self):
        """
        ``{status: {minion_id: fingerprint}}`` (path-based fingerprints, see ha_keys).

        With ``localfs_key`` a key file is read only when it changed since the last
        call: fingerprints are remembered in ``<pki_dir>/.salt-ha-fingerprints.json``
        by (inode, mtime, size), which every atomic replacement changes. 10,000
        unchanged keys cost a directory scan instead of 10,000 reads and hashes.
        (An in-place rewrite of the same size within one timestamp tick would go
        unseen; Salt's key store and salt-ha always replace key files.)
        """
        if not self.local:
            return {
                status: {minion_id: ha_keys.fingerprint(pem) for minion_id, pem in keys.items()}
                for status, keys in self.keys().items()
            }
        remembered = self._load_fingerprint_cache()
        seen = {status: {} for status in ha_keys.KEY_STATUSES}
        result = {status: {} for status in ha_keys.KEY_STATUSES}
        for status in ha_keys.KEY_STATUSES:
            known = remembered.get(status) or {}
            for entry in self._key_entries(status):
                signature = _signature(entry.stat(follow_symlinks=False))
                cached = known.get(entry.name)
                if isinstance(cached, list) and len(cached) == 4 and cached[:3] == signature:
                    fingerprint = cached[3]
                else:
                    pem = self._read(entry.path)
                    if pem is None:
                        continue
                    fingerprint = ha_keys.fingerprint(pem)
                result[status][entry.name] = fingerprint
                seen[status][entry.name] = [*signature, fingerprint]
        if seen != remembered:
            self._save_fingerprint_cache(seen)
        return result

    def _fingerprint_cache_path(self):
        return os.path.join(self.pki_dir, FINGERPRINT_CACHE)

    def _load_fingerprint_cache(self):
        try:
            with salt.utils.files.fopen(self._fingerprint_cache_path(), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _remember(self, status, entries):
        """
        Add ``{minion_id: [inode, mtime_ns, size, fingerprint]}`` of key files this
        process just wrote to the remembered fingerprints: the next inventory need not
        read them back. A file replaced since has another inode, so it is read again.
        """
        if not entries:
            return
        remembered = self._load_fingerprint_cache()
        known = remembered.get(status)
        remembered[status] = {**(known if isinstance(known, dict) else {}), **entries}
        self._save_fingerprint_cache(remembered)

    def _save_fingerprint_cache(self, data):
        try:
            ha_files.atomic_write(self._fingerprint_cache_path(), json.dumps(data), mode=0o600, backup=False)
        except OSError as err:
            log.debug("Cannot save %s: %s", self._fingerprint_cache_path(), err)

    def read_accepted(self, minion_ids):
        """``{minion_id: pem}`` of the accepted keys of ``minion_ids`` (missing ones left out)."""
        if not self.local:
            return self.lookup(minion_ids)["accepted"]
        pems = {}
        for minion_id in minion_ids:
            path = self.path("accepted", minion_id)
            pem = None if os.path.islink(path) else self._read(path)
            if pem is not None:
                pems[minion_id] = pem
        return pems

    def lookup(self, minion_ids):
        """``{status: {minion_id: pem}}`` for ``minion_ids`` only."""
        result = {status: {} for status in ha_keys.KEY_STATUSES}
        try:
            for minion_id in minion_ids:
                if self.local:
                    for status in ha_keys.KEY_STATUSES:
                        path = self.path(status, minion_id)
                        pem = None if os.path.islink(path) else self._read(path)
                        if pem is not None:
                            result[status][minion_id] = pem
                    continue
                entry = self.cache.fetch("keys", minion_id)
                if entry and entry.get("state") in result:
                    result[entry["state"]][minion_id] = entry["pub"]
                denied = self.cache.fetch("denied_keys", minion_id)
                if denied:
                    result["denied"][minion_id] = denied[0] if isinstance(denied, list) else denied
        except (OSError, SaltCacheError) as err:
            raise CommandExecutionError(f"cannot read the key store ({self.driver}): {err}") from err
        return result

    def accept_many(self, keys):
        """
        Store ``{minion_id: pem}`` as accepted keys and drop their pending copies.

        ``localfs_key``: every key is written to a dot-named temp file in
        ``minions/`` (which Salt never lists), the batch is flushed to disk once
        (``os.sync``), then each temp file is renamed over its key file and the
        folder is fsynced: a reader or a killed writer never leaves a partial key
        file, and 500 keys cost one flush instead of 500 fsyncs. A key that cannot
        be staged or renamed is left out (its temp file removed) and the others go
        on. Returns ``{minion_id: error}`` for the keys that were not written.
        """
        if not self.local:
            return self._accept_many_cached(keys)
        failed, staged, written = {}, {}, {}
        folder = os.path.join(self.pki_dir, STATUS_DIRS["accepted"])
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            return {minion_id: f"cannot create {ha_text.shown(folder)}: {err}" for minion_id in keys}
        try:
            for minion_id, pem in keys.items():
                try:
                    staged[minion_id] = _stage(folder, minion_id, pem)
                except OSError as err:
                    failed[minion_id] = f"cannot write the key of {ha_text.shown(minion_id)}: {err}"
            os.sync()
            for minion_id, (tmp, signature) in list(staged.items()):
                try:
                    os.replace(tmp, os.path.join(folder, minion_id))
                except OSError as err:
                    failed[minion_id] = f"cannot move the key of {ha_text.shown(minion_id)} into place: {err}"
                    continue
                del staged[minion_id]
                written[minion_id] = [*signature, ha_keys.fingerprint(keys[minion_id])]
                self._drop_pending_copy(minion_id)
            self._flush_folder(folder)
        finally:
            for tmp, _ in staged.values():
                with contextlib.suppress(OSError):
                    os.remove(tmp)
            self._remember("accepted", written)
        return failed

    def _accept_many_cached(self, keys):
        failed = {}
        for minion_id, pem in keys.items():
            try:
                self.cache.store("keys", minion_id, {"state": "accepted", "pub": pem})
            except (OSError, SaltCacheError) as err:
                failed[minion_id] = f"cannot store the key of {ha_text.shown(minion_id)} ({self.driver}): {err}"
        return failed

    def _drop_pending_copy(self, minion_id):
        """Remove the pending key of a minion just accepted; a failure is logged, the key stays accepted."""
        pending = self.path("pending", minion_id)
        try:
            if os.path.isfile(pending) and not os.path.islink(pending):
                os.remove(pending)
        except OSError as err:
            log.warning(
                "Accepted %s, but cannot remove its pending copy %s: %s",
                ha_text.shown(minion_id), ha_text.shown(pending), err,
            )

    @staticmethod
    def _flush_folder(folder):
        try:
            _fsync_folder(folder)
        except OSError as err:
            log.warning("Cannot fsync %s after writing keys: %s", ha_text.shown(folder), err)

    def sweep_staged(self):
        """Remove temp files a killed sync left in ``minions/`` (call under the store lock)."""
        folder = os.path.join(self.pki_dir, STATUS_DIRS["accepted"])
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                if entry.name.startswith(STAGE_PREFIX) and entry.is_file(follow_symlinks=False):
                    log.warning("Removing %s, left by an interrupted key sync", entry.path)
                    os.remove(entry.path)

    def backup_folder(self, now=None):
        """
        The folder for keys removed by this run, ``<pki_dir>/.salt-ha-backups/<UTC
        time>``; created by the first :meth:`delete_accepted` that uses it.
        """
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return os.path.join(self.pki_dir, BACKUP_DIR, now.strftime("%Y%m%dT%H%M%S.%fZ"))

    def delete_accepted(self, minion_id, pem, backup_folder):
        """Back up the accepted key of ``minion_id`` into ``backup_folder``, then delete it."""
        backup = os.path.join(backup_folder, STATUS_DIRS["accepted"], minion_id)
        try:
            os.makedirs(os.path.dirname(backup), mode=0o700, exist_ok=True)
            ha_files.atomic_write(backup, pem, mode=0o600, backup=False)
            if self.local:
                os.remove(self.path("accepted", minion_id))
            else:
                self.cache.flush("keys", minion_id)
        except (OSError, SaltCacheError) as err:
            raise CommandExecutionError(f"cannot delete the key of {ha_text.shown(minion_id)}: {err}") from err
        return backup


def _stage(folder, minion_id, pem):
    """
    Write ``pem`` to a new dot-named temp file in ``folder``; return its path and its
    signature ``[inode, mtime_ns, size]``, which the rename into place keeps.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{STAGE_PREFIX}{minion_id[:32]}.", suffix=".tmp")
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem.encode("utf-8"))
        stat = os.stat(tmp, follow_symlinks=False)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return tmp, _signature(stat)


def _is_utf8(name):
    """False for a file name Python decoded with surrogate escapes (bytes that are not UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _signature(stat):
    """What tells a key file changed: every atomic replacement changes the inode."""
    return [stat.st_ino, stat.st_mtime_ns, stat.st_size]


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
