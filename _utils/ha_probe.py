"""
Probe Salt masters: DNS, the publish port and an application-level ping.

A master is *up* only when one of its request-server workers answers a clear
``{"cmd": "ping"}`` on the ret port within the timeout (what ``status.ping_master``
sends, here bounded by ``timeout`` instead of ``auth_timeout``). A frozen master
(SIGSTOP) still completes TCP handshakes in the kernel, so a TCP connect alone
would call it up; the ping does not.

All masters are probed concurrently, in daemon threads, against one deadline: N
dead masters cost one ``timeout``, and a hung DNS lookup can neither block the
caller nor keep the process alive at exit.
"""

import logging
import socket
import threading
import time

import salt.payload
import zmq
from salt.exceptions import SaltDeserializationError

log = logging.getLogger(__name__)

PING_LOAD = {"cmd": "ping"}
# A little slack past the probe deadline for threads to hand back their result.
COLLECT_SLACK = 0.1


def validate_timeout(timeout, what="timeout", maximum=300):
    """Return ``timeout`` as a float of seconds in (0, maximum], or raise naming the value."""
    from salt.exceptions import SaltInvocationError  # pylint: disable=import-outside-toplevel

    if isinstance(timeout, bool):
        raise SaltInvocationError(f"{what} {timeout!r} is not a number of seconds")
    try:
        value = float(timeout)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"{what} {timeout!r} is not a number of seconds") from err
    if not 0 < value <= maximum:
        raise SaltInvocationError(f"{what} {timeout!r} is out of range (0-{maximum:g}]")
    return value


def run_concurrently(tasks, timeout):
    """
    Run ``{key: callable}`` in daemon threads; return ``{key: result}`` for the
    callables that finished within ``timeout`` seconds. A callable that raised
    is reported as the exception object.
    """
    results = {}
    lock = threading.Lock()
    done = threading.Event()

    def runner(key, func):
        try:
            value = func()
        except Exception as err:  # pylint: disable=broad-except
            value = err
        with lock:
            results[key] = value
            if len(results) == len(tasks):
                done.set()

    if not tasks:
        return {}
    for key, func in tasks.items():
        threading.Thread(target=runner, args=(key, func), daemon=True, name=f"ha-probe-{key}").start()
    done.wait(timeout)
    with lock:
        return dict(results)


def resolve(host, timeout):
    """Return the unique addresses of ``host`` (an IP literal resolves to itself)."""
    found = run_concurrently(
        {host: lambda: socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}, timeout
    )
    if host not in found:
        raise OSError(f"DNS lookup of {host!r} timed out after {timeout:g} s")
    infos = found[host]
    if isinstance(infos, Exception):
        raise OSError(f"DNS lookup of {host!r} failed: {infos}") from infos
    addresses = []
    for info in infos:
        address = info[4][0]
        if address not in addresses:
            addresses.append(address)
    return addresses


