"""
The shared job store recipe (``examples/master.d/job-store-pgjsonb.conf``) as Salt reads
it: a master config Salt loads, and connection options Salt's ``pgjsonb`` returner reads
(a misspelt option would be ignored silently, and the master would talk to
``localhost`` with password ``salt``). The integration test
``tests/integration/test_job_store.py`` runs two real masters on it.
"""

import pytest
import salt.config
import salt.returners.pgjsonb as pgjsonb

from tests.support import postgres

EXAMPLE = postgres.RECIPE
PREFIX = postgres.RECIPE_PREFIX


def example_opts():
    return salt.config.master_config(str(EXAMPLE))


def test_the_recipe_is_a_master_config_on_pgjsonb_with_a_placeholder_password():
    opts = example_opts()
    assert opts["master_job_cache"] == "pgjsonb"
    assert opts[f"{PREFIX}pass"] == "CHANGE-ME"
    assert isinstance(opts["keep_jobs_seconds"], int) and opts["keep_jobs_seconds"] > 0
    assert opts["hash_type"] == "sha256"
    text = EXAMPLE.read_text()
    assert "EVERY master" in text and "ONE PostgreSQL server" in text and "hash_type" in text


def test_pgjsonb_reads_every_connection_option_of_the_recipe(monkeypatch):
    opts = example_opts()
    written = {key[len(PREFIX):]: value for key, value in opts.items() if key.startswith(PREFIX)}
    assert {"host", "port", "db", "user", "pass"} <= set(written)
    monkeypatch.setattr(pgjsonb, "__opts__", opts, raising=False)
    monkeypatch.setattr(pgjsonb, "__salt__", {}, raising=False)
    assert pgjsonb._get_options() == written


def test_the_schema_is_salts_own_without_create_database():
    sql = postgres.pgjsonb_schema()
    for table in ("jids", "salt_returns", "salt_events"):
        assert f"CREATE TABLE {table}" in sql
    assert "CREATE DATABASE" not in sql.upper()


def server(**changes):
    fields = {"host": "127.0.0.1", "port": 54321, "user": "salt", "password": "pw-1", "dbname": "salt",
              "root": None, "pid": 1}
    return postgres.PostgresServer(**{**fields, **changes})


def test_recipe_options_point_the_recipe_at_a_test_server():
    options = postgres.recipe_options(server())
    assert {key: options[PREFIX + key] for key in ("host", "port", "pass", "user", "db")} == {
        "host": "127.0.0.1", "port": 54321, "pass": "pw-1", "user": "salt", "db": "salt"
    }
    assert options["master_job_cache"] == "pgjsonb" and options["keep_jobs_seconds"] == example_opts()["keep_jobs_seconds"]


@pytest.mark.parametrize(
    "text, error",
    [
        pytest.param("master_job_cache: pgjsonb\nreturner.pgjsonb.password: x\n", "no returner.pgjsonb.host", id="misspelt options"),
        pytest.param(EXAMPLE.read_text().replace("returner.pgjsonb.user: salt", "returner.pgjsonb.user: other"),
                     r"names user/db \('other', 'salt'\)", id="another role"),
    ],
)
def test_recipe_options_name_what_does_not_fit(tmp_path, text, error):
    path = tmp_path / "recipe.conf"
    path.write_text(text)
    with pytest.raises(AssertionError, match=error):
        postgres.recipe_options(server(), path=path)
