"""
Unit tests for ha_health (the ``ha_health`` engine's logic): its options, and the HTTP
endpoint served by a real tornado server on 127.0.0.1 in front of loopback stand-ins
for a request server (tests/support/fake_master.py): one that answers the clear ping,
one that accepts TCP and never answers (a frozen master).
"""

import concurrent.futures
import contextlib
import json
import logging
import pathlib
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_health
from tests.support import fake_master
from tests.support import lab as lablib

LOOPBACK = "127.0.0.1"


# --- options ---------------------------------------------------------------------------


def test_defaults():
    assert ha_health.engine_config({}) == {"host": "0.0.0.0", "port": 4510, "timeout": 2.0}
    assert ha_health.engine_config(None) == {"host": "0.0.0.0", "port": 4510, "timeout": 2.0}


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"host": "127.0.0.1", "port": 8080, "timeout": 1}, {"host": "127.0.0.1", "port": 8080, "timeout": 1.0}),
        ({"host": "::", "port": "4511", "timeout": "0.5"}, {"host": "::", "port": 4511, "timeout": 0.5}),
        ({"host": " 10.0.0.1 ", "timeout": 30}, {"host": "10.0.0.1", "port": 4510, "timeout": 30.0}),
        ({"host": "0:0::1"}, {"host": "::1", "port": 4510, "timeout": 2.0}),
    ],
)
def test_good_options(options, expected):
    assert ha_health.engine_config(options) == expected


@pytest.mark.parametrize(
    "options, message",
    [
        ({"host": "localhost"}, "ha_health host 'localhost' is not an IP address"),
        ({"host": "salt.example.com"}, "'salt.example.com' is not an IP address"),
        ({"host": "300.1.1.1"}, "'300.1.1.1' is not an IP address"),
        ({"host": ""}, "ha_health host '' is not an IP address"),
        ({"host": 10}, "ha_health host 10 is not an IP address"),
        ({"port": 0}, "ha_health port 0 is out of range (1-65535)"),
        ({"port": 65536}, "ha_health port 65536 is out of range"),
        ({"port": "http"}, "ha_health port 'http' is not a port number"),
        ({"port": True}, "ha_health port True is not a port number"),
        ({"port": 4510.5}, "ha_health port 4510.5 is not a port number"),
        ({"timeout": 0}, "ha_health timeout 0 is out of range (0-30]"),
        ({"timeout": -1}, "ha_health timeout -1 is out of range"),
        ({"timeout": 31}, "ha_health timeout 31 is out of range (0-30]"),
        ({"timeout": "soon"}, "ha_health timeout 'soon' is not a number of seconds"),
        ({"timeout": False}, "ha_health timeout False is not a number of seconds"),
        ({"prot": 4510}, "ha_health option(s) 'prot' unknown (known: host, port, timeout)"),
        ([("port", 4510)], "are not a mapping"),
    ],
)
def test_bad_options_name_the_value(options, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_health.engine_config(options)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "interface, host",
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.0.0.5", "10.0.0.5"), (None, "127.0.0.1")],
)
def test_the_request_server_is_asked_where_it_listens(interface, host):
    endpoint = ha_health.request_server_endpoint({"id": "m1", "interface": interface, "ret_port": 4606})
    assert (endpoint.host, endpoint.ret_port, endpoint.master) == (host, 4606, "m1")


def test_a_bad_ret_port_is_refused():
    with pytest.raises(SaltInvocationError, match="ret_port 'x' is not a port number"):
        ha_health.request_server_endpoint({"interface": "127.0.0.1", "ret_port": "x"})


# --- the endpoint, served for real ----------------------------------------------------------


def http(method, url, timeout=10):
    """``(status, headers, body)``, HTTP errors included."""
    request = urllib.request.Request(url, method=method, data=b"x" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


@contextlib.contextmanager
def served(opts, timeout=1.0, providers=ha_health.METRIC_PROVIDERS):
    """``ha_health.serve`` in a thread on a free loopback port; yields the base URL."""
    config = ha_health.engine_config({"host": LOOPBACK, "port": lablib.free_port([LOOPBACK]), "timeout": timeout})
    stop = threading.Event()
    thread = threading.Thread(target=ha_health.serve, args=(opts, config, stop), kwargs={"providers": providers})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, config["port"]), timeout=1):
                break
            time.sleep(0.02)
        yield f"http://{LOOPBACK}:{config['port']}"
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "serve() did not stop"


def master_opts(tmp_path, ret_port, **extra):
    pki = tmp_path / "pki"
    for folder in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        (pki / folder).mkdir(parents=True, exist_ok=True)
    return {"id": "m1", "interface": LOOPBACK, "ret_port": ret_port, "transport": "zeromq", "pki_dir": str(pki), **extra}


@pytest.fixture
def answering():
    with fake_master.AnsweringMaster() as master:
        yield master


