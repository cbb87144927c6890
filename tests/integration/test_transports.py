"""
The application-level ping against a real salt-master for every transport Salt 3008
supports (zeromq, tcp, ws): up with a latency while it runs, down with "no answer"
within the timeout while it is frozen (SIGSTOP of its whole process tree: the
kernel still completes TCP handshakes), up again after the thaw.

One master at a time (module-scoped, one per transport), on 127.0.0.1.
"""

import time

import pytest

import ha_endpoints
import ha_probe
from tests.support import lab as lablib

pytestmark = [
    pytest.mark.integration,
    # Salt 3008's ws client passes ssl=None to aiohttp, which deprecates it: Salt's, not ours.
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
]

TIMEOUT = 1.0
# What a probe may take past its timeout: thread hand-over (ha_probe.COLLECT_SLACK
# twice) plus scheduling on a busy 2-core machine.
SLACK = 0.5
# A master just thawed may take a moment: its workers resume, and a handshake the
# kernel dropped while the accept queue was full is retried by TCP after ~1 s
# (Salt's tcp request server listens with a backlog of 5).
THAW_SECONDS = 5
# salt-factories calls a master started when its event bus is up; its request server
# workers answer 1.5-3.5 s later here (measured), longer on a loaded machine.
READY_SECONDS = 60


class TransportMaster:
    """A running salt-master with ``transport`` on 127.0.0.1, and the endpoint that reaches it."""

    def __init__(self, transport, factory, ports):
        self.transport = transport
        self.factory = factory
        self.publish_port, self.ret_port = ports
        self.endpoint = ha_endpoints.MasterEndpoint(
            master=lablib.LOOPBACK_A,
            host=lablib.LOOPBACK_A,
            ret_port=self.ret_port,
            publish_port=self.publish_port,
        )

    def probe(self, timeout=TIMEOUT, transport=None):
        """``ha_probe.probe_endpoints`` of this master; ``(entry, seconds taken)``."""
        started = time.monotonic()
        (entry,) = ha_probe.probe_endpoints([self.endpoint], timeout, transport or self.transport)
        return entry, time.monotonic() - started

    def up_within(self, seconds):
        """Bounded: probe until the master answers; ``(entry, seconds waited)`` or ``(last entry, None)``."""
        started = time.monotonic()
        entry = None
        while time.monotonic() - started < seconds:
            entry, _ = self.probe()
            if entry["up"]:
                return entry, time.monotonic() - started
            time.sleep(0.1)
        return entry, None


@pytest.fixture(scope="module", params=ha_probe.TRANSPORTS)
def master(request, salt_factories, tmp_path_factory):
    """One running salt-master per transport, shared by the tests of that transport."""
    transport = request.param
    lab = lablib.Lab(salt_factories, tmp_path_factory.mktemp(f"transport-{transport}"), ips=(lablib.LOOPBACK_A,))
    factory = lab.add_master(transport, lablib.LOOPBACK_A, overrides={"transport": transport})
    with lablib.RunningDaemons([factory]):
        running = TransportMaster(transport, factory, lab.ports)
        entry, waited = running.up_within(READY_SECONDS)
        if waited is None:
            pytest.fail(f"the {transport} master did not answer a ping within {READY_SECONDS} s: {entry['error']}")
        yield running


def test_running_master_is_up_with_a_latency(master):
    entry, elapsed = master.probe()
    assert entry["up"] is True, entry["error"]
    assert entry["error"] is None
    assert 0 < entry["latency_ms"] < 1000
    assert entry["addresses"] == [lablib.LOOPBACK_A]
    assert entry["publish_port_open"] is True
    assert elapsed < TIMEOUT


def test_app_ping_of_the_running_master(master):
    seconds = ha_probe.app_ping(lablib.LOOPBACK_A, master.ret_port, TIMEOUT, master.transport, None)
    assert 0 < seconds < TIMEOUT


def test_frozen_master_is_down_within_the_timeout_and_up_after_the_thaw(master):
    assert master.probe()[0]["up"] is True
    with lablib.frozen(master.factory):
        entry, elapsed = master.probe()
    assert entry["up"] is False
    assert entry["latency_ms"] is None
    assert entry["error"] == f"ret port {master.ret_port}: no answer within {TIMEOUT:g} s"
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK, elapsed
    assert entry["publish_port_open"] is True  # the kernel still accepts: only the ping tells
    entry, waited = master.up_within(THAW_SECONDS)
    assert waited is not None, f"not up within {THAW_SECONDS} s of the thaw: {entry['error']}"
    assert entry["error"] is None


def test_a_master_answers_only_the_ping_of_its_own_transport(master):
    # What a TCP connect cannot tell: the port is open, but it speaks another protocol.
    for other in ha_probe.TRANSPORTS:
        if other == master.transport:
            continue
        entry, elapsed = master.probe(timeout=0.5, transport=other)
        assert entry["up"] is False, (other, entry)
        assert entry["error"].startswith(f"ret port {master.ret_port}: "), (other, entry)
        assert elapsed < 0.5 + SLACK, (other, elapsed)
    assert master.probe()[0]["up"] is True  # and the master is none the worse for it
