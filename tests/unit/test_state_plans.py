"""Unit tests for ha_state: planners and renderers of the ``ha`` states (real files in tmp_path)."""

import collections
import os
import pathlib
import re
import stat

import pytest
import salt.config
import salt.utils.data
import salt.utils.templates
import yaml
from cryptography.hazmat.primitives import serialization
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_keepalive
import ha_keys
import ha_lint
import ha_minion_config
import ha_state
from tests.support import lab as lablib
from tests.support.pki_dirs import failing_replace_for, pki_dir_3008

MASTERS = ["salt1.example.com", "salt2.example.com"]


@pytest.fixture
def conf_file(tmp_path):
    (tmp_path / "minion.d").mkdir()
    (tmp_path / "master.d").mkdir()
    path = tmp_path / "minion"
    path.write_text("id: m1\n")
    return str(path)


@pytest.fixture(scope="module")
def keypairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return [
        tuple(path.read_text() for path in lablib.make_keypair(root / name)) for name in ("one", "two")
    ]


# --- rendering ------------------------------------------------------------------


def test_render_yaml_is_sorted_and_byte_identical_for_equal_dicts():
    first = {"worker_threads": 8, "file_roots": {"base": ["/srv/salt"]}, "ha": {"b": 1, "a": 2}}
    second = collections.OrderedDict(
        [("ha", {"a": 2, "b": 1}), ("file_roots", {"base": ["/srv/salt"]}), ("worker_threads", 8)]
    )
    text = ha_state.render_yaml(first, "ha.master_config")
    assert text == ha_state.render_yaml(dict(second), "ha.master_config")
    lines = text.splitlines()
    assert lines[0].startswith("# Managed by Salt (salt-ha state ha.master_config)")
    assert [line.split(":")[0] for line in lines[1:] if not line.startswith(" ")] == [
        "file_roots", "ha", "worker_threads",
    ]
    assert yaml.safe_load(text) == first


def test_failover_options_render_a_dropin_lint_finds_nothing_wrong_in():
    options = ha_state.failover_options(MASTERS, failback=True)
    assert options == {
        "master": MASTERS,
        "master_type": "failover",
        "master_alive_interval": 10,
        "master_failback": True,
        "master_failback_interval": 30,
        "retry_dns": 0,
        "random_master": False,
    }
    # ha.minion_failover adds the TCP keepalive settings (tcp_keepalive=True, its default)
    # and, with grains_cache=True, the grains cache.
    extra = {**ha_keepalive.RECOMMENDED, **ha_state.grains_cache_options(True)}
    rendered = yaml.safe_load(ha_state.render_yaml({**options, **extra}, "ha.minion_failover"))
    findings = ha_lint.lint_options(rendered, resolver=None)
    assert [f["id"] for f in findings] == ["HA901"], findings
    without = ha_lint.lint_options(yaml.safe_load(ha_state.render_yaml(options, "ha.minion_failover")))
    assert sorted(f["id"] for f in without) == ["HA221", "HA804", "HA901"]


@pytest.mark.parametrize(
    "grains_cache,expected",
    [(False, {}), (True, {"grains_cache": True, "grains_cache_expiration": 86400}),
     (3600, {"grains_cache": True, "grains_cache_expiration": 3600})],
)
def test_grains_cache_options(grains_cache, expected):
    assert ha_state.grains_cache_options(grains_cache) == expected


@pytest.mark.parametrize("bad", [0, -5, "86400", 1.5, None, [True]])
def test_a_bad_grains_cache_is_refused_naming_it(bad):
    with pytest.raises(SaltInvocationError, match=rf"grains_cache {re.escape(repr(bad))} "):
        ha_state.grains_cache_options(bad)


def test_failover_options_without_failback_leave_the_failback_interval_out():
    options = ha_state.failover_options(MASTERS, alive_interval=2, master_port=4606, publish_port=4605)
    assert "master_failback_interval" not in options
    assert (options["master_port"], options["publish_port"]) == (4606, 4605)
    assert options["master_alive_interval"] == 2


# --- every bad input names the bad value --------------------------------------------