@pytest.fixture
def silent():
    with fake_master.SilentMaster() as master:
        yield master


def test_health_is_200_with_json_when_the_request_server_answers(tmp_path, answering):
    with served(master_opts(tmp_path, answering.port)) as url:
        status, headers, body = http("GET", f"{url}/health")
    assert status == 200
    assert headers["Content-Type"] == ha_health.JSON_CONTENT_TYPE
    assert headers["Cache-Control"] == "no-store"
    assert "Server" not in headers
    data = json.loads(body)
    assert data["status"] == "ok" and data["master"] == "m1"
    assert 0 < data["latency_ms"] < 1000
    assert answering.requests, "the fake request server was never pinged"


def test_health_is_503_within_the_timeout_when_nothing_answers(tmp_path, silent):
    with served(master_opts(tmp_path, silent.port), timeout=0.5) as url:
        started = time.monotonic()
        status, _, body = http("GET", f"{url}/health")
        elapsed = time.monotonic() - started
    assert status == 503
    data = json.loads(body)
    assert data["status"] == "down"
    assert data["error"] == (
        f"the request server does not answer (hung or partitioned): ret port {silent.port}: no answer within 0.5 s"
    )
    assert 0.4 < elapsed < 0.5 + 2.0  # the probe's timeout, plus a loaded machine's slack


def test_refused_ret_port_is_503_at_once(tmp_path):
    with served(master_opts(tmp_path, fake_master.closed_port()), timeout=2) as url:
        started = time.monotonic()
        status, _, body = http("GET", f"{url}/health")
        elapsed = time.monotonic() - started
    assert status == 503 and "Connection refused" in json.loads(body)["error"]
    assert elapsed < 1.5


def test_head_other_paths_and_methods(tmp_path, answering):
    with served(master_opts(tmp_path, answering.port)) as url:
        assert http("HEAD", f"{url}/health")[::2] == (200, "")
        assert http("HEAD", f"{url}/metrics")[0] == 200
        for path in ("/", "/healthz", "/health/", "/metrics/x", "/../etc/passwd"):
            assert http("GET", f"{url}{path}")[0] == 404, path
        assert http("POST", f"{url}/nope")[0] == 404
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            status, _, body = http(method, f"{url}/health")
            assert status == 405, method
            assert body == "405 Method Not Allowed\n"


def test_concurrent_checks_share_one_probe_and_never_block_the_loop(tmp_path, silent):
    with served(master_opts(tmp_path, silent.port), timeout=1.0) as url:
        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            started = time.monotonic()
            checks = [pool.submit(http, "GET", f"{url}/health") for _ in range(20)]
            time.sleep(0.2)  # the shared probe now waits on the silent request server
            not_found_at = time.monotonic()
            assert http("GET", f"{url}/other", timeout=5)[0] == 404
            not_found = time.monotonic() - not_found_at
            statuses = [check.result()[0] for check in checks]
            elapsed = time.monotonic() - started
        _, _, text = http("GET", f"{url}/metrics")
    assert statuses == [503] * 20
    assert not_found < 0.5, f"the loop was blocked {not_found:.2f} s by a probe in flight"
    assert elapsed < 1.0 + 2.0, f"20 concurrent checks took {elapsed:.2f} s"
    # 20 checks at once: one probe; /metrics afterwards: at most one more.
    probes = next(line for line in text.splitlines() if line.startswith("salt_ha_health_probes{"))
    assert float(probes.rsplit(" ", 1)[1]) <= 2, probes
    assert silent.port  # the stand-in stayed up throughout


def test_a_fresh_result_is_reused_then_probed_again(tmp_path, answering):
    with served(master_opts(tmp_path, answering.port)) as url:
        for _ in range(5):
            assert http("GET", f"{url}/health")[0] == 200
        first = len(answering.requests)
        time.sleep(ha_health.CACHE_SECONDS + 0.1)
        assert http("GET", f"{url}/health")[0] == 200
        second = len(answering.requests)
    assert first <= 2, f"{first} pings for 5 checks within the cache window"
    assert second == first + 1


