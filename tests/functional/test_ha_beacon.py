"""
The ``ha`` beacon through Salt's loader and Salt's own beacon framework
(``salt.beacons.Beacon``, which builds the tags), against master stand-ins on
127.0.0.1: one that answers, one that accepts TCP and never answers (hung), one
refused port. No daemons.

The options mimic a running minion: ``master`` is the current master and
``master_list`` the configured list, in an ``OptsDict`` shared by the loaders as
the daemon shares it, so a "failover" is a change of ``opts["master"]``.

The beacon's probes run in a background thread; each pass of these tests first
waits (bounded) for a probe round that ended since the previous pass, as the
beacon's ``interval`` gives it in a daemon.
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
            daemon.ha_watch.stop_worker("ha", wait=3)
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
        # The helpers the loaded ha module uses (the beacon's memory and probe worker).
        self.ha_watch = self.modules["ha.watch"].__globals__["ha_watch"]
        self.ha_endpoints = self.modules["ha.watch"].__globals__["ha_endpoints"]
        self.ha_watch.stop_worker("ha", wait=3)
        self.ha_watch.MEMORY.clear()
        self.seen_round = 0

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
        """
        One pass of Salt's beacon framework over ``beacons: {ha: options}`` once the
        beacon's probe worker has ended a round since the previous pass; ``[(tag, data)]``.
        """
        self.await_probe_round(*options)
        return self.pass_now(*options)

    def pass_now(self, *options):
        """One pass of Salt's beacon framework, now; ``[(tag, data)]``."""
        config = {"ha": [dict(option) for option in options]}
        return [(event["tag"], event["data"]) for event in self.framework.process(config, {})]

    def await_probe_round(self, *options):
        """Start (as the first tick does) the beacon's probe worker and wait, bounded, for a round newer than the last seen."""
        try:
            settings = self.ha_watch.settings_from([dict(option) for option in options])
        except ValueError:
            return  # an invalid configuration: the beacon does not run
        endpoints = self.ha_endpoints.master_endpoints(self.opts)
        worker = self.ha_watch.probe_worker("ha", endpoints, settings, self.opts.get("transport", "zeromq"))
        assert worker.wait_for_round(self.seen_round, 10), "the beacon's probe worker ended no round within 10 s"
        self.seen_round = worker.latest["round"]


def test_validate_through_the_loader_names_the_bad_value(minion):
    validate = minion.beacons["ha.validate"]
    assert validate([{"timeout": 1}, {"hang_ticks": 2}]) == (True, "Valid beacon configuration")
    valid, message = validate([{"hang_ticks": "three"}])
    assert valid is False
    assert "hang_ticks: 'three'" in message
    valid, message = validate([{"interval": 1}, {"probe_interval": 0}])
    assert valid is False
    assert "probe_interval: 0" in message


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


def test_quiet_pass_fires_nothing_and_never_waits_for_the_hung_master(minion):
    minion.process({"timeout": 0.5})
    walls = []
    for _ in range(3):
        minion.await_probe_round({"timeout": 0.5})
        started = time.perf_counter()
        assert minion.pass_now({"timeout": 0.5}) == []
        walls.append(time.perf_counter() - started)
    # Each probe round waits 0.5 s for the hung stand-in; a pass of the beacon none of it.
    assert max(walls) < 0.05, walls


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
    # Probe rounds back to back (each waits 0.5 s for the hung master): after two
    # failed probes it has answered nothing for 2 x probe_interval.
    options = ({"timeout": 0.5}, {"probe_interval": 0.3}, {"hang_ticks": 2})
    minion.connect("hung")
    assert minion.process(*options) == []
    assert minion.left == []
    with caplog.at_level("WARNING"):
        assert minion.process(*options) == []
    # Second failed probe while the answering master is up: the beacon's probe thread
    # leaves the hung one at the end of that round, through ha.leave_master.
    assert minion.left == [minion.entries["hung"]]
    assert (
        f"salt-ha: master {minion.entries['hung']!r} failed 2 consecutive probes while another "
        "master answers; the probe thread leaves it"
    ) in [record.getMessage() for record in caplog.records]
    minion.connect("answering")  # what Salt does on __master_disconnected
    events = dict((data["transition"], data) for _, data in minion.process(*options))
    failover = events["failover"]
    assert (failover["from"], failover["to"], failover["reason"]) == (
        minion.entries["hung"], minion.entries["answering"], "hang",
    )
    # A leave that did not move the minion is repeated after another hang_ticks of
    # silence: the thread may have left once more before the tick saw the move.
    assert set(minion.left) == {minion.entries["hung"]} and len(minion.left) <= 2


