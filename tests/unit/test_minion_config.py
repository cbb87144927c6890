"""
Unit tests for ha_minion_config: the files a salt-minion daemon reads (config file,
default_include, include, nested includes) merged through Salt, and the files Salt
cannot use turned into ha.lint findings (HA405-HA410) instead of exits, crashes or
renamed files.
"""

import os

import pytest
import salt.config

import ha_lint
import ha_minion_config

# A salt-call process's __opts__ stand-in: what _lint_running puts the written options over.
RUNNING_OPTIONS = {
    "master": ["master1.example.com", "master2.example.com"],
    "master_type": "failover",
    "master_alive_interval": 10,
    "retry_dns": 0,
}
FAILOVER_DROPIN = (
    "master: [master1.example.com, master2.example.com]\nmaster_type: failover\n"
    "master_alive_interval: 10\nretry_dns: 0\n"
    # the recommended TCP keepalive (HA221 otherwise)
    "tcp_keepalive: True\ntcp_keepalive_idle: 10\ntcp_keepalive_intvl: 2\ntcp_keepalive_cnt: 3\n"
    # the recommended grains cache (HA804 otherwise)
    "grains_cache: True\ngrains_cache_expiration: 86400\n"
)


def written_keys(conf_file):
    return set(ha_minion_config.read_minion_config(str(conf_file)).options)


def lint_written(conf_file):
    """What ha.lint does for a running minion (_modules/ha.py _lint_running)."""
    written = ha_minion_config.read_minion_config(str(conf_file))
    opts = ha_minion_config.daemon_options(dict(RUNNING_OPTIONS), written.options)
    return ha_lint.lint_options(
        opts, written_keys=set(written.options), resolver=None, config_problems=written.problems
    )


def by_id(findings, finding_id):
    return [f for f in findings if f["id"] == finding_id]


@pytest.fixture
def minion_dir(tmp_path):
    (tmp_path / "minion").write_text("id: m1\n")
    (tmp_path / "minion.d").mkdir()
    (tmp_path / "minion.d" / "ha.conf").write_text(FAILOVER_DROPIN)
    return tmp_path


def test_written_option_keys_reads_minion_d(tmp_path):
    (tmp_path / "minion").write_text("master: [a, b]\nid: m1\n")
    drop_in = tmp_path / "minion.d"
    drop_in.mkdir()
    (drop_in / "ha.conf").write_text("master_type: failover\nmaster_alive_intervall: 10\n")
    (drop_in / "broken.conf").write_text("retry_dns: [0\n")
    (drop_in / "empty.conf").write_text("")
    (drop_in / "notes.txt").write_text("ignored_key: 1\n")
    (drop_in / "dir.conf").mkdir()
    assert written_keys(tmp_path / "minion") == {"master", "id", "master_type", "master_alive_intervall"}


def test_written_option_keys_missing_files(tmp_path):
    assert written_keys(tmp_path / "minion") == set()
    assert ha_minion_config.read_minion_config(None) == ha_minion_config.MinionConfig({}, (), ())


def test_daemon_options_drop_salt_call_cli_overrides():
    salt_call_opts = {"auth_timeout": 60, "master": "a", "id": "m"}
    merged = ha_minion_config.daemon_options(salt_call_opts, {"master": ["a", "b"]})
    assert merged["auth_timeout"] == salt.config.DEFAULT_MINION_OPTS["auth_timeout"]
    assert merged["master"] == ["a", "b"]
    assert ha_minion_config.daemon_options(salt_call_opts, {"auth_timeout": 30})["auth_timeout"] == 30


# --- include and default_include, as Salt reads them ------------------------------------


def test_include_is_followed_relative_to_the_config_file(minion_dir):
    (minion_dir / "minion").write_text("id: m1\ninclude: extra/failover.conf\n")
    (minion_dir / "extra").mkdir()
    (minion_dir / "extra" / "failover.conf").write_text("master_alive_intervall: 10\nauth_timeout: 30\n")
    read = ha_minion_config.read_minion_config(str(minion_dir / "minion"))
    assert read.options["auth_timeout"] == 30
    assert str(minion_dir / "extra" / "failover.conf") in read.files
    findings = lint_written(minion_dir / "minion")
    assert [f["option"] for f in by_id(findings, "HA402")] == ["master_alive_intervall"]
    assert [f["option"] for f in by_id(findings, "HA206")] == ["auth_timeout"]


