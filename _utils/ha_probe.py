"""
Probe Salt masters: DNS, the publish port and an application-level ping.

A master is *up* only when one of its request-server workers answers a clear
``{"cmd": "ping"}`` on the ret port within the timeout (what ``status.ping_master``
sends, here bounded by ``timeout`` instead of ``auth_timeout``, one try). A frozen
master (SIGSTOP) still completes TCP handshakes in the kernel, so a TCP connect
alone would call it up; the ping does not. How each transport Salt 3008 supports
(``salt.transport.TRANSPORTS``) is pinged, by :func:`app_ping`:

- every transport: a plain TCP connect to the ret port first, so that a refused
  port fails at once with ``Connection refused`` (ZeroMQ alone would retry until
  the deadline; Salt's TCP client reconnects every second, forever);
- ``zeromq``: :func:`ping_master`, a ZeroMQ REQ socket on one shared context
  sending the envelope Salt's ``ReqChannel`` sends for a clear load
  (``{"enc": "clear", "load": ..., "version": 3}``, msgpack, one frame): ~1-2 ms
  on loopback, no thread or loop per probe (Salt's own channel costs about twice
  that, creates a ZeroMQ context and its I/O threads per probe and needs ~0.2 s
  more to let go of a frozen master);
- ``tcp`` and ``ws``: :func:`channel_ping`, Salt's own request channel
  (``salt.channel.client.AsyncReqChannel`` in clear mode, hence Salt's framing:
  ``salt.transport.tcp`` msgpack frames, ``salt.transport.ws`` websocket on
  aiohttp) on a private event loop of the probing thread, bounded by the probe's
  deadline, closed with its loop before returning (no descriptor or thread is
  left behind): ~3-6 ms a ping on loopback, connect and teardown included.

All masters are probed concurrently, in daemon threads, against one deadline: N
dead masters cost one ``timeout``, and a hung DNS lookup can neither block the
caller nor keep the process alive at exit.
"""

import asyncio
import copy
import ipaddress
import logging
import socket
import threading
import time

import salt.payload
import zmq
from salt.exceptions import (
    SaltClientError,
    SaltDeserializationError,
    SaltReqTimeoutError,
)

import ha_text

log = logging.getLogger(__name__)

PING_LOAD = {"cmd": "ping"}
# The transports Salt 3008 supports (salt.transport.TRANSPORTS); app_ping pings each its own way.
TRANSPORTS = ("zeromq", "tcp", "ws")
# A little slack past the probe deadline for threads to hand back their result.
COLLECT_SLACK = 0.1
# How long a closed Salt channel gets to finish its closing tasks (a websocket's
# close handshake) before they are cancelled; healthy channels need ~1 ms.
CHANNEL_CLOSE_GRACE = 0.2






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
            log.debug("salt-ha: probe task %r raised %s", key, ha_text.describe_error(err))
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