def test_metrics_count_keys_by_state_and_carry_versions(tmp_path, answering):
    opts = master_opts(tmp_path, answering.port, ha={"peers": {"m2": {"password": "s3cret-pw"}}})
    pki = tmp_path / "pki"
    for folder, names in (("minions", ["a", "b", "c"]), ("minions_pre", ["d"]), ("minions_denied", ["e", "f"])):
        for name in names:
            (pki / folder / name).write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    (pki / "minions" / ".salt-ha-stage").write_text("x")  # dot files are no keys
    with served(opts) as url:
        status, headers, text = http("GET", f"{url}/metrics")
        health_body = http("GET", f"{url}/health")[2]
    assert status == 200 and headers["Content-Type"] == ha_health.METRICS_CONTENT_TYPE
    lines = set(text.splitlines())
    for state, count in (("accepted", 3), ("pending", 1), ("rejected", 0), ("denied", 2)):
        assert f'salt_ha_minion_keys{{master="m1",state="{state}"}} {count}.0' in lines
    assert 'salt_ha_health_up{master="m1"} 1.0' in lines
    assert any(line.startswith('salt_ha_build_info{master="m1",salt_ha_version="') for line in lines)
    assert "# TYPE salt_ha_health_ping_seconds gauge" in lines
    assert all(f'salt_ha_metrics_provider_ok{{provider="{name}"}} 1.0' in lines
               for name in ("health_metrics", "key_metrics", "version_metrics"))
    assert "s3cret-pw" not in text + health_body


def test_metrics_when_down_say_so(tmp_path, silent):
    with served(master_opts(tmp_path, silent.port), timeout=0.3) as url:
        text = http("GET", f"{url}/metrics")[2]
    assert 'salt_ha_health_up{master="m1"} 0.0' in text
    assert 'salt_ha_health_ping_seconds{master="m1"} NaN' in text


def test_a_failing_provider_is_reported_and_hides_nothing(tmp_path, answering, caplog):
    def broken(ctx):
        raise RuntimeError("no drill store")

    providers = (*ha_health.METRIC_PROVIDERS, broken)
    with caplog.at_level(logging.WARNING, logger="ha_health"), served(
        master_opts(tmp_path, answering.port), providers=providers
    ) as url:
        status, _, text = http("GET", f"{url}/metrics")
    assert status == 200
    assert 'salt_ha_metrics_provider_ok{provider="broken"} 0.0' in text
    assert 'salt_ha_health_up{master="m1"} 1.0' in text
    assert "the metric provider 'broken' failed: RuntimeError: no drill store" in caplog.text


def test_an_unreadable_key_store_is_a_failed_provider(tmp_path, answering):
    opts = master_opts(tmp_path, answering.port, **{"keys.cache_driver": "no_such_driver"})
    with served(opts) as url:
        text = http("GET", f"{url}/metrics")[2]
    assert 'salt_ha_metrics_provider_ok{provider="key_metrics"} 0.0' in text
    assert "salt_ha_minion_keys" not in text
    assert 'salt_ha_health_up{master="m1"} 1.0' in text


# --- binding -------------------------------------------------------------------------------


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(CommandExecutionError) as err:
            ha_health.bind({"host": LOOPBACK, "port": port, "timeout": 1})
    assert str(err.value).startswith(
        f"cannot listen on {LOOPBACK} port {port}: the port is taken by another process (Address already in use)"
    )


def test_an_address_not_on_this_host_is_a_clear_error():
    with pytest.raises(CommandExecutionError, match=r"cannot listen on 192\.0\.2\.1 port 4510: the address is not one"):
        ha_health.bind({"host": "192.0.2.1", "port": 4510, "timeout": 1})


def test_serve_logs_a_taken_port_once_and_binds_when_it_is_free(tmp_path, answering, caplog):
    holder = socket.socket()
    holder.bind((LOOPBACK, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    config = {"host": LOOPBACK, "port": port, "timeout": 1.0}
    stop = threading.Event()
    thread = threading.Thread(
        target=ha_health.serve, args=(master_opts(tmp_path, answering.port), config, stop),
        kwargs={"retry_seconds": 0.2},
    )
    try:
        with caplog.at_level(logging.DEBUG, logger="ha_health"):
            thread.start()
            time.sleep(1.0)  # about five attempts
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1, [r.getMessage() for r in errors]
            assert f"port {port}: the port is taken by another process" in errors[0].getMessage()
            holder.close()
            deadline = time.monotonic() + 10
            status = None
            while time.monotonic() < deadline and status != 200:
                with contextlib.suppress(OSError):
                    status = http("GET", f"http://{LOOPBACK}:{port}/health", timeout=2)[0]
                time.sleep(0.1)
            assert status == 200, "the endpoint did not come up once the port was free"
    finally:
        holder.close()
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_serve_gives_up_waiting_for_the_port_when_stopped(tmp_path):
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen(1)
        stop = threading.Event()
        config = {"host": LOOPBACK, "port": holder.getsockname()[1], "timeout": 1.0}
        thread = threading.Thread(target=ha_health.serve, args=({"id": "m1"}, config, stop), kwargs={"retry_seconds": 30})
        thread.start()
        time.sleep(0.2)
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_example_config_is_valid():
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "master.d" / "health.conf"
    engines = yaml.safe_load(example.read_text())["engines"]
    (options,) = [entry["ha_health"] for entry in engines if "ha_health" in entry]
    assert ha_health.engine_config(options) == {"host": "0.0.0.0", "port": 4510, "timeout": 2.0}
