"""
Short TCP keepalive on the minion's own connections to its master, while the ``ha``
beacon doubts them.

Behind a virtual IP, a balancer or a DNS name, the master that answers the beacon's
probes is not necessarily the one holding the minion's connections: after keepalived
moves a VIP to master B, the minion's publish connection still points at A's socket.
The connection is idle (a minion sends nothing on it), so nothing tells the minion:
it waits for Salt's first TCP keepalive probe (``tcp_keepalive_idle``, 300 s by
default) while the address answers every probe.

When the beacon's probes of the connected master fail (hung, partitioned, a VIP on
the move), :func:`guard` sets ``TCP_KEEPIDLE`` 1 s, ``TCP_KEEPINTVL`` 1 s and
``TCP_KEEPCNT`` 3 on this process's ESTABLISHED connections to the master's publish
and ret ports (the sockets ZeroMQ holds, through a duplicate of their descriptor;
Linux sends the first probe at once when the connection has been idle for longer).
The kernel then asks the peer every second:

- the master's host still holds the connection (a frozen master's kernel answers for
  it, a busy master): an ACK, nothing changes;
- another host now has the address (a VIP that moved): it answers with a reset, the
  connection closes at once, ZeroMQ reports it, and Salt (``zmq_monitor``) fires
  ``__master_disconnected`` and connects again, to the master that holds the address;
- nobody answers (a silent partition): the kernel aborts the connection after 3
  unanswered probes, with the same effect.

:func:`release` puts back the values read before (on the connections that are still
open) once the master has answered again for a while. :func:`neighbours` reads the ARP
entries of the master's addresses: a VIP moved on purpose (keepalived stopped on its
holder, a preemption) changes host with every probe answered, and the beacon checks
the connections then too. Everything here is local (no network wait): a ``/proc``
read and a few ``setsockopt`` calls.
"""

import contextlib
import logging
import os
import socket
import threading
import time

import psutil

import ha_text

log = logging.getLogger(__name__)

SHORT = {"keepalive": 1, "idle": 1, "intvl": 1, "cnt": 3}
_OPTIONS = {
    "keepalive": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "idle": (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None)),
    "intvl": (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None)),
    "cnt": (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None)),
}
SUPPORTED = all(option is not None for _, option in _OPTIONS.values())

# {name: {"pid", "started", "tuned": {(laddr, raddr): {"fd", "original"}}}} of this
# process; the beacon's probe thread and the minion's main loop both use it.
_GUARDS = {}
_LOCK = threading.Lock()


def connections_to(ports, process=None):
    """
    ``[(fd, laddr, raddr)]`` of the ESTABLISHED TCP connections of ``process`` (this one
    by default) whose remote port is in ``ports``.
    """
    process = process or psutil.Process()
    found = []
    for conn in process.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port in ports and conn.fd >= 0:
            found.append((conn.fd, (conn.laddr.ip, conn.laddr.port), (conn.raddr.ip, conn.raddr.port)))
    return found


@contextlib.contextmanager
def connection_socket(fd, laddr, raddr):
    """
    A socket object on a duplicate of ``fd``, only when it is still the connection
    ``laddr`` -> ``raddr`` (a descriptor can be closed and reused at any time); else
    None. Closing the duplicate leaves the connection to its owner.
    """
    try:
        duplicate = os.dup(fd)
    except OSError:
        yield None
        return
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        yield None
        return
    with sock:
        try:
            ends = sock.getsockname()[:2], sock.getpeername()[:2]
            same = sock.type == socket.SOCK_STREAM and ends == (laddr, raddr)
        except OSError:
            same = False
        yield sock if same else None


def read_keepalive(sock):
    """``{"keepalive", "idle", "intvl", "cnt"}`` of a TCP socket."""
    return {key: sock.getsockopt(level, option) for key, (level, option) in _OPTIONS.items()}


def write_keepalive(sock, values):
    """Set the keepalive options in ``values`` (keys of :func:`read_keepalive`) on a TCP socket."""
    for key in ("keepalive", "idle", "intvl", "cnt"):
        level, option = _OPTIONS[key]
        sock.setsockopt(level, option, int(values[key]))