BAD_FAILOVER_INPUTS = [
    ({"masters": "salt1"}, "masters 'salt1' is not a list"),
    ({"masters": {"a": 1}}, "is not a list"),
    ({"masters": ["salt1"]}, "failover needs at least two"),
    ({"masters": ["salt1", ""]}, "master entry '' in masters"),
    ({"masters": ["salt1", 5]}, "master entry 5 in masters"),
    ({"alive_interval": -1}, "alive_interval -1 is out of range"),
    ({"alive_interval": 0}, "alive_interval 0 is out of range"),
    ({"alive_interval": "10"}, "alive_interval '10' is not a whole number"),
    ({"alive_interval": True}, "alive_interval True is not a whole number"),
    ({"failback_interval": -5}, "failback_interval -5 is out of range"),
    ({"retry_dns": -1}, "retry_dns -1 is out of range"),
    ({"failback": "yes"}, "failback 'yes' is not True or False"),
    ({"master_port": 0}, "master_port 0 is out of range (1-65535)"),
    ({"publish_port": "east"}, "publish_port 'east' is not a port number"),
]


@pytest.mark.parametrize("bad,message", BAD_FAILOVER_INPUTS)
def test_failover_options_refuse_bad_input_naming_it(bad, message):
    kwargs = {"masters": MASTERS, **bad}
    with pytest.raises(SaltInvocationError) as err:
        ha_state.failover_options(**kwargs)
    assert message in str(err.value)


LINT_ERRORS = [
    (["salt1", "SALT1"], "duplicates 'salt1'"),
    (["127.10.0.1:4506", "127.10.0.1:4606"], "shared by several entries"),
    (["salt1", "bad host"], "cannot be used"),
]


@pytest.mark.parametrize("masters,message", LINT_ERRORS)
def test_plan_minion_failover_refuses_what_lint_calls_an_error(conf_file, masters, message):
    options = ha_state.failover_options(masters)
    with pytest.raises(SaltInvocationError) as err:
        ha_state.plan_minion_failover("ha.conf", conf_file, options)
    assert "ha.lint finds errors" in str(err.value)
    assert message in str(err.value)
    assert os.listdir(os.path.join(os.path.dirname(conf_file), "minion.d")) == []


BAD_PATHS = [
    ("/etc/passwd.conf", "outside the salt config dir"),
    ("../minion.d.conf", "outside the salt config dir"),
    ("sub/ha.conf", "outside the salt config dir"),
    ("ha.yaml", "does not end in .conf"),
    ("", "is not a file path"),
    (None, "is not a file path"),
]


