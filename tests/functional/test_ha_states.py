"""The ``ha`` states through Salt's loader (``state.single``), on real files in tmp_path."""

import glob
import os
import pathlib
import stat
import subprocess
import sys
import time

import pytest
import yaml

import ha_keys
import ha_lint
from tests.support import lab as lablib
from tests.support.pki_dirs import failing_replace_for, pki_dir_3008, pki_dir_plain

MASTERS = ["127.0.0.1", "127.0.0.2"]


@pytest.fixture(params=[True, False], ids=["test=True", "test=False"])
def testmode(request):
    return request.param


@pytest.fixture
def config_dir(loaders, tmp_path):
    """A salt config dir of its own: the loader's conf_file points into it for one test."""
    etc = tmp_path / "etc" / "salt"
    (etc / "minion.d").mkdir(parents=True)
    (etc / "master.d").mkdir()
    (etc / "minion").write_text("id: ha-functional-minion\n")
    saved = {key: loaders.opts.get(key) for key in ("conf_file", "pidfile", "minion_restart_command")}
    loaders.opts.update(conf_file=str(etc / "minion"), pidfile=str(tmp_path / "minion.pid"))
    loaders.opts.pop("minion_restart_command", None)
    yield etc
    loaders.opts.update(saved)


@pytest.fixture
def states(loaders, config_dir):
    return loaders.states


def backups_of(path):
    return sorted(glob.glob(f"{path}.*.bak"))


def listing(folder):
    return sorted(os.listdir(folder))


# --- ha.minion_failover -------------------------------------------------------------


def test_minion_failover_predicts_then_writes_a_lint_clean_dropin(states, config_dir, testmode):
    dropin = config_dir / "minion.d" / "ha-failover.conf"
    ret = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, grains_cache=True, test=testmode)
    assert ret.changes["master"] == {"old": None, "new": MASTERS}
    assert ret.changes["master_type"] == {"old": None, "new": "failover"}
    if testmode:
        assert ret.result is None
        assert "would be changed" in ret.comment
        assert not dropin.exists()
        return
    assert ret.result is True
    assert "restart required" in ret.comment
    written = yaml.safe_load(dropin.read_text())
    assert written["master"] == MASTERS and written["master_type"] == "failover"
    assert [f["severity"] for f in ha_lint.lint_options(written)] == ["info"]
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "tcp_keepalive, written",
    [
        (None, {"tcp_keepalive": True, "tcp_keepalive_idle": 10, "tcp_keepalive_intvl": 2, "tcp_keepalive_cnt": 3}),
        ({"idle": 20, "cnt": 5}, {"tcp_keepalive": True, "tcp_keepalive_idle": 20, "tcp_keepalive_intvl": 2, "tcp_keepalive_cnt": 5}),
        (False, {}),
    ],
    ids=["default", "mapping", "off"],
)
def test_minion_failover_writes_the_keepalive_settings(states, config_dir, testmode, tcp_keepalive, written):
    dropin = config_dir / "minion.d" / "ha-failover.conf"
    kwargs = {} if tcp_keepalive is None else {"tcp_keepalive": tcp_keepalive}
    ret = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, test=testmode, **kwargs)
    keepalive_changes = {key: value for key, value in ret.changes.items() if key.startswith("tcp_keepalive")}
    assert keepalive_changes == {key: {"old": None, "new": value} for key, value in written.items()}
    if testmode:
        assert ret.result is None and not dropin.exists()
        return
    assert ret.result is True
    on_disk = yaml.safe_load(dropin.read_text())
    assert {key: value for key, value in on_disk.items() if key.startswith("tcp_keepalive")} == written
    ids = [f["id"] for f in ha_lint.lint_options(on_disk)]
    assert ("HA221" in ids) == (not written), ids  # Salt's defaults: a partitioned master keeps it ~16 min
    again = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, **kwargs)
    assert again.result is True and again.changes == {}
    if written:
        off = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, tcp_keepalive=False, test=True)
        assert off.result is None
        assert off.changes["tcp_keepalive_idle"] == {"old": written["tcp_keepalive_idle"], "new": None}


