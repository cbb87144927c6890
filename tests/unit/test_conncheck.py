"""Unit tests for ha_conncheck (short TCP keepalive on this process's own connections) on real loopback sockets."""

import socket
import time

import pytest

import ha_conncheck
import ha_watch

pytestmark = pytest.mark.skipif(not ha_conncheck.SUPPORTED, reason="no TCP_KEEPIDLE/INTVL/CNT on this platform")


@pytest.fixture
def connection():
    """A client socket ESTABLISHED to a loopback listener (the 'master'), with Salt-like keepalive."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 300)
        try:
            yield client, server.getsockname()[1]
        finally:
            client.close()
            accepted.close()
            ha_conncheck.release("test", 0)


def keepalive(sock):
    return ha_conncheck.read_keepalive(sock)


def test_guard_sets_short_keepalive_on_connections_to_the_ports_and_release_restores_it(connection):
    client, port = connection
    before = keepalive(client)
    assert before["idle"] == 300
    assert ha_conncheck.guard("test", (port,)) == 1
    assert keepalive(client) == ha_conncheck.SHORT
    assert ha_conncheck.guard("test", (port,)) == 0  # already tuned: not again
    assert ha_conncheck.guarded("test") == [(client.getsockname(), client.getpeername())]
    assert ha_conncheck.release("test") == 1
    assert keepalive(client) == before
    assert ha_conncheck.guarded("test") == []


def test_guard_leaves_connections_to_other_ports_alone(connection):
    client, port = connection
    assert ha_conncheck.guard("test", (port + 1 if port < 65535 else port - 1,)) == 0
    assert keepalive(client)["idle"] == 300


def test_release_waits_until_the_guard_is_old_enough(connection):
    client, port = connection
    ha_conncheck.guard("test", (port,))
    assert ha_conncheck.follow("test", None, hold=60) == 0  # too young: still checked
    assert keepalive(client) == ha_conncheck.SHORT
    assert ha_conncheck.follow("test", None, hold=0) == 1
    assert keepalive(client)["idle"] == 300


def test_a_closed_or_reused_descriptor_is_never_touched(connection):
    client, port = connection
    ha_conncheck.guard("test", (port,))
    (laddr, raddr), = ha_conncheck.guarded("test")
    fd = client.fileno()
    client.close()
    # Another socket takes the same descriptor number: release must not write to it.
    other = socket.socket()
    try:
        other.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
        assert other.fileno() == fd
        assert ha_conncheck.release("test") == 0
        assert other.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 77
    finally:
        other.close()
    with ha_conncheck.connection_socket(fd, laddr, raddr) as sock:
        assert sock is None


def test_the_probe_worker_checks_the_connected_masters_connections_when_it_fails(connection):
    client, port = connection
    worker = ha_watch.ProbeWorker.__new__(ha_watch.ProbeWorker)
    worker.name, worker.connected = "test", "m1"
    entry = {"master": "m1", "publish_port": port, "ret_port": port, "up": True}
    worker._check_connection([entry])  # pylint: disable=protected-access
    assert keepalive(client)["idle"] == 300
    worker._check_connection([dict(entry, up=None)])  # a fault of the probe: no news  # pylint: disable=protected-access
    assert keepalive(client)["idle"] == 300
    worker._check_connection([dict(entry, up=False)])  # pylint: disable=protected-access
    assert keepalive(client) == ha_conncheck.SHORT


def test_a_live_peer_answers_the_probes_and_the_connection_stays_usable():
    """A frozen master's kernel answers keepalive probes: checking must never break a good connection."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            time.sleep(1.1)  # idle longer than the short idle: the first probe goes out at once
            assert ha_conncheck.guard("test", (server.getsockname()[1],)) == 1
            time.sleep(1.5)  # two probes, both answered
            client.sendall(b"ping")
            accepted.settimeout(5)
            assert accepted.recv(4) == b"ping"
        finally:
            client.close()
            accepted.close()
            ha_conncheck.release("test", 0)


ARP = """IP address       HW type     Flags       HW address            Mask     Device
10.0.0.100       0x1         0x2         02:AA:00:00:00:01     *        eth0
10.0.0.1         0x1         0x2         02:aa:00:00:00:02     *        eth0
10.0.0.7         0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.8         0x1         zz          02:aa:00:00:00:03     *        eth0
"""


def test_neighbours_reads_complete_arp_entries_of_the_addresses_asked(tmp_path):
    table = tmp_path / "arp"
    table.write_text(ARP)
    assert ha_conncheck.neighbours(["10.0.0.100", "10.0.0.7", "10.0.0.8", "10.0.0.9"], table) == {
        "10.0.0.100": "02:aa:00:00:00:01",
    }
    assert ha_conncheck.neighbours(["10.0.0.100"], tmp_path / "missing") == {}
