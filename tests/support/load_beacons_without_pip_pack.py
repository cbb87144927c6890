"""
Load the minion's beacon and engine modules through Salt's loader as if salt-ha
were not pip-installed (see ``salt_call_without_pip_pack``), and print the salt-ha
names that load, as JSON ``{"beacons": [...], "engines": [...], "master_engines":
[...]}`` (``master_engines``: the same synced engines loaded with ``__role: master``,
where the master's ``ha_health`` loads and the minion's ``ha_returns`` does not). Used by the
install-mode tests: a beacon or engine that imports what only the pip package
provides would be missing here.

Usage: python load_beacons_without_pip_pack.py <minion config file>
"""

import json
import sys

import salt.config
import salt.loader
import salt_call_without_pip_pack  # noqa: F401 (hides the pip-installed pack on import)

if __name__ == "__main__":
    opts = salt.config.minion_config(sys.argv[1])
    functions = salt.loader.minion_mods(opts)
    beacons = salt.loader.beacons(opts, functions)
    engines = salt.loader.engines(opts, functions, [], salt.loader.utils(opts))
    master_opts = dict(opts, __role="master")
    master_engines = salt.loader.engines(master_opts, functions, [], salt.loader.utils(master_opts))
    print(json.dumps({
        "beacons": sorted(name for name in beacons if name.startswith("ha.")),
        "engines": sorted(name for name in engines if name.startswith("ha_")),
        "master_engines": sorted(name for name in master_engines if name.startswith("ha_")),
    }))
