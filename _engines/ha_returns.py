"""
salt-ha engine ``ha_returns`` (minion): no job return lost when the minion changes master.

A job that a master published and that ends after the minion failed over (the
master died or hung) has a return Salt 3008 drops: the minion's main process
sends a return only to the master the job came from, and only while that master
is its current one. This engine watches the returns on the minion's local bus,
keeps the ones that were not delivered in a ledger under the minion's cachedir
(atomic writes, bounded by age and size) and delivers them, at least once, to the
master the minion is connected to now, as soon as it is connected; also after a
restart of the minion. With no failover it changes nothing: it only listens.

.. code-block:: yaml

    engines:
      - ha_returns:
          max_age: 86400        # seconds an undelivered return is kept
          max_bytes: 104857600  # ledger size bound
          grace: 1              # seconds before an unanswered return goes to the ledger

``salt-call ha.returns`` shows the ledger. The logic is in ``_utils/ha_returns.py``.
"""

import logging
import os
import time

import salt.utils.event
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_ledger
import ha_returns

log = logging.getLogger(__name__)

__virtualname__ = "ha_returns"

TICK = 0.2  # seconds between two looks at the clock while returns are in flight or pending
IDLE_TICK = 2.0  # ... and while there is nothing to watch (an event still wakes the engine at once)
DRAIN = 1000  # events handled at most before the guard's clock work runs again
LOCATE_EVERY = 0.5  # seconds a socket reading of the connected master is reused
SETTLE = 0.3  # seconds after a master connects before replaying to it (its channels open)
NO_MASTER_RETRY = 1.0
BOUNDS_EVERY = 60.0
IDLE = 3600


def __virtual__():
    if __opts__.get("__role") not in (None, "minion"):
        return (False, "ha_returns runs on minions (it guards job returns)")
    return __virtualname__


class Locator:
    """
    The masters the minion is connected to, read from the sockets of its main
    process (this engine's parent), reused for LOCATE_EVERY seconds.
    """

    def __init__(self, opts, minion_pid):
        self.opts = opts
        self.minion_pid = minion_pid
        self.read_at = None
        self.masters = []

    def invalidate(self):
        self.read_at = None

    def __call__(self):
        now = time.monotonic()
        if self.read_at is None or now - self.read_at >= LOCATE_EVERY:
            try:
                self.masters = ha_returns.connected_masters(self.opts, self.minion_pid)
            except (CommandExecutionError, SaltInvocationError) as err:
                log.warning("salt-ha returns: cannot tell which master the minion is connected to: %s", err)
                self.masters = []
            self.read_at = now
        return self.masters


def start(**options):
    """
    Run the returns guard for the life of the minion (Salt starts it from ``engines``).

    Bad options are logged as an error naming the option and value, and the engine
    then does nothing (it is not restarted in a loop).

    CLI Example (the engine is configured, not called):

    .. code-block:: bash

        salt-call ha.returns
    """
    try:
        config = ha_returns.engine_config(options, __opts__)
    except SaltInvocationError as err:
        log.error("salt-ha returns: the ha_returns engine is not running: %s", err)
        while True:
            time.sleep(IDLE)
    locate = Locator(__opts__, os.getppid())
    ledger = ha_ledger.Ledger(config["directory"], __opts__["id"])
    guard = ha_returns.ReturnGuard(__opts__["id"], ledger, config, locate)
    with salt.utils.event.get_event("minion", opts=__opts__, listen=True) as bus:
        guard.restore()
        log.info("salt-ha returns: guarding job returns (ledger %s)", config["directory"])
        try:
            _run(bus, guard, locate)
        finally:
            guard.flush()


def _run(bus, guard, locate):
    bounds_at = time.monotonic()
    while True:
        event = bus.get_event(wait=TICK if guard.busy() else IDLE_TICK, full=True)
        for _ in range(DRAIN):  # answers queued in a burst are read before anything is judged
            if not event:
                break
            _feed(guard, locate, event)
            if not guard.due():  # nothing to judge yet: the next event can wait for the next turn
                break
            event = bus.get_event(no_block=True, full=True)
        for tag, load in guard.due_replays(NO_MASTER_RETRY):
            log.info("salt-ha returns: replaying the return of job %s to %s", load.get("jid"), tag.rsplit("/", 1)[-1])
            bus.fire_event(load, tag)
        if time.monotonic() - bounds_at >= BOUNDS_EVERY:
            guard.enforce_bounds()
            bounds_at = time.monotonic()


def _feed(guard, locate, event):
    tag = event.get("tag")
    if tag in (ha_returns.CONNECTED_TAG, ha_returns.DISCONNECTED_TAG):
        locate.invalidate()
    guard.on_event(tag, event.get("data"))
    if tag == ha_returns.CONNECTED_TAG:
        for entry in guard.undelivered.values():
            guard.postpone(entry, SETTLE)

