"""
Unit tests for ha_probe against real local fakes on 127.0.0.1.

A "master" here is a ZeroMQ REP socket answering Salt's clear ping, or Salt's own
tcp / ws request server class (``salt.transport.request_server``) serving on a loop
in a thread and answering the way a master worker does; a "frozen" master is a
listening TCP socket nobody accepts (the kernel still completes the handshake, as
for a SIGSTOPped master), a "refused" port is one nothing listens on.
"""

import logging
import re
import socket
import threading
import time

import pytest
import salt.payload
import zmq

import ha_endpoints
import ha_probe
from tests.support import fake_master as fake_master_lib

pytestmark = [
    # Salt 3008's ws client passes ssl=None to aiohttp, which deprecates it: Salt's, not ours.
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
]

LOCALHOST = "127.0.0.1"
UNRESOLVABLE = "salt-ha-test.invalid"


@pytest.fixture
def fake_master():
    """Factory: start a fake ReqServer with an answer function; all are stopped at teardown."""
    servers = []

    def start(answer=fake_master_lib.clear_ping_answer):
        server = fake_master_lib.AnsweringMaster(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def listening_port():
    """Factory: a TCP port on 127.0.0.1 that listens but never accepts (a frozen master)."""
    sockets = []

    def open_port():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOCALHOST, 0))
        sock.listen(16)
        sockets.append(sock)
        return sock.getsockname()[1]

    yield open_port
    for sock in sockets:
        sock.close()


@pytest.fixture
def refused_port():
    """A port on 127.0.0.1 nothing listens on."""
    return fake_master_lib.closed_port()


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def endpoint(ret_port, publish_port, master=None, host=LOCALHOST):
    return ha_endpoints.MasterEndpoint(
        master=master or f"{host}:{ret_port}", host=host, ret_port=ret_port, publish_port=publish_port
    )


def timed(func, *args, **kwargs):
    started = time.monotonic()
    result = func(*args, **kwargs)
    return result, time.monotonic() - started


# --- run_concurrently ---------------------------------------------------------


@pytest.fixture
def release():
    """An event that blocked tasks wait on (bounded); set at teardown so no thread lingers."""
    event = threading.Event()
    yield event
    event.set()


def test_run_concurrently_returns_what_finished_by_the_deadline(release):
    def boom():
        raise ValueError("boom")

    results, elapsed = timed(
        ha_probe.run_concurrently,
        {"fast": lambda: 1, "boom": boom, "slow": lambda: release.wait(10)},
        0.3,
    )
    assert 0.25 <= elapsed < 0.8
    assert set(results) == {"fast", "boom"}
    assert results["fast"] == 1
    assert isinstance(results["boom"], ValueError)
    assert str(results["boom"]) == "boom"


def test_run_concurrently_returns_as_soon_as_all_finish():
    tasks = {index: (lambda i=index: (time.sleep(0.05), i)[1]) for index in range(10)}
    results, elapsed = timed(ha_probe.run_concurrently, tasks, 5)
    assert results == {index: index for index in range(10)}
    assert elapsed < 1  # concurrent: not 10 x 0.05, and not the 5 s deadline


def test_run_concurrently_without_tasks():
    assert timed(ha_probe.run_concurrently, {}, 5)[1] < 0.1


# --- resolve, resolve_many, tcp_port_open -------------------------------------


@pytest.mark.parametrize("host,expected", [("127.0.0.1", ["127.0.0.1"]), ("::1", ["::1"])])
def test_resolve_ip_literal(host, expected):
    assert ha_probe.resolve(host, 2) == expected


def test_resolve_localhost():
    addresses = ha_probe.resolve("localhost", 2)
    assert "127.0.0.1" in addresses
    assert len(addresses) == len(set(addresses))


def test_resolve_unresolvable():
    with pytest.raises(OSError, match=f"DNS lookup of '{UNRESOLVABLE}' (failed|timed out)"):
        ha_probe.resolve(UNRESOLVABLE, 2)


def test_resolve_hung_dns_is_bounded(monkeypatch, release):
    # The one stand-in here: a resolver that hangs cannot be made on 127.0.0.1.
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: release.wait(10))
    started = time.monotonic()
    with pytest.raises(OSError, match="DNS lookup of 'hung.example' timed out after 0.3 s"):
        ha_probe.resolve("hung.example", 0.3)
    assert time.monotonic() - started < 0.6