def is_ip_literal(host):
    """True for an IPv4 or IPv6 address written as such (no lookup needed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(host, timeout):
    """
    Return the unique addresses of ``host`` (an IP literal resolves to itself).

    Raises ``OSError`` naming the host: the lookup timed out, or failed (the
    resolver's message; the exception type too when it is not an ``OSError``,
    e.g. ``UnicodeError`` for a label longer than 63 characters).
    """
    if is_ip_literal(host):
        return [host]
    found = run_concurrently(
        {host: lambda: socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}, timeout
    )
    if host not in found:
        raise OSError(f"DNS lookup of {host!r} timed out after {timeout:g} s")
    infos = found[host]
    if isinstance(infos, OSError):
        raise OSError(f"DNS lookup of {host!r} failed: {ha_text.printable(infos)}") from infos
    if isinstance(infos, Exception):
        raise OSError(f"DNS lookup of {host!r} failed: {ha_text.describe_error(infos)}") from infos
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
    """
    ZeroMQ endpoint for an IPv4 or IPv6 address; also Salt's ``master_uri`` form,
    which every Salt transport's request client parses.
    """
    if ":" in address:
        return f"tcp://[{address}]:{port}"
    return f"tcp://{address}:{port}"


def clear_ping_message():
    """
    The request Salt's ``ReqChannel`` puts on the wire for ``send({"cmd": "ping"})``
    with ``crypt="clear"`` (``AsyncReqChannel._package_load``; tracing adds keys to
    the load only inside a recording OpenTelemetry span).
    """
    return {"enc": "clear", "load": dict(PING_LOAD), "version": 3}


def check_ping_answer(reply):
    """
    Raise ``OSError`` unless ``reply`` is what a master answers a clear ping: a
    dict (3008's ``ClearFuncs.ping`` sends the load back).
    """
    if not isinstance(reply, dict):
        raise OSError(f"unexpected answer to ping: {type(reply).__name__}")


def ping_master(address, port, timeout, context=None):
    """
    Send a clear ``{"cmd": "ping"}`` to the master's ReqServer over ZeroMQ (a REQ
    socket and :func:`clear_ping_message`, byte for byte what Salt's ``ReqChannel``
    sends) and wait at most ``timeout`` seconds for the answer. ``context`` is the
    ZeroMQ context to use (None: a private one, destroyed before returning).

    Returns the round-trip time in seconds; raises ``TimeoutError`` or ``OSError``.
    """
    if context is None:
        private = zmq.Context()
        try:
            return ping_master(address, port, timeout, private)
        finally:
            private.destroy(linger=0)
    sock = context.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, max(1, int(timeout * 1000)))
        sock.connect(zmq_uri(address, port))
        started = time.monotonic()
        sock.send(salt.payload.dumps(clear_ping_message()))
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
    check_ping_answer(reply)
    return elapsed


_BASE_OPTS = {}
_BASE_OPTS_LOCK = threading.Lock()


def channel_opts(address, port, transport):
    """
    Minion options for a request channel to ``address:port`` over ``transport``:
    Salt's minion defaults (copied once) with the master's address, ret port,
    ``master_uri`` and ``ipv6`` for an IPv6 address.
    """
    with _BASE_OPTS_LOCK:
        if not _BASE_OPTS:
            import salt.config  # pylint: disable=import-outside-toplevel

            _BASE_OPTS.update(copy.deepcopy(salt.config.DEFAULT_MINION_OPTS))
        opts = dict(_BASE_OPTS)
    opts.update(
        {
            "transport": transport,
            "master": address,
            "master_ip": address,
            "master_port": port,
            "master_uri": zmq_uri(address, port),
            "ipv6": ":" in address,
        }
    )
    return opts


def _answer_errors(transport):
    """
    Exceptions that are the network's or the master's answer to a channel ping
    (reported as ``OSError`` naming them), not a fault of the probe.
    """
    errors = (OSError, SaltClientError, SaltDeserializationError)
    if transport == "ws":
        import aiohttp  # pylint: disable=import-outside-toplevel  (a Salt 3008 dependency, for ws)

        errors += (aiohttp.ClientError,)
    return errors


async def _send_ping(opts, io_loop, timeout):
    """
    One clear ping through Salt's ``AsyncReqChannel`` on the running loop; returns
    ``(seconds, reply)``. The channel is closed, and its closing tasks are given
    :data:`CHANNEL_CLOSE_GRACE` to finish, before returning.
    """
    import salt.channel.client  # pylint: disable=import-outside-toplevel

    transport = opts["transport"]
    channel = salt.channel.client.AsyncReqChannel.factory(opts, crypt="clear", io_loop=io_loop)
    try:
        started = time.monotonic()
        # Our deadline governs: Salt's own timer is set past it, so that it never
        # fires on a request the deadline already cancelled (Salt's tcp client
        # would then set an exception on a cancelled future, which asyncio logs).
        # The loop is closed before it could fire.
        request = channel.send(dict(PING_LOAD), tries=1, timeout=2 * timeout + 1)
        try:
            reply = await asyncio.wait_for(request, timeout)
        except (asyncio.TimeoutError, SaltReqTimeoutError) as err:
            raise TimeoutError("no answer to ping") from err
        except UnboundLocalError as err:
            if transport != "ws":
                raise
            # Salt 3008's ws client reads the reply into a local that stays unset
            # when the websocket closes before an answer.
            raise OSError("ping failed: the master closed the websocket without answering") from err
        except _answer_errors(transport) as err:
            raise OSError(f"ping failed: {ha_text.describe_error(err)}") from err
        elapsed = time.monotonic() - started
    finally:
        await channel.close_async()
        closing = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if closing:
            await asyncio.wait(closing, timeout=CHANNEL_CLOSE_GRACE)
    return elapsed, reply


def _log_loop_leftover(_loop, context):
    """
    Exception handler of a probe's private loop. What reaches it are leftovers of
    Salt's transports once their channel is closed (a fire-and-forget write task
    of the tcp client that fails on the closed stream, the ``gather`` its
    ``close()`` never awaits): nobody could retrieve them; logged at debug
    rather than as asyncio errors in the minion's log.
    """
    exception = context.get("exception")
    log.debug(
        "salt-ha: left on a probe's event loop: %s%s",
        context.get("message", "?"),
        f" ({ha_text.describe_error(exception)})" if exception is not None else "",
    )


def _close_loop(asyncio_loop, io_loop):
    """
    Cancel what still runs on a probe's private loop (waiting at most
    :data:`CHANNEL_CLOSE_GRACE` for it to end), shut the loop down and close it.
    """
    pending = [task for task in asyncio.all_tasks(asyncio_loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:

        async def drain():
            await asyncio.wait(pending, timeout=CHANNEL_CLOSE_GRACE)

        asyncio_loop.run_until_complete(drain())
    asyncio_loop.run_until_complete(asyncio_loop.shutdown_asyncgens())
    # Tornado's resolver runs getaddrinfo in the loop's default executor.
    asyncio_loop.run_until_complete(asyncio_loop.shutdown_default_executor())
    io_loop.close(all_fds=True)  # closes asyncio_loop too


def channel_ping(address, port, timeout, transport):
    """
    Send a clear ``{"cmd": "ping"}`` to the master's ReqServer through Salt's own
    request channel for ``transport`` (``salt.channel.client.AsyncReqChannel``,
    ``crypt="clear"``, one try: what ``status.ping_master`` sends), on a private
    event loop, and wait at most ``timeout`` seconds for the answer. The channel
    and its loop are closed before returning.

    Returns the round-trip time in seconds (connect included); raises
    ``TimeoutError`` (no answer), ``OSError`` naming what went wrong otherwise
    (``ping failed: TypeName: message``, ``unexpected answer to ping: <type>``).
    """
    import tornado.ioloop  # pylint: disable=import-outside-toplevel

    opts = channel_opts(address, port, transport)
    asyncio_loop = asyncio.new_event_loop()
    asyncio_loop.set_exception_handler(_log_loop_leftover)
    io_loop = tornado.ioloop.IOLoop(asyncio_loop=asyncio_loop, make_current=False)
    try:
        elapsed, reply = asyncio_loop.run_until_complete(_send_ping(opts, io_loop, timeout))
    finally:
        _close_loop(asyncio_loop, io_loop)
    check_ping_answer(reply)
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
        "fault": False,
    }


def probe_endpoint(endpoint, timeout, transport="zeromq", context=None, publish=True):
    """
    Probe one :class:`ha_endpoints.MasterEndpoint`; return one ``masters`` entry of
    ``ha.status`` (``connected`` is left False: the caller knows the daemon).
    ``fault`` is True when the probe itself failed with an unexpected exception
    (logged; ``error`` names it): that says nothing about the master. With
    ``publish=False`` (the beacon's probe) the publish port is not checked.
    """
    deadline = time.monotonic() + timeout
    result = blank_entry(endpoint)
    try:
        result["addresses"] = resolve(endpoint.host, timeout)
    except OSError as err:
        result["error"] = ha_text.printable(err)
        return result
    address = result["addresses"][0]  # the minion connects to the first address, too

    def remaining():
        return max(0.001, deadline - time.monotonic())

    tasks = {"ping": lambda: app_ping(address, endpoint.ret_port, remaining(), transport, context)}
    if publish:
        tasks["publish"] = lambda: tcp_port_open(address, endpoint.publish_port, remaining())
    checks = run_concurrently(tasks, remaining() + COLLECT_SLACK)
    result["publish_port_open"] = checks.get("publish") is True
    ping_error = check_error(checks, "ping", endpoint.master, timeout)
    if ping_error is not None:
        result["error"] = f"ret port {endpoint.ret_port}: {ping_error}"
        result["fault"] = is_fault(checks.get("ping"))
        return result
    result["up"] = True
    result["latency_ms"] = round(checks["ping"] * 1000, 3)
    if publish:
        result["error"] = publish_error(checks, endpoint, timeout)
    return result


def publish_error(checks, endpoint, timeout):
    """Why the publish port check in ``checks`` failed, or None when the port accepted."""
    if checks.get("publish") is True:
        return None
    if checks.get("publish") is False:
        return f"publish port {endpoint.publish_port} does not accept connections"
    return f"publish port {endpoint.publish_port}: {check_error(checks, 'publish', endpoint.master, timeout)}"


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
        return ha_text.printable(outcome)
    if is_fault(outcome):
        name = key if name is None else name
        return f"{name} check failed: {ha_text.log_fault(log, f'the {name} check of master {master!r}', outcome)}"
    return None


def app_ping(address, port, timeout, transport, context):
    """
    Application-level check of the ret port of ``address`` for ``transport``
    (``zeromq``, ``tcp`` or ``ws``), all within ``timeout``; seconds on success.

    A TCP connect first, so that a refused port fails at once (``OSError``,
    ``Connection refused``); then :func:`ping_master` on ``context`` (None: a
    private one) for ``zeromq``, :func:`channel_ping` (Salt's request channel;
    ``context`` unused) for ``tcp`` and ``ws``. Raises ``TimeoutError`` when
    nothing answers in time, ``OSError`` for any other answer of the network,
    ``ValueError`` for a transport Salt does not have.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r} is not one of Salt's ({', '.join(TRANSPORTS)})")
    deadline = time.monotonic() + timeout
    with socket.create_connection((address, port), timeout=timeout):
        pass
    remaining = max(0.001, deadline - time.monotonic())
    if transport == "zeromq":
        return ping_master(address, port, remaining, context)
    return channel_ping(address, port, remaining, transport)


