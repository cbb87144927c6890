"""
Real-daemon harness: two masters on 127.0.0.1 / 127.0.0.2 and a failover minion.

Every wait is bounded; daemons are stopped by pid (salt-factories), never by name.
"""

import pytest

from tests.support import lab as lablib


@pytest.fixture(scope="module")
def ha_lab(salt_factories, tmp_path_factory):
    """
    A running two-master lab shared by the tests of a module. A test that kills a
    master runs last, or the module brings the lab back before each test
    (:func:`tests.support.lab.bring_back`).
    """
    lab = lablib.two_master_lab(salt_factories, tmp_path_factory.mktemp("lab"), "ha-minion-1")
    with lablib.RunningDaemons(lablib.daemons(lab)):
        yield lab

