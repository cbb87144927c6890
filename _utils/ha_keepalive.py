"""
TCP keepalive on the minion's connections to its master: how long a silently dropping
(partitioned) master keeps the minion, and the settings salt-ha recommends.

A partitioned master (packets dropped, nothing closed) keeps the minion's TCP
connections ESTABLISHED: the minion's idle publish connection sends nothing, so only
TCP keepalive notices. Salt sets it on the publish socket from ``tcp_keepalive``,
``tcp_keepalive_idle``, ``tcp_keepalive_intvl`` and ``tcp_keepalive_cnt`` (zeromq:
``salt/transport/zeromq.py`` through ``zmq.TCP_KEEPALIVE*``; tcp: ``_set_tcp_keepalive``);
-1 leaves the kernel's value (Linux: ``net.ipv4.tcp_keepalive_time`` 7200 s,
``_intvl`` 75 s, ``_probes`` 9). The kernel aborts the connection ``idle + cnt x
intvl`` seconds after the last traffic, ZeroMQ reports the disconnect and Salt fails
over (or signs in again at the same address behind a VIP, balancer or DNS name).

Measured (NETNS-LAB.md, network-namespace lab, nftables dropping minion <-> A):
Salt's defaults (300 s idle, the kernel's intvl and probes) never left a partitioned
master within 90 s (988.6 s in a long run); :data:`RECOMMENDED` left it after 15.5 s;
a hung (SIGSTOPped) master's kernel answers the probes, so keepalive never leaves a
hung one. Behind a keepalived VIP the minion answered through B 8.5 s after the VIP
moved with :data:`RECOMMENDED`, never (90 s) with the defaults.
"""

from salt.exceptions import SaltInvocationError

import ha_text
from ha_lint_findings import as_number

RECOMMENDED = {
    "tcp_keepalive": True,
    "tcp_keepalive_idle": 10,
    "tcp_keepalive_intvl": 2,
    "tcp_keepalive_cnt": 3,
}
OPTIONS = tuple(RECOMMENDED)
NUMBER_OPTIONS = ("tcp_keepalive_idle", "tcp_keepalive_intvl", "tcp_keepalive_cnt")
# Linux's defaults for what Salt leaves to the kernel (-1).
KERNEL_DEFAULTS = {"tcp_keepalive_idle": 7200, "tcp_keepalive_intvl": 75, "tcp_keepalive_cnt": 9}
# The kernel's bounds (TCP_KEEPIDLE/TCP_KEEPINTVL <= 32767 s, TCP_KEEPCNT <= 127).
KERNEL_MAXIMA = {"tcp_keepalive_idle": 32767, "tcp_keepalive_intvl": 32767, "tcp_keepalive_cnt": 127}
# Above this a partitioned master keeps the minion longer than a monitoring check tolerates.
SHORT_SECONDS = 30
# Measured figures quoted by findings (NETNS-LAB.md).
MEASURED = {
    "stock": "stock Salt never left a partitioned master within 90 s (988.6 s in a long run)",
    "recommended": "15.5 s with idle 10, intvl 2, cnt 3",
    "vip": "8.5 s after a keepalived VIP moved with idle 10, intvl 2, cnt 3; never (90 s) with Salt's defaults",
}
# ha.minion_failover(tcp_keepalive={...}) keys and the options they set.
STATE_KEYS = {"idle": "tcp_keepalive_idle", "intvl": "tcp_keepalive_intvl", "cnt": "tcp_keepalive_cnt"}


def suggestion():
    """The recommended settings as one line of YAML flow (``tcp_keepalive: True, ...``)."""
    return ", ".join(f"{option}: {value}" for option, value in RECOMMENDED.items())


def effective(options, option):
    """The value the kernel uses for ``option`` (a -1 or unset value: the kernel's default)."""
    value = as_number(options.get(option, -1))
    return value if value > 0 else KERNEL_DEFAULTS[option]


def abort_seconds(options):
    """
    Seconds from the last traffic on an idle connection to a silently dropping master
    until the minion's kernel aborts it (``idle + cnt x intvl``), or None when
    keepalive is off (``tcp_keepalive: False``: never). ``options``: the effective
    minion options (Salt's defaults included: idle 300, intvl and cnt -1).
    """
    if "tcp_keepalive" in options and not options.get("tcp_keepalive"):
        return None
    idle, intvl, cnt = (effective(options, option) for option in NUMBER_OPTIONS)
    return idle + cnt * intvl


def describe(options):
    """``idle 300 s + 9 x 75 s`` in words, naming the values that are the kernel's."""
    idle, intvl, cnt = (effective(options, option) for option in NUMBER_OPTIONS)
    text = f"idle {idle:g} s + {cnt:g} x {intvl:g} s"
    kernel = [option for option in NUMBER_OPTIONS if as_number(options.get(option, -1)) <= 0]
    if kernel:
        text += f" ({', '.join(kernel)} unset or -1: Linux's defaults)"
    return text


def non_integer_options(options):
    """
    ``[(option, value)]`` of keepalive values pyzmq refuses (``setsockopt`` takes
    ints only: 10.0, 2.5 and "10" raise TypeError when Salt sets up the socket).
    """
    bad = []
    for option in OPTIONS:
        if option not in options:
            continue
        value = options[option]
        if option == "tcp_keepalive":
            if not isinstance(value, (bool, int)):
                bad.append((option, value))
        elif isinstance(value, bool) or not isinstance(value, int):
            bad.append((option, value))
    return bad


def state_options(tcp_keepalive):
    """
    The keepalive options ``ha.minion_failover(tcp_keepalive=...)`` writes: ``{}``
    for False (Salt's defaults stay), :data:`RECOMMENDED` for True, or a mapping of
    ``idle``, ``intvl`` and ``cnt`` (whole seconds 1-32767, cnt 1-127; what is left
    out takes the recommended value) with ``tcp_keepalive: True``. Raises
    ``SaltInvocationError`` naming the bad key or value.
    """
    if tcp_keepalive is False:
        return {}
    if tcp_keepalive is True:
        return dict(RECOMMENDED)
    if not isinstance(tcp_keepalive, dict):
        raise SaltInvocationError(
            f"tcp_keepalive {ha_text.shown(tcp_keepalive)} is not True, False or a mapping of idle, intvl, cnt"
        )
    unknown = sorted(ha_text.shown(key) for key in tcp_keepalive if key not in STATE_KEYS)
    if unknown:
        raise SaltInvocationError(
            f"tcp_keepalive key(s) {', '.join(unknown)} unknown (known: {', '.join(STATE_KEYS)})"
        )
    options = dict(RECOMMENDED)
    for key, option in STATE_KEYS.items():
        if key not in tcp_keepalive:
            continue
        value = tcp_keepalive[key]
        maximum = KERNEL_MAXIMA[option]
        if isinstance(value, bool) or not isinstance(value, int):
            raise SaltInvocationError(
                f"tcp_keepalive:{key} {ha_text.shown(value)} is not a whole number (write it unquoted; "
                "pyzmq refuses anything else)"
            )
        if not 1 <= value <= maximum:
            raise SaltInvocationError(f"tcp_keepalive:{key} {value!r} is out of range (1-{maximum})")
        options[option] = value
    return options
