"""Unit tests for ha_config_file: one Salt config file read as Salt reads it, problems in one escaped line."""

import os

import pytest
from salt.exceptions import CommandExecutionError

import ha_config_file


def test_load_config_file_reads_a_mapping(tmp_path):
    path = tmp_path / "minion"
    path.write_text("master: [a, b]\nmaster_type: failover\n")
    assert ha_config_file.load_config_file(str(path)) == {"master": ["a", "b"], "master_type": "failover"}


def test_load_config_file_empty_is_empty_dict(tmp_path):
    path = tmp_path / "minion"
    path.write_text("# nothing yet\n")
    assert ha_config_file.load_config_file(str(path)) == {}


@pytest.mark.parametrize(
    "name,content,match,kind",
    [
        ("missing", None, "does not exist", ha_config_file.MISSING),
        ("dir", "<dir>", "is a directory", ha_config_file.DIRECTORY),
        ("bad-yaml", "master: [a, b\nmaster_type: failover\n", "not valid YAML", ha_config_file.INVALID_YAML),
        ("list", "- master\n- failover\n", "holds a list, not a mapping", ha_config_file.NOT_A_MAPPING),
        ("scalar", "failover\n", "holds a str, not a mapping", ha_config_file.NOT_A_MAPPING),
        ("binary", b"\xff\xfe\x00master", "cannot be read", ha_config_file.NOT_UTF8),
        ("empty-name", "<empty name>", "is not a file path", ha_config_file.NOT_A_PATH),
    ],
)
def test_load_config_file_bad_input(tmp_path, name, content, match, kind):
    path = tmp_path / name
    if content == "<empty name>":
        path = ""
    elif content == "<dir>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CommandExecutionError, match=match) as info:
        ha_config_file.load_config_file(str(path))
    assert str(path) in str(info.value)
    assert info.value.kind == kind


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_load_config_file_unreadable(tmp_path):
    path = tmp_path / "minion"
    path.write_text("master: a\n")
    path.chmod(0)
    with pytest.raises(CommandExecutionError, match="cannot be read") as info:
        ha_config_file.load_config_file(str(path))
    assert (info.value.kind, info.value.fatal) == (ha_config_file.UNREADABLE, False)


def test_a_broken_schedule_file_is_not_fatal_and_keeps_its_name(tmp_path):
    """Salt renames a broken _schedule.conf and starts without it; reading it here renames nothing."""
    path = tmp_path / "_schedule.conf"
    path.write_text("schedule: {job: [\n")
    with pytest.raises(ha_config_file.ConfigFileError) as info:
        ha_config_file.load_config_file(str(path))
    assert (info.value.kind, info.value.fatal) == (ha_config_file.INVALID_YAML, False)
    assert sorted(os.listdir(tmp_path)) == ["_schedule.conf"]


def test_load_config_file_errors_are_one_escaped_line(tmp_path):
    path = tmp_path / "bad\nname.conf"
    path.write_text("master: [a, b\nmaster_type: failover\n")
    with pytest.raises(ha_config_file.ConfigFileError) as info:
        ha_config_file.load_config_file(str(path))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"config file {str(path)!r} is not valid YAML: ")
    assert "did not find expected ',' or ']' (line 2, column 12)" in text
    assert isinstance(info.value, CommandExecutionError)


@pytest.mark.parametrize("path", [0, 5, None, ["/etc/salt/minion"]])
def test_load_config_file_refuses_what_is_not_a_path(path):
    with pytest.raises(ha_config_file.ConfigFileError, match="is not a file path") as info:
        ha_config_file.load_config_file(path)
    assert repr(path) in str(info.value)
