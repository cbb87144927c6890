"""Root conftest: ``_utils`` importable as Salt's loader makes it, quiet logging, factories config."""

import logging
import os
import pathlib
import sys

import pytest
import salt._logging.impl

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
UTILS_DIR = REPO_ROOT / "_utils"
if str(UTILS_DIR) not in sys.path:
    sys.path.insert(0, str(UTILS_DIR))

# Reset the root logger to its default level (salt changes it) and drop the handlers
# salt installs: they write to streams salt-factories closes, which prints
# "Logging error" tracebacks. Use --log-cli-level=<level> to see logs.
logging.root.setLevel(logging.WARNING)
salt._logging.impl.shutdown_temp_handler()
for _handler in logging.root.handlers[:]:
    logging.root.removeHandler(_handler)
    _handler.close()


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """Keyword arguments for salt-factories' FactoriesManager."""
    return {
        "root_dir": tmp_path_factory.mktemp("salt-factories"),
        "inject_sitecustomize": False,
        "start_timeout": 120 if os.environ.get("CI") else 60,
    }
