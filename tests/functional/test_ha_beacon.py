"""
The ``ha`` beacon through Salt's loader and Salt's own beacon framework
(``salt.beacons.Beacon``, which builds the tags), against master stand-ins on
127.0.0.1: one that answers, one that accepts TCP and never answers (hung), one
refused port. No daemons.

The options mimic a running minion: ``master`` is the current master and
``master_list`` the configured list, in an ``OptsDict`` shared by the loaders as
the daemon shares it, so a "failover" is a change of ``opts["master"]``.
"""

import socket
import time

import pytest
import salt.beacons
import salt.loader
import salt.utils.optsdict

from tests.support import fake_master


@pytest.fixture(scope="module")
def silent_master():
    with fake_master.SilentMaster() as master:
        yield master


@pytest.fixture
def minion(minion_opts, answering_master, silent_master):
    """A daemon-like minion: masters answering (A), hung (H), refused (R); connected to A."""
    refused = fake_master.closed_port()
    entries = {
        "answering": f"127.0.0.1:{answering_master.port}",
        "hung": f"127.0.0.1:{silent_master.port}",
        "refused": f"127.0.0.1:{refused}",
    }
    with fake_master.SilentMaster() as publisher:
        daemon = DaemonLike(minion_opts, entries, publisher.port)
        try:
            yield daemon
        finally:
            daemon.drop_publish_connection()


class DaemonLike:
    """
    Options, execution modules, beacons and Salt's beacon framework over one OptsDict.

    All stand-ins share one publish port (as Salt requires): a listening socket
    this process holds a connection to while "connected", as the daemon holds
    its SUB connection to the current master's publisher.
    """

    def __init__(self, base_opts, entries, publish_port):
        self.entries = entries
        self.order = ["answering", "hung", "refused"]
        self.publish_port = publish_port
        self.publish_connection = None
        opts = dict(base_opts)
        opts.update(
            master=entries["answering"],
            master_list=[entries[name] for name in self.order],
            master_type="failover",
            publish_port=publish_port,
        )
        self.opts = salt.utils.optsdict.OptsDict.from_dict(opts, name="ha-beacon-test")
        self.modules = salt.loader.minion_mods(self.opts, context={}, loaded_base_name="tests.ha_beacon.mods")
        self.beacons = salt.loader.beacons(self.opts, self.modules, loaded_base_name="tests.ha_beacon.beacons")
        self.framework = salt.beacons.Beacon(self.opts, self.modules)
        self.left = []
        self.modules["ha.watch"]  # pylint: disable=pointless-statement  (load ha before replacing one function)
        self.modules["ha.leave_master"] = lambda master=None: self.left.append(master) or {"master": master}
        self.framework.beacons.clear()
        self.framework.beacons["ha.beacon"]  # pylint: disable=pointless-statement
        self.framework.beacons["ha.beacon"].__globals__["LAST_STATE"].clear()
        self.modules["ha.watch"].__globals__["ha_watch"].STATES.clear()

        self.open_publish_connection()

    def open_publish_connection(self):
        self.drop_publish_connection()
        self.publish_connection = socket.create_connection(("127.0.0.1", self.publish_port), timeout=2)

    def drop_publish_connection(self):
        if self.publish_connection is not None:
            self.publish_connection.close()
            self.publish_connection = None

    def connect(self, name):
        """Salt moved to master ``name`` and signed in there."""
        self.opts["master"] = self.entries[name]
        self.open_publish_connection()

    def signing_in(self, name):
        """Salt set ``master`` to the candidate ``name`` and is still signing in (no publish connection)."""
        self.drop_publish_connection()
        self.opts["master"] = self.entries[name]

    def process(self, *options):
        """One pass of Salt's beacon framework over ``beacons: {ha: options}``; ``[(tag, data)]``."""
        config = {"ha": [dict(option) for option in options]}
        return [(event["tag"], event["data"]) for event in self.framework.process(config, {})]


def test_validate_through_the_loader_names_the_bad_value(minion):
    validate = minion.beacons["ha.validate"]
    assert validate([{"timeout": 1}, {"hang_ticks": 2}]) == (True, "Valid beacon configuration")
    valid, message = validate([{"hang_ticks": "three"}])
    assert valid is False
    assert "hang_ticks: 'three'" in message
    valid, message = validate([{"interval": 1}, {"timeout": 5}])
    assert valid is False
    assert "timeout: 5" in message


def test_invalid_config_fires_nothing(minion):
    assert minion.process({"timeout": -1}) == []


def test_first_pass_fires_connected_and_degraded_with_salt_beacon_tags(minion):
    events = minion.process({"timeout": 0.5})
    minion_id = minion.opts["id"]
    assert [tag for tag, _ in events] == [
        f"salt/beacon/{minion_id}/ha/connected",
        f"salt/beacon/{minion_id}/ha/degraded",
    ]
    connected, degraded = (data for _, data in events)
    assert connected["from"] is None and connected["to"] == minion.entries["answering"]
    for data in (connected, degraded):
        assert {"transition", "from", "to", "up", "total", "down", "since", "id"} <= set(data)
        assert (data["up"], data["total"]) == (1, 3)
        assert sorted(data["down"]) == sorted([minion.entries["hung"], minion.entries["refused"]])
    assert (degraded["from"], degraded["to"]) == (None, "degraded")


def test_quiet_pass_fires_nothing_and_stays_within_the_timeout(minion):
    minion.process({"timeout": 0.5})
    started = time.monotonic()
    for _ in range(3):
        assert minion.process({"timeout": 0.5}) == []
    # Each pass waits for the hung stand-in: at most the timeout plus the collect slack.
    assert (time.monotonic() - started) / 3 < 0.5 + 0.3


