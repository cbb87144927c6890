"""
salt-ha beacon: fire an event when the minion's masters change, and leave a hung master.

.. code-block:: yaml

    beacons:
      ha:
        - interval: 5          # seconds between ticks
        - timeout: 2           # probe timeout; a tick never blocks longer (plus 0.2 s)
        - hang_ticks: 3        # failed probes of the connected master before leaving it
        - failover_on_hang: True
        - flap_count: 4        # up/down changes of a master within flap_window ...
        - flap_window: 60      # ... seconds that make it "flapping"

Each tick probes every configured master at the application level (concurrently,
bounded by ``timeout``) and reads the master the minion is connected to from the
daemon's live ``master`` option. A tick that waits for a master that does not
answer blocks the minion's main loop for ``timeout``: keep it below Salt's
``loop_interval`` (1 s by default; Salt runs the beacons once a second but counts
``interval`` in ``loop_interval`` units) so that Salt does not skip a beat and
stretch the hang detection: ``timeout: 0.7`` with ``interval: 2`` and
``hang_ticks: 3`` leaves a hung master in about 6-7 s. Events fire only on transitions, with the tag
``salt/beacon/<minion_id>/ha/<transition>``: ``connected``, ``failover``,
``failback``, ``lost``, ``degraded``, ``recovered``, ``flapping``, and data
``{"transition", "from", "to", "up", "total", "down", "since"}`` (plus
``reason`` for failover/failback and ``master`` for flapping). The rules, the
flapping damping and the hang detection are documented in ``_utils/ha_watch.py``
(module ``ha.watch``).

A hung master (frozen, partitioned: its TCP connection stays up, so Salt never
leaves it) that fails ``hang_ticks`` consecutive probes while another master
answers is left: the beacon fires ``__master_disconnected`` on the minion's own
event bus (``ha.leave_master``), exactly what Salt fires when a connection
closes, and the next tick reports ``failover`` with ``reason: hang``.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "ha"

# Per beacon name: the state ``ha.watch`` returned at the previous tick. Salt
# re-creates this module on pillar/module refreshes; ``ha.watch`` then continues
# from its own per-process copy (``name=``).
LAST_STATE = {}


def __virtual__():
    return __virtualname__


def validate(config):
    """Validate the beacon configuration; ``(bool, message naming the bad value)``."""
    if "ha.validate_beacon" not in __salt__:
        return False, "the ha execution module is not available (sync or install salt-ha)"
    result = __salt__["ha.validate_beacon"](config)
    return result["valid"], result["message"]


def _settings(config):
    """The beacon's own options, without the framework's ``_beacon_name``."""
    merged = {}
    for item in config if isinstance(config, list) else [config]:
        merged.update(item)
    name = merged.pop("_beacon_name", __virtualname__)
    return name, merged


def beacon(config):
    """
    Probe the masters and return the transition events since the previous tick.

    See the module documentation for the configuration.
    """
    name, settings = _settings(config)
    current = __opts__.get("master")
    connected = current if isinstance(current, str) else ""
    tick = __salt__["ha.watch"](
        config=settings, state=LAST_STATE.get(name), connected=connected, confirm=True, name=name
    )
    LAST_STATE[name] = tick["state"]
    if tick["heal"]:
        log.warning(
            "salt-ha: master %r failed %s consecutive probes while another master answers; "
            "leaving it",
            current,
            settings.get("hang_ticks", "the configured number of"),
        )
        __salt__["ha.leave_master"](current)
    return tick["events"]
