"""Unit tests for ha_files.atomic_write against real files in tmp_path."""

import datetime
import os
import re
import stat

import pytest

import ha_files
from tests.support.pki_dirs import failing_replace_for

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


# --- several files together: atomic_write_all -------------------------------------------


@pytest.fixture
def pair(tmp_path):
    """A key-pair-like couple of files: a private one (0400) and a public one (0644)."""
    pem, pub = tmp_path / "master.pem", tmp_path / "master.pub"
    pem.write_text("old private\n")
    pem.chmod(0o400)
    pub.write_text("old public\n")
    pub.chmod(0o644)
    return pem, pub


def snapshot(folder):
    """Every entry of ``folder``: symlink target, or (bytes, mode) of a file."""
    entries = {}
    for path in sorted(folder.iterdir()):
        if path.is_symlink():
            entries[path.name] = ("link", os.readlink(path))
        else:
            entries[path.name] = (path.read_bytes(), mode_of(path))
    return entries


def test_write_all_replaces_every_file_and_keeps_each_backup(pair):
    pem, pub = pair
    saved = ha_files.atomic_write_all([(str(pem), "new private\n", 0o400), (str(pub), "new public\n", None)])
    assert (pem.read_text(), pub.read_text()) == ("new private\n", "new public\n")
    assert (mode_of(pem), mode_of(pub)) == (0o400, 0o644)
    assert [open(path, encoding="utf-8").read() for path in saved] == ["old private\n", "old public\n"]
    assert [mode_of(path) for path in saved] == [0o400, 0o644]
    assert temp_files(pem.parent) == []


def test_write_all_restores_both_files_when_the_second_cannot_be_replaced(pair, monkeypatch):
    pem, pub = pair
    before = snapshot(pem.parent)
    monkeypatch.setattr(ha_files.os, "replace", failing_replace_for(pub))
    with pytest.raises(ha_files.WriteError) as info:
        ha_files.atomic_write_all([(str(pem), "new private\n", 0o400), (str(pub), "new public\n", 0o644)])
    monkeypatch.undo()
    message = str(info.value)
    assert f"cannot write {str(pub)!r} (replacing it with the staged file): Read-only file system" in message
    assert f"rolled back: {str(pem)!r} hold their previous version again" in message
    assert isinstance(info.value, OSError) and info.value.errno == 30
    assert snapshot(pem.parent) == before  # the old pair, same modes, no temp file, no backup


def test_write_all_through_symlinks_restores_the_targets_and_keeps_the_links(tmp_path, monkeypatch):
    """Salt 3008: master.pem/master.pub are symlinks to <id>.pem/<id>.pub."""
    for name, text in (("ha-master.pem", "old private\n"), ("ha-master.pub", "old public\n")):
        (tmp_path / name).write_text(text)
    (tmp_path / "master.pem").symlink_to(tmp_path / "ha-master.pem")
    (tmp_path / "master.pub").symlink_to(tmp_path / "ha-master.pub")
    before = snapshot(tmp_path)
    monkeypatch.setattr(ha_files.os, "replace", failing_replace_for(tmp_path / "ha-master.pub"))
    writes = [(str(tmp_path / "master.pem"), "new private\n", 0o400), (str(tmp_path / "master.pub"), "new\n", 0o644)]
    with pytest.raises(ha_files.WriteError, match="ha-master.pub"):
        ha_files.atomic_write_all(writes)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    saved = ha_files.atomic_write_all(writes)
    assert (tmp_path / "master.pem").is_symlink() and (tmp_path / "ha-master.pem").read_text() == "new private\n"
    assert [os.path.dirname(path) for path in saved] == [str(tmp_path)] * 2


def test_write_all_removes_a_file_it_created_when_the_next_fails(tmp_path, monkeypatch):
    new, existing = tmp_path / "master.pem", tmp_path / "master.pub"
    existing.write_text("old public\n")
    before = snapshot(tmp_path)
    monkeypatch.setattr(ha_files.os, "replace", failing_replace_for(existing))
    with pytest.raises(ha_files.WriteError, match="rolled back"):
        ha_files.atomic_write_all([(str(new), "new private\n", 0o400), (str(existing), "new public\n", None)])
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert not new.exists()


def test_write_all_stages_everything_before_replacing_anything(pair):
    """A write that cannot even be staged (its folder is gone) changes nothing."""
    pem, _ = pair
    before = snapshot(pem.parent)
    missing = pem.parent / "gone" / "master.pub"
    with pytest.raises(ha_files.WriteError) as info:
        ha_files.atomic_write_all([(str(pem), "new private\n", 0o400), (str(missing), "new public\n", 0o644)])
    assert str(info.value).startswith(f"cannot write {str(missing)!r} (staging a temp file): ")
    assert str(info.value).endswith("; nothing changed")
    assert snapshot(pem.parent) == before


def test_write_all_says_what_is_left_when_the_rollback_fails_too(pair, monkeypatch):
    pem, pub = pair
    real_replace = os.replace

    def replace(src, dst):
        if str(dst) == str(pub) or str(src).endswith(".bak"):
            raise OSError(5, "Input/output error")  # the pub write, then the pem restore
        return real_replace(src, dst)

    monkeypatch.setattr(ha_files.os, "replace", replace)
    with pytest.raises(ha_files.WriteError) as info:
        ha_files.atomic_write_all([(str(pem), "new private\n", 0o400), (str(pub), "new public\n", 0o644)])
    monkeypatch.undo()
    message = str(info.value)
    (kept,) = backups(pem.parent, "master.pem")
    assert f"ROLLBACK FAILED: {str(pem)!r} holds the new version (Input/output error)" in message
    assert f"its previous version is in {str(pem.parent / kept)!r}" in message
    assert (pem.parent / kept).read_text() == "old private\n" and mode_of(pem.parent / kept) == 0o400
    assert pem.read_text() == "new private\n" and pub.read_text() == "old public\n"
    assert temp_files(pem.parent) == [] and backups(pem.parent, "master.pub") == []


def test_write_all_rolls_back_on_an_interrupt_and_reraises_it(pair, monkeypatch):
    pem, pub = pair
    before = snapshot(pem.parent)
    monkeypatch.setattr(ha_files.os, "replace", failing_replace_for(pub, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ha_files.atomic_write_all([(str(pem), "new private\n", 0o400), (str(pub), "new public\n", 0o644)])
    monkeypatch.undo()
    assert snapshot(pem.parent) == before


def test_write_all_without_backup_keeps_no_copy(pair):
    pem, pub = pair
    assert ha_files.atomic_write_all([(str(pem), "a\n", 0o400), (str(pub), "b\n", 0o644)], backup=False) == [None, None]
    assert sorted(os.listdir(pem.parent)) == ["master.pem", "master.pub"]


def test_a_backup_that_cannot_be_written_changes_nothing_and_leaves_no_half_copy(pair, monkeypatch):
    pem, pub = pair
    before = snapshot(pem.parent)
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 4:  # two staged files, the pem's backup, then the pub's backup
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(ha_files.os, "fsync", fsync)
    with pytest.raises(ha_files.WriteError) as info:
        ha_files.atomic_write_all([(str(pem), "new private\n", 0o400), (str(pub), "new public\n", 0o644)])
    monkeypatch.undo()
    assert str(info.value) == (
        f"cannot write {str(pub)!r} (keeping its previous version): No space left on device; nothing changed"
    )
    assert snapshot(pem.parent) == before
