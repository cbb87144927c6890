"""The PostgreSQL test helper: where it finds the server, and that it never skips silently."""

import pytest

from tests.support import postgres

TOOLS = ("initdb", "pg_ctl", "postgres")


def fake_bin(folder, tools=TOOLS):
    folder.mkdir(parents=True)
    for tool in tools:
        path = folder / tool
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return folder


@pytest.mark.parametrize(
    "versions, complete, expected",
    [
        pytest.param(["13", "15", "9.6"], {"13", "15", "9.6"}, "15", id="newest major"),
        pytest.param(["15", "16"], {"15"}, "15", id="a folder without all tools is passed over"),
        pytest.param(["9.6", "10"], {"9.6", "10"}, "10", id="numeric, not text order"),
    ],
)
def test_find_bin_dir_takes_the_newest_complete_debian_folder(tmp_path, monkeypatch, versions, complete, expected):
    for version in versions:
        fake_bin(tmp_path / "postgresql" / version / "bin", TOOLS if version in complete else ("initdb",))
    monkeypatch.setattr(postgres, "BIN_DIR_GLOB", str(tmp_path / "postgresql" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert postgres.find_bin_dir() == tmp_path / "postgresql" / expected / "bin"


def test_find_bin_dir_prefers_path(tmp_path, monkeypatch):
    on_path = fake_bin(tmp_path / "local" / "bin")
    fake_bin(tmp_path / "postgresql" / "99" / "bin")
    monkeypatch.setattr(postgres, "BIN_DIR_GLOB", str(tmp_path / "postgresql" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(on_path))
    assert postgres.find_bin_dir() == on_path


def test_no_server_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "BIN_DIR_GLOB", str(tmp_path / "none" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(postgres.PostgresUnavailable, match="install the Debian package postgresql"):
        postgres.find_bin_dir()


def unavailable():
    raise postgres.PostgresUnavailable("no initdb here (test)")


def test_unavailable_server_skips_loudly(monkeypatch):
    monkeypatch.setattr(postgres, "find_bin_dir", unavailable)
    monkeypatch.delenv("SALT_HA_REQUIRE_POSTGRES", raising=False)
    with pytest.warns(pytest.PytestWarning, match="job store tests NOT run: no initdb here"):
        with pytest.raises(pytest.skip.Exception, match="no initdb here"):
            with postgres.postgres_or_skip():
                pytest.fail("entered without a server")


def test_unavailable_server_fails_when_required(monkeypatch):
    monkeypatch.setattr(postgres, "find_bin_dir", unavailable)
    monkeypatch.setenv("SALT_HA_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="no initdb here"):
        with postgres.postgres_or_skip():
            pass
