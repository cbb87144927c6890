"""
The network-namespace lab itself (tests/support/netns_lab.py), without daemons: a silent
partition drops both ways and only between the two hosts, heal restores, and leaving the
lab deletes every namespace it made.
"""

import subprocess

import pytest

from tests.support import netns_lab as nl

pytestmark = pytest.mark.integration


def connect_error(source, target, port=9):
    """What a TCP connect from ``source`` to ``target``:``port`` (nothing listens) ends with, from inside ``source``."""
    code = (
        "import socket\ns = socket.socket()\ns.settimeout(0.5)\n"
        f"try:\n    s.connect(({target.address!r}, {port}))\nexcept OSError as err:\n    print(type(err).__name__)\n"
    )
    return source.run(nl.sys.executable, "-c", code).stdout.strip()


def test_partition_isolate_heal_and_teardown(tmp_path):
    with nl.lab_or_skip(tmp_path) as lab:
        a, b, m = lab.add_host("a", 1), lab.add_host("b", 2), lab.add_host("m", 3)
        assert connect_error(m, a) == "ConnectionRefusedError"  # reached: the host answers with a reset
        lab.partition(a, m)
        assert connect_error(m, a) == "TimeoutError"  # silently dropped
        assert connect_error(a, m) == "TimeoutError"
        assert connect_error(m, b) == "ConnectionRefusedError"
        assert connect_error(a, b) == "ConnectionRefusedError"
        lab.isolate(b)
        assert connect_error(a, b) == "TimeoutError"
        assert connect_error(m, a) == "TimeoutError"  # the earlier cut stays
        lab.heal()
        assert connect_error(m, a) == connect_error(a, b) == "ConnectionRefusedError"
        prefix = lab.prefix
        assert sum(name.startswith(prefix) for name in netns_names()) == 4
    assert not [name for name in netns_names() if name.startswith(prefix)]


def netns_names():
    listing = subprocess.run([nl.which("ip"), "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]
