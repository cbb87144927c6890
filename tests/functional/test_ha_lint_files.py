"""``ha.lint`` through Salt's loader on config files Salt cannot read (real files in tmp_path)."""

import pytest
from salt.exceptions import CommandExecutionError


@pytest.fixture
def conf_file(loaders, tmp_path):
    """A minion config of its own with a minion.d/: the loader's conf_file points to it for one test."""
    etc = tmp_path / "etc" / "salt"
    (etc / "minion.d").mkdir(parents=True)
    (etc / "minion").write_text("id: ha-functional-minion\n")
    saved = loaders.opts.get("conf_file")
    loaders.opts["conf_file"] = str(etc / "minion")
    yield etc / "minion"
    loaders.opts["conf_file"] = saved


def test_lint_of_the_running_minion_reports_a_broken_dropin_as_an_error(modules, conf_file):
    assert not [f for f in modules.ha.lint() if f["severity"] == "error"]
    dropin = conf_file.parent / "minion.d" / "failover.conf"
    dropin.write_text("master: [127.0.0.1, 127.0.0.2\nmaster_type: failover\n")
    errors = [f for f in modules.ha.lint() if f["severity"] == "error"]
    assert [(f["id"], f["option"]) for f in errors] == [("HA405", "default_include")]
    assert errors[0]["message"].startswith(f"config file {str(dropin)!r} is not valid YAML: ")
    assert "(line 2, column 12)" in errors[0]["message"]
    assert "exits at start-up" in errors[0]["message"]


def test_lint_of_a_broken_config_path_names_the_file_and_the_error_on_one_line(modules, tmp_path):
    path = tmp_path / "failover\nforged.conf"
    path.write_text("master: [a, b\n")
    with pytest.raises(CommandExecutionError) as err:
        modules.ha.lint(config=str(path))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"config file {str(path)!r} is not valid YAML: ")


def test_lint_of_the_running_minion_follows_include(modules, conf_file):
    """A failover option in a file the config file's include: names is read, as the daemon reads it."""
    extra = conf_file.parent / "extra"
    extra.mkdir()
    (extra / "failover.conf").write_text("auth_timeout: 30\nmaster_alive_intervall: 10\n")
    assert not [f for f in modules.ha.lint() if f["option"] == "auth_timeout"]
    conf_file.write_text("id: ha-functional-minion\ninclude: extra/*.conf\n")
    findings = modules.ha.lint()
    assert [(f["id"], f["severity"]) for f in findings if f["option"] == "auth_timeout"] == [("HA206", "warning")]
    assert [f["id"] for f in findings if f["option"] == "master_alive_intervall"] == ["HA402"]
    assert "auth_timeout is 30 s" in next(f["message"] for f in findings if f["id"] == "HA206")


def test_lint_of_the_running_minion_reads_a_custom_default_include(modules, conf_file):
    """default_include: ha.d/*.conf replaces minion.d/*.conf: only the files it matches are read."""
    (conf_file.parent / "minion.d" / "ignored.conf").write_text("auth_timeout: 30\n")
    (conf_file.parent / "ha.d").mkdir()
    (conf_file.parent / "ha.d" / "failover.conf").write_text("random_master: True\n")
    conf_file.write_text("id: ha-functional-minion\ndefault_include: ha.d/*.conf\n")
    ids = [f["id"] for f in modules.ha.lint()]
    assert "HA209" in ids and "HA206" not in ids, ids
    conf_file.write_text("id: ha-functional-minion\n")
    ids = [f["id"] for f in modules.ha.lint()]
    assert "HA206" in ids and "HA209" not in ids, ids


def test_lint_of_the_running_minion_names_an_engines_list_salt_drops(modules, conf_file):
    """engines in the config file and in a minion.d drop-in: Salt starts only the drop-in's (HA411)."""
    dropin = conf_file.parent / "minion.d" / "engines.conf"
    dropin.write_text("engines: [{ha_health: {port: 4510}}]\n")
    assert not [f for f in modules.ha.lint() if f["id"] == "HA411"]
    conf_file.write_text("id: ha-functional-minion\nengines: [pytest]\n")
    (found,) = [f for f in modules.ha.lint() if f["id"] == "HA411"]
    assert (found["severity"], found["option"]) == ("warning", "engines")
    assert found["message"].startswith(f"config file {str(conf_file)!r} sets engines [pytest], which Salt ignores: ")
    assert repr(str(dropin)) in found["message"]


def test_lint_of_the_running_minion_suggests_the_returns_engine_and_checks_its_options(modules, conf_file):
    """A failover minion without ha_returns: HA501 (info); with bad ha_returns options: HA502 (error)."""
    (found,) = [f for f in modules.ha.lint() if f["id"] == "HA501"]
    assert found["severity"] == "info" and "returns_engine: True" in found["suggestion"]
    dropin = conf_file.parent / "minion.d" / "returns.conf"
    dropin.write_text("engines: [{ha_returns: {max_age: 5}}]\n")
    findings = modules.ha.lint()
    assert [(f["id"], f["severity"]) for f in findings if f["option"] == "engines"] == [("HA502", "error")]
    assert "ha_returns max_age 5 is not a whole number" in findings[0]["message"]
    dropin.write_text("engines: [{ha_returns: {max_age: 3600}}]\n")
    assert not [f for f in modules.ha.lint() if f["option"] == "engines"]