def test_no_leave_with_failover_on_hang_off(minion):
    minion.connect("hung")
    for _ in range(3):
        minion.process({"timeout": 0.3}, {"hang_ticks": 1}, {"failover_on_hang": False})
    assert minion.left == []


def test_watch_from_the_cli_side_without_a_memory(modules):
    tick = modules.ha.watch(config=[{"timeout": 0.5}])
    assert set(tick) == {"memory", "events", "leave", "errors", "probed"}
    # No daemon runs here: nothing connected, one of the two masters answers.
    assert [event["transition"] for event in tick["events"]] == ["degraded"]
    assert tick["leave"] is None
    # ...and the other says why it did not.
    assert list(tick["errors"]) == ["127.0.0.2"]
    assert tick["errors"]["127.0.0.2"].endswith("Connection refused")
    again = modules.ha.watch(config=[{"timeout": 0.5}], memory=tick["memory"])
    assert again["events"] == []


def test_watch_with_a_name_reads_a_background_worker_and_never_waits(modules, minion_opts):
    import ha_endpoints  # pylint: disable=import-outside-toplevel  (the modules the loaded ha module uses)
    import ha_watch  # pylint: disable=import-outside-toplevel

    name = "ha-functional-watch"
    try:
        started = time.perf_counter()
        first = modules.ha.watch(config=[{"timeout": 0.5}], connected="127.0.0.1", name=name)
        # The first call starts the worker and has nothing to report yet.
        assert (first["events"], first["probed"]) == ([], None)
        endpoints = ha_endpoints.master_endpoints(minion_opts)
        worker = ha_watch.probe_worker(name, endpoints, ha_watch.settings_from([{"timeout": 0.5}]))
        assert worker.wait_for_round(0, 10)
        second = modules.ha.watch(config=[{"timeout": 0.5}], connected="127.0.0.1", name=name)
        assert [event["transition"] for event in second["events"]] == ["connected", "degraded"]
        assert second["probed"] is not None
        assert ha_watch.MEMORY[name] == second["memory"]
        assert time.perf_counter() - started < 5
    finally:
        ha_watch.stop_worker(name, wait=3)
        ha_watch.MEMORY.pop(name, None)


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
    # What Salt does on a pillar or module refresh: close the beacons (which stops
    # the probe worker), then a new Beacon, new loaders, a fresh beacon module.
    minion.opts["beacons"] = {"ha": [{"timeout": 0.5}]}
    minion.framework.close_beacons()
    assert minion.ha_watch.running_workers() == []
    modules = salt.loader.minion_mods(minion.opts, context={}, loaded_base_name="tests.ha_beacon.mods2")
    minion.framework = salt.beacons.Beacon(minion.opts, modules)
    # The memory lives in ha_watch, not in the re-created beacon module.
    assert minion.ha_watch.MEMORY["ha"]["connected"] == minion.entries["answering"]
    # The first pass after the refresh restarts the worker and reads the last
    # round until the new one ends: nothing changed, nothing fires.
    assert minion.pass_now({"timeout": 0.5}) == []
    assert minion.ha_watch.running_workers() == ["ha"]
    assert minion.process({"timeout": 0.5}) == []


def test_watch_reports_a_fault_of_the_probe_as_such_not_as_a_master_down(modules, monkeypatch, caplog):
    import ha_probe  # pylint: disable=import-outside-toplevel  (the module the loaded ha module uses)

    first = modules.ha.watch(config=[{"timeout": 0.5}])
    assert [event["transition"] for event in first["events"]] == ["degraded"]

    def broken_ping(address, port, timeout, transport, context):
        raise TypeError("unsupported operand\nforged line")

    monkeypatch.setattr(ha_probe, "app_ping", broken_ping)
    with caplog.at_level("WARNING"):
        second = modules.ha.watch(config=[{"timeout": 0.5}], memory=first["memory"])
    # Not "lost": a bug in the probe is no news about the masters.
    assert second["events"] == []
    assert second["memory"]["raw"] == first["memory"]["raw"]
    assert set(second["errors"]) == {"127.0.0.1", "127.0.0.2"}
    assert second["errors"]["127.0.0.1"].endswith("ping check failed: TypeError: unsupported operand\\nforged line")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "salt-ha: the ping check of master '127.0.0.1' failed: TypeError: unsupported operand\\nforged line" in warnings


def test_stop_watch_says_whether_a_worker_was_running(minion):
    minion.process({"timeout": 0.5})
    assert minion.ha_watch.running_workers() == ["ha"]
    assert minion.modules["ha.stop_watch"]("ha") == {"name": "ha", "stopped": True}
    assert minion.ha_watch.running_workers() == []
    assert minion.modules["ha.stop_watch"]("ha") == {"name": "ha", "stopped": False}