def test_resolve_many():
    found = ha_probe.resolve_many(["127.0.0.1", UNRESOLVABLE, "127.0.0.1", "::1"], 2)
    assert found == {"127.0.0.1": ["127.0.0.1"], UNRESOLVABLE: [], "::1": ["::1"]}


def test_tcp_port_open(listening_port, refused_port):
    frozen = listening_port()
    assert ha_probe.tcp_port_open(LOCALHOST, frozen, 1) is True  # why a TCP check is not enough
    assert ha_probe.tcp_port_open(LOCALHOST, refused_port, 1) is False


# --- ping_master --------------------------------------------------------------


def test_ping_master_answers(fake_master, zmq_context):
    server = fake_master()
    seconds = ha_probe.ping_master(LOCALHOST, server.port, 2, zmq_context)
    assert 0 < seconds < 0.5
    (request,) = server.requests
    assert salt.payload.loads(request) == {"enc": "clear", "load": {"cmd": "ping"}, "version": 3}


def test_ping_master_frozen(listening_port, zmq_context):
    with pytest.raises(TimeoutError, match="no answer to ping"):
        ha_probe.ping_master(LOCALHOST, listening_port(), 0.3, zmq_context)


def test_ping_master_not_a_dict(fake_master, zmq_context):
    server = fake_master(lambda request: salt.payload.dumps("pong"))
    with pytest.raises(OSError, match="unexpected answer to ping: str"):
        ha_probe.ping_master(LOCALHOST, server.port, 2, zmq_context)


# --- probe_endpoint -----------------------------------------------------------


def test_probe_endpoint_up(fake_master, listening_port, zmq_context):
    server = fake_master()
    publish = listening_port()
    result, elapsed = timed(ha_probe.probe_endpoint, endpoint(server.port, publish), 2, context=zmq_context)
    assert elapsed < 1
    latency = result.pop("latency_ms")
    assert 0 < latency < 500
    assert result == {
        "master": f"127.0.0.1:{server.port}",
        "host": LOCALHOST,
        "ret_port": server.port,
        "publish_port": publish,
        "addresses": [LOCALHOST],
        "up": True,
        "error": None,
        "connected": False,
        "publish_port_open": True,
        "fault": False,
    }


def test_probe_endpoint_publish_port_closed(fake_master, refused_port, zmq_context):
    server = fake_master()
    result = ha_probe.probe_endpoint(endpoint(server.port, refused_port), 2, context=zmq_context)
    assert result["up"] is True
    assert result["publish_port_open"] is False
    assert result["error"] == f"publish port {refused_port} does not accept connections"


@pytest.mark.parametrize("timeout", [0.5, 1.0])
def test_probe_endpoint_frozen_master(listening_port, zmq_context, timeout):
    frozen = listening_port()
    publish = listening_port()
    result, elapsed = timed(ha_probe.probe_endpoint, endpoint(frozen, publish), timeout, context=zmq_context)
    assert timeout * 0.9 <= elapsed < timeout + 0.5
    assert result["up"] is False
    assert result["latency_ms"] is None
    assert result["error"] == f"ret port {frozen}: no answer within {timeout:g} s"
    assert result["publish_port_open"] is True  # the kernel accepts, the master does not answer


def test_probe_endpoint_refused(refused_port, listening_port, zmq_context):
    result, elapsed = timed(
        ha_probe.probe_endpoint, endpoint(refused_port, listening_port()), 2, context=zmq_context
    )
    assert elapsed < 0.5
    assert result["up"] is False
    assert result["error"].startswith(f"ret port {refused_port}: ")
    assert "refused" in result["error"].lower()


def test_probe_endpoint_unresolvable(zmq_context):
    result, elapsed = timed(
        ha_probe.probe_endpoint, endpoint(4506, 4505, host=UNRESOLVABLE), 2, context=zmq_context
    )
    assert elapsed < 2.5
    assert result["up"] is False
    assert result["addresses"] == []
    assert result["publish_port_open"] is False
    assert f"DNS lookup of '{UNRESOLVABLE}'" in result["error"]


