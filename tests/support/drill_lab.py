"""
The drill lab: masters A (127.0.0.1) and B (127.0.0.2), each with salt-api and
the other as its peer, allowing hang drills; failover minions ``[A, B]`` with the
``ha`` beacon (it moves them off a frozen master) and the ``ha_returns`` engine
(the drill counts the returns of jobs in flight).
"""

import json
import pathlib

from tests.support import api_lab, beacon_lab, returns_lab
from tests.support import lab as lablib

# What a peer account needs for drills (examples/master.d/ha.conf).
PEER_FUNCTIONS = ["ha.local_inventory", "ha.receive_keys", "ha.local_jobs", "ha.local_drill"]
DRILL_SETTINGS = {"allow_hang": True, "max_duration": 30, "max_minions": 10, "max_percent": 100}


class DrillLab(api_lab.ApiLab):
    """ApiLab whose masters allow drills (``ha:drill`` beside ``ha:peers``) and the peer functions drills call."""

    def _overrides(self, name, peer_timeout, extra):
        overrides = super()._overrides(name, peer_timeout, extra)
        overrides["external_auth"] = {"sharedsecret": {api_lab.SYNC_USER: [{"@runner": PEER_FUNCTIONS}]}}
        overrides["ha"] = {**overrides["ha"],
                           "drill": {**DRILL_SETTINGS, "textfile": str(self.root / f"drill-{name}.prom")}}
        return overrides


def build(factories, root, minion_ids, minion_options=None):
    """The lab, configured (not started): masters a and b with salt-api, the minions on [A, B] (plus ``minion_options``)."""
    lab = DrillLab(factories, root, [("a", lablib.LOOPBACK_A), ("b", lablib.LOOPBACK_B)])
    for name in lab.masters:
        lab.add_api(name)
    # master_tries -1 (Salt's Linux default, HA803): a drill makes minions sign in on purpose, and under
    # load a sign-in may take longer than auth_timeout; with the lab's 1 the minion would exit.
    options = {**beacon_lab.beacon_overrides(), **returns_lab.ENGINE, "master_tries": -1, **(minion_options or {})}
    for minion_id in minion_ids:
        lab.add_failover_minion(minion_id, alive_interval=None, overrides=options)
    return lab


def textfile(lab, name):
    """Master ``name``'s drill metrics textfile."""
    return lab.root / f"drill-{name}.prom"


def freeze_state(master):
    """The master's freeze state file (written by the drill's watchdog), or None."""
    path = pathlib.Path(master.config["cachedir"]) / "ha_drill" / "freeze.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
