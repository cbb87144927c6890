"""
salt-ha as an installed Python package.

``pip install salt-ha`` ships the pack's loader folders (``_modules``, ``_states``,
``_beacons``, ``_runners``, ``_engines``, ``_utils``) inside this package, and Salt finds them
through the ``salt.loader`` entry point :func:`loader_dirs`.

The pack's modules import their shared helpers as top-level modules
(``import ha_endpoints``). After ``saltutil.sync_all`` that works because Salt puts
``extmods/utils`` on ``sys.path`` while it loads a module. Salt 3008 does not do
the same for an entry point's ``utils`` folder, so importing this package (which
Salt does to call :func:`loader_dirs`, before it loads any module of the pack)
appends the installed ``_utils`` folder to ``sys.path``: one import line serves
both ways of installing.
"""

import importlib.util
import sys

LOADER_FOLDERS = {
    "modules": "_modules",
    "states": "_states",
    "beacons": "_beacons",
    "runners": "_runners",
    "engines": "_engines",
    "utils": "_utils",
}


def _folder_paths(folder):
    spec = importlib.util.find_spec(f"{__name__}.{folder}")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return list(spec.submodule_search_locations)


def loader_dirs():
    """Return ``{loader type: [folder, ...]}`` for Salt's ``salt.loader`` entry point."""
    return {kind: _folder_paths(folder) for kind, folder in LOADER_FOLDERS.items()}


for _path in _folder_paths(LOADER_FOLDERS["utils"]):
    if _path not in sys.path:
        sys.path.append(_path)