@pytest.mark.parametrize(
    "answer,error",
    [
        (lambda request: salt.payload.dumps("pong"), "unexpected answer to ping: str"),
        (lambda request: salt.payload.dumps([1, 2]), "unexpected answer to ping: list"),
        (lambda request: salt.payload.dumps(None), "unexpected answer to ping: NoneType"),
        (lambda request: b"\xc1 not msgpack", "not a Salt message"),
    ],
    ids=["str", "list", "nil", "not-msgpack"],
)
def test_probe_endpoint_garbage_answer(fake_master, listening_port, zmq_context, answer, error):
    server = fake_master(answer)
    result = ha_probe.probe_endpoint(endpoint(server.port, listening_port()), 2, context=zmq_context)
    assert result["up"] is False
    assert result["latency_ms"] is None
    assert result["error"].startswith(f"ret port {server.port}: ")
    assert error in result["error"]


# --- probe_endpoints ----------------------------------------------------------


def test_probe_endpoints_concurrently_in_order(fake_master, listening_port, refused_port):
    good = fake_master()
    garbage = fake_master(lambda request: salt.payload.dumps("pong"))
    frozen = listening_port()
    publish = listening_port()
    endpoints = [
        endpoint(frozen, publish, master="frozen"),
        endpoint(good.port, publish, master="good"),
        endpoint(refused_port, publish, master="refused"),
        endpoint(garbage.port, publish, master="garbage"),
    ]
    results, elapsed = timed(ha_probe.probe_endpoints, endpoints, 1)
    assert elapsed < 1.5  # four probes, one timeout
    assert [(r["master"], r["up"]) for r in results] == [
        ("frozen", False),
        ("good", True),
        ("refused", False),
        ("garbage", False),
    ]
    assert "no answer" in results[0]["error"]
    assert results[1]["error"] is None
    assert "refused" in results[2]["error"].lower()
    assert "unexpected answer" in results[3]["error"]


def test_probe_endpoints_many_frozen_cost_one_timeout(listening_port):
    endpoints = [endpoint(listening_port(), listening_port(), master=f"m{i}") for i in range(6)]
    results, elapsed = timed(ha_probe.probe_endpoints, endpoints, 0.5)
    assert elapsed < 1.0
    assert [r["master"] for r in results] == [f"m{i}" for i in range(6)]
    assert not any(r["up"] for r in results)


def test_probe_endpoints_publish_port_open(fake_master, listening_port, refused_port):
    server = fake_master()
    results = ha_probe.probe_endpoints(
        [endpoint(server.port, listening_port(), master="open"), endpoint(server.port, refused_port, master="closed")],
        2,
    )
    assert [(r["master"], r["up"], r["publish_port_open"]) for r in results] == [
        ("open", True, True),
        ("closed", True, False),
    ]


def test_probe_endpoints_empty():
    assert ha_probe.probe_endpoints([], 1) == []


# --- what a failed probe says: timeouts are timeouts, faults are named ------------

LONG_LABEL = "a" * 64 + ".example"  # a DNS label longer than 63 characters: UnicodeError, not OSError


def test_resolve_names_an_error_that_is_not_an_oserror():
    with pytest.raises(OSError) as err:
        ha_probe.resolve(LONG_LABEL, 2)
    assert str(err.value).startswith(f"DNS lookup of {LONG_LABEL!r} failed: UnicodeError: ")
    assert isinstance(err.value.__cause__, UnicodeError)


def test_resolve_each_says_why_a_host_has_no_address(monkeypatch, release):
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "hung.example":
            release.wait(10)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    found = ha_probe.resolve_each(["127.0.0.1", UNRESOLVABLE, LONG_LABEL, "hung.example"], 0.3)
    assert found["127.0.0.1"] == ["127.0.0.1"]
    assert re.match(f"DNS lookup of '{UNRESOLVABLE}' (failed|timed out)", str(found[UNRESOLVABLE]))
    assert str(found[LONG_LABEL]).startswith(f"DNS lookup of {LONG_LABEL!r} failed: UnicodeError: ")
    assert str(found["hung.example"]) == "DNS lookup of 'hung.example' timed out after 0.3 s"
    assert ha_probe.resolve_many(["127.0.0.1", LONG_LABEL], 1) == {"127.0.0.1": ["127.0.0.1"], LONG_LABEL: []}


