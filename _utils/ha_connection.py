"""
Which master is the running salt-minion daemon connected to?

``__opts__`` inside a ``salt-call`` process says nothing about the daemon, so this
reads the daemon's own sockets: the process tree under the pid in the minion's
``pidfile`` (the daemon forks its minion and job processes), its ESTABLISHED TCP
connections, matched against each master's addresses *and* its ret/publish ports.
When the pidfile is missing or stale, the ancestors of the calling process are
used instead, which covers a call running inside the daemon (``salt <id> ha.status``).
"""

import ipaddress
import logging
import os

import psutil

log = logging.getLogger(__name__)


def read_pid(pidfile):
    """The pid in ``pidfile`` if that process exists, else None."""
    try:
        with open(pidfile, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError, TypeError):
        return None
    return pid if psutil.pid_exists(pid) else None


def process_tree(pid):
    """``pid`` and all of its descendants (processes that vanish are skipped)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def daemon_processes(pidfile):
    """The minion daemon's processes, or the calling process and its ancestors."""
    pid = read_pid(pidfile) if pidfile else None
    if pid is not None:
        return process_tree(pid)
    log.debug("No running minion in pidfile %s; using the calling process tree", pidfile)
    me = psutil.Process(os.getpid())
    return [me, *me.parents()]


def normalize_ip(address):
    """``::ffff:1.2.3.4`` -> ``1.2.3.4``; other addresses in compressed form."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def established_remotes(processes):
    """``{(remote ip, remote port)}`` of the ESTABLISHED TCP connections of ``processes``."""
    remotes = set()
    for proc in processes:
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_ESTABLISHED and conn.raddr:
                remotes.add((normalize_ip(conn.raddr.ip), conn.raddr.port))
    return remotes


def is_connected(entry, remotes):
    """True when ``remotes`` hold a connection to one of ``entry``'s addresses and ports."""
    addresses = {normalize_ip(address) for address in entry["addresses"]}
    ports = {entry["ret_port"], entry["publish_port"]}
    return any(ip in addresses and port in ports for ip, port in remotes)


def mark_connected(entries, pidfile):
    """
    Set ``connected`` on each ``ha.status`` master entry; return the name of the
    master the daemon is connected to (the first one, in list order), or None.
    """
    remotes = established_remotes(daemon_processes(pidfile))
    connected = None
    for entry in entries:
        entry["connected"] = is_connected(entry, remotes)
        if entry["connected"] and connected is None:
            connected = entry["master"]
    return connected