@pytest.mark.parametrize("name,message", BAD_PATHS)
def test_dropin_path_refuses_paths_salt_would_not_read(conf_file, name, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_state.dropin_path(name, conf_file, "minion.d")
    assert message in str(err.value)
    assert repr(name) in str(err.value)


def test_dropin_path_accepts_a_name_or_an_absolute_path_in_the_folder(conf_file):
    folder = os.path.join(os.path.dirname(conf_file), "minion.d")
    assert ha_state.dropin_path("ha.conf", conf_file, "minion.d") == os.path.join(folder, "ha.conf")
    absolute = os.path.join(folder, "x.conf")
    assert ha_state.dropin_path(absolute, conf_file, "minion.d") == absolute


def test_dropin_path_refuses_a_symlink_out_of_the_folder(conf_file, tmp_path):
    (tmp_path / "elsewhere.conf").write_text("")
    os.symlink(tmp_path / "elsewhere.conf", tmp_path / "minion.d" / "link.conf")
    with pytest.raises(SaltInvocationError, match="outside"):
        ha_state.dropin_path("link.conf", conf_file, "minion.d")


BAD_SETTINGS = [
    ({}, "settings {} is empty"),
    (["a"], "settings ['a'] is not a mapping"),
    ({1: "a"}, "settings key 1 is not an option name"),
    ({"ha": {"peers": {2: 1}}}, "settings:ha:peers key 2"),
    ({"x": object()}, "settings:x is a object"),
    ({"x": [1, {3}]}, "settings:x[1] is a set"),
]


@pytest.mark.parametrize("settings,message", BAD_SETTINGS)
def test_plan_master_config_refuses_bad_settings_naming_them(conf_file, settings, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_state.plan_master_config("ha.conf", conf_file, settings)
    assert message in str(err.value)


# --- plans against files on disk --------------------------------------------------


def test_minion_failover_plan_shows_option_changes_then_none_once_written(conf_file):
    options = ha_state.failover_options(MASTERS)
    path = os.path.join(os.path.dirname(conf_file), "minion.d", "ha.conf")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("master: salt1.example.com\nmaster_alive_interval: 30\n")
    plan = ha_state.plan_minion_failover("ha.conf", conf_file, options)
    assert plan.changed
    assert plan.changes["master"] == {"old": "salt1.example.com", "new": MASTERS}
    assert plan.changes["master_alive_interval"] == {"old": 30, "new": 10}
    assert plan.changes["master_type"] == {"old": None, "new": "failover"}
    backups = ha_state.apply_plan(plan)
    assert len(backups) == 1
    with open(backups[0], encoding="utf-8") as handle:
        assert handle.read() == "master: salt1.example.com\nmaster_alive_interval: 30\n"
    again = ha_state.plan_minion_failover("ha.conf", conf_file, options)
    assert (again.changed, again.changes) == (False, {})


def test_minion_failover_plan_carries_lint_warnings_as_notes(conf_file):
    options = ha_state.failover_options(MASTERS, retry_dns=5)
    plan = ha_state.plan_minion_failover("ha.conf", conf_file, options)
    assert any("retry_dns" in note and note.startswith("warning:") for note in plan.notes)


def test_master_config_plan_names_changed_keys_not_values(conf_file):
    first = ha_state.plan_master_config("ha.conf", conf_file, {"a_secret": "pw1", "worker_threads": 4})
    ha_state.apply_plan(first)
    second = ha_state.plan_master_config("ha.conf", conf_file, {"a_secret": "pw2", "timeout": 9})
    assert second.changes["added"] == ["timeout"]
    assert second.changes["changed"] == ["a_secret"]
    assert second.changes["removed"] == ["worker_threads"]
    assert "pw1" not in repr(second.changes) and "pw2" not in repr(second.changes)
    assert any("a_secret" in note for note in second.notes)


def test_master_config_equal_dicts_in_any_order_are_no_change(conf_file):
    settings = {"worker_threads": 4, "file_roots": {"base": ["/srv/salt", "/srv/b"]}}
    ha_state.apply_plan(ha_state.plan_master_config("ha.conf", conf_file, settings))
    reordered = {"file_roots": {"base": ("/srv/salt", "/srv/b")}, "worker_threads": 4}
    assert not ha_state.plan_master_config("ha.conf", conf_file, reordered).changed


# --- a corrupt file on disk is named, replaced and kept as the backup -----------------

CORRUPT = [
    ("invalid YAML", b"master: [salt1\nmaster_type: failover\n", "is not valid YAML", "line 2"),
    ("a list", b"- master\n- salt1\n", "holds a list, not a mapping", ""),
    ("a duplicate key", b"master: a\nmaster: b\n", "is not valid YAML", "conflicting ID 'master'"),
    ("not UTF-8", b"master: \xff\n", "is not valid YAML", "utf-8"),
]


def corrupt_dropin(conf_file, folder, content):
    path = os.path.join(os.path.dirname(conf_file), folder, "ha.conf")
    with open(path, "wb") as handle:
        handle.write(content)
    return path


@pytest.mark.parametrize("content,problem,detail", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
@pytest.mark.parametrize("state", ["ha.minion_failover", "ha.master_config"])
def test_a_corrupt_dropin_is_named_replaced_and_kept_as_the_backup(conf_file, state, content, problem, detail):
    folder = "minion.d" if state == "ha.minion_failover" else "master.d"
    path = corrupt_dropin(conf_file, folder, content)

    def make_plan():
        if state == "ha.minion_failover":
            return ha_state.plan_minion_failover("ha.conf", conf_file, ha_state.failover_options(MASTERS))
        return ha_state.plan_master_config("ha.conf", conf_file, {"worker_threads": 4})

    plan = make_plan()
    if state == "ha.minion_failover":
        assert plan.changes["master"] == {"old": None, "new": MASTERS}
    else:
        assert plan.changes["added"] == ["worker_threads"]
    corrupt = plan.changes["corrupt_file"]
    assert corrupt["path"] == path and corrupt["backup"] == f"{path}.<UTC time>.bak"
    assert corrupt["problem"].startswith(problem) and detail.lower() in corrupt["problem"].lower()
    assert "\n" not in corrupt["problem"]
    changes, notes = ha_state.report(plan)
    assert changes["corrupt_file"] == corrupt
    assert any(
        note.startswith(f"{path!r} is corrupt ({corrupt['problem']}): it would be replaced")
        for note in notes
    ), notes
    with open(path, "rb") as handle:
        assert handle.read() == content  # planning writes nothing
    written = ha_state.write_plan(plan)
    (backup,) = written.values()
    with open(backup, "rb") as handle:
        assert handle.read() == content
    changes, notes = ha_state.report(plan, written)
    assert changes["corrupt_file"]["backup"] == backup
    assert any("was corrupt" in note and f"kept in {backup!r}" in note for note in notes), notes
    again = make_plan()
    assert (again.changed, again.changes) == (False, {})


@pytest.mark.parametrize("content", [b"", b"# only a comment\n", b"---\n", b"false\n"])
def test_an_empty_dropin_is_not_corrupt(conf_file, content):
    corrupt_dropin(conf_file, "minion.d", content)
    plan = ha_state.plan_minion_failover("ha.conf", conf_file, ha_state.failover_options(MASTERS))
    assert "corrupt_file" not in plan.changes
    assert plan.changes["master"] == {"old": None, "new": MASTERS}
    assert ha_state.report(plan)[1] == list(plan.notes)


# --- values from pillar or files never forge a line -----------------------------------


def test_settings_keys_are_escaped_in_errors_and_notes(conf_file):
    with pytest.raises(SaltInvocationError) as err:
        ha_state.plan_master_config("ha.conf", conf_file, {"a\nERROR forged": {"b": object()}})
    assert "\n" not in str(err.value)
    assert "settings:a\\nERROR forged:b is a object" in str(err.value)
    plan = ha_state.plan_master_config("ha.conf", conf_file, {"x\ry": 1})
    assert plan.notes == ("warning: 'x\\ry' is not a Salt master option (Salt ignores it unless a module reads it)",)


def test_lint_findings_quoted_in_a_refusal_are_escaped(conf_file):
    options = {**ha_state.failover_options(MASTERS), "master": ["salt1", "salt2\nCRITICAL forged"]}
    with pytest.raises(SaltInvocationError) as err:
        ha_state.plan_minion_failover("ha.conf", conf_file, options)
    assert "ha.lint finds errors" in str(err.value) and "\n" not in str(err.value)
    assert "salt2\\nCRITICAL forged" in str(err.value)


# --- key pairs ----------------------------------------------------------------------


def test_keypair_mismatch_is_refused_with_both_fingerprints(keypairs, tmp_path):
    (one_pem, one_pub), (_, two_pub) = keypairs
    with pytest.raises(SaltInvocationError) as err:
        ha_state.plan_master_keypair(str(tmp_path), one_pem, two_pub)
    text = str(err.value)
    assert ha_keys.fingerprint(two_pub) in text and ha_keys.fingerprint(one_pub) in text
    assert "does not belong" in text
    assert "PRIVATE" not in text and one_pem.splitlines()[1] not in text


BAD_KEYS = [
    ("not a key", None, "private_key is not an unencrypted PEM private key"),
    ("", None, "private_key is empty"),
    (None, "not a key", "private_key is empty"),
]


@pytest.mark.parametrize("private,public,message", BAD_KEYS)
def test_bad_key_text_is_refused(tmp_path, private, public, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_state.plan_master_keypair(str(tmp_path), private, public)
    assert message in str(err.value)


def test_bad_public_key_is_refused(keypairs, tmp_path):
    with pytest.raises(SaltInvocationError, match="public_key is not a PEM public key"):
        ha_state.plan_master_keypair(str(tmp_path), keypairs[0][0], "garbage")


@pytest.mark.parametrize("name", ["relative/pki", "/does/not/exist", 7])
def test_keypair_needs_an_existing_absolute_pki_dir(keypairs, name):
    with pytest.raises(SaltInvocationError) as err:
        ha_state.plan_master_keypair(name, keypairs[0][0])
    assert repr(name) in str(err.value)


def test_keypair_refuses_a_minion_pki_dir(keypairs, tmp_path):
    (tmp_path / "minion.pem").write_text("x")
    with pytest.raises(SaltInvocationError, match="minion's pki dir"):
        ha_state.plan_master_keypair(str(tmp_path), keypairs[0][0])


def test_keypair_plan_in_an_empty_dir_then_same_key_in_another_encoding(keypairs, tmp_path):
    pem, pub = keypairs[0]
    plan = ha_state.plan_master_keypair(str(tmp_path), pem)
    assert plan.changes["master.pem"]["old"] is None
    assert plan.changes["master.pem"]["new"] == ha_keys.fingerprint(pub)
    ha_state.apply_plan(plan)
    assert stat.S_IMODE(os.stat(tmp_path / "master.pem").st_mode) == 0o400
    assert ha_keys.fingerprint_file(tmp_path / "master.pub") == ha_keys.fingerprint(pub)
    assert not ha_state.plan_master_keypair(str(tmp_path), pem, pub).changed
    pkcs8 = ha_keys.load_private_key(pem).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert b"BEGIN PRIVATE KEY" in pkcs8 and pkcs8.decode() != pem
    assert not ha_state.plan_master_keypair(str(tmp_path), pkcs8.decode()).changed


def test_keypair_target_outside_the_pki_dir_is_refused(keypairs, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    (tmp_path / "outside.pem").write_text("x")
    os.symlink(tmp_path / "outside.pem", pki / "master.pem")
    with pytest.raises(SaltInvocationError, match="outside the pki dir"):
        ha_state.plan_master_keypair(str(pki), keypairs[0][0])


# --- the key pair is replaced as a pair or not at all --------------------------------


def on_disk(folder):
    return {
        path.name: ("link", os.readlink(path)) if path.is_symlink() else (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        for path in folder.iterdir()
    }


@pytest.mark.parametrize("layout", ["3008-symlinks", "plain-files"])
def test_keypair_write_failing_on_the_public_key_leaves_the_old_pair(keypairs, tmp_path, monkeypatch, layout):
    if layout == "3008-symlinks":
        pki = pki_dir_3008(tmp_path / "pki", keypairs[0])
    else:
        pki = tmp_path / "pki"
        pki.mkdir()
        ha_state.apply_plan(ha_state.plan_master_keypair(str(pki), keypairs[0][0]))
    before = on_disk(pki)
    plan = ha_state.plan_master_keypair(str(pki), keypairs[1][0])
    pub_target = os.path.realpath(pki / "master.pub")
    monkeypatch.setattr(os, "replace", failing_replace_for(pub_target, OSError(28, "No space left on device")))
    with pytest.raises(CommandExecutionError) as err:
        ha_state.apply_plan(plan)
    monkeypatch.undo()
    text = str(err.value)
    assert f"cannot write {pub_target!r}" in text and "No space left on device" in text
    assert f"rolled back: {os.path.realpath(pki / 'master.pem')!r}" in text
    assert "PRIVATE" not in text and keypairs[1][0].splitlines()[1] not in text
    assert on_disk(pki) == before  # the old pair, its modes and links; no temp file, no backup
    assert ha_keys.is_pair((pki / "master.pem").read_text(), (pki / "master.pub").read_text())
    assert ha_keys.fingerprint_file(pki / "master.pub") == ha_keys.fingerprint(keypairs[0][1])


# --- returns_engine: the ha_returns engine in the drop-in --------------------------------

BAD_RETURNS_ENGINE = [
    ("yes", "returns_engine 'yes' is not True, False or a mapping"),
    (1, "returns_engine 1 is not True"),
    (None, "returns_engine None is not True"),
    (["ha_returns"], "returns_engine ['ha_returns'] is not True"),
    ({"max_age": 5}, "returns_engine: ha_returns max_age 5 is not a whole number"),
    ({"frobnicate": 1}, "returns_engine: ha_returns has no option 'frobnicate'"),
    ({"directory": "ledger"}, "returns_engine: ha_returns directory 'ledger' is not an absolute path"),
    ({"grace": "soon"}, "'soon'"),
    ({"max_bytes": object()}, "returns_engine:max_bytes is a object"),
]


@pytest.mark.parametrize("value,message", BAD_RETURNS_ENGINE)
def test_returns_engine_options_refuse_bad_values_naming_them(value, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_state.returns_engine_options(value, {})
    assert message in str(err.value)


@pytest.mark.parametrize(
    "value,expected", [(False, None), (True, {}), ({}, {}), ({"max_age": 3600, "grace": 2}, {"max_age": 3600, "grace": 2})]
)
def test_returns_engine_options_are_what_the_dropin_lists(value, expected):
    assert ha_state.returns_engine_options(value, {"cachedir": "/var/cache/salt/minion"}) == expected


WRITES = [{"ha_returns": {}}]
RETURNS_PLANS = [
    # name, {file: content} besides the drop-in, wanted, ("writes", engines, note) | ("kept", note) | ("refused", texts)
    ("no engines anywhere", {}, {}, ("writes", WRITES, None)),
    ("with options", {}, {"max_age": 3600}, ("writes", [{"ha_returns": {"max_age": 3600}}], None)),
    ("an empty list in the config file", {"minion": "engines: []\n"}, {}, ("writes", WRITES, None)),
    ("another drop-in's engines merge", {"minion.d/other.conf": "engines: [foo]\n"}, {},
     ("writes", WRITES, "Salt merges these engines with those of '{root}/minion.d/other.conf'.")),
    ("the config file lists ha_returns", {"minion": "engines: [pytest, ha_returns]\n"}, {},
     ("kept", "ha_returns is already listed under engines in '{root}/minion': not listed a second time.")),
    ("another drop-in lists ha_returns", {"minion.d/other.conf": "engines: [{ha_returns: {max_age: 600}}]\n"}, {},
     ("kept", "ha_returns is already listed under engines in '{root}/minion.d/other.conf'")),
    ("an include file lists ha_returns", {"minion": "include: extra.conf\n", "extra.conf": "engines: [ha_returns]\n"}, {},
     ("kept", "already listed under engines in '{root}/extra.conf'")),
    ("the config file has engines", {"minion": "engines: [pytest]\n"}, {},
     ("refused", ["the config file '{root}/minion' has an engines list of its own",
                  "move that engines list into a minion.d/*.conf drop-in",
                  "or list ha_returns in it and leave returns_engine False"])),
    ("the config file's engines dict", {"minion": "engines: {pytest: {}}\n"}, {},
     ("refused", ["'{root}/minion' has an engines list of its own"])),
    ("the config file's engines are already ignored", {"minion": "engines: [pytest, ha_returns]\n",
                                                       "minion.d/other.conf": "engines: [foo]\n"}, {},
     ("refused", ["which Salt already ignores ('{root}/minion.d/other.conf' sets engines too",
                  "move that engines list into a minion.d/*.conf drop-in"])),
    ("an include file's engines replace the drop-ins'", {"minion": "include: extra.conf\n", "extra.conf": "engines: [foo]\n"}, {},
     ("refused", ["'{root}/extra.conf' (read through include) sets engines", "list ha_returns there"])),
    ("other options elsewhere", {"minion.d/other.conf": "engines: [{ha_returns: {max_age: 600}}]\n"}, {"max_age": 3600},
     ("refused", ["'{root}/minion.d/other.conf' with the options {{'max_age': 600}}, not {{'max_age': 3600}}"])),
    ("invalid options elsewhere", {"minion.d/other.conf": "engines: [{ha_returns: {max_age: 5}}]\n"}, {},
     ("refused", ["'{root}/minion.d/other.conf' lists ha_returns under engines with options the engine refuses",
                  "max_age 5"])),
    ("options elsewhere not a mapping", {"minion.d/other.conf": "engines: [{ha_returns: fast}]\n"}, {},
     ("refused", ["'{root}/minion.d/other.conf' lists ha_returns under engines with options the engine refuses",
                  "'fast' are not a mapping"])),
    ("engines elsewhere not a list", {"minion.d/other.conf": "engines: 5\n"}, {},
     ("refused", ["'{root}/minion.d/other.conf' has an engines option Salt cannot use"])),
]


def write_config(root, files):
    for name, content in files.items():
        (root / name).write_text(("id: m1\n" if name == "minion" else "") + content)


@pytest.mark.parametrize("files,wanted,outcome", [c[1:] for c in RETURNS_PLANS], ids=[c[0] for c in RETURNS_PLANS])
def test_returns_engine_plan_merges_without_losing_or_doubling_an_engine(conf_file, tmp_path, files, wanted, outcome):
    write_config(tmp_path, files)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    options = ha_state.failover_options(MASTERS)
    kind, *expected = outcome
    if kind == "refused":
        with pytest.raises(SaltInvocationError) as err:
            ha_state.plan_minion_failover("ha.conf", conf_file, options, returns_engine=wanted)
        for text in expected[0]:
            assert text.format(root=tmp_path) in str(err.value), str(err.value)
        assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
        return
    plan = ha_state.plan_minion_failover("ha.conf", conf_file, options, returns_engine=wanted)
    (file,) = plan.files
    rendered = yaml.safe_load(file.content)
    if kind == "writes":
        engines, note = expected
        assert rendered["engines"] == engines
        assert plan.changes["engines"] == {"old": None, "new": engines}
        assert [n for n in plan.notes if "Salt merges" in n] == ([note.format(root=tmp_path)] if note else [])
    else:
        assert "engines" not in rendered and "engines" not in plan.changes
        assert any(expected[0].format(root=tmp_path) in n for n in plan.notes), plan.notes
    ha_state.apply_plan(plan)
    again = ha_state.plan_minion_failover("ha.conf", conf_file, options, returns_engine=wanted)
    assert (again.changed, again.changes) == (False, {})
    assert again.notes == plan.notes


def test_returns_engine_leaves_the_dropin_when_another_file_lists_it_later(conf_file, tmp_path):
    options = ha_state.failover_options(MASTERS)
    ha_state.apply_plan(ha_state.plan_minion_failover("ha.conf", conf_file, options, returns_engine={}))
    (tmp_path / "minion.d" / "other.conf").write_text("engines: [ha_returns]\n")
    plan = ha_state.plan_minion_failover("ha.conf", conf_file, options, returns_engine={})
    assert plan.changes == {"engines": {"old": WRITES, "new": None}}
    ha_state.apply_plan(plan)
    read = ha_minion_config.read_minion_config(conf_file)
    assert read.options["engines"] == ["ha_returns"]  # one engine, not two


def test_returns_engine_false_writes_no_engines_whatever_the_config_file_holds(conf_file, tmp_path):
    write_config(tmp_path, {"minion": "engines: [pytest]\n"})
    options = ha_state.failover_options(MASTERS)
    plan = ha_state.plan_minion_failover("ha.conf", conf_file, options)
    assert "engines" not in yaml.safe_load(plan.files[0].content) and plan.notes == ()


def test_returns_engine_quotes_engines_salt_already_ignores(conf_file, tmp_path):
    write_config(tmp_path, {"minion": "engines: [pytest]\n", "minion.d/a.conf": "engines: [ha_returns]\n"})
    plan = ha_state.plan_minion_failover("ha.conf", conf_file, ha_state.failover_options(MASTERS), returns_engine={})
    assert "engines" not in plan.changes
    (warning,) = [n for n in plan.notes if n.startswith("warning: HA411 engines: ")]
    assert f"config file {str(tmp_path / 'minion')!r} sets engines [pytest], which Salt ignores" in warning


EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def render_example_minion_sls(pillar):
    """examples/salt/ha/minion.sls rendered as Salt renders it (jinja, then YAML) with ``pillar``."""
    opts = {**salt.config.DEFAULT_MINION_OPTS, "file_client": "local"}

    def pillar_get(key, default=None):
        return salt.utils.data.traverse_dict_and_list(pillar, key, default, delimiter=":")

    rendered = salt.utils.templates.JINJA(
        str(EXAMPLES / "salt" / "ha" / "minion.sls"), to_str=True, salt={"pillar.get": pillar_get},
        opts=opts, saltenv="base", grains={}, pillar=pillar, sls="ha.minion",
    )
    assert rendered["result"], rendered
    (state,) = yaml.safe_load(rendered["data"]).values()
    return {key: value for item in state["ha.minion_failover"] for key, value in item.items()}


@pytest.mark.parametrize("returns_engine", [None, True, {"max_age": 3600}], ids=["pillar default", "True", "options"])
def test_the_example_state_passes_returns_engine_from_pillar(returns_engine):
    pillar = yaml.safe_load((EXAMPLES / "pillar" / "ha.sls").read_text())
    if returns_engine is not None:
        pillar["ha"]["minion"]["returns_engine"] = returns_engine
    arguments = render_example_minion_sls(pillar)
    assert arguments["returns_engine"] == (False if returns_engine is None else returns_engine)
    expected = None if returns_engine is None else ({} if returns_engine is True else returns_engine)
    assert ha_state.returns_engine_options(arguments["returns_engine"], {}) == expected