@pytest.mark.parametrize(
    "grains_cache, written",
    [(None, {}), (True, {"grains_cache": True, "grains_cache_expiration": 86400}),
     (3600, {"grains_cache": True, "grains_cache_expiration": 3600})],
    ids=["default", "true", "seconds"],
)
def test_minion_failover_writes_the_grains_cache_settings(states, config_dir, testmode, grains_cache, written):
    dropin = config_dir / "minion.d" / "ha-failover.conf"
    kwargs = {} if grains_cache is None else {"grains_cache": grains_cache}
    ret = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, test=testmode, **kwargs)
    grains_changes = {key: value for key, value in ret.changes.items() if key.startswith("grains_cache")}
    assert grains_changes == {key: {"old": None, "new": value} for key, value in written.items()}
    if testmode:
        assert ret.result is None and not dropin.exists()
        return
    assert ret.result is True
    on_disk = yaml.safe_load(dropin.read_text())
    assert {key: value for key, value in on_disk.items() if key.startswith("grains_cache")} == written
    findings = {f["id"]: f for f in ha_lint.lint_options(on_disk)}
    expected_option = {None: "grains_cache", True: None, 3600: "grains_cache_expiration"}[grains_cache]
    assert (findings.get("HA804") or {}).get("option") == expected_option, findings.get("HA804")


def test_minion_failover_refuses_a_bad_grains_cache_and_writes_nothing(states, config_dir):
    ret = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, grains_cache="yes")
    assert ret.result is False and ret.changes == {}
    assert "grains_cache 'yes'" in ret.comment
    assert not (config_dir / "minion.d" / "ha-failover.conf").exists()


def test_minion_failover_second_run_reports_no_changes_and_keeps_the_backup(states, config_dir):
    dropin = config_dir / "minion.d" / "ha-failover.conf"
    dropin.write_text("master: 127.0.0.1\n")
    first = states.ha.minion_failover(name=str(dropin), masters=MASTERS, failback=True)
    assert first.result is True and first.changes["master_failback"] == {"old": None, "new": True}
    (backup,) = backups_of(dropin)
    assert pathlib.Path(backup).read_text() == "master: 127.0.0.1\n"
    assert backup in first.comment
    content = dropin.read_bytes()
    second = states.ha.minion_failover(name=str(dropin), masters=MASTERS, failback=True)
    assert (second.result, second.changes) == (True, {})
    assert "already in the desired state" in second.comment
    assert dropin.read_bytes() == content and backups_of(dropin) == [backup]


BAD_FAILOVER = [
    ({"masters": "127.0.0.1"}, "is not a list"),
    ({"masters": ["127.0.0.1", "127.0.0.1"]}, "duplicates"),
    ({"masters": ["127.0.0.1:4506", "127.0.0.1:4606"]}, "ha.lint finds errors"),
    ({"alive_interval": -1}, "alive_interval -1"),
    ({"failback_interval": -1}, "failback_interval -1"),
    ({"retry_dns": -3}, "retry_dns -3"),
    ({"name": "/etc/salt/minion.d/ha.conf"}, "outside the salt config dir"),
    ({"name": "../minion"}, "does not end in .conf"),
    ({"restart": "yes"}, "restart 'yes'"),
    ({"returns_engine": "yes"}, "returns_engine 'yes' is not True, False or a mapping"),
    ({"returns_engine": {"max_age": 5}}, "ha_returns max_age 5 is not a whole number"),
    ({"returns_engine": {"directory": "ledger"}}, "ha_returns directory 'ledger' is not an absolute path"),
    ({"returns_engine": {"frobnicate": 1}}, "ha_returns has no option 'frobnicate'"),
    ({"tcp_keepalive": "yes"}, "tcp_keepalive 'yes' is not True, False or a mapping of idle, intvl, cnt"),
    ({"tcp_keepalive": {"idle": 2.5}}, "tcp_keepalive:idle 2.5 is not a whole number"),
    ({"tcp_keepalive": {"cnt": 0}}, "tcp_keepalive:cnt 0 is out of range (1-127)"),
    ({"tcp_keepalive": {"interval": 2}}, "tcp_keepalive key(s) 'interval' unknown"),
]


