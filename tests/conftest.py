"""Root conftest: ``_utils`` importable as Salt's loader makes it, quiet logging, factories config."""

import logging
import os
import pathlib
import shutil
import sys
import tempfile

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
def salt_factories_config():
    """
    Keyword arguments for salt-factories' FactoriesManager. The root is a short
    /tmp/sha-XXXXXXXX rather than pytest's tmp_path: Salt's IPC sockets live under
    each daemon's root and AF_UNIX paths end at 107 bytes.
    """
    root = pathlib.Path(tempfile.mkdtemp(prefix="sha-"))
    yield {
        "root_dir": root,
        "inject_sitecustomize": False,
        "start_timeout": 120 if os.environ.get("CI") else 60,
    }
    shutil.rmtree(root, ignore_errors=True)