def _guard_state(name):
    state = _GUARDS.get(name)
    if state is None or state["pid"] != os.getpid():
        state = _GUARDS[name] = {"pid": os.getpid(), "started": time.monotonic(), "tuned": {}}
    return state


def guard(name, ports, process=None):
    """
    Short keepalive (:data:`SHORT`) on every ESTABLISHED connection of this process to
    a remote port in ``ports`` that ``name`` has not tuned yet; returns how many were
    tuned now. The values read first are kept for :func:`release`.
    """
    if not SUPPORTED:
        return 0
    with _LOCK:
        return _guard(name, ports, process)


def _guard(name, ports, process):
    state = _guard_state(name)
    tuned = 0
    for fd, laddr, raddr in connections_to(set(ports), process):
        if (laddr, raddr) in state["tuned"]:
            continue
        with connection_socket(fd, laddr, raddr) as sock:
            if sock is None:
                continue
            try:
                original = read_keepalive(sock)
                write_keepalive(sock, SHORT)
            except OSError as err:
                log.debug("salt-ha: short keepalive on %s -> %s failed: %s", laddr, raddr, err)
                continue
        state["tuned"][(laddr, raddr)] = {"fd": fd, "original": original}
        tuned += 1
        log.debug("salt-ha: short keepalive on %s -> %s", laddr, raddr)
    if tuned:
        log.info("salt-ha: checking %d connection(s) to ports %s every second (TCP keepalive)", tuned, sorted(ports))
    return tuned


def release(name, older_than=0):
    """
    Put back the keepalive values :func:`guard` found, on the connections of ``name``
    that are still open (same descriptor, same ends), once the first :func:`guard`
    is ``older_than`` seconds old (else nothing yet); returns how many were restored.
    """
    with _LOCK:
        state = _GUARDS.get(name)
        if state is None or state["pid"] != os.getpid() or time.monotonic() - state["started"] < older_than:
            return 0
        del _GUARDS[name]
    restored = 0
    for (laddr, raddr), tuned in state["tuned"].items():
        with connection_socket(tuned["fd"], laddr, raddr) as sock:
            if sock is None:
                continue  # closed meanwhile (reset by the check, or by Salt)
            try:
                write_keepalive(sock, tuned["original"])
                restored += 1
            except OSError as err:
                log.debug("salt-ha: restoring keepalive on %s -> %s failed: %s", laddr, raddr, err)
    return restored


def follow(name, ports, hold=0):
    """
    What beacon ``name`` asks: with ``ports`` (the connected master's publish and ret
    ports, while the beacon doubts it), :func:`guard` the connections to them; with
    None, :func:`release` what was tuned ``hold`` seconds ago or earlier. Never
    raises: a failure to read or tune the sockets is logged (debug) and the minion
    keeps Salt's own keepalive. Returns the number of connections tuned or restored.
    """
    try:
        return guard(name, ports) if ports else release(name, hold)
    except (psutil.Error, OSError) as err:
        log.debug("salt-ha: checking the master connections of %r failed: %s", name, ha_text.describe_error(err))
        return 0


ARP_TABLE = "/proc/net/arp"
ARP_COMPLETE = 0x2


def neighbours(addresses, path=ARP_TABLE):
    """
    ``{ip: link-layer address}`` of the complete IPv4 neighbour (ARP) entries of this
    host's network namespace for ``addresses`` (others, incomplete entries and IPv6 are
    left out). A VIP that moved to another host shows up here as another address
    (its new holder's gratuitous ARP), with no failed probe when the move was planned.
    """
    wanted = set(addresses)
    found = {}
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()[1:]
    except OSError as err:
        log.debug("salt-ha: cannot read %s: %s", path, err)
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[0] not in wanted:
            continue
        try:
            complete = int(fields[2], 16) & ARP_COMPLETE
        except ValueError:
            continue
        if complete and fields[3] != "00:00:00:00:00:00":
            found[fields[0]] = fields[3].lower()
    return found


def guarded(name):
    """The ``(laddr, raddr)`` pairs ``name`` has tuned in this process (for tests and the bench)."""
    state = _GUARDS.get(name)
    if state is None or state["pid"] != os.getpid():
        return []
    return sorted(state["tuned"])