@pytest.mark.parametrize("bad,message", BAD_FAILOVER)
def test_minion_failover_bad_input_fails_and_writes_nothing(states, config_dir, bad, message):
    before = {path: path.read_bytes() for path in config_dir.rglob("*") if path.is_file()}
    kwargs = {"name": "ha-failover.conf", "masters": MASTERS, **bad}
    ret = states.ha.minion_failover(**kwargs)
    assert ret.result is False
    assert message in ret.comment and "Nothing written" in ret.comment
    assert ret.changes == {}
    after = {path: path.read_bytes() for path in config_dir.rglob("*") if path.is_file()}
    assert after == before


def test_minion_failover_restart_runs_after_the_job_through_minion_restart_command(
    loaders, states, config_dir, tmp_path
):
    """The detached helper stops the daemon in the pidfile, then runs minion_restart_command."""
    marker = tmp_path / "restarted"
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a stand-in
    try:
        pathlib.Path(loaders.opts["pidfile"]).write_text(f"{daemon.pid}\n")
        loaders.opts["minion_restart_command"] = ["/bin/sh", "-c", f"echo started > {marker}"]
        started = time.monotonic()
        ret = states.ha.minion_failover(
            name="ha-failover.conf", masters=MASTERS, restart=True, restart_delay=0, restart_wait=0
        )
        assert time.monotonic() - started < 5  # the state does not wait for the restart
        assert ret.result is True, ret.comment
        assert "restarts in the background (minion_restart_command" in ret.comment
        assert "restart required" not in ret.comment
        assert daemon.wait(timeout=15) == -15  # SIGTERM, then the command
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text() == "started\n"
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    again = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, restart=True)
    assert (again.result, again.changes) == (True, {})  # no change: no restart


def test_minion_failover_restart_refused_for_a_foreground_minion_before_writing(
    loaders, states, config_dir
):
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pathlib.Path(loaders.opts["pidfile"]).write_text(f"{daemon.pid}\n")
        for testmode in (True, False):
            ret = states.ha.minion_failover(
                name="ha-failover.conf", masters=MASTERS, restart=True, test=testmode
            )
            assert ret.result is False
            assert "cannot restart the salt-minion" in ret.comment
            assert listing(config_dir / "minion.d") == []
        assert daemon.poll() is None
    finally:
        daemon.kill()
        daemon.wait()


# --- returns_engine: the ha_returns engine in the drop-in -------------------------------


@pytest.mark.parametrize("returns_engine", [True, {"max_age": 3600}], ids=["True", "options"])
def test_minion_failover_returns_engine_predicts_writes_then_reports_no_changes(states, config_dir, returns_engine):
    dropin = config_dir / "minion.d" / "ha-failover.conf"
    engines = [{"ha_returns": {} if returns_engine is True else returns_engine}]
    predicted = states.ha.minion_failover(
        name="ha-failover.conf", masters=MASTERS, returns_engine=returns_engine, test=True
    )
    assert predicted.result is None, predicted.comment
    assert predicted.changes["engines"] == {"old": None, "new": engines}
    assert "restart required" in predicted.comment
    assert not dropin.exists()
    applied = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, returns_engine=returns_engine)
    assert applied.result is True, applied.comment
    assert applied.changes["engines"] == {"old": None, "new": engines}
    assert "restart required" in applied.comment
    assert yaml.safe_load(dropin.read_text())["engines"] == engines
    content = dropin.read_bytes()
    again = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, returns_engine=returns_engine)
    assert (again.result, again.changes) == (True, {})
    assert dropin.read_bytes() == content
    off = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS)
    assert off.result is True and off.changes == {"engines": {"old": engines, "new": None}}


