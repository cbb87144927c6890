"""
Load the minion's beacon modules through Salt's loader as if salt-ha were not
pip-installed (see ``salt_call_without_pip_pack``), and print the names that load,
as JSON. Used by the install-mode tests: a beacon that imports what only the pip
package provides would be missing here.

Usage: python load_beacons_without_pip_pack.py <minion config file>
"""

import json
import sys

import salt.config
import salt.loader
import salt_call_without_pip_pack  # noqa: F401 (hides the pip-installed pack on import)

if __name__ == "__main__":
    opts = salt.config.minion_config(sys.argv[1])
    beacons = salt.loader.beacons(opts, salt.loader.minion_mods(opts))
    print(json.dumps(sorted(name for name in beacons if name.startswith("ha."))))
