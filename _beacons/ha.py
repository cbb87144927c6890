"""
salt-ha beacon: fire an event when the minion's masters change, and leave a hung master.

.. code-block:: yaml

    beacons:
      ha:
        - interval: 1          # seconds between ticks (a tick reads results, never waits)
        - timeout: 1           # how long one probe waits for a master's answer
        - probe_interval: 0.5  # seconds between probes of every master (off the main loop)
        - hang_ticks: 4        # hang_ticks x probe_interval seconds without an answer: leave it
        - failover_on_hang: True
        - flap_count: 4        # up/down changes of a master within flap_window ...
        - flap_window: 60      # ... seconds that make it "flapping"

The masters are probed at the application level (concurrently, each probe bounded
by ``timeout``) by a background thread of the minion process, one per beacon,
every ``probe_interval`` seconds. A tick runs on the minion's main loop: it reads
the latest probe results and the master the minion is connected to (the daemon's
live ``master`` option) and never waits on the network, however many masters
hang. The first tick starts the thread and reports from the next one; ``close``
(Salt calls it when the beacon is deleted, on refreshes, during state runs with
``disable_during_state_run``) stops it, and so does a minute without ticks (the
beacon was disabled). Events fire only on transitions, with the tag
``salt/beacon/<minion_id>/ha/<transition>``: ``connected``, ``failover``,
``failback``, ``lost``, ``degraded``, ``recovered``, ``flapping``, and data
``{"transition", "from", "to", "up", "total", "down", "since"}`` (plus
``reason`` for failover/failback and ``master`` for flapping). The rules, the
flapping damping and the hang detection are documented in ``_utils/ha_watch.py``
(module ``ha.watch``).

A hung master (frozen, partitioned: its TCP connection stays up, so Salt never
leaves it) that has answered no probe for ``hang_ticks`` x ``probe_interval``
seconds (2 s with the defaults) while another master answers is left: the beacon
fires ``__master_disconnected`` on the minion's own event bus
(``ha.leave_master``), exactly what Salt fires when a connection closes, and the
next tick reports ``failover`` with ``reason: hang``. A master that is silent for
less (busy, paused for a moment) is not left.

Front doors (one address or name for several masters: a keepalived VIP, a balancer,
DNS): the master that answers the probes of the address may not be the one holding
the minion's connections. From the connected master's first failed probe until it
has answered again for 3 s, the beacon sets short TCP keepalive (1 s, 1 s, 3 probes)
on the minion's own connections to its publish and ret ports
(``_utils/ha_conncheck.py``): a connection the host behind the address no longer
holds (the VIP moved) is reset at the first probe and Salt reconnects at once, a
silently dropped one is aborted after 3 probes, a frozen or busy master's kernel
answers and nothing changes; events are held back meanwhile. When the connected
master's name resolves to other addresses than at the previous tick and the
minion's publish connection goes to none of them (DNS switched), the beacon fires
``__master_disconnected`` so that Salt resolves the name again and reconnects.
"""

import logging

import salt.utils.beacons

log = logging.getLogger(__name__)

__virtualname__ = "ha"


def __virtual__():
    return __virtualname__


def _name(config):
    """The beacon's name, which Salt's framework appends as ``_beacon_name``."""
    options = config if isinstance(config, dict) else salt.utils.beacons.list_to_dict(config)
    return options.get("_beacon_name", __virtualname__)


def validate(config):
    """Validate the beacon configuration; ``(bool, message naming the bad value)``."""
    if "ha.validate_beacon" not in __salt__:
        return False, "the ha execution module is not available (sync or install salt-ha)"
    result = __salt__["ha.validate_beacon"](config)
    return result["valid"], result["message"]


def beacon(config):
    """
    Read the masters' latest probe results and return the transition events since
    the previous tick.

    See the module documentation for the configuration.
    """
    name = _name(config)
    options = salt.utils.beacons.remove_hidden_options(list(config), [])
    current = __opts__.get("master")
    connected = current if isinstance(current, str) else ""
    tick = __salt__["ha.watch"](config=options, connected=connected, confirm=True, name=name)
    if tick["leave"]:
        hang = tick["memory"]["hang"]
        if hang:
            log.warning(
                "salt-ha: master %r failed %s consecutive probes while another master answers; leaving it",
                current,
                hang["probes"],
            )
        else:
            log.warning("salt-ha: master %r moved to another address; reconnecting", current)
        __salt__["ha.leave_master"](current)
    return tick["events"]


def close(config):
    """Stop this beacon's probe thread (a later tick starts it again)."""
    __salt__["ha.stop_watch"](_name(config))