def test_minion_failover_returns_engine_refused_while_the_config_file_has_engines(states, config_dir, testmode):
    main = config_dir / "minion"
    main.write_text("id: ha-functional-minion\nengines: [pytest]\n")
    before = {path: path.read_bytes() for path in config_dir.rglob("*") if path.is_file()}
    ret = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, returns_engine=True, test=testmode)
    assert ret.result is False and ret.changes == {}
    assert "Nothing written" in ret.comment
    assert f"the config file {str(main)!r} has an engines list of its own" in ret.comment
    assert "move that engines list into a minion.d/*.conf drop-in" in ret.comment
    assert "list ha_returns in it and leave returns_engine False" in ret.comment
    assert {path: path.read_bytes() for path in config_dir.rglob("*") if path.is_file()} == before
    main.write_text("id: ha-functional-minion\nengines: [pytest, ha_returns]\n")
    kept = states.ha.minion_failover(name="ha-failover.conf", masters=MASTERS, returns_engine=True, test=testmode)
    assert kept.result is (None if testmode else True), kept.comment
    assert "engines" not in kept.changes
    assert f"ha_returns is already listed under engines in {str(main)!r}: not listed a second time." in kept.comment


def test_minion_failover_returns_engine_merges_with_other_dropins(states, config_dir):
    other = config_dir / "minion.d" / "engines.conf"
    other.write_text("engines: [{ha_health: {port: 4510}}]\n")
    dropin = config_dir / "minion.d" / "ha-failover.conf"
    ret = states.ha.minion_failover(name=str(dropin), masters=MASTERS, returns_engine=True)
    assert ret.result is True, ret.comment
    assert f"Salt merges these engines with those of {str(other)!r}." in ret.comment
    assert yaml.safe_load(dropin.read_text())["engines"] == [{"ha_returns": {}}]
    other.write_text("engines: [{ha_health: {port: 4510}}, ha_returns]\n")
    moved = states.ha.minion_failover(name=str(dropin), masters=MASTERS, returns_engine=True)
    assert moved.result is True and moved.changes == {"engines": {"old": [{"ha_returns": {}}], "new": None}}
    assert f"ha_returns is already listed under engines in {str(other)!r}" in moved.comment


# --- a corrupt drop-in: named, replaced, kept as the backup ----------------------------

CORRUPT_YAML = "master: [127.0.0.1\nmaster_type: failover\n"


@pytest.mark.parametrize("state", ["minion_failover", "master_config"])
def test_a_corrupt_dropin_is_replaced_keeping_it_as_the_backup(states, config_dir, testmode, state):
    folder = "minion.d" if state == "minion_failover" else "master.d"
    dropin = config_dir / folder / "ha.conf"
    dropin.write_text(CORRUPT_YAML)
    if state == "minion_failover":
        ret = states.ha.minion_failover(name="ha.conf", masters=MASTERS, test=testmode)
    else:
        ret = states.ha.master_config(name="ha.conf", settings=SETTINGS, test=testmode)
    corrupt = ret.changes["corrupt_file"]
    assert corrupt["path"] == str(dropin)
    assert corrupt["problem"].startswith("is not valid YAML: ") and "(line 2, column 12)" in corrupt["problem"]
    assert "\n" not in ret.comment
    if testmode:
        assert ret.result is None
        assert corrupt["backup"] == f"{dropin}.<UTC time>.bak"
        assert f"{str(dropin)!r} is corrupt ({corrupt['problem']}): it would be replaced" in ret.comment
        assert dropin.read_text() == CORRUPT_YAML and backups_of(dropin) == []
        return
    assert ret.result is True, ret.comment
    (backup,) = backups_of(dropin)
    assert corrupt["backup"] == backup
    assert pathlib.Path(backup).read_text() == CORRUPT_YAML
    assert f"{str(dropin)!r} was corrupt ({corrupt['problem']}): replaced, the corrupt file is kept in {backup!r}" in ret.comment
    assert isinstance(yaml.safe_load(dropin.read_text()), dict)


def test_a_dropin_name_with_a_newline_is_escaped_in_the_comment(states, config_dir):
    ret = states.ha.minion_failover(name="ha\nforged.conf", masters=MASTERS, test=True)
    assert ret.result is None and "\n" not in ret.comment
    assert "'ha\\nforged.conf' would be changed" in ret.comment


# --- ha.master_config ------------------------------------------------------------------

