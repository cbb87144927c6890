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



@pytest.mark.parametrize("value,expected", [("2", 2.0), (2, 2.0), (0.5, 0.5), ("0.25", 0.25), (300, 300.0)], ids=repr)
def test_validate_timeout_good(value, expected):
    result = ha_validate.validate_timeout(value)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value", ["abc", "", 0, "0", -1, 301, 1e9, float("nan"), True, False, None, [2]], ids=repr
)
def test_validate_timeout_bad(value):
    with pytest.raises(SaltInvocationError) as err:
        ha_validate.validate_timeout(value)
    assert str(err.value).startswith(f"timeout {value!r} ")


def test_validate_timeout_names_the_option():
    with pytest.raises(SaltInvocationError, match="^probe_timeout 'x' "):
        ha_validate.validate_timeout("x", what="probe_timeout")


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
