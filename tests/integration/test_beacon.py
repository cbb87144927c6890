"""
The ``ha`` beacon on real daemons: masters A (127.0.0.1) and B (127.0.0.2), failover minions,
the beacon with the settings the README recommends.

- A killed: the minion answers through B and B's bus carries ``ha/failover``
  (``reason: closed``); the example reactor re-fires it as ``salt-ha/failover/<id>``;
  A back with ``master_failback``: ``ha/failback`` once, on A's bus.
- B (not connected) frozen: ``ha/degraded``; thawed: ``ha/recovered``.
- The connected master stalls for 1.5 s (SIGSTOP, SIGCONT: a busy or paused
  master): the minion stays on it.
- The connected master frozen (hung: TCP stays up): the beacon minion answers
  through the other master within ``hang_ticks`` x ``probe_interval`` + a few
  seconds, with ``ha/failover`` ``reason: hang``; a stock minion (no beacon) in the
  same lab is still on the frozen master after the same time.

Figures (failover-event latency, hung-master failover time) go to stdout (``-s``).
"""

import pathlib
import statistics
import time

import pytest

from tests.support import beacon_lab as blab
from tests.support import lab as lablib

pytestmark = pytest.mark.integration

HANG_SECONDS = blab.hang_seconds()
# Frozen -> the minion signed in on the other master: the hang threshold, the
# probe round that proves it (up to timeout + slack), the next tick (interval 1 s),
# Salt's switch to the other master and slack for a loaded machine.
HANG_BOUND = HANG_SECONDS + 1.1 + 1 + 5
# The failover event comes at the next tick once the new connection is confirmed
# and a probe round has seen the new master answer.
EVENT_SLACK = 1 + 1.1 + 3
# A stall the beacon must sit out (a busy or paused master), and how long after
# it the test looks for a failover that should not happen.
STALL_SECONDS = 1.5
STALL_WATCH = 8
# The tests take masters down and up within seconds of each other: with the
# default flap_window (60 s) the beacon would rightly call a master flapping and
# refuse it as a failover target.
FLAP_WINDOW = 8


@pytest.fixture
def kill_lab(salt_factories, tmp_path):
    """A and B run the example reactor; one minion with the beacon and master_failback."""
    lab = lablib.Lab(salt_factories, tmp_path)
    lab.add_master("a", lablib.LOOPBACK_A, overrides=blab.reactor_overrides())
    lab.add_master("b", lablib.LOOPBACK_B, overrides=blab.reactor_overrides())
    lab.add_failover_minion(
        "ha-beacon-kill",
        overrides={
            **blab.beacon_overrides(),
            "master_failback": True,
            "master_failback_interval": 2,
        },
    )
    with lablib.RunningDaemons(lablib.daemons(lab)):
        yield lab


@pytest.fixture(scope="module")
def hang_lab(salt_factories, tmp_path_factory, event_listener):
    """Plain masters; a beacon minion (its start-up reported: all masters up) and a stock minion, both connected to A."""
    lab = lablib.Lab(salt_factories, tmp_path_factory.mktemp("beacon-hang"))
    lab.add_master("a", lablib.LOOPBACK_A)
    lab.add_master("b", lablib.LOOPBACK_B)
    lab.add_failover_minion(
        "ha-beacon-hang",
        overrides=blab.beacon_overrides(flap_window=FLAP_WINDOW),
    )
    lab.add_failover_minion("ha-stock-hang", overrides=dict(blab.STOCK_LOOP_INTERVAL))
    started = blab.utc_now()
    with lablib.RunningDaemons(lablib.daemons(lab)):
        settled = blab.wait_until_settled(event_listener, lab.masters["a"], "ha-beacon-hang", started, 30)
        assert settled, "the beacon of ha-beacon-hang did not report its connection to A with all masters up within 30 s"
        yield lab


def test_killed_master_failover_event_reactor_then_failback_once(kill_lab, event_listener):
    minion_id = "ha-beacon-kill"
    master_a, master_b = kill_lab.masters["a"], kill_lab.masters["b"]
    started = blab.utc_now() - 120
    connected = blab.wait_for_event(event_listener, master_a, blab.beacon_tag(minion_id, "connected"), started, 30)
    assert connected is not None, "the beacon never reported its connection to A"
    assert connected.data["to"] == lablib.LOOPBACK_A

    killed = blab.utc_now()
    lablib.kill(master_a)
    failover = blab.wait_for_event(event_listener, master_b, blab.beacon_tag(minion_id, "failover"), killed, 30)
    assert failover is not None, "no ha/failover event on B's bus within 30 s"
    data = failover.data
    assert (data["from"], data["to"], data["reason"]) == (lablib.LOOPBACK_A, lablib.LOOPBACK_B, "closed")
    assert (data["up"], data["total"], data["down"]) == (1, 2, [lablib.LOOPBACK_A])
    print(f"\nfailover-event latency (A killed -> ha/failover on B): {blab.seconds_after(failover, killed):.2f} s")
    assert lablib.answers_through(master_b, minion_id, 30) is not None

    notice = blab.wait_for_event(event_listener, master_b, f"salt-ha/failover/{minion_id}", killed, 30)
    assert notice is not None, "the example reactor did not fire salt-ha/failover/<id>"
    assert (notice.data["from"], notice.data["to"], notice.data["reason"]) == (
        lablib.LOOPBACK_A, lablib.LOOPBACK_B, "closed",
    )

    restarted = blab.utc_now()
    master_a.start()
    failback = blab.wait_for_event(event_listener, master_a, blab.beacon_tag(minion_id, "failback"), restarted, 60)
    assert failback is not None, "no ha/failback event on A's bus within 60 s"
    assert (failback.data["from"], failback.data["to"]) == (lablib.LOOPBACK_B, lablib.LOOPBACK_A)
    time.sleep(6)  # three beacon ticks and more than one failback interval
    fired = [
        event
        for master in (master_a, master_b)
        for event in blab.events_since(event_listener, master, blab.beacon_tag(minion_id, "failback"), restarted)
    ]
    assert len(fired) == 1, fired
    assert lablib.answers_through(master_a, minion_id, 20) is not None