SETTINGS = {"worker_threads": 8, "file_roots": {"base": ["/srv/salt"]}, "keep_jobs_seconds": 3600}


def test_master_config_predicts_then_writes_sorted_yaml(states, config_dir, testmode):
    dropin = config_dir / "master.d" / "ha.conf"
    ret = states.ha.master_config(name="ha.conf", settings=SETTINGS, test=testmode)
    assert ret.changes["added"] == ["file_roots", "keep_jobs_seconds", "worker_threads"]
    if testmode:
        assert ret.result is None and not dropin.exists()
        return
    assert ret.result is True and "restart required" in ret.comment
    assert yaml.safe_load(dropin.read_text()) == SETTINGS
    keys = [line.split(":")[0] for line in dropin.read_text().splitlines()[1:] if line[0] != " "]
    assert keys == sorted(SETTINGS)


def test_master_config_is_byte_identical_for_reordered_settings_and_idempotent(states, config_dir):
    dropin = config_dir / "master.d" / "ha.conf"
    assert states.ha.master_config(name=str(dropin), settings=SETTINGS).result is True
    content = dropin.read_bytes()
    reordered = dict(reversed(list(SETTINGS.items())))
    again = states.ha.master_config(name=str(dropin), settings=reordered)
    assert (again.result, again.changes) == (True, {})
    assert dropin.read_bytes() == content
    changed = states.ha.master_config(name=str(dropin), settings={**SETTINGS, "worker_threads": 4})
    assert changed.changes["changed"] == ["worker_threads"]
    (backup,) = backups_of(dropin)
    assert pathlib.Path(backup).read_bytes() == content


@pytest.mark.parametrize(
    "name,settings,message",
    [
        ("ha.conf", "worker_threads: 4", "is not a mapping"),
        ("ha.conf", {}, "is empty"),
        ("ha.conf", {"x": {1: 2}}, "settings:x key 1"),
        ("/tmp/ha.conf", SETTINGS, "outside the salt config dir"),
        ("../minion.d/ha.conf", SETTINGS, "outside the salt config dir"),
    ],
)
def test_master_config_bad_input_fails_and_writes_nothing(states, config_dir, name, settings, message):
    ret = states.ha.master_config(name=name, settings=settings)
    assert ret.result is False and message in ret.comment
    assert listing(config_dir / "master.d") == [] and listing(config_dir / "minion.d") == []


# --- ha.master_keypair -----------------------------------------------------------------


@pytest.fixture(scope="module")
def keypairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("keypairs")
    pairs = {}
    for name in ("old", "new", "other"):
        pem, pub = lablib.make_keypair(root / name)
        pairs[name] = (pem.read_text(), pub.read_text())
    return pairs


@pytest.fixture(params=["3008-symlinks", "plain-files"])
def pki_dir(request, tmp_path, keypairs):
    if request.param == "3008-symlinks":
        return pki_dir_3008(tmp_path / "pki", keypairs["old"])
    return pki_dir_plain(tmp_path / "pki")


def assert_no_key_material(ret, *pems):
    text = repr(ret.raw)
    assert "PRIVATE KEY" not in text and "PUBLIC KEY" not in text
    for pem in pems:
        for line in pem.splitlines()[1:-1]:
            assert line not in text