def test_include_globs_and_nested_includes_are_followed(minion_dir):
    (minion_dir / "minion").write_text(f"id: m1\ninclude: [{minion_dir}/ha/*.conf]\n")
    (minion_dir / "ha").mkdir()
    (minion_dir / "ha" / "a.conf").write_text("random_master: True\ninclude: ../deeper/b.yaml\n")
    (minion_dir / "deeper").mkdir()
    (minion_dir / "deeper" / "b.yaml").write_text("loop_interval: 2\n")
    options = ha_minion_config.read_minion_config(str(minion_dir / "minion")).options
    assert (options["random_master"], options["loop_interval"]) == (True, 2)


def test_later_sources_win_as_in_salt(minion_dir):
    (minion_dir / "minion").write_text("id: m1\nmaster_alive_interval: 1\ninclude: last.conf\n")
    (minion_dir / "minion.d" / "z.conf").write_text("master_alive_interval: 2\n")
    (minion_dir / "last.conf").write_text("master_alive_interval: 3\n")
    assert ha_minion_config.read_minion_config(str(minion_dir / "minion")).options["master_alive_interval"] == 3
    (minion_dir / "last.conf").write_text("")
    assert ha_minion_config.read_minion_config(str(minion_dir / "minion")).options["master_alive_interval"] == 2


def test_the_merge_is_salts_own(minion_dir):
    """Lists of included files are merged by Salt's include_config, not replaced: compare with minion_config."""
    (minion_dir / "minion").write_text("id: m1\ninclude: extra.conf\n")
    (minion_dir / "minion.d" / "ha.conf").write_text("master: [master1.example.com]\nmaster_type: failover\n")
    (minion_dir / "minion.d" / "more.conf").write_text("master: [master2.example.com]\n")
    (minion_dir / "extra.conf").write_text("grains: {roles: [web]}\n")
    ours = ha_minion_config.read_minion_config(str(minion_dir / "minion")).options
    salts = salt.config.minion_config(str(minion_dir / "minion"))
    assert ours["master"] == ["master1.example.com", "master2.example.com"]
    for key in ("master", "master_type", "grains", "id"):
        assert ours[key] == salts[key], key


def test_a_custom_default_include_replaces_minion_d(minion_dir):
    (minion_dir / "minion").write_text("id: m1\ndefault_include: conf.d/*.conf\n")
    (minion_dir / "conf.d").mkdir()
    (minion_dir / "conf.d" / "ha.conf").write_text(FAILOVER_DROPIN + "random_master: True\n")
    (minion_dir / "minion.d" / "ignored.conf").write_text("frobnicate: 1\nretry_dns: [0\n")
    read = ha_minion_config.read_minion_config(str(minion_dir / "minion"))
    assert read.options["random_master"] is True and "frobnicate" not in read.options
    assert read.problems == ()
    findings = lint_written(minion_dir / "minion")
    assert [f["id"] for f in findings] == ["HA209", "HA901"]


def test_an_include_matching_nothing_is_a_warning(minion_dir):
    (minion_dir / "minion").write_text("id: m1\ninclude: [missing.conf, extra/*.conf]\n")
    findings = by_id(lint_written(minion_dir / "minion"), "HA410")
    assert [f["severity"] for f in findings] == ["warning", "warning"]
    assert "'missing.conf', which matches no file" in findings[0]["message"]


@pytest.mark.parametrize("value", ["5", "[failover.conf, 7]", "{a: b}"])
def test_an_include_that_is_not_a_path_is_an_error(minion_dir, value):
    (minion_dir / "minion").write_text(f"id: m1\ninclude: {value}\n")
    (found,) = by_id(lint_written(minion_dir / "minion"), "HA409")
    assert found["severity"] == "error" and found["option"] == "include"
    assert "is not a file path or a list of file paths" in found["message"]