def test_failover_from_a_refused_master_is_closed(minion):
    minion.opts["master_list"] = [minion.entries[name] for name in ("refused", "answering", "hung")]
    minion.connect("refused")
    events = minion.process({"timeout": 0.5}, {"failover_on_hang": False})
    assert events == []  # connected to a master that does not answer: held back
    minion.connect("answering")
    events = dict((data["transition"], data) for _, data in minion.process({"timeout": 0.5}))
    assert set(events) == {"connected", "degraded", "failover"}
    failover = events["failover"]
    assert (failover["from"], failover["to"], failover["reason"]) == (
        minion.entries["refused"], minion.entries["answering"], "closed",
    )


def test_a_candidate_still_signing_in_is_not_reported(minion):
    minion.opts["master_list"] = [minion.entries[name] for name in ("refused", "answering", "hung")]
    minion.connect("refused")
    minion.process({"timeout": 0.5}, {"failover_on_hang": False})
    minion.signing_in("answering")
    assert minion.process({"timeout": 0.5}, {"failover_on_hang": False}) == []
    minion.connect("answering")
    transitions = [data["transition"] for _, data in minion.process({"timeout": 0.5})]
    assert transitions.count("failover") == 1


def test_hung_connected_master_is_left_after_hang_ticks(minion, caplog):
    options = ({"timeout": 0.3}, {"hang_ticks": 2})
    minion.connect("hung")
    assert minion.process(*options) == []
    assert minion.left == []
    with caplog.at_level("WARNING"):
        assert minion.process(*options) == []
    # Second failed probe while the answering master is up: the beacon leaves the hung one.
    assert minion.left == [minion.entries["hung"]]
    assert (
        f"salt-ha: master {minion.entries['hung']!r} failed 2 consecutive probes while another "
        "master answers; leaving it"
    ) in [record.getMessage() for record in caplog.records]
    minion.connect("answering")  # what Salt does on __master_disconnected
    events = dict((data["transition"], data) for _, data in minion.process(*options))
    failover = events["failover"]
    assert (failover["from"], failover["to"], failover["reason"]) == (
        minion.entries["hung"], minion.entries["answering"], "hang",
    )
    assert minion.left == [minion.entries["hung"]]


def test_no_heal_with_failover_on_hang_off(minion):
    minion.connect("hung")
    for _ in range(3):
        minion.process({"timeout": 0.3}, {"hang_ticks": 1}, {"failover_on_hang": False})
    assert minion.left == []


def test_watch_from_the_cli_side_without_a_state(modules):
    tick = modules.ha.watch(config=[{"timeout": 0.5}])
    assert set(tick) == {"state", "events", "heal", "errors"}
    # No daemon runs here: nothing connected, one of the two masters answers.
    assert [event["transition"] for event in tick["events"]] == ["degraded"]
    assert tick["heal"] is None
    # ...and the other says why it did not.
    assert list(tick["errors"]) == ["127.0.0.2"]
    assert tick["errors"]["127.0.0.2"].endswith("Connection refused")
    again = modules.ha.watch(config=[{"timeout": 0.5}], state=tick["state"])
    assert again["events"] == []


def test_watch_rejects_a_bad_config(modules):
    from salt.exceptions import SaltInvocationError  # pylint: disable=import-outside-toplevel

    with pytest.raises(SaltInvocationError, match="flap_count: 1"):
        modules.ha.watch(config=[{"flap_count": 1}])


def test_validate_beacon_module_function(modules):
    assert modules.ha.validate_beacon([{"interval": 5}]) == {"valid": True, "message": "Valid beacon configuration"}
    result = modules.ha.validate_beacon([{"colour": "red"}])
    assert result["valid"] is False and "'colour'" in result["message"]


def test_a_beacon_refresh_does_not_fire_connected_again(minion):
    assert [data["transition"] for _, data in minion.process({"timeout": 0.5})] == ["connected", "degraded"]
    # What Salt does on a pillar or module refresh: a new Beacon, new loaders, a
    # fresh beacon module (its LAST_STATE empty).
    modules = salt.loader.minion_mods(minion.opts, context={}, loaded_base_name="tests.ha_beacon.mods2")
    minion.framework = salt.beacons.Beacon(minion.opts, modules)
    assert minion.framework.beacons["ha.beacon"].__globals__["LAST_STATE"] == {}
    assert minion.process({"timeout": 0.5}) == []


def test_watch_reports_a_fault_of_the_probe_as_such_not_as_a_master_down(modules, monkeypatch, caplog):
    import ha_probe  # pylint: disable=import-outside-toplevel  (the module the loaded ha module uses)

    first = modules.ha.watch(config=[{"timeout": 0.5}])
    assert [event["transition"] for event in first["events"]] == ["degraded"]

    def broken_ping(address, port, timeout, transport, context):
        raise TypeError("unsupported operand\nforged line")

    monkeypatch.setattr(ha_probe, "app_ping", broken_ping)
    with caplog.at_level("WARNING"):
        second = modules.ha.watch(config=[{"timeout": 0.5}], state=first["state"])
    # Not "lost": a bug in the probe is no news about the masters.
    assert second["events"] == []
    assert second["state"]["raw"] == first["state"]["raw"]
    assert set(second["errors"]) == {"127.0.0.1", "127.0.0.2"}
    assert second["errors"]["127.0.0.1"].endswith("ping check failed: TypeError: unsupported operand\\nforged line")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "salt-ha: the ping check of master '127.0.0.1' failed: TypeError: unsupported operand\\nforged line" in warnings
