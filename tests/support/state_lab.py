"""
Support for the ``ha`` state integration tests, on top of :mod:`tests.support.lab`.

The examples are used as they ship: master A serves ``examples/salt`` as its
file_roots and a pillar root made of ``examples/pillar`` plus one ``lab.sls``
that overrides only what the lab must (loopback masters, no self-restart).
"""

import pathlib
import shutil

import yaml

from tests.support import lab as lablib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
STATE_TREE = EXAMPLES / "salt"


def pillar_root(folder, lab_pillar):
    """``examples/pillar`` copied to ``folder``, with ``lab.sls`` (``lab_pillar``) merged last."""
    folder = pathlib.Path(folder)
    shutil.copytree(EXAMPLES / "pillar", folder)
    (folder / "lab.sls").write_text(yaml.safe_dump(lab_pillar, default_flow_style=False))
    top = yaml.safe_load((folder / "top.sls").read_text())
    top["base"]["*"].append("lab")
    (folder / "top.sls").write_text(yaml.safe_dump(top, default_flow_style=False))
    return folder


def example_roots(pillar_folder):
    """Master options serving the example state tree and ``pillar_folder``."""
    return {
        "file_roots": {"base": [str(STATE_TREE)]},
        "pillar_roots": {"base": [str(pillar_folder)]},
    }


def add_single_master_minion(lab, minion_id, accept_on=("a", "b"), overrides=None):
    """A minion configured for master A only (plain ``master: <A>``), not started."""
    publish, ret = lab.ports
    options = {"master": lablib.LOOPBACK_A, "master_port": ret, "publish_port": publish}
    options.update(overrides or {})
    factory = lab.masters["a"].salt_minion_daemon(minion_id, overrides=options)
    lab.seed_minion_key(factory, accept_on)
    for name in accept_on:
        lab.keys.allow(lab.masters[name].id, minion_id)
    lab.minions[minion_id] = factory
    return factory


def dropin_path(minion, filename):
    """Where a ``minion.d`` drop-in of this minion factory lives."""
    return pathlib.Path(minion.config["conf_file"]).parent / "minion.d" / filename


def state_results(data):
    """The state returns of a ``state.apply``/``state.sls`` return, in run order."""
    assert isinstance(data, dict), data
    return sorted(data.values(), key=lambda item: item.get("__run_num__", 0))