def test_frozen_standby_is_degraded_then_recovered(hang_lab, event_listener):
    minion_id = "ha-beacon-hang"
    master_a, master_b = hang_lab.masters["a"], hang_lab.masters["b"]
    frozen = blab.utc_now()
    with lablib.frozen(master_b):
        degraded = blab.wait_for_event(event_listener, master_a, blab.beacon_tag(minion_id, "degraded"), frozen, 20)
        thawed = blab.utc_now()
    assert degraded is not None, "no ha/degraded on A's bus within 20 s of freezing B"
    assert (degraded.data["from"], degraded.data["to"], degraded.data["down"]) == (
        "ok", "degraded", [lablib.LOOPBACK_B],
    )
    recovered = blab.wait_for_event(event_listener, master_a, blab.beacon_tag(minion_id, "recovered"), thawed, 20)
    assert recovered is not None, "no ha/recovered on A's bus within 20 s of thawing B"
    assert (recovered.data["from"], recovered.data["to"], recovered.data["down"]) == ("degraded", "ok", [])


def test_connected_master_that_stalls_for_1_5_s_is_not_left(hang_lab, event_listener):
    beacon_id = "ha-beacon-hang"
    master_a, master_b = hang_lab.masters["a"], hang_lab.masters["b"]
    assert STALL_SECONDS < HANG_SECONDS
    assert lablib.answers_through(master_a, beacon_id, 20) is not None
    stalled = blab.utc_now()
    with lablib.frozen(master_a):
        time.sleep(STALL_SECONDS)
    time.sleep(STALL_WATCH)
    moved = blab.events_since(event_listener, master_b, f"salt/minion/{beacon_id}/start", stalled)
    failovers = [
        event
        for master in (master_a, master_b)
        for event in blab.events_since(event_listener, master, blab.beacon_tag(beacon_id, "failover"), stalled)
    ]
    assert moved == [] and failovers == [], "the beacon left a master that stalled for 1.5 s"
    seen = blab.events_since(event_listener, master_a, blab.beacon_tag(beacon_id, "degraded"), stalled)
    print(f"\n{STALL_SECONDS:g} s stall of the connected master: not left "
          f"({'seen as degraded, then recovered' if seen else 'no tick saw it'})")
    assert lablib.answers_through(master_a, beacon_id, 10) is not None


def test_hung_connected_master_is_left_and_stock_salt_stays_stuck(hang_lab, event_listener):
    beacon_id, stock_id = "ha-beacon-hang", "ha-stock-hang"
    masters = hang_lab.masters
    for minion_id in (beacon_id, stock_id):
        assert lablib.answers_through(masters["a"], minion_id, 20) is not None
    times = []
    # Freeze the connected master, then the one the minion moved to, then the first again.
    rounds = (("a", "b"), ("b", "a"), ("a", "b"))
    for number, (hung, other) in enumerate(rounds, start=1):
        frozen = blab.utc_now()
        with lablib.frozen(masters[hung]):
            start = blab.wait_for_event(
                event_listener, masters[other], f"salt/minion/{beacon_id}/start", frozen, HANG_BOUND
            )
            failover = blab.wait_for_event(
                event_listener, masters[other], blab.beacon_tag(beacon_id, "failover"), frozen, EVENT_SLACK
            )
            if not times:  # stock Salt, same fault, same time: still on the frozen master
                remaining = HANG_BOUND - (blab.utc_now() - frozen)
                if remaining > 0:
                    time.sleep(remaining)
                stock_moved = blab.events_since(event_listener, masters[other], f"salt/minion/{stock_id}/start", frozen)
                stock_answers = lablib.answers_through(masters[other], stock_id, 3)
        assert start is not None, f"the minion did not sign in on {other} within {HANG_BOUND} s of freezing {hung}"
        times.append(blab.seconds_after(start, frozen))
        assert failover is not None, f"no ha/failover on {other}'s bus after the minion signed in there"
        assert failover.data["reason"] == "hang"
        assert (failover.data["from"], failover.data["to"]) == (hung_ip(hung), hung_ip(other))
        assert lablib.answers_through(masters[other], beacon_id, 10) is not None
        if len(times) == 1:
            assert stock_moved == [] and stock_answers is None, "stock Salt left the frozen master"
        if number < len(rounds):
            time.sleep(2)  # let the thawed master settle before the next round
    # The probe thread left each hung master at the end of its round, not a later tick.
    log_text = pathlib.Path(hang_lab.minions[beacon_id].config["log_file"]).read_text(errors="replace")
    assert log_text.count("the probe thread leaves it") >= len(rounds), "the probe thread did not leave"
    print(f"\nhung-master failover times (frozen -> minion start on the other master): "
          f"{', '.join(f'{t:.2f}' for t in times)} s; median {statistics.median(times):.2f} s; "
          f"last ha/failover event {blab.seconds_after(failover, frozen):.2f} s after the freeze")
    assert statistics.median(times) <= HANG_BOUND


def hung_ip(name):
    return {"a": lablib.LOOPBACK_A, "b": lablib.LOOPBACK_B}[name]