def tcp_port_open(address, port, timeout):
    """True when a TCP connection to ``address:port`` completes within ``timeout``."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def zmq_uri(address, port):
    """ZeroMQ endpoint for an IPv4 or IPv6 address."""
    if ":" in address:
        return f"tcp://[{address}]:{port}"
    return f"tcp://{address}:{port}"


def ping_master(address, port, timeout, context):
    """
    Send a clear ``{"cmd": "ping"}`` to the master's ReqServer (ZeroMQ REQ, as the
    minion does) and wait at most ``timeout`` seconds for the answer.

    Returns the round-trip time in seconds; raises ``TimeoutError`` or ``OSError``.
    """
    sock = context.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, max(1, int(timeout * 1000)))
        sock.connect(zmq_uri(address, port))
        started = time.monotonic()
        sock.send(salt.payload.dumps({"enc": "clear", "load": dict(PING_LOAD), "version": 3}))
        if not sock.poll(max(1, int(timeout * 1000)), zmq.POLLIN):
            raise TimeoutError("no answer to ping")
        reply = salt.payload.loads(sock.recv())
        elapsed = time.monotonic() - started
    except zmq.ZMQError as err:
        raise OSError(f"ping failed: {err}") from err
    except SaltDeserializationError as err:
        raise OSError("unexpected answer to ping: not a Salt message") from err
    finally:
        sock.close(linger=0)
    if not isinstance(reply, dict):
        raise OSError(f"unexpected answer to ping: {type(reply).__name__}")
    return elapsed


def blank_entry(endpoint):
    """The ``masters`` entry of ``endpoint`` before anything answered."""
    return {
        "master": endpoint.master,
        "host": endpoint.host,
        "ret_port": endpoint.ret_port,
        "publish_port": endpoint.publish_port,
        "addresses": [],
        "up": False,
        "latency_ms": None,
        "error": None,
        "connected": False,
        "publish_port_open": False,
    }


def probe_endpoint(endpoint, timeout, transport="zeromq", context=None):
    """
    Probe one :class:`ha_endpoints.MasterEndpoint`; return one ``masters`` entry of
    ``ha.status`` (``connected`` is left False: the caller knows the daemon).
    """
    deadline = time.monotonic() + timeout
    result = blank_entry(endpoint)
    try:
        result["addresses"] = resolve(endpoint.host, timeout)
    except OSError as err:
        result["error"] = str(err)
        return result
    address = result["addresses"][0]  # the minion connects to the first address, too

    def remaining():
        return max(0.001, deadline - time.monotonic())

    checks = run_concurrently(
        {
            "publish": lambda: tcp_port_open(address, endpoint.publish_port, remaining()),
            "ping": lambda: app_ping(address, endpoint.ret_port, remaining(), transport, context),
        },
        remaining() + COLLECT_SLACK,
    )
    result["publish_port_open"] = checks.get("publish") is True
    ping = checks.get("ping", TimeoutError("no answer to ping"))
    if isinstance(ping, (TimeoutError, socket.timeout)):
        result["error"] = f"ret port {endpoint.ret_port}: no answer within {timeout:g} s"
        return result
    if isinstance(ping, Exception):
        result["error"] = f"ret port {endpoint.ret_port}: {ping}"
        return result
    result["up"] = True
    result["latency_ms"] = round(ping * 1000, 3)
    if not result["publish_port_open"]:
        result["error"] = f"publish port {endpoint.publish_port} does not accept connections"
    return result


def app_ping(address, port, timeout, transport, context):
    """Application-level check of the ret port for ``transport``; seconds on success."""
    if transport == "zeromq":
        # A refused port fails here at once; ZeroMQ alone would retry until the deadline.
        with socket.create_connection((address, port), timeout=timeout):
            pass
        return ping_master(address, port, timeout, context)
    # Salt's tcp/ws transports frame messages differently; a TCP connect is all
    # this probe checks there, and it says so in the error of a failed check.
    started = time.monotonic()
    if not tcp_port_open(address, port, timeout):
        raise OSError(f"transport {transport}: TCP connect failed (TCP-level check only)")
    return time.monotonic() - started


def probe_endpoints(endpoints, timeout, transport="zeromq"):
    """Probe every endpoint concurrently; one entry per endpoint, in order."""
    context = zmq.Context()
    try:
        found = run_concurrently(
            {
                index: (lambda ep=endpoint: probe_endpoint(ep, timeout, transport, context))
                for index, endpoint in enumerate(endpoints)
            },
            timeout + 2 * COLLECT_SLACK,
        )
    finally:
        context.destroy(linger=0)
    results = []
    for index, endpoint in enumerate(endpoints):
        entry = found.get(index)
        if entry is None or isinstance(entry, Exception):
            entry = blank_entry(endpoint)
            entry["error"] = f"probe did not finish within {timeout:g} s"
        results.append(entry)
    return results


def resolve_many(hosts, timeout):
    """``{host: [addresses]}`` for every host, concurrently; ``[]`` where it does not resolve."""
    found = run_concurrently(
        {host: (lambda h=host: resolve(h, timeout)) for host in set(hosts)},
        timeout + COLLECT_SLACK,
    )
    return {
        host: found[host] if isinstance(found.get(host), list) else [] for host in set(hosts)
    }