def test_probe_endpoint_unresolvable_long_label(zmq_context):
    result = ha_probe.probe_endpoint(endpoint(4506, 4505, host=LONG_LABEL), 2, context=zmq_context)
    assert result["up"] is False
    assert result["error"].startswith(f"DNS lookup of {LONG_LABEL!r} failed: UnicodeError: ")


def broken_ping(*args, **kwargs):
    raise ValueError("unexpected\nSALT-HA OK - forged")


def test_probe_endpoint_names_an_exception_of_the_ping_not_a_timeout(
    monkeypatch, caplog, fake_master, listening_port, zmq_context
):
    server = fake_master()
    monkeypatch.setattr(ha_probe, "app_ping", broken_ping)
    target = endpoint(server.port, listening_port())
    with caplog.at_level("WARNING", logger="ha_probe"):
        result, elapsed = timed(ha_probe.probe_endpoint, target, 2, context=zmq_context)
    assert elapsed < 1  # reported at once, not after the timeout
    assert result["up"] is False
    assert result["latency_ms"] is None
    assert result["error"] == (
        f"ret port {server.port}: ping check failed: ValueError: unexpected\\nSALT-HA OK - forged"
    )
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert repr(target.master) in record.getMessage()
    assert "ValueError: unexpected\\nSALT-HA OK - forged" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_probe_endpoint_names_an_exception_of_the_publish_check(monkeypatch, fake_master, listening_port, zmq_context):
    server = fake_master()
    publish = listening_port()

    def broken_tcp_check(address, port, timeout):
        if port == publish:
            raise TypeError("port check broke")
        return True

    monkeypatch.setattr(ha_probe, "tcp_port_open", broken_tcp_check)
    result = ha_probe.probe_endpoint(endpoint(server.port, publish), 2, context=zmq_context)
    assert result["up"] is True  # the ping answered
    assert result["publish_port_open"] is False
    assert result["error"] == f"publish port {publish}: publish check failed: TypeError: port check broke"


def test_probe_endpoints_names_an_exception_of_the_probe_not_a_timeout(monkeypatch, caplog, listening_port):
    def broken_probe(endpoint_, timeout, transport, context, publish):
        raise KeyError("ret_port")

    monkeypatch.setattr(ha_probe, "probe_endpoint", broken_probe)
    target = endpoint(listening_port(), listening_port(), master="m\n1")
    with caplog.at_level("WARNING", logger="ha_probe"):
        (result,) = ha_probe.probe_endpoints([target], 1)
    assert result["up"] is False
    assert result["error"] == "probe failed: KeyError: 'ret_port'"
    assert result["fault"] is True
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert messages == ["salt-ha: the probe of master 'm\\n1' failed: KeyError: 'ret_port'"]


def test_probe_endpoints_says_a_probe_that_did_not_finish_timed_out(monkeypatch, release, listening_port):
    monkeypatch.setattr(ha_probe, "probe_endpoint", lambda *args: release.wait(10))
    (result,) = ha_probe.probe_endpoints([endpoint(listening_port(), listening_port())], 0.3)
    assert result["up"] is False
    assert result["error"] == "probe did not finish within 0.3 s"


# --- every transport: zeromq by hand, tcp and ws through Salt's request channel ---

CHANNEL_TRANSPORTS = ["tcp", "ws"]


class SaltRequestServer:
    """
    Salt's own request server for ``transport`` (``salt.transport.request_server``:
    the class a master's workers serve with) on 127.0.0.1, run on a loop in a
    thread. Every request is recorded and answered with ``answer(load)``, which
    is what a master worker does with a clear ping (``ClearFuncs.ping`` sends the
    load back).
    """

    def __init__(self, transport, answer=lambda load: load):
        import asyncio  # pylint: disable=import-outside-toplevel
        import copy  # pylint: disable=import-outside-toplevel

        import salt.config  # pylint: disable=import-outside-toplevel
        import salt.transport  # pylint: disable=import-outside-toplevel
        import tornado.ioloop  # pylint: disable=import-outside-toplevel

        self.answer = answer
        self.requests = []
        self.port = fake_master_lib.closed_port()
        opts = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
        opts.update({"transport": transport, "interface": LOCALHOST, "ret_port": self.port})
        self.server = salt.transport.request_server(opts)
        self.server.pre_fork(None)  # binds the ret port (no load balancer process on Linux)
        self.loop = asyncio.new_event_loop()
        self.io_loop = tornado.ioloop.IOLoop(asyncio_loop=self.loop, make_current=False)
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="salt-req-server")
        self.thread.start()
        assert ready.wait(5), f"Salt's {transport} request server did not start"

    def _serve(self, ready):
        import asyncio  # pylint: disable=import-outside-toplevel

        asyncio.set_event_loop(self.loop)
        self.server.post_fork(self.handle, self.io_loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.io_loop.close(all_fds=True)

    async def handle(self, payload):
        self.requests.append(payload)
        return self.answer(payload["load"])

    def close(self):
        """Stop serving, release the port and the loop."""

        def stop():
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)


