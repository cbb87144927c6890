"""The README's code map names every module of the pack."""

import pathlib
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def code_map():
    text = (REPO_ROOT / "README.md").read_text()
    return text.split("## Where things live", 1)[1].split("\n## ", 1)[0]


def test_every_module_is_on_the_code_map():
    mapped = code_map()
    modules = sorted(path.name for path in (REPO_ROOT / "_utils").glob("ha_*.py"))
    assert modules, "no _utils modules found: nothing proven"
    missing = [name for name in modules if not re.search(rf"\b{re.escape(name[:-3])}(\.py)?\b", mapped)]
    assert missing == []
    for folder in ("_modules", "_states", "_beacons", "_runners"):
        assert f"`{folder}/ha.py`" in mapped, folder
