"""
The pack works both ways Salt users install extensions:
synced from ``file_roots`` with ``saltutil.sync_all``, and ``pip install``.
"""

import json
import pathlib
import subprocess
import sys
import zipfile

import pytest
import yaml
from packaging.requirements import Requirement

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
WITHOUT_PIP_PACK = REPO_ROOT / "tests" / "support" / "salt_call_without_pip_pack.py"
LOAD_BEACONS = REPO_ROOT / "tests" / "support" / "load_beacons_without_pip_pack.py"


def run(args, timeout=120, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


@pytest.fixture
def local_minion_config(tmp_path):
    """A masterless minion whose file_roots is this repository, as gitfs/file_roots would serve it."""
    root = tmp_path / "minion"
    conf_dir = root / "conf"
    conf_dir.mkdir(parents=True)
    config = {
        "id": "ha-sync-minion",
        "root_dir": str(root),
        "pki_dir": str(root / "pki"),
        "cachedir": str(root / "cache"),
        "sock_dir": str(root / "sock"),
        "log_file": str(root / "minion.log"),
        "pidfile": str(root / "minion.pid"),
        "file_client": "local",
        "file_roots": {"base": [str(REPO_ROOT)]},
        "master": ["127.0.0.1", "127.0.0.2"],
        "master_type": "failover",
        "master_alive_interval": 10,
        "retry_dns": 0,
    }
    (conf_dir / "minion").write_text(yaml.safe_dump(config))
    return conf_dir


def salt_call_without_pip_pack(conf_dir, *args):
    cmd = [sys.executable, str(WITHOUT_PIP_PACK), "--local", f"--config-dir={conf_dir}", "--out=json", *args]
    return run(cmd)


def test_synced_from_file_roots_without_the_pip_package(local_minion_config):
    before = salt_call_without_pip_pack(local_minion_config, "sys.list_functions", "ha")
    assert json.loads(before.stdout)["local"] == [], "the pip-installed pack was not hidden"

    synced = salt_call_without_pip_pack(local_minion_config, "saltutil.sync_all")
    assert synced.returncode == 0, synced.stderr
    result = json.loads(synced.stdout)["local"]
    assert "modules.ha" in result["modules"]
    assert {"engines.ha_returns", "engines.ha_health"} <= set(result["engines"])
    assert {"utils.ha_probe", "utils.ha_endpoints", "utils.ha_lint"} <= set(result["utils"])

    beacons = run([sys.executable, str(LOAD_BEACONS), str(local_minion_config / "minion")])
    assert beacons.returncode == 0, beacons.stderr
    loaded = json.loads(beacons.stdout)
    assert loaded["beacons"] == ["ha.beacon", "ha.close", "ha.validate"], "the synced ha beacon does not load"
    assert "ha_returns.start" in loaded["engines"], "the synced ha_returns engine does not load"
    assert "ha_health.start" not in loaded["engines"], "the master's ha_health engine loads on a minion"
    assert "ha_health.start" in loaded["master_engines"], "the synced ha_health engine does not load on a master"
    assert "ha_returns.start" not in loaded["master_engines"]

    status = salt_call_without_pip_pack(local_minion_config, "ha.status", "timeout=0.5")
    assert status.returncode == 0, status.stderr
    masters = json.loads(status.stdout)["local"]["masters"]
    assert [m["master"] for m in masters] == ["127.0.0.1", "127.0.0.2"]


def test_pip_wheel_carries_the_pack_and_its_entry_point(tmp_path):
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO_ROOT)],
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("salt_ha-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "[salt.loader]" in archive.read(entry_points).decode()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for member in (
        "salt_ha/__init__.py", "salt_ha/_modules/ha.py", "salt_ha/_engines/ha_returns.py",
        "salt_ha/_engines/ha_health.py", "salt_ha/_utils/ha_probe.py", "salt_ha/_utils/ha_health.py",
    ):
        assert member in names
    # Installing the pack never downgrades a host's Salt 3008 (the exact pin is this repo's constraints.txt).
    [salt_requirement] = [
        Requirement(line.split(":", 1)[1].strip())
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and Requirement(line.split(":", 1)[1].strip()).name == "salt"
    ]
    assert all(salt_requirement.specifier.contains(version) for version in ("3008.4", "3008.5", "3008.12"))

    target = tmp_path / "site"
    installed = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    probe = run(
        [
            sys.executable,
            "-c",
            "import salt_ha, json; print(json.dumps(salt_ha.loader_dirs()))",
        ],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # not the repository: its salt_ha/ would shadow the installed one
    )
    assert probe.returncode == 0, probe.stderr
    dirs = json.loads(probe.stdout)
    assert dirs["modules"] == [str(target / "salt_ha" / "_modules")]
    assert dirs["engines"] == [str(target / "salt_ha" / "_engines")]
    assert (pathlib.Path(dirs["utils"][0]) / "ha_probe.py").is_file()
