"""Unit tests for ha_files.atomic_write against real files in tmp_path."""

import datetime
import os
import re
import stat

import pytest

import ha_files

BACKUP_NAME = re.compile(r"^(?P<name>.+)\.\d{8}T\d{6}\.\d{6}Z\.bak$")


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def backups(folder, name):
    return sorted(p for p in os.listdir(folder) if (m := BACKUP_NAME.match(p)) and m["name"] == name)


def temp_files(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


@pytest.fixture
def strict_umask():
    """A umask that would strip group/other bits: atomic_write must not depend on it."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.fixture
def minion_conf(tmp_path):
    path = tmp_path / "minion"
    path.write_text("master: m1\n")
    path.chmod(0o640)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o755, 0o400])
def test_new_file_with_mode(tmp_path, strict_umask, mode):
    path = tmp_path / "minion"
    assert ha_files.atomic_write(str(path), "master: m1\n", mode=mode) is None
    assert path.read_text() == "master: m1\n"
    assert mode_of(path) == mode
    assert sorted(os.listdir(tmp_path)) == ["minion"]


def test_new_file_default_mode(tmp_path, strict_umask):
    path = tmp_path / "minion"
    ha_files.atomic_write(str(path), "master: m1\n")
    assert mode_of(path) == 0o644


@pytest.mark.parametrize(
    "data,on_disk",
    [
        ("master: m1\n", b"master: m1\n"),
        ("master: m\u00e9\n", "master: m\u00e9\n".encode("utf-8")),
        (b"\x00\xff binary", b"\x00\xff binary"),
        ("", b""),
        (b"", b""),
    ],
    ids=["str", "utf-8 str", "bytes", "empty str", "empty bytes"],
)
def test_str_and_bytes(tmp_path, data, on_disk):
    path = tmp_path / "minion"
    ha_files.atomic_write(str(path), data)
    assert path.read_bytes() == on_disk


def test_replace_keeps_a_backup(minion_conf):
    saved = ha_files.atomic_write(str(minion_conf), "master: m2\n")
    assert minion_conf.read_text() == "master: m2\n"
    assert mode_of(minion_conf) == 0o640  # the existing mode is kept
    assert os.path.dirname(saved) == str(minion_conf.parent)
    assert BACKUP_NAME.match(os.path.basename(saved))["name"] == "minion"
    assert open(saved, encoding="utf-8").read() == "master: m1\n"
    assert mode_of(saved) == 0o640
    assert backups(minion_conf.parent, "minion") == [os.path.basename(saved)]
    assert temp_files(minion_conf.parent) == []


def test_new_mode_on_replace_backup_keeps_old_mode(minion_conf):
    saved = ha_files.atomic_write(str(minion_conf), "master: m2\n", mode=0o600)
    assert mode_of(minion_conf) == 0o600
    assert mode_of(saved) == 0o640


def test_every_write_keeps_its_own_backup(minion_conf):
    first = ha_files.atomic_write(str(minion_conf), "master: m2\n")
    second = ha_files.atomic_write(str(minion_conf), "master: m3\n")
    assert first != second
    assert backups(minion_conf.parent, "minion") == sorted(os.path.basename(p) for p in (first, second))
    assert [open(p, encoding="utf-8").read() for p in (first, second)] == ["master: m1\n", "master: m2\n"]
    assert minion_conf.read_text() == "master: m3\n"


def test_no_backup(minion_conf):
    assert ha_files.atomic_write(str(minion_conf), "master: m2\n", backup=False) is None
    assert minion_conf.read_text() == "master: m2\n"
    assert sorted(os.listdir(minion_conf.parent)) == ["minion"]


def test_writes_through_a_symlink(tmp_path, minion_conf):
    link = tmp_path / "conf.d" / "minion-link"
    link.parent.mkdir()
    link.symlink_to(minion_conf)
    saved = ha_files.atomic_write(str(link), "master: m2\n")
    assert link.is_symlink()
    assert os.readlink(link) == str(minion_conf)
    assert minion_conf.read_text() == "master: m2\n"
    assert mode_of(minion_conf) == 0o640
    # the backup is of the target, beside the target
    assert os.path.dirname(saved) == str(tmp_path)
    assert BACKUP_NAME.match(os.path.basename(saved))["name"] == "minion"
    assert open(saved, encoding="utf-8").read() == "master: m1\n"
    assert os.listdir(link.parent) == ["minion-link"]


def test_writes_through_a_dangling_symlink(tmp_path):
    link = tmp_path / "minion-link"
    link.symlink_to(tmp_path / "minion")
    assert ha_files.atomic_write(str(link), "master: m1\n") is None
    assert link.is_symlink()
    assert (tmp_path / "minion").read_text() == "master: m1\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_keeps_the_owner(minion_conf):
    os.chown(minion_conf, 65534, 65534)
    saved = ha_files.atomic_write(str(minion_conf), "master: m2\n")
    for path in (minion_conf, saved):
        info = os.stat(path)
        assert (info.st_uid, info.st_gid) == (65534, 65534), path


def test_new_file_is_owned_by_the_writer(tmp_path):
    path = tmp_path / "minion"
    ha_files.atomic_write(str(path), "master: m1\n")
    assert os.stat(path).st_uid == os.geteuid()


def fail_replace(src, dst):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("existing", [True, False], ids=["replace", "create"])
def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch, existing):
    # A failing os.replace (full disk, read-only mount) cannot be made on tmp_path as root.
    path = tmp_path / "minion"
    if existing:
        path.write_text("master: m1\n")
    monkeypatch.setattr(ha_files.os, "replace", fail_replace)
    with pytest.raises(OSError, match="No space left on device"):
        ha_files.atomic_write(str(path), "master: m2\n")
    monkeypatch.undo()
    assert temp_files(tmp_path) == []
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    if existing:
        assert path.read_text() == "master: m1\n"
    else:
        assert not path.exists()


def test_backup_path():
    now = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)
    assert ha_files.backup_path("/etc/salt/minion", now) == "/etc/salt/minion.20240506T070809.123456Z.bak"
