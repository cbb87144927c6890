"""
Unit tests for ha_probe against real local fakes on 127.0.0.1.

A "master" here is a ZeroMQ REP socket answering Salt's clear ping, a "frozen"
master is a listening TCP socket nobody accepts (the kernel still completes the
handshake, as for a SIGSTOPped master), a "refused" port is one nothing listens on.
"""

import logging
import re
import socket
import threading
import time

import pytest
import salt.payload
import zmq
from salt.exceptions import SaltInvocationError

import ha_endpoints
import ha_probe
from tests.support import fake_master as fake_master_lib

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


# --- validate_timeout ---------------------------------------------------------


@pytest.mark.parametrize("value,expected", [("2", 2.0), (2, 2.0), (0.5, 0.5), ("0.25", 0.25), (300, 300.0)], ids=repr)
def test_validate_timeout_good(value, expected):
    result = ha_probe.validate_timeout(value)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value", ["abc", "", 0, "0", -1, 301, 1e9, float("nan"), True, False, None, [2]], ids=repr
)
def test_validate_timeout_bad(value):
    with pytest.raises(SaltInvocationError) as err:
        ha_probe.validate_timeout(value)
    assert str(err.value).startswith(f"timeout {value!r} ")


def test_validate_timeout_names_the_option():
    with pytest.raises(SaltInvocationError, match="^probe_timeout 'x' "):
        ha_probe.validate_timeout("x", what="probe_timeout")


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


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_probe_endpoint_other_transport_is_a_tcp_check(listening_port, refused_port, transport):
    up = ha_probe.probe_endpoint(endpoint(listening_port(), listening_port()), 1, transport=transport)
    assert up["up"] is True
    assert up["error"] is None
    down = ha_probe.probe_endpoint(endpoint(refused_port, listening_port()), 1, transport=transport)
    assert down["up"] is False
    assert down["error"] == (
        f"ret port {refused_port}: transport {transport}: TCP connect failed (TCP-level check only)"
    )


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


@pytest.mark.parametrize(
    "text,shown",
    [
        ("plain text", "plain text"),
        ("two\nlines", "two\\nlines"),
        ("cr\rlf\r\n", "cr\\rlf\\r\\n"),
        ("tab\there", "tab\\there"),
        ("bell\x07 esc\x1b[31m", "bell\\x07 esc\\x1b[31m"),
        ("nel\x85 ls\u2028", "nel\\x85 ls\\u2028"),
        ("quotes ' \" and \\ stay", "quotes ' \" and \\ stay"),
        ("café", "café"),
        (ValueError("in\nan error"), "in\\nan error"),
        (None, "None"),
    ],
    ids=repr,
)
def test_printable(text, shown):
    assert ha_probe.printable(text) == shown
    assert ha_probe.printable(shown) == shown  # printable text stays as it is


@pytest.mark.parametrize(
    "err,text",
    [
        (ValueError("bad\nvalue"), "ValueError: bad\\nvalue"),
        (KeyError("master"), "KeyError: 'master'"),
        (RuntimeError(), "RuntimeError"),
        (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError: [Errno 111] Connection refused"),
    ],
    ids=repr,
)
def test_describe_error(err, text):
    assert ha_probe.describe_error(err) == text


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
    def broken_probe(endpoint_, timeout, transport, context):
        raise KeyError("ret_port")

    monkeypatch.setattr(ha_probe, "probe_endpoint", broken_probe)
    target = endpoint(listening_port(), listening_port(), master="m\n1")
    with caplog.at_level("WARNING", logger="ha_probe"):
        (result,) = ha_probe.probe_endpoints([target], 1)
    assert result["up"] is False
    assert result["error"] == "probe failed: KeyError: 'ret_port'"
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert messages == ["salt-ha: the probe of master 'm\\n1' failed: KeyError: 'ret_port'"]


def test_probe_endpoints_says_a_probe_that_did_not_finish_timed_out(monkeypatch, release, listening_port):
    monkeypatch.setattr(ha_probe, "probe_endpoint", lambda *args: release.wait(10))
    (result,) = ha_probe.probe_endpoints([endpoint(listening_port(), listening_port())], 0.3)
    assert result["up"] is False
    assert result["error"] == "probe did not finish within 0.3 s"


def test_log_fault_escapes_the_message_in_the_warning_and_the_traceback(caplog):
    logger = logging.getLogger("tests.log_fault")
    try:
        raise ValueError("x\nforged: a line of its own")
    except ValueError as err:
        caught = err
    with caplog.at_level("DEBUG", logger="tests.log_fault"):
        fault = ha_probe.log_fault(logger, "the probe of master 'm1'", caught)
    assert fault == "ValueError: x\\nforged: a line of its own"
    warning, debug = caplog.records
    assert (warning.levelname, debug.levelname) == ("WARNING", "DEBUG")
    assert warning.getMessage() == f"salt-ha: the probe of master 'm1' failed: {fault}"
    assert "test_log_fault_escapes_the_message" in debug.getMessage()  # the frames are there
    assert debug.getMessage().endswith(fault)
    assert not any(line.startswith("forged") for line in debug.getMessage().splitlines())