def test_master_keypair_writes_through_either_layout_with_fingerprints_only(
    states, pki_dir, keypairs, testmode
):
    new_pem, new_pub = keypairs["new"]
    links = {name: os.path.islink(pki_dir / name) for name in ("master.pem", "master.pub")}
    old_fingerprint = ha_keys.fingerprint_file(pki_dir / "master.pub")
    before = {path.name: path.read_bytes() for path in pki_dir.iterdir()}
    ret = states.ha.master_keypair(name=str(pki_dir), private_key=new_pem, test=testmode)
    assert ret.changes["master.pub"]["old"] == old_fingerprint
    assert ret.changes["master.pub"]["new"] == ha_keys.fingerprint(new_pub)
    assert ret.changes["master.pem"]["old"] == old_fingerprint  # the public half's
    assert ret.changes["master.pem"]["new"] == ha_keys.fingerprint(new_pub)
    assert_no_key_material(ret, new_pem, keypairs["old"][0])
    if testmode:
        assert ret.result is None
        assert {path.name: path.read_bytes() for path in pki_dir.iterdir()} == before
        return
    assert ret.result is True and "after a restart" in ret.comment
    assert {name: os.path.islink(pki_dir / name) for name in links} == links  # layout kept
    assert ha_keys.is_pair((pki_dir / "master.pem").read_text(), (pki_dir / "master.pub").read_text())
    assert ha_keys.fingerprint_file(pki_dir / "master.pub") == ha_keys.fingerprint(new_pub)
    pem_target = pathlib.Path(os.path.realpath(pki_dir / "master.pem"))
    assert stat.S_IMODE(pem_target.stat().st_mode) == 0o400
    (backup,) = backups_of(pem_target)
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o400
    assert os.stat(backup).st_uid == pem_target.stat().st_uid
    assert pathlib.Path(backup).read_bytes() == before["master.pem"]
    assert len(backups_of(os.path.realpath(pki_dir / "master.pub"))) == 1
    again = states.ha.master_keypair(name=str(pki_dir), private_key=new_pem, public_key=new_pub)
    assert (again.result, again.changes) == (True, {})


def test_master_keypair_mismatched_pair_is_refused_before_anything_is_touched(
    states, tmp_path, keypairs
):
    pki_dir = pki_dir_3008(tmp_path / "pki", keypairs["old"])
    before = {path.name: path.read_bytes() for path in pki_dir.iterdir()}
    ret = states.ha.master_keypair(
        name=str(pki_dir), private_key=keypairs["new"][0], public_key=keypairs["other"][1]
    )
    assert ret.result is False and ret.changes == {}
    assert "does not belong to private_key" in ret.comment
    assert ha_keys.fingerprint(keypairs["other"][1]) in ret.comment
    assert_no_key_material(ret, keypairs["new"][0])
    assert {path.name: path.read_bytes() for path in pki_dir.iterdir()} == before


@pytest.mark.parametrize(
    "name,private,message",
    [
        ("relative", "new", "not an absolute path"),
        ("/nonexistent/pki", "new", "not an existing directory"),
        (None, "garbage", "private_key is not an unencrypted PEM private key"),
    ],
)
def test_master_keypair_bad_input_fails_and_writes_nothing(states, tmp_path, keypairs, name, private, message):
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    key = keypairs[private][0] if private in keypairs else private
    ret = states.ha.master_keypair(name=name or str(pki_dir), private_key=key)
    assert ret.result is False and message in ret.comment
    assert listing(pki_dir) == []
    assert_no_key_material(ret, keypairs["new"][0])


@pytest.mark.parametrize("layout", ["3008-symlinks", "plain-files"])
def test_master_keypair_failing_on_master_pub_leaves_the_old_pair(states, tmp_path, keypairs, monkeypatch, layout):
    """The second write fails: both files stay the old pair, no temp file, result False."""
    if layout == "3008-symlinks":
        pki_dir = pki_dir_3008(tmp_path / "pki", keypairs["old"])
    else:
        pki_dir = pki_dir_plain(tmp_path / "pki")
    before = {path.name: path.read_bytes() for path in pki_dir.iterdir()}
    links = {path.name: os.readlink(path) for path in pki_dir.iterdir() if path.is_symlink()}
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in pki_dir.iterdir()}
    pub_target = os.path.realpath(pki_dir / "master.pub")
    monkeypatch.setattr(os, "replace", failing_replace_for(pub_target, OSError(30, "Read-only file system")))
    ret = states.ha.master_keypair(name=str(pki_dir), private_key=keypairs["new"][0])
    monkeypatch.undo()
    assert ret.result is False and ret.changes == {}
    assert f"cannot write {pub_target!r}" in ret.comment and "Read-only file system" in ret.comment
    assert "rolled back" in ret.comment and "nothing changed" in ret.comment
    assert_no_key_material(ret, keypairs["new"][0], keypairs["old"][0])
    assert {path.name: path.read_bytes() for path in pki_dir.iterdir()} == before  # no .tmp, no .bak
    assert {path.name: os.readlink(path) for path in pki_dir.iterdir() if path.is_symlink()} == links
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in pki_dir.iterdir()} == modes
    assert ha_keys.is_pair((pki_dir / "master.pem").read_text(), (pki_dir / "master.pub").read_text())
    again = states.ha.master_keypair(name=str(pki_dir), private_key=keypairs["new"][0])
    assert again.result is True and set(again.changes) == {"master.pem", "master.pub"}