def test_an_include_cycle_is_an_error_not_a_recursion(minion_dir):
    (minion_dir / "minion").write_text("id: m1\ninclude: a.conf\n")
    (minion_dir / "a.conf").write_text("random_master: True\ninclude: b.conf\n")
    (minion_dir / "b.conf").write_text("include: a.conf\n")
    read = ha_minion_config.read_minion_config(str(minion_dir / "minion"))
    assert "random_master" not in read.options  # the whole tree is left out
    (found,) = by_id(lint_written(minion_dir / "minion"), "HA405")
    assert found["message"].startswith(
        f"config file {str(minion_dir / 'b.conf')!r} (included by {str(minion_dir / 'a.conf')!r}) "
        f"includes {str(minion_dir / 'a.conf')!r}, which includes it back"
    )


def test_a_broken_file_of_a_nested_include_is_a_warning(minion_dir):
    """Salt's nested include_config skips a file it cannot parse (logging an error); it does not exit."""
    (minion_dir / "minion.d" / "more.conf").write_text("random_master: True\ninclude: ../nested.conf\n")
    (minion_dir / "nested.conf").write_text("retry_dns: [0\n")
    findings = lint_written(minion_dir / "minion")
    assert not [f for f in findings if f["severity"] == "error"]
    (found,) = by_id(findings, "HA408")
    assert (found["severity"], found["option"]) == ("warning", "default_include")
    assert f"(included by {str(minion_dir / 'minion.d' / 'more.conf')!r})" in found["message"]


# --- files Salt cannot use are findings, not skipped ---------------------------------


BROKEN_DROPINS = [
    ("invalid YAML", "broken.conf", "retry_dns: [0\n", "is not valid YAML: ", "(line 2, column 1)"),
    ("a list", "list.conf", "- master\n- failover\n", "holds a list, not a mapping of options", ""),
    ("a scalar", "scalar.conf", "failover\n", "holds a str, not a mapping of options", ""),
    ("a duplicate key", "dup.conf", "retry_dns: 0\nretry_dns: 1\n", "is not valid YAML: ", "conflicting ID 'retry_dns'"),
    ("not UTF-8", "binary.conf", b"retry_dns: \xff\n", "cannot be read: it is not UTF-8 text", "invalid start byte"),
    ("a directory", "dir.conf", None, "is a directory", ""),
]


@pytest.mark.parametrize(
    "name,content,problem,detail", [c[1:] for c in BROKEN_DROPINS], ids=[c[0] for c in BROKEN_DROPINS]
)
def test_a_dropin_salt_cannot_read_is_an_error_naming_file_and_problem(minion_dir, name, content, problem, detail):
    path = minion_dir / "minion.d" / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    findings = lint_written(minion_dir / "minion")
    (found,) = [f for f in findings if f["severity"] == "error"]
    assert (found["id"], found["option"]) == ("HA405", "default_include")
    assert found["message"].startswith(f"config file {str(path)!r} {problem}")
    assert detail in found["message"]
    assert "the salt-minion exits at start-up" in found["message"]
    assert str(path) in found["suggestion"] and "minion.d/*.conf" in found["suggestion"]
    assert "\n" not in found["message"]
    assert written_keys(minion_dir / "minion") == {
        "id", "master", "master_type", "master_alive_interval", "retry_dns",
        "tcp_keepalive", "tcp_keepalive_idle", "tcp_keepalive_intvl", "tcp_keepalive_cnt",
        "grains_cache", "grains_cache_expiration",
    }


def test_a_broken_main_config_file_is_an_error_too(minion_dir):
    (minion_dir / "minion").write_text("id: m1\nmaster: [a\n")
    findings = lint_written(minion_dir / "minion")
    (found,) = [f for f in findings if f["severity"] == "error"]
    assert (found["id"], found["option"]) == ("HA405", "conf_file")
    assert found["message"].startswith(f"config file {str(minion_dir / 'minion')!r} is not valid YAML: ")


