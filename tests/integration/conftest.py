"""
Real-daemon harness: two masters on 127.0.0.1 / 127.0.0.2 and a failover minion.

Every wait is bounded; daemons are stopped by pid (salt-factories), never by name.
"""

import pytest

from tests.support import lab as lablib

pytestmark = pytest.mark.integration


def start_lab(salt_factories, root, minion_id, alive_interval=2):
    """Masters A and B and one failover minion accepted on both; returns the Lab."""
    lab = lablib.Lab(salt_factories, root)
    lab.add_master("a", lablib.LOOPBACK_A)
    lab.add_master("b", lablib.LOOPBACK_B)
    lab.add_failover_minion(minion_id, alive_interval=alive_interval)
    return lab


class Running:
    """Start a lab's daemons in order and stop them all (also on failure)."""

    def __init__(self, lab):
        self.lab = lab
        self.started = []

    def __enter__(self):
        try:
            for factory in [*self.lab.masters.values(), *self.lab.minions.values()]:
                factory.start()
                self.started.append(factory)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.lab

    def __exit__(self, *exc):
        for factory in reversed(self.started):
            lablib.thaw(factory)  # a frozen daemon cannot be terminated cleanly
            factory.terminate()


@pytest.fixture(scope="module")
def ha_lab(salt_factories, tmp_path_factory):
    """A running two-master lab shared by the non-destructive tests of a module."""
    lab = start_lab(salt_factories, tmp_path_factory.mktemp("lab"), "ha-minion-1")
    with Running(lab):
        yield lab


@pytest.fixture
def fresh_lab(salt_factories, tmp_path):
    """A running lab of its own, for tests that kill a master."""
    lab = start_lab(salt_factories, tmp_path, "ha-minion-kill")
    with Running(lab):
        yield lab
