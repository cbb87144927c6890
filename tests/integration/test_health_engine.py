"""
The ``ha_health`` engine on a real salt-master (pytest-salt-factories, 127.0.0.1,
random ports), started from the master's own ``engines`` config.

One master serves every test of the module. Its config runs the engine twice: the
endpoint under test, and a second instance (Salt's ``engine_module``) on a port this
module holds bound before the master starts, whose error must reach the master log.

The request server is frozen the way a hung master is, but without the engine: the
``RequestServer`` process and everything under it (its process manager, the
ZeroMQ queue device, the MWorkers), found among the master's children by the process
titles Salt gives them. Freezing the whole master would freeze the engine too, and
the endpoint would hang instead of answering 503. Every freeze is undone in a
``finally``.
"""

import contextlib
import json
import os
import pathlib
import signal
import socket
import time
import urllib.error
import urllib.request

import psutil
import pytest

import ha_health
from tests.support import lab as lablib

pytestmark = pytest.mark.integration

TIMEOUT = 1  # the engine's probe timeout
MARGIN = 4  # seconds of slack on a loaded 2-CPU machine
REQUEST_SERVER_TITLES = ("RequestServer", "ReqServer_ProcessManager", "MWorker")


def get(url, timeout=TIMEOUT + MARGIN):
    """``(status, headers, body text)`` of a GET, HTTP errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def request_server_pids(master_pid):
    """
    The master's request-server processes: the ``RequestServer`` process (Salt's
    process title) and every process under it. The engine process is not among them.
    """
    roots = []
    for child in psutil.Process(master_pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            title = " ".join(child.cmdline())
            if "RequestServer" in title and "MWorker" not in title:
                roots.append(child)
    pids = set()
    for root in roots:
        pids.add(root.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            pids.update(child.pid for child in root.children(recursive=True))
    return sorted(pids)


def engine_pids(master_pid):
    return [
        child.pid
        for child in psutil.Process(master_pid).children(recursive=True)
        if "ha_health" in " ".join(child.cmdline())
    ]


@contextlib.contextmanager
def frozen_request_server(master_pid):
    """SIGSTOP the request server's processes for the block; SIGCONT them whatever happens."""
    pids = request_server_pids(master_pid)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def taken_port():
    """A port held by a listening socket of this test process for the whole module."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((lablib.LOOPBACK_A, 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def health_master(salt_factories, taken_port):
    ports = lablib.random_shared_ports([lablib.LOOPBACK_A])
    health_port = lablib.free_port([lablib.LOOPBACK_A])
    overrides = lablib.master_overrides(lablib.LOOPBACK_A, ports)
    overrides["engines"] = [
        {"ha_health": {"host": lablib.LOOPBACK_A, "port": health_port, "timeout": TIMEOUT}},
        {"ha_health_taken": {"engine_module": "ha_health", "host": lablib.LOOPBACK_A, "port": taken_port}},
    ]
    overrides["log_level_logfile"] = "info"
    master = salt_factories.salt_master_daemon("ha-health-master", overrides=overrides)
    with lablib.RunningDaemons([master]):
        master.health_url = f"http://{lablib.LOOPBACK_A}:{health_port}"
        yield master


def test_health_is_200_while_the_request_server_answers(health_master):
    lablib.wait_for(lambda: get(f"{health_master.health_url}/health")[0] == 200, 30, "the engine's /health answering 200")
    code, headers, body = get(f"{health_master.health_url}/health")
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    assert data["status"] == "ok" and data["master"] == health_master.id
    assert 0 < data["latency_ms"] < 1000


def test_metrics_of_the_master(health_master):
    lablib.wait_for(lambda: get(f"{health_master.health_url}/health")[0] == 200, 30, "/health answering 200")
    code, headers, text = get(f"{health_master.health_url}/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    assert f'salt_ha_health_up{{master="{health_master.id}"}} 1.0' in text
    assert f'salt_ha_minion_keys{{master="{health_master.id}",state="accepted"}}' in text
    assert 'salt_version="3008' in text
    assert "salt_ha_metrics_provider_ok{provider=\"key_metrics\"} 1.0" in text


def test_frozen_request_server_is_503_then_200_again(health_master):
    url = f"{health_master.health_url}/health"
    lablib.wait_for(lambda: get(url)[0] == 200, 30, "/health answering 200")
    engines = engine_pids(health_master.pid)
    with frozen_request_server(health_master.pid) as pids:
        started = time.monotonic()
        assert pids, "no request-server process found under the master"
        assert not set(pids) & set(engines), "the engine would be frozen with the request server"
        # A result younger than CACHE_SECONDS may still be served: poll (bounded).
        answer = lablib.wait_for(lambda: (lambda r: r if r[0] == 503 else None)(get(url)), TIMEOUT + MARGIN,
                                 "/health turning 503 after the freeze", step=0.1)
        elapsed = time.monotonic() - started
        assert "hung or partitioned" in json.loads(answer[2])["error"]
        assert elapsed < TIMEOUT + ha_health.CACHE_SECONDS + MARGIN, f"503 took {elapsed:.2f} s"
        lablib.wait_for(lambda: get(url)[0] == 503, 1, "/health still 503 while the request server is frozen")
    print(f"\n/health of a frozen request server: 503 after {elapsed:.2f} s (timeout {TIMEOUT} s)")
    lablib.wait_for(lambda: get(url)[0] == 200, 15, "/health back to 200 after SIGCONT")


def test_a_taken_port_is_a_clear_error_in_the_master_log(health_master, taken_port):
    log_file = pathlib.Path(health_master.config["log_file"])

    def logged():
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        return [line for line in text.splitlines() if "ha_health endpoint is not running" in line]

    lines = lablib.wait_for(logged, 30, f"an ha_health error in {log_file}")
    assert f"port {taken_port}" in lines[0] and "taken by another process" in lines[0], lines[0]
    assert "[ERROR" in lines[0] or "ERROR" in lines[0], lines[0]
    # The other instance still serves.
    assert get(f"{health_master.health_url}/health")[0] == 200
