"""Unit tests for ha_keepalive: the time a partitioned master keeps the minion, and the state's options."""

import pytest
from salt.exceptions import SaltInvocationError

import ha_keepalive


@pytest.mark.parametrize(
    "options, seconds",
    [
        ({}, 7200 + 9 * 75),  # nothing set: the kernel's values
        ({"tcp_keepalive": True, "tcp_keepalive_idle": 300, "tcp_keepalive_intvl": -1, "tcp_keepalive_cnt": -1}, 975),
        (ha_keepalive.RECOMMENDED, 16),
        ({"tcp_keepalive_idle": 10, "tcp_keepalive_intvl": 2, "tcp_keepalive_cnt": 3}, 16),
        ({"tcp_keepalive": False, "tcp_keepalive_idle": 10}, None),
        ({"tcp_keepalive": 0}, None),
        ({"tcp_keepalive_idle": "20", "tcp_keepalive_intvl": 0, "tcp_keepalive_cnt": 1}, 20 + 75),
    ],
)
def test_abort_seconds(options, seconds):
    assert ha_keepalive.abort_seconds(options) == seconds


def test_describe_names_the_kernel_defaults():
    assert ha_keepalive.describe(ha_keepalive.RECOMMENDED) == "idle 10 s + 3 x 2 s"
    assert ha_keepalive.describe({"tcp_keepalive_idle": 300, "tcp_keepalive_cnt": -1}) == (
        "idle 300 s + 9 x 75 s (tcp_keepalive_intvl, tcp_keepalive_cnt unset or -1: Linux's defaults)"
    )


def test_non_integer_options_are_what_pyzmq_refuses():
    zmq = pytest.importorskip("zmq")
    options = {"tcp_keepalive": True, "tcp_keepalive_idle": 10.0, "tcp_keepalive_intvl": "2", "tcp_keepalive_cnt": 3}
    assert ha_keepalive.non_integer_options(options) == [("tcp_keepalive_idle", 10.0), ("tcp_keepalive_intvl", "2")]
    context = zmq.Context()
    try:
        sock = context.socket(zmq.SUB)
        for option, value in options.items():
            name = {"tcp_keepalive": "TCP_KEEPALIVE", "tcp_keepalive_idle": "TCP_KEEPALIVE_IDLE",
                    "tcp_keepalive_intvl": "TCP_KEEPALIVE_INTVL", "tcp_keepalive_cnt": "TCP_KEEPALIVE_CNT"}[option]
            refused = (option, value) in ha_keepalive.non_integer_options(options)
            if refused:
                with pytest.raises(TypeError):
                    sock.setsockopt(getattr(zmq, name), value)
            else:
                sock.setsockopt(getattr(zmq, name), value)
        sock.close(linger=0)
    finally:
        context.term()


@pytest.mark.parametrize(
    "value, expected",
    [
        (False, {}),
        (True, ha_keepalive.RECOMMENDED),
        ({}, ha_keepalive.RECOMMENDED),
        ({"idle": 20}, {**ha_keepalive.RECOMMENDED, "tcp_keepalive_idle": 20}),
        ({"idle": 5, "intvl": 1, "cnt": 127}, {"tcp_keepalive": True, "tcp_keepalive_idle": 5, "tcp_keepalive_intvl": 1, "tcp_keepalive_cnt": 127}),
    ],
)
def test_state_options(value, expected):
    assert ha_keepalive.state_options(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("yes", "tcp_keepalive 'yes' is not True, False or a mapping of idle, intvl, cnt"),
        (1, "tcp_keepalive 1 is not True, False or a mapping"),
        ({"idel": 10}, "tcp_keepalive key(s) 'idel' unknown (known: idle, intvl, cnt)"),
        ({"idle": 0}, "tcp_keepalive:idle 0 is out of range (1-32767)"),
        ({"cnt": 128}, "tcp_keepalive:cnt 128 is out of range (1-127)"),
        ({"intvl": 2.5}, "tcp_keepalive:intvl 2.5 is not a whole number"),
        ({"idle": "10"}, "tcp_keepalive:idle '10' is not a whole number"),
        ({"cnt": True}, "tcp_keepalive:cnt True is not a whole number"),
    ],
)
def test_bad_state_options_name_the_value(value, message):
    with pytest.raises(SaltInvocationError) as err:
        ha_keepalive.state_options(value)
    assert message in str(err.value)