def test_a_broken_schedule_file_is_a_warning_and_is_not_renamed(minion_dir):
    """Salt renames a broken _schedule.conf to _schedule.confYAMLError and starts without it; lint does not."""
    path = minion_dir / "minion.d" / "_schedule.conf"
    path.write_text("schedule: {job: [\n")
    findings = lint_written(minion_dir / "minion")
    assert not [f for f in findings if f["severity"] == "error"]
    (found,) = [f for f in findings if f["option"] == "default_include"]
    assert (found["id"], found["severity"]) == ("HA406", "warning")
    assert "runs without the schedule" in found["message"]
    assert found["message"].startswith(f"config file {str(path)!r} is not valid YAML")
    assert sorted(os.listdir(minion_dir / "minion.d")) == ["_schedule.conf", "ha.conf"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_dropin_is_a_warning(minion_dir):
    path = minion_dir / "minion.d" / "secret.conf"
    path.write_text("retry_dns: 0\n")
    path.chmod(0)
    (found,) = [f for f in lint_written(minion_dir / "minion") if f["option"] == "default_include"]
    assert found["severity"] == "warning" and "cannot be read by this process" in found["message"]
    assert found["id"] == "HA407"


@pytest.mark.parametrize("content", ["", "# nothing\n", "false\n", "[]\n", "---\n"])
def test_an_empty_or_false_document_is_no_options_as_salt_reads_it(minion_dir, content):
    (minion_dir / "minion.d" / "empty.conf").write_text(content)
    assert [f["severity"] for f in lint_written(minion_dir / "minion")] == ["info"]


def test_a_missing_config_file_is_no_finding(tmp_path):
    read = ha_minion_config.read_minion_config(str(tmp_path / "minion"))
    assert (read.options, read.problems) == ({}, ())


def test_a_file_name_with_a_newline_cannot_forge_a_line(minion_dir):
    path = minion_dir / "minion.d" / "x\nERROR forged.conf"
    path.write_text("master: [a\n")
    (found,) = [f for f in lint_written(minion_dir / "minion") if f["severity"] == "error"]
    assert "\n" not in found["message"] and "\n" not in found["suggestion"]
    assert repr(str(path)) in found["message"]


def test_a_glob_character_in_a_file_name_reads_that_file_only(minion_dir):
    (minion_dir / "minion.d" / "[ab].conf").write_text("random_master: True\n")
    (minion_dir / "minion.d" / "a.conf").write_text("loop_interval: 2\n")
    options = ha_minion_config.read_minion_config(str(minion_dir / "minion")).options
    assert (options["random_master"], options["loop_interval"]) == (True, 2)


# --- engines lists Salt drops: one layer replaces another (HA411) ---------------------

REPLACED_CASES = [
    # name, {file: content}, [(file whose engines Salt drops, (files that replace them))]
    ("config file and a drop-in", {"minion": "engines: [pytest]\n", "minion.d/a.conf": "engines: [{foo: {}}]\n"},
     [("minion", ("minion.d/a.conf",))]),
    ("a drop-in's empty list replaces too", {"minion": "engines: [pytest]\n", "minion.d/a.conf": "engines: []\n"},
     [("minion", ("minion.d/a.conf",))]),
    ("two drop-ins", {"minion": "engines: {pytest: {}}\n", "minion.d/a.conf": "engines: [foo]\n",
                      "minion.d/b.conf": "engines: [bar]\n"},
     [("minion", ("minion.d/a.conf", "minion.d/b.conf"))]),
    ("an include file replaces the drop-ins", {"minion": "include: extra.conf\n", "minion.d/a.conf": "engines: [foo]\n",
                                               "extra.conf": "engines: [bar]\n"},
     [("minion.d/a.conf", ("extra.conf",))]),
    ("an include file replaces the config file", {"minion": "include: extra.conf\nengines: [pytest]\n",
                                                  "extra.conf": "engines: [bar]\n"},
     [("minion", ("extra.conf",))]),
    ("the config file alone", {"minion": "engines: [pytest]\n"}, []),
    ("drop-ins only: Salt merges them", {"minion.d/a.conf": "engines: [foo]\n", "minion.d/b.conf": "engines: [bar]\n"}, []),
    ("an empty list in the config file loses nothing", {"minion": "engines: []\n", "minion.d/a.conf": "engines: [foo]\n"}, []),
    ("other options are layered as Salt does", {"minion": "master: a\n", "minion.d/a.conf": "master: [a, b]\n"}, []),
]


def engine_names(engines):
    return {name for item in engines for name in (item if isinstance(item, dict) else [item])}


@pytest.mark.parametrize("files,expected", [c[1:] for c in REPLACED_CASES], ids=[c[0] for c in REPLACED_CASES])
def test_an_engines_list_salt_drops_is_a_replaced_problem_and_a_warning(tmp_path, files, expected):
    (tmp_path / "minion.d").mkdir()
    (tmp_path / "minion").write_text("id: m1\n")
    for name, content in files.items():
        path = tmp_path / name
        path.write_text(("id: m1\n" if name == "minion" else "") + content)
    read = ha_minion_config.read_minion_config(str(tmp_path / "minion"))
    replaced = [p for p in read.problems if p.effect == ha_minion_config.REPLACED]
    assert [(p.path, p.replaced_by) for p in replaced] == [
        (str(tmp_path / lost), tuple(str(tmp_path / name) for name in by)) for lost, by in expected
    ]
    assert not any(p.fatal for p in replaced)
    # what Salt itself starts: none of the dropped list's engines
    salts = salt.config.minion_config(str(tmp_path / "minion"))
    assert read.options.get("engines", salts["engines"]) == salts["engines"]
    for problem in replaced:
        own = next(s.options["engines"] for s in read.sources if s.path == problem.path)
        assert not engine_names(own if isinstance(own, list) else [own]) & engine_names(salts["engines"])
    findings = by_id(lint_written(tmp_path / "minion"), "HA411")
    assert [(f["severity"], f["option"]) for f in findings] == [("warning", "engines")] * len(expected)
    for finding, (lost, by) in zip(findings, expected, strict=True):
        assert finding["message"].startswith(f"config file {str(tmp_path / lost)!r} sets engines [")
        assert "which Salt ignores" in finding["message"]
        assert all(repr(str(tmp_path / name)) in finding["message"] for name in by)
        assert "minion.d/*.conf drop-ins, where Salt merges them" in finding["suggestion"]


def test_sources_hold_each_files_own_options_in_salts_order(minion_dir):
    (minion_dir / "minion").write_text("id: m1\ninclude: extra.conf\nengines: [pytest]\n")
    (minion_dir / "minion.d" / "b.conf").write_text("engines: [bar]\ninclude: ../nested.conf\n")
    (minion_dir / "nested.conf").write_text("loop_interval: 2\n")
    (minion_dir / "extra.conf").write_text("random_master: True\n")
    read = ha_minion_config.read_minion_config(str(minion_dir / "minion"))
    assert [(s.path, s.layer, s.included_by) for s in read.sources] == [
        (str(minion_dir / "minion"), "conf_file", None),
        (str(minion_dir / "minion.d" / "b.conf"), "default_include", None),
        (str(minion_dir / "minion.d" / ".." / "nested.conf"), "default_include", str(minion_dir / "minion.d" / "b.conf")),
        (str(minion_dir / "minion.d" / "ha.conf"), "default_include", None),
        (str(minion_dir / "extra.conf"), "include", None),
    ]
    assert read.files == tuple(s.path for s in read.sources)
    assert read.sources[1].options == {"engines": ["bar"], "include": "../nested.conf"}
    assert [s.path for s in ha_minion_config.kept_sources(read.sources, "engines")] == [str(minion_dir / "minion.d" / "b.conf")]
    assert ha_minion_config.kept_sources(read.sources, "beacons") == []


def test_daemon_options_keep_the_running_absolute_paths_for_relative_written_ones():
    # Salt prefixes root_dir to a relative cachedir/pki_dir; the written file still says "cache"
    running = {"cachedir": "/srv/minion/cache", "pki_dir": "/srv/minion/pki", "root_dir": "/srv/minion"}
    merged = ha_minion_config.daemon_options(running, {"cachedir": "cache", "pki_dir": "/etc/other/pki"})
    assert merged["cachedir"] == "/srv/minion/cache"
    assert merged["pki_dir"] == "/etc/other/pki"