def probe_endpoints(endpoints, timeout, transport="zeromq", context=None, publish=True):
    """
    Probe every endpoint concurrently (:func:`probe_endpoint`); one entry per
    endpoint, in order, within ``timeout`` (plus a little slack) whatever hangs.
    ``context``: a ZeroMQ context to use (the beacon keeps one for the process's
    life); without it one is made and destroyed here.
    """
    own_context = context is None
    context = zmq.Context() if own_context else context
    try:
        found = run_concurrently(
            {
                index: (lambda ep=endpoint: probe_endpoint(ep, timeout, transport, context, publish))
                for index, endpoint in enumerate(endpoints)
            },
            timeout + 2 * COLLECT_SLACK,
        )
    finally:
        if own_context:
            context.destroy(linger=0)
    results = []
    for index, endpoint in enumerate(endpoints):
        entry = found.get(index)
        if index not in found:
            entry = blank_entry(endpoint)
            entry["error"] = f"probe did not finish within {timeout:g} s"
        elif isinstance(entry, Exception):
            fault = ha_text.log_fault(log, f"the probe of master {endpoint.master!r}", entry)
            entry = blank_entry(endpoint)
            entry.update(error=f"probe failed: {fault}", fault=True)
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
            fault = ha_text.log_fault(log, f"the DNS lookup of {host!r}", outcome)
            outcome = OSError(f"DNS lookup of {host!r} failed: {fault}")
        results[host] = outcome
    return results


def resolve_many(hosts, timeout):
    """``{host: [addresses]}`` for every host, concurrently; ``[]`` where it does not resolve."""
    return {
        host: [] if isinstance(outcome, Exception) else outcome
        for host, outcome in resolve_each(hosts, timeout).items()
    }
