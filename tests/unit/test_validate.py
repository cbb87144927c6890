"""The validators of ports, timeouts, intervals and flags: every bad value named."""

import pytest
from salt.exceptions import SaltInvocationError

import ha_validate


@pytest.mark.parametrize(
    "value,port",
    [(1, 1), (4506, 4506), (65535, 65535), ("4506", 4506), (" 4506 ", 4506)],
    ids=repr,
)
def test_validate_port_good(value, port):
    assert ha_validate.validate_port(value, "master_port") == port


@pytest.mark.parametrize(
    "value,why",
    [
        (0, "out of range"),
        (-1, "out of range"),
        (65536, "out of range"),
        ("0", "out of range"),
        ("65536", "out of range"),
        ("99999", "out of range"),
        (True, "not a port number"),
        (False, "not a port number"),
        (4506.0, "not a port number"),
        (4506.5, "not a port number"),
        ("4506.0", "not a port number"),
        ("abc", "not a port number"),
        ("", "not a port number"),
        ("05", "not a port number"),
        ("+5", "not a port number"),
        (None, "not a port number"),
        ([4506], "not a port number"),
    ],
    ids=repr,
)
def test_validate_port_bad(value, why):
    with pytest.raises(SaltInvocationError) as err:
        ha_validate.validate_port(value, "master_port")
    assert str(err.value).startswith(f"master_port {value!r} ")
    assert why in str(err.value)



@pytest.mark.parametrize("value, seconds", [(2, 2.0), ("0.5", 0.5), (300, 300.0)], ids=repr)
def test_validate_timeout_good(value, seconds):
    assert ha_validate.validate_timeout(value) == seconds


@pytest.mark.parametrize(
    "value, why",
    [(0, "out of range"), (-1, "out of range"), (301, "out of range"), (True, "not a number"),
     ("soon", "not a number"), (None, "not a number")],
    ids=repr,
)
def test_validate_timeout_bad(value, why):
    with pytest.raises(SaltInvocationError, match=why) as err:
        ha_validate.validate_timeout(value, what="peer timeout")
    assert str(err.value).startswith(f"peer timeout {value!r} ")


@pytest.mark.parametrize(
    "value, why",
    [(0, "out of range (1-86400"), (86401, "out of range"), (True, "not a whole number"), ("10", "not a whole number"),
     (1.5, "not a whole number")],
    ids=repr,
)
def test_validate_seconds_bad(value, why):
    with pytest.raises(SaltInvocationError, match=why.replace("(", r"\(")):
        ha_validate.validate_seconds(value, "alive_interval", 1)
    assert ha_validate.validate_seconds(10, "alive_interval", 1) == 10


def test_validate_flag():
    assert ha_validate.validate_flag(False, "failback") is False
    with pytest.raises(SaltInvocationError, match="failback 'yes' is not True or False"):
        ha_validate.validate_flag("yes", "failback")
