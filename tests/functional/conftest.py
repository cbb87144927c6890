"""
Functional tests: the real ``ha`` modules loaded through Salt's loader (found via
the pack's ``salt.loader`` entry point), against real files and loopback sockets.
"""

import pytest
from saltfactories.utils.functional import Loaders

from tests.support import fake_master


@pytest.fixture(scope="module")
def answering_master():
    """A master stand-in that answers pings on 127.0.0.1."""
    with fake_master.AnsweringMaster() as master:
        yield master


@pytest.fixture(scope="module")
def publish_port():
    return fake_master.closed_port()


@pytest.fixture(scope="module")
def minion_opts(salt_factories, answering_master, publish_port):
    """Options of a failover minion whose first master answers and whose second refuses."""
    factory = salt_factories.salt_minion_daemon(
        "ha-functional-minion",
        overrides={
            "file_client": "local",
            "master": ["127.0.0.1", "127.0.0.2"],
            "master_type": "failover",
            "master_port": answering_master.port,
            "publish_port": publish_port,
            "master_alive_interval": 10,
            "retry_dns": 0,
        },
    )
    return factory.config.copy()


@pytest.fixture(scope="module")
def loaders(minion_opts):
    return Loaders(minion_opts, loaded_base_name=f"{__name__}.loaded")


@pytest.fixture(autouse=True)
def reset_loaders_state(loaders):
    try:
        yield
    finally:
        loaders.reset_state()


@pytest.fixture(scope="module")
def modules(loaders):
    return loaders.modules
