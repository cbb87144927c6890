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
import traceback

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


def printable(text):
    """
    ``text`` with every non-printable character escaped as ``repr`` does (a newline
    becomes ``\\n``), printable text unchanged: for text from a file, a config or a
    peer inside a message or a log line, so that it cannot forge a second line.
    """
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


def describe_error(err):
    """``TypeName: message`` of an exception, the message made :func:`printable`."""
    message = printable(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def log_fault(logger, subject, err):
    """
    Log an unexpected exception: a warning ``salt-ha: <subject> failed: <TypeName:
    message>`` and, at debug, its traceback, every line of the exception's text
    made :func:`printable` (``subject`` shows its values with ``repr``). Returns
    ``TypeName: message`` for the caller's report.
    """
    fault = describe_error(err)
    logger.warning("salt-ha: %s failed: %s", subject, fault)
    frames = "".join(traceback.format_tb(err.__traceback__))
    logger.debug("salt-ha: traceback of that failure (most recent call last):\n%s%s", frames, fault)
    return fault


def run_concurrently(tasks, timeout):
    """
    Run ``{key: callable}`` in daemon threads; return ``{key: result}`` for the
    callables that finished within ``timeout`` seconds. A callable that raised
    is reported as the exception object (whatever its type: the caller names it);
    a key that is missing did not finish in time.
    """
    results = {}
    lock = threading.Lock()
    done = threading.Event()

    def runner(key, func):
        try:
            value = func()
        except Exception as err:  # pylint: disable=broad-except  (a probe thread reports, never dies)
            log.debug("salt-ha: probe task %r raised %s", key, describe_error(err))
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
    """
    Return the unique addresses of ``host`` (an IP literal resolves to itself).

    Raises ``OSError`` naming the host: the lookup timed out, or failed (the
    resolver's message; the exception type too when it is not an ``OSError``,
    e.g. ``UnicodeError`` for a label longer than 63 characters).
    """
    found = run_concurrently(
        {host: lambda: socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}, timeout
    )
    if host not in found:
        raise OSError(f"DNS lookup of {host!r} timed out after {timeout:g} s")
    infos = found[host]
    if isinstance(infos, OSError):
        raise OSError(f"DNS lookup of {host!r} failed: {printable(infos)}") from infos
    if isinstance(infos, Exception):
        raise OSError(f"DNS lookup of {host!r} failed: {describe_error(infos)}") from infos
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
        result["error"] = printable(err)
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
    ping_error = check_error(checks, "ping", endpoint.master, timeout)
    if ping_error is not None:
        result["error"] = f"ret port {endpoint.ret_port}: {ping_error}"
        return result
    result["up"] = True
    result["latency_ms"] = round(checks["ping"] * 1000, 3)
    if checks.get("publish") is False:
        result["error"] = f"publish port {endpoint.publish_port} does not accept connections"
    elif not result["publish_port_open"]:
        publish_error = check_error(checks, "publish", endpoint.master, timeout)
        result["error"] = f"publish port {endpoint.publish_port}: {publish_error}"
    return result


def is_fault(outcome):
    """
    True for an exception that is a fault of the probe itself, not an answer of
    the network (``OSError``, which includes ``TimeoutError`` and refusals).
    """
    return isinstance(outcome, Exception) and not isinstance(outcome, OSError)


def check_error(checks, key, master, timeout, name=None):
    """
    Why the check ``key`` in ``checks`` (a :func:`run_concurrently` result) on
    ``master`` did not succeed, or None when it returned a value.

    Missing (or a ``TimeoutError``) is ``no answer within N s``; an ``OSError``
    is its message; any other exception is a fault of the probe itself: logged
    (:func:`log_fault`) and named with its type, ``<name> check failed:
    TypeName: message`` (``name`` defaults to ``key``), never passed off as a timeout.
    """
    if key not in checks or isinstance(checks[key], TimeoutError):
        return f"no answer within {timeout:g} s"
    outcome = checks[key]
    if isinstance(outcome, OSError):
        return printable(outcome)
    if is_fault(outcome):
        name = key if name is None else name
        return f"{name} check failed: {log_fault(log, f'the {name} check of master {master!r}', outcome)}"
    return None


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
        if index not in found:
            entry = blank_entry(endpoint)
            entry["error"] = f"probe did not finish within {timeout:g} s"
        elif isinstance(entry, Exception):
            fault = log_fault(log, f"the probe of master {endpoint.master!r}", entry)
            entry = blank_entry(endpoint)
            entry["error"] = f"probe failed: {fault}"
        results.append(entry)
    return results


def resolve_each(hosts, timeout):
    """
    ``{host: [addresses] or OSError}`` for every host, concurrently: the error
    says why a host has no address (:func:`resolve`'s, or the timeout).
    """
    unique = set(hosts)
    found = run_concurrently(
        {host: (lambda h=host: resolve(h, timeout)) for host in unique}, timeout + COLLECT_SLACK
    )
    results = {}
    for host in unique:
        outcome = found.get(host)
        if host not in found:
            outcome = OSError(f"DNS lookup of {host!r} timed out after {timeout:g} s")
        elif is_fault(outcome):
            fault = log_fault(log, f"the DNS lookup of {host!r}", outcome)
            outcome = OSError(f"DNS lookup of {host!r} failed: {fault}")
        results[host] = outcome
    return results


def resolve_many(hosts, timeout):
    """``{host: [addresses]}`` for every host, concurrently; ``[]`` where it does not resolve."""
    return {
        host: [] if isinstance(outcome, Exception) else outcome
        for host, outcome in resolve_each(hosts, timeout).items()
    }