@pytest.fixture
def salt_server():
    """Factory: Salt's request server for a transport; all are stopped at teardown."""
    servers = []

    def start(transport, answer=lambda load: load):
        server = SaltRequestServer(transport, answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def open_descriptors():
    import os  # pylint: disable=import-outside-toplevel

    return len(os.listdir("/proc/self/fd"))


def os_threads():
    """Threads of this process as the kernel counts them (ZeroMQ's I/O threads too)."""
    import os  # pylint: disable=import-outside-toplevel

    return len(os.listdir("/proc/self/task"))


def test_the_zeromq_ping_is_byte_for_byte_what_salts_channel_sends(fake_master, zmq_context):
    server = fake_master()
    ha_probe.ping_master(LOCALHOST, server.port, 2, zmq_context)
    ha_probe.channel_ping(LOCALHOST, server.port, 2, "zeromq")  # salt.channel.client.AsyncReqChannel
    by_hand, by_salt = server.requests
    assert by_hand == by_salt
    assert salt.payload.loads(by_hand) == ha_probe.clear_ping_message()


def test_ping_master_without_a_context_uses_a_private_one(fake_master):
    server = fake_master()
    assert 0 < ha_probe.ping_master(LOCALHOST, server.port, 2) < 0.5
    assert 0 < ha_probe.app_ping(LOCALHOST, server.port, 2, "zeromq", None) < 0.5


@pytest.mark.parametrize("transport", CHANNEL_TRANSPORTS)
def test_channel_ping_answers(salt_server, transport):
    server = salt_server(transport)
    seconds = ha_probe.channel_ping(LOCALHOST, server.port, 2, transport)
    assert 0 < seconds < 0.5
    assert server.requests == [ha_probe.clear_ping_message()]


@pytest.mark.parametrize("transport", CHANNEL_TRANSPORTS)
def test_probe_endpoint_up_through_salts_channel(salt_server, listening_port, transport):
    server = salt_server(transport)
    publish = listening_port()
    result, elapsed = timed(ha_probe.probe_endpoint, endpoint(server.port, publish), 2, transport=transport)
    assert elapsed < 1
    assert result["up"] is True, result
    assert result["error"] is None
    assert 0 < result["latency_ms"] < 500
    assert result["publish_port_open"] is True
    assert server.requests == [ha_probe.clear_ping_message()]


@pytest.mark.parametrize("transport", ha_probe.TRANSPORTS)
@pytest.mark.parametrize("timeout", [0.3, 1.0])
def test_frozen_master_is_down_after_the_timeout_for_every_transport(listening_port, transport, timeout):
    frozen = listening_port()  # the kernel completes the handshake; nobody answers
    result, elapsed = timed(ha_probe.probe_endpoint, endpoint(frozen, listening_port()), timeout, transport=transport)
    assert timeout * 0.9 <= elapsed < timeout + 0.3
    assert result["up"] is False
    assert result["latency_ms"] is None
    assert result["error"] == f"ret port {frozen}: no answer within {timeout:g} s"
    assert result["publish_port_open"] is True


@pytest.mark.parametrize("transport", ha_probe.TRANSPORTS)
def test_app_ping_of_a_master_that_accepts_and_never_answers_returns_at_the_deadline(transport):
    # Accepted by a process this time (not only by the kernel): the ws upgrade,
    # the tcp frame, the ZeroMQ greeting all stay unanswered.
    with fake_master_lib.AcceptingPort() as silent:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no answer to ping"):
            ha_probe.app_ping(LOCALHOST, silent.port, 0.5, transport, None)
        assert 0.45 <= time.monotonic() - started < 0.8


@pytest.mark.parametrize("transport", ha_probe.TRANSPORTS)
def test_refused_ret_port_says_connection_refused_at_once_for_every_transport(
    refused_port, listening_port, transport
):
    result, elapsed = timed(
        ha_probe.probe_endpoint, endpoint(refused_port, listening_port()), 2, transport=transport
    )
    assert elapsed < 0.5
    assert result["up"] is False
    assert result["error"] == f"ret port {refused_port}: [Errno 111] Connection refused"


@pytest.mark.parametrize("transport", CHANNEL_TRANSPORTS)
@pytest.mark.parametrize(
    "answer,error",
    [
        (lambda load: "pong", "unexpected answer to ping: str"),
        (lambda load: [1, 2], "unexpected answer to ping: list"),
        (lambda load: None, "unexpected answer to ping: NoneType"),
    ],
    ids=["str", "list", "nil"],
)
def test_channel_ping_garbage_answer(salt_server, listening_port, transport, answer, error):
    server = salt_server(transport, answer)
    result = ha_probe.probe_endpoint(endpoint(server.port, listening_port()), 2, transport=transport)
    assert result["up"] is False
    assert result["error"] == f"ret port {server.port}: {error}"


def test_ws_master_that_closes_without_answering_is_named(salt_server):
    def crash(load):
        raise RuntimeError("worker crashed")  # aiohttp closes the websocket

    server = salt_server("ws", crash)
    result, elapsed = timed(ha_probe.probe_endpoint, endpoint(server.port, server.port), 2, transport="ws")
    assert elapsed < 1
    assert result["up"] is False
    assert result["error"] == (
        f"ret port {server.port}: ping failed: the master closed the websocket without answering"
    )


# Salt 3008's tcp client calls its async disconnect callback without awaiting it.
@pytest.mark.filterwarnings("ignore:coroutine '_null_callback' was never awaited:RuntimeWarning")
def test_tcp_master_that_closes_the_connection_is_named():
    # Accepts, then closes every connection at once: Salt's tcp client sees the stream close.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOCALHOST, 0))
    listener.listen(16)
    listener.settimeout(0.05)
    stop = threading.Event()

    def close_everything():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=close_everything, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(OSError) as err:
            ha_probe.app_ping(LOCALHOST, port, 2, "tcp", None)
        assert time.monotonic() - started < 1
        assert not isinstance(err.value, TimeoutError)
        assert str(err.value) == "ping failed: StreamClosedError: Stream is closed"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_unknown_transport_is_a_named_fault_not_a_timeout(monkeypatch, caplog, listening_port):
    frozen = listening_port()
    with caplog.at_level("WARNING", logger="ha_probe"):
        result, elapsed = timed(ha_probe.probe_endpoint, endpoint(frozen, listening_port()), 1, transport="rabbitmq")
    assert elapsed < 0.5
    assert result["up"] is False
    assert result["error"] == (
        f"ret port {frozen}: ping check failed: "
        "ValueError: transport 'rabbitmq' is not one of Salt's (zeromq, tcp, ws)"
    )


@pytest.mark.parametrize(
    "address,uri,ipv6",
    [("127.0.0.1", "tcp://127.0.0.1:4506", False), ("::1", "tcp://[::1]:4506", True), ("fe80::1", "tcp://[fe80::1]:4506", True)],
)
def test_channel_opts(address, uri, ipv6):
    opts = ha_probe.channel_opts(address, 4506, "tcp")
    assert (opts["master_uri"], opts["ipv6"], opts["master_ip"], opts["master_port"]) == (uri, ipv6, address, 4506)
    assert opts["transport"] == "tcp"
    assert "id" in opts and "ssl" in opts  # Salt's minion defaults underneath
    assert ha_probe.channel_opts(address, 4506, "ws") is not opts  # a copy per probe


def measure_growth(ping, count):
    """
    Descriptors and threads (kernel's count, Python's count) before and after
    ``count`` pings, after a warm-up. The "after" figures are read again for up to
    10 s (a loaded machine is slow to settle) until they are back to "before": a thread that shuts a loop's executor
    down, or ZeroMQ's reaper closing a socket, finishes a moment after the ping
    returned. A leak does not settle.
    """
    for _ in range(20):  # ZeroMQ, asyncio and aiohttp allocate a few things once
        ping()
    before = open_descriptors(), os_threads(), threading.active_count()
    for _ in range(count):
        ping()
    deadline = time.monotonic() + 10
    while True:
        after = open_descriptors(), os_threads(), threading.active_count()
        if all(now <= then for now, then in zip(after, before, strict=True)) or time.monotonic() > deadline:
            return before, after
        time.sleep(0.05)


@pytest.mark.parametrize("transport", ha_probe.TRANSPORTS)
def test_200_pings_leak_no_descriptor_and_no_thread(salt_server, fake_master, zmq_context, transport):
    server = fake_master() if transport == "zeromq" else salt_server(transport)
    before, after = measure_growth(
        lambda: ha_probe.app_ping(LOCALHOST, server.port, 2, transport, zmq_context), 200
    )
    # The stand-in server lives in this process too: its side of the last
    # connection may still be closing. A leak would be ~200 or more.
    assert after[0] - before[0] <= 2, (before, after)
    assert after[1:] == before[1:], (before, after)


@pytest.mark.parametrize("transport", ha_probe.TRANSPORTS)
def test_pings_of_a_frozen_master_leak_no_descriptor_and_no_thread(zmq_context, transport):
    # A frozen master as the kernel keeps it: handshakes complete into a backlog
    # deep enough for every probe, so each one gets as far as the ping.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as frozen:
        frozen.bind((LOCALHOST, 0))
        frozen.listen(512)
        port = frozen.getsockname()[1]
        before, after = measure_growth(
            lambda: pytest.raises(TimeoutError, ha_probe.app_ping, LOCALHOST, port, 0.05, transport, zmq_context),
            40,
        )
    # ZeroMQ's reaper thread closes a socket asynchronously: +-2 at any moment, no growth.
    assert after[0] - before[0] <= 2, (before, after)
    assert after[1:] == before[1:], (before, after)


@pytest.mark.parametrize("transport", CHANNEL_TRANSPORTS)
def test_probe_endpoints_through_salts_channel_concurrently_in_order(
    salt_server, listening_port, refused_port, transport
):
    good = salt_server(transport)
    garbage = salt_server(transport, lambda load: "pong")
    publish = listening_port()
    endpoints = [
        endpoint(listening_port(), publish, master="frozen"),
        endpoint(good.port, publish, master="good"),
        endpoint(refused_port, publish, master="refused"),
        endpoint(garbage.port, publish, master="garbage"),
        endpoint(good.port, publish, master="good again"),
    ]
    results, elapsed = timed(ha_probe.probe_endpoints, endpoints, 1, transport)
    assert elapsed < 1.5  # five probes, each on its own loop in its own thread: one timeout
    assert [(r["master"], r["up"], r["error"]) for r in results] == [
        ("frozen", False, f"ret port {endpoints[0].ret_port}: no answer within 1 s"),
        ("good", True, None),
        ("refused", False, f"ret port {refused_port}: [Errno 111] Connection refused"),
        ("garbage", False, f"ret port {garbage.port}: unexpected answer to ping: str"),
        ("good again", True, None),
    ]


def test_the_transports_are_salts():
    import salt.transport  # pylint: disable=import-outside-toplevel

    assert ha_probe.TRANSPORTS == tuple(salt.transport.TRANSPORTS)


@pytest.mark.filterwarnings("ignore:coroutine '_null_callback' was never awaited:RuntimeWarning")
@pytest.mark.parametrize("transport", CHANNEL_TRANSPORTS)
def test_channel_pings_leave_no_asyncio_error_in_the_log(caplog, salt_server, listening_port, transport):
    import gc  # pylint: disable=import-outside-toplevel

    server = salt_server(transport)
    frozen = listening_port()
    with caplog.at_level("DEBUG"):
        for _ in range(50):
            ha_probe.app_ping(LOCALHOST, server.port, 2, transport, None)
        with pytest.raises(TimeoutError):
            ha_probe.app_ping(LOCALHOST, frozen, 0.1, transport, None)
        gc.collect()  # "exception was never retrieved" is reported when a future is collected
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING] == []