# --- master pubkey signing: ha.master_signing, ha.minion_failover verify_master_pubkey_sign ---


@pytest.fixture(scope="module")
def signing_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("signing-pairs")
    pairs = {}
    for name in ("old", "new"):
        pem, pub = lablib.make_keypair(root / name, "master_sign")
        pairs[name] = (pem.read_text(), pub.read_text())
    return pairs


@pytest.fixture
def minion_pki(loaders, tmp_path):
    """The loader minion's pki dir, in tmp_path for one test."""
    folder = tmp_path / "minion-pki"
    folder.mkdir()
    saved = loaders.opts.get("pki_dir")
    loaders.opts["pki_dir"] = str(folder)
    yield folder
    loaders.opts["pki_dir"] = saved


def test_master_signing_predicts_writes_the_pair_and_the_dropin_then_reports_no_changes(
    states, config_dir, tmp_path, keypairs, signing_pairs, testmode
):
    pki_dir = pki_dir_3008(tmp_path / "pki", keypairs["old"])
    pem, pub = signing_pairs["new"]
    fingerprint = ha_keys.fingerprint(pub)
    ret = states.ha.master_signing(name=str(pki_dir), private_key=pem, test=testmode)
    assert ret.changes == {
        "master_sign.pem": {"old": None, "new": fingerprint, "path": str(pki_dir / "master_sign.pem")},
        "master_sign.pub": {"old": None, "new": fingerprint, "path": str(pki_dir / "master_sign.pub")},
        "master_sign_pubkey": {"old": None, "new": True},
    }
    assert_no_key_material(ret, pem)
    if testmode:
        assert ret.result is None and "would be changed" in ret.comment
        assert not (pki_dir / "master_sign.pem").exists() and listing(config_dir / "master.d") == []
        return
    assert ret.result is True and "signs its public key with this pair after a restart" in ret.comment
    assert yaml.safe_load((config_dir / "master.d" / "ha-signing.conf").read_text()) == {"master_sign_pubkey": True}
    assert stat.S_IMODE((pki_dir / "master_sign.pem").stat().st_mode) == 0o400
    assert ha_keys.fingerprint_file(pki_dir / "master_sign.pub") == fingerprint
    assert ha_keys.fingerprint_file(pki_dir / "master.pub") == ha_keys.fingerprint(keypairs["old"][1])  # untouched
    again = states.ha.master_signing(name=str(pki_dir), private_key=pem, public_key=pub)
    assert (again.result, again.changes) == (True, {})


def test_master_signing_is_refused_while_another_master_file_turns_signing_off(
    states, config_dir, tmp_path, signing_pairs
):
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    (config_dir / "master").write_text("master_sign_pubkey: False\n")
    ret = states.ha.master_signing(name=str(pki_dir), private_key=signing_pairs["new"][0])
    assert ret.result is False and ret.changes == {}
    assert f"{str(config_dir / 'master')!r} sets master_sign_pubkey: False: remove it there" in ret.comment
    assert listing(pki_dir) == [] and listing(config_dir / "master.d") == []


