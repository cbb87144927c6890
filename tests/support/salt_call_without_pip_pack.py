"""
Run ``salt-call`` as if salt-ha were not pip-installed: the ``salt.loader`` entry
point of the salt-ha distribution is hidden, so the pack is only what
``saltutil.sync_all`` copied into ``extmods``. Used by the install-mode tests.

Usage: python salt_call_without_pip_pack.py <salt-call arguments>
"""

import sys

import salt.scripts
import salt.utils.entrypoints

_iter_entry_points = salt.utils.entrypoints.iter_entry_points


def _without_salt_ha(group, name=None):
    return [ep for ep in _iter_entry_points(group, name) if ep.dist.metadata["name"] != "salt-ha"]


salt.utils.entrypoints.iter_entry_points = _without_salt_ha
sys.path[:] = [path for path in sys.path if not path.rstrip("/").endswith("_utils")]

if __name__ == "__main__":
    sys.argv = ["salt-call", *sys.argv[1:]]
    salt.scripts.salt_call()
