"""
The two-master lab (tests/support/lab.py) with the ``ha`` beacon: minion and master
options, event waits on the masters' buses, and the figures the tests measure.
"""

import pathlib
import time
from datetime import datetime, timezone

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
REACTOR_SLS = REPO_ROOT / "examples" / "reactor" / "ha.sls"
FAILOVER_TAG = "salt/beacon/*/ha/failover"


# Salt runs the beacons every second but counts a beacon's ``interval`` in units of
# ``loop_interval``; salt-factories sets 0.05, which would stretch ``interval: 1``
# to 20 s. Salt's default is 1.
STOCK_LOOP_INTERVAL = {"loop_interval": 1}


# The settings the README recommends (ha_watch.DEFAULTS), written out as an operator would.
RECOMMENDED = {"interval": 1, "timeout": 1, "probe_interval": 0.5, "hang_ticks": 4}


def beacon_overrides(**options):
    """Minion options turning the ``ha`` beacon on: the recommended settings, updated with ``options``."""
    config = [{key: value} for key, value in {**RECOMMENDED, **options}.items()]
    return {**STOCK_LOOP_INTERVAL, "beacons": {"ha": config}}


def hang_seconds(options=None):
    """Seconds without an answer after which the beacon leaves the connected master."""
    settings = {**RECOMMENDED, **(options or {})}
    return settings["hang_ticks"] * settings["probe_interval"]


def reactor_overrides():
    """Master options running the example reactor on the beacon's failover event."""
    return {"reactor": [{FAILOVER_TAG: [str(REACTOR_SLS)]}]}


def beacon_tag(minion_id, transition):
    """The tag the beacon's ``transition`` event has on the master's bus."""
    return f"salt/beacon/{minion_id}/ha/{transition}"


def wait_for_event(event_listener, master, tag, after, timeout):
    """The first event ``tag`` on ``master``'s bus after POSIX time ``after``, or None (bounded)."""
    matched = event_listener.wait_for_events([(master.id, tag)], after_time=after, timeout=timeout)
    events = sorted(matched.matches, key=lambda event: event.stamp)
    return events[0] if events else None


def events_since(event_listener, master, tag, after):
    """Every event ``tag`` on ``master``'s bus after POSIX time ``after`` (no wait)."""
    return sorted(event_listener.get_events([(master.id, tag)], after_time=after), key=lambda e: e.stamp)


def wait_until_settled(event_listener, master, minion_id, after, timeout):
    """
    Bounded: until the beacon of ``minion_id`` has reported its connection on
    ``master``'s bus after POSIX time ``after`` (its first ticks are done) and its
    latest health event since then, if any, says every master is up. A test that
    freezes a master before that sees the beacon's start-up instead (``from``
    None). True when it did within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if events_since(event_listener, master, beacon_tag(minion_id, "connected"), after):
            health = [
                event
                for transition in ("degraded", "lost", "recovered")
                for event in events_since(event_listener, master, beacon_tag(minion_id, transition), after)
            ]
            if not health or max(health, key=lambda event: event.stamp).data["to"] == "ok":
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def seconds_after(event, started):
    """Seconds from POSIX time ``started`` to the event's stamp on the master."""
    return event.stamp.timestamp() - started


def utc_now():
    """POSIX time now (what ``after_time`` takes)."""
    return datetime.now(tz=timezone.utc).timestamp()