def test_master_signing_failing_on_the_dropin_leaves_the_old_pair(
    states, config_dir, tmp_path, signing_pairs, monkeypatch
):
    """The last of the three writes fails: the old signing pair is back, no drop-in, result False."""
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    old_pem, old_pub = signing_pairs["old"]
    (pki_dir / "master_sign.pem").write_text(old_pem)
    (pki_dir / "master_sign.pem").chmod(0o400)
    (pki_dir / "master_sign.pub").write_text(old_pub)
    before = {path.name: path.read_bytes() for path in pki_dir.iterdir()}
    dropin = config_dir / "master.d" / "ha-signing.conf"
    monkeypatch.setattr(os, "replace", failing_replace_for(dropin, OSError(28, "No space left on device")))
    ret = states.ha.master_signing(name=str(pki_dir), private_key=signing_pairs["new"][0])
    monkeypatch.undo()
    assert ret.result is False and ret.changes == {}
    assert f"cannot write {str(dropin)!r}" in ret.comment and "rolled back" in ret.comment
    assert_no_key_material(ret, signing_pairs["new"][0], old_pem)
    assert {path.name: path.read_bytes() for path in pki_dir.iterdir()} == before
    assert listing(config_dir / "master.d") == []


def test_minion_failover_with_signing_writes_the_option_and_master_sign_pub(
    states, config_dir, minion_pki, signing_pairs, testmode
):
    pub = signing_pairs["new"][1]
    dropin = config_dir / "minion.d" / "ha-failover.conf"
    ret = states.ha.minion_failover(
        name="ha-failover.conf", masters=MASTERS, verify_master_pubkey_sign=True, master_sign_pub=pub, test=testmode
    )
    assert ret.changes["verify_master_pubkey_sign"] == {"old": None, "new": True}
    assert ret.changes["master_sign.pub"] == {
        "old": None, "new": ha_keys.fingerprint(pub), "path": str(minion_pki / "master_sign.pub"),
    }
    if testmode:
        assert ret.result is None and listing(minion_pki) == [] and not dropin.exists()
        return
    assert ret.result is True, ret.comment
    assert yaml.safe_load(dropin.read_text())["verify_master_pubkey_sign"] is True
    assert (minion_pki / "master_sign.pub").read_text() == pub
    again = states.ha.minion_failover(
        name="ha-failover.conf", masters=MASTERS, verify_master_pubkey_sign=True, master_sign_pub=pub
    )
    assert (again.result, again.changes) == (True, {})


def test_minion_failover_refuses_a_private_key_as_master_sign_pub_without_showing_it(
    states, config_dir, minion_pki, signing_pairs
):
    pem = signing_pairs["new"][0]
    ret = states.ha.minion_failover(
        name="ha-failover.conf", masters=MASTERS, verify_master_pubkey_sign=True, master_sign_pub=pem
    )
    assert ret.result is False and "master_sign_pub: public key item holds a PRIVATE KEY block" in ret.comment
    assert "-----BEGIN" not in repr(ret.raw)
    assert not any(line in repr(ret.raw) for line in pem.splitlines()[1:-1])
    assert listing(minion_pki) == [] and listing(config_dir / "minion.d") == []


def test_lint_of_the_running_minion_reports_its_key_model(modules, loaders, signing_pairs):
    """The daemon's pki dir (from its config file, as ha.lint reads it): the model, then HA602, then the key."""
    (model,) = [f for f in modules.ha.lint() if f["id"].startswith("HA6")]
    assert model["id"] == "HA601" and model["key_model"]["model"] == "shared master key"
    path = pathlib.Path(model["key_model"]["master_sign_pub"])
    assert path.parent == pathlib.Path(loaders.opts["pki_dir"]) and not path.exists()
    loaders.opts["verify_master_pubkey_sign"] = True
    try:
        assert [f["id"] for f in modules.ha.lint() if f["id"].startswith("HA6")] == ["HA602", "HA601"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(signing_pairs["new"][1])
        (model,) = [f for f in modules.ha.lint() if f["id"].startswith("HA6")]
        assert model["key_model"]["model"] == "signing"
        assert model["key_model"]["master_sign_pub_fingerprint"] == ha_keys.fingerprint(signing_pairs["new"][1])
    finally:
        loaders.opts.pop("verify_master_pubkey_sign")
        path.unlink(missing_ok=True)


def test_state_docs_have_cli_examples(modules):
    docs = modules.sys.state_doc("ha")
    for function in ("ha.minion_failover", "ha.master_config", "ha.master_keypair", "ha.master_signing"):
        assert "CLI Example:" in docs[function], function
