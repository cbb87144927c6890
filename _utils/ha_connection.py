"""
Which master is the running salt-minion daemon connected to?

``__opts__`` inside a ``salt-call`` process says nothing about the daemon, so this
reads the daemon's own sockets: the process tree under the pid in the minion's
``pidfile`` (the daemon forks its minion and job processes), its ESTABLISHED TCP
connections, matched against each master's addresses and its publish port.
When the pidfile is missing or stale, the ancestors of the calling process are
used instead, which covers a call running inside the daemon (``salt <id> ha.status``).

No pidfile, no pid in it or no such process means no daemon. A pidfile or a
daemon process that cannot be read (permission denied: a ``salt-call`` as
another user than the daemon's; another OS error) is not "no daemon":
:class:`DaemonUnreadable` names the path or pid and the error.
"""

import ipaddress
import logging
import os

import psutil
import salt.utils.files
from salt.exceptions import CommandExecutionError

import ha_text

log = logging.getLogger(__name__)


class DaemonUnreadable(CommandExecutionError):
    """The minion daemon's pidfile or processes cannot be read; the message names the path or pid and why."""


def read_pid(pidfile):
    """
    The pid in ``pidfile`` if that process exists, else None (no pidfile, no pid
    in it, no such process).

    Raises :class:`DaemonUnreadable` naming the path and the OS error when the
    pidfile exists but cannot be read (permission denied, I/O error). Salt's own
    ``salt.utils.process.get_pidfile`` returns -1 for both, which would read as
    "no daemon".
    """
    if not pidfile:
        return None
    if not isinstance(pidfile, (str, os.PathLike)):
        raise DaemonUnreadable(f"the pidfile option {pidfile!r} is not a path")
    try:
        with salt.utils.files.fopen(pidfile, encoding="utf-8") as handle:
            text = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DaemonUnreadable(
            f"cannot read the salt-minion pidfile {pidfile!r}: {os_error_text(err)}"
        ) from err
    except UnicodeDecodeError:
        log.debug("The salt-minion pidfile %r holds no pid (not UTF-8 text)", pidfile)
        return None
    try:
        pid = int(text.strip())
        exists = pid > 0 and psutil.pid_exists(pid)
    except (ValueError, OverflowError):
        log.debug("The salt-minion pidfile %r holds no pid: %r", pidfile, text[:80])
        return None
    return pid if exists else None


def os_error_text(err):
    """``PermissionError: Permission denied`` for an ``OSError`` (its type and reason, printable)."""
    return f"{type(err).__name__}: {ha_text.printable(err.strerror or err)}"


def process_tree(pid):
    """
    ``pid`` and all of its descendants (processes that vanish are skipped; none
    when ``pid`` is gone). Raises :class:`DaemonUnreadable` when they cannot be read.
    """
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    except (psutil.Error, OSError) as err:
        raise DaemonUnreadable(
            f"cannot read the process tree of the salt-minion (pid {pid}): {ha_text.describe_error(err)}"
        ) from err


def calling_processes():
    """The calling process and its ancestors."""
    me = psutil.Process(os.getpid())
    return [me, *me.parents()]


def daemon_remotes(pidfile):
    """
    :func:`established_remotes` of the minion daemon in ``pidfile``, or (no
    daemon there) of the calling process and its ancestors, where a process that
    cannot be read is skipped: it is not the daemon, or not known to be.
    """
    pid = read_pid(pidfile)
    if pid is not None:
        return established_remotes(process_tree(pid), strict=True)
    log.debug("No running minion in pidfile %r; using the calling process tree", pidfile)
    return established_remotes(calling_processes())


def process_remotes(pid):
    """
    :func:`established_remotes` of the one process ``pid`` (none when it is gone);
    :class:`DaemonUnreadable` when its connections cannot be read. For a caller
    that knows which process holds the minion's channels: a job process forked
    before a failover keeps a copy of the old publish socket open until it ends.
    """
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return set()
    return established_remotes([process], strict=True)


def normalize_ip(address):
    """``::ffff:1.2.3.4`` -> ``1.2.3.4``; other addresses in compressed form."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def established_remotes(processes, strict=False):
    """
    ``{(remote ip, remote port)}`` of the ESTABLISHED TCP connections of ``processes``.

    A process that ended meanwhile is skipped. One whose connections cannot be
    read (permission denied, another error) is skipped too, unless ``strict``:
    then :class:`DaemonUnreadable` names its pid and the error.
    """
    remotes = set()
    for proc in processes:
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        except (psutil.Error, OSError) as err:
            if strict:
                raise DaemonUnreadable(
                    f"cannot read the TCP connections of the salt-minion process {proc.pid}: "
                    f"{ha_text.describe_error(err)}"
                ) from err
            log.debug("Skipping process %s: %s", proc.pid, ha_text.describe_error(err))
            continue
        for conn in connections:
            if conn.status == psutil.CONN_ESTABLISHED and conn.raddr:
                remotes.add((normalize_ip(conn.raddr.ip), conn.raddr.port))
    return remotes


def is_connected(entry, remotes):
    """
    True when ``remotes`` hold a connection to one of ``entry``'s addresses on its
    publish port: the minion subscribes to exactly one master's publisher (several
    in multi-master mode). Ret-port connections say nothing: the ``ha`` beacon's
    probes and a request socket left from before a failover keep one open to a hung
    master for as long as it hangs.
    """
    addresses = {normalize_ip(address) for address in entry["addresses"]}
    return any(ip in addresses and port == entry["publish_port"] for ip, port in remotes)


def mark_connected(entries, pidfile):
    """
    Set ``connected`` on each ``ha.status`` master entry; return the name of the
    master the daemon is connected to (the first one, in list order), or None.

    Raises :class:`DaemonUnreadable` (entries left unchanged) when the daemon's
    pidfile or sockets cannot be read: which master it is connected to is then
    unknown, not None.
    """
    remotes = daemon_remotes(pidfile)
    connected = None
    for entry in entries:
        entry["connected"] = is_connected(entry, remotes)
        if entry["connected"] and connected is None:
            connected = entry["master"]
    return connected
