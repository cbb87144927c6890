"""
The worst-case time a minion needs to fail over with given settings, computed from
what Salt 3008's ``salt/minion.py`` does and the figures measured with real daemons
(SALT-NOTES.md, NETNS-LAB.md); ``ha.lint`` ends with it as finding HA901.

Three faults, three answers: a master whose connection *closes* (killed, restarted)
is noticed at once; a *partitioned* master (packets dropped silently) only when TCP
keepalive aborts the idle connection (:mod:`ha_keepalive`), and then every silently
dropping entry of the list costs Salt's 2 s connect test once more; a *hung* master
(frozen: its kernel still answers TCP, keepalive probes included) never, in stock Salt.
"""

from salt.exceptions import SaltInvocationError

import ha_keepalive
import ha_lint_frontdoor
from ha_lint_context import FAILOVER_TYPES, effective_options, parse_endpoints
from ha_lint_findings import as_number, fmt_seconds, lint_finding

# Measured (SALT-NOTES.md): master killed -> minion on the next master in 0.37-0.62 s,
# zmq_monitor on, with or without master_alive_interval.
CLOSED_CONNECTION_SECONDS = 0.5
# eval_master resolves every entry of the list before it connects (resolve_dns ->
# salt.utils.network.dns_check -> _test_addrs), a blocking TCP connect with
# settimeout(2) even for IP literals: a silently dropping master costs 2 s each time
# (a frozen one answers the handshake at once). Measured: 2.0 s between the two
# "Master ip address changed" lines, in every partition run (NETNS-LAB.md).
DNS_CHECK_SECONDS = 2.0
# What moves the minion's address to another master, per front door (ha_lint_frontdoor).
FRONT_DOOR_SWITCH = {
    "vip": "keepalived moving the VIP (3.2 s after a master froze, with a track_script on its health, measured)",
    "balancer": (
        "the balancer marking the master down (check interval x fall; with on-marked-down shutdown-sessions it "
        "closes the minion's session, which the minion notices in about 0.5 s)"
    ),
    "dns": "the record's change and its TTL",
}


def detection_seconds(options):
    """
    How long until ``__master_disconnected`` fires for a closed connection, or None.

    tcp transport: the stream-closed callback; zeromq: the socket monitor
    (zmq_monitor, measured ~0.5 s); otherwise the status.master alive job, which
    runs every master_alive_interval.
    """
    if options.get("transport") == "tcp" or options.get("zmq_monitor"):
        return CLOSED_CONNECTION_SECONDS
    alive = as_number(options.get("master_alive_interval"))
    return alive + CLOSED_CONNECTION_SECONDS if alive > 0 else None


def failed_master_retried_first(options, endpoints):
    """
    Dead masters tried before a live one when one master fails: 0 with host-only
    entries (eval_master moves the failed master to the end), 1 when the list resets
    (host:port entries) or is reshuffled (random_master).
    """
    if any(endpoint.explicit_port for endpoint in endpoints):
        return 1
    return 1 if options.get("random_master") or options.get("master_shuffle") else 0


def never_reason(options, endpoints, error):
    """Why a closed connection never leads to a failover, or None."""
    hosts = [endpoint.host.lower() for endpoint in endpoints]
    if error:
        return "the master option cannot be parsed"
    if options.get("master_type") not in FAILOVER_TYPES:
        return f"master_type is {options.get('master_type')!r}, not failover"
    if len(endpoints) < 2:
        return "there is only one master"
    if detection_seconds(options) is None:
        return "zmq_monitor is off and master_alive_interval is 0"
    if any(e.explicit_port for e in endpoints) and len(set(hosts)) < len(hosts):
        return "host:port entries share one host"
    return None


def estimate_failover_seconds(opts):
    """
    Worst-case seconds until the minion works through another master, for the minion
    options ``opts`` (missing options take Salt's defaults).

    Returns ``{"closed_connection": float or None, "partitioned_master": float or
    None, "hung_master": None, "per_dead_master_retry": float,
    "per_partitioned_master": float, "keepalive_seconds": float or None,
    "dead_masters_tried_first": int, "all_masters_down_wait": float,
    "never_reason": str or None}``: None means never. ``partitioned_master``: the
    kernel aborts the silent connection after ``keepalive_seconds`` (None with
    ``tcp_keepalive: False``), then the closed-connection path runs, plus one
    :data:`DNS_CHECK_SECONDS` for the partitioned entry; each further silently
    dropping entry adds ``per_partitioned_master``. ``hung_master`` is None for stock
    Salt: status.master only checks that a TCP connection to the master is
    ESTABLISHED, and a frozen master's kernel keeps it so (keepalive probes answered).
    """
    if not isinstance(opts, dict):
        raise SaltInvocationError(f"opts must be a dict, not {type(opts).__name__}")
    merged = effective_options(opts)
    endpoints, error = parse_endpoints(merged)
    per_retry = as_number(merged.get("auth_timeout"))
    retried = failed_master_retried_first(merged, endpoints)
    reason = never_reason(merged, endpoints, error)
    blocks = merged.get("auth_safemode") and not as_number(merged.get("auth_retries"))
    if reason is None and retried and blocks:
        reason = "auth_safemode retries a dead master forever"
    closed = None if reason else detection_seconds(merged) + retried * per_retry
    keepalive = ha_keepalive.abort_seconds(merged)
    partitioned = None if closed is None or keepalive is None else keepalive + DNS_CHECK_SECONDS + closed
    return {
        "closed_connection": closed,
        "partitioned_master": partitioned,
        "hung_master": None,
        "per_dead_master_retry": per_retry,
        "per_partitioned_master": DNS_CHECK_SECONDS,
        "keepalive_seconds": keepalive,
        "dead_masters_tried_first": retried,
        "all_masters_down_wait": as_number(merged.get("acceptance_wait_time")),
        "never_reason": reason,
        "front_door": front_door_of(merged, endpoints),
    }


def front_door_of(options, endpoints):
    """The declared front door (``ha:front_door``) when the minion has one address and no failover, else None."""
    topology, _ = ha_lint_frontdoor.declared_front_door(options)
    if topology and len(endpoints) == 1 and options.get("master_type") not in FAILOVER_TYPES:
        return topology
    return None


def estimate_finding(opts):
    """HA901, the closing info finding: :func:`estimate_failover_seconds` in words."""
    estimate = estimate_failover_seconds(opts)
    merged = effective_options(opts)
    if estimate["front_door"]:
        return front_door_finding(estimate, merged)
    hung = (
        "never when a master hangs with its TCP connection open (stock Salt; the salt-ha "
        "beacon handles that)"
    )
    if estimate["closed_connection"] is None:
        closed = f"never when a master's connection closes ({estimate['never_reason']})"
        partitioned = "never when a master is partitioned either"
    else:
        closed = (
            f"{fmt_seconds(estimate['closed_connection'])} s when a master's connection "
            f"closes (+{fmt_seconds(estimate['per_dead_master_retry'])} s per dead master "
            "tried first)"
        )
        partitioned = partition_words(estimate, merged)
    suggestion = (
        "see the warnings and errors above to shorten it; for partitioned masters "
        f"{ha_keepalive.suggestion()}; for hung masters add the salt-ha beacon (beacons: "
        "{ha: []}: it probes every 0.5 s and leaves a master silent for 2 s)"
    )
    return lint_finding(
        "HA901", "info", "master",
        f"estimated worst-case failover: {closed}; {partitioned}; {hung}",
        suggestion,
    )


def partition_words(estimate, options):
    """The partitioned-master part of HA901."""
    per = fmt_seconds(estimate["per_partitioned_master"])
    if estimate["partitioned_master"] is None:
        return (
            "never when a master is partitioned (drops packets silently: tcp_keepalive is off, so "
            "nothing aborts the idle connection)"
        )
    return (
        f"{fmt_seconds(estimate['partitioned_master'])} s when a master is partitioned (drops packets "
        f"silently: TCP keepalive {ha_keepalive.describe(options)} until the kernel aborts the "
        f"connection, then Salt's {per} s connect test of that entry; +{per} s per further "
        "partitioned master in the list)"
    )


def front_door_finding(estimate, options):
    """HA901 for a minion behind a front door: the front door's switch, then the minion's idle connection."""
    topology = estimate["front_door"]
    keepalive = estimate["keepalive_seconds"]
    if keepalive is None:
        follow = "never (tcp_keepalive is off: nothing aborts the minion's idle connection to the old master)"
    else:
        follow = (
            f"then up to {fmt_seconds(keepalive)} s until TCP keepalive ({ha_keepalive.describe(options)}) aborts "
            f"the minion's idle connection and {fmt_seconds(detection_seconds(options) or CLOSED_CONNECTION_SECONDS)}"
            " s to sign in again at the same address (measured behind keepalived with 10/2/3: 8.5 s after the VIP "
            "moved)"
        )
    hung = (
        "; a frozen master behind DNS is never left (its kernel answers the keepalive probes)" if topology == "dns"
        else ""
    )
    return lint_finding(
        "HA901", "info", "master",
        f"estimated worst-case failover behind the {topology} front door: {FRONT_DOOR_SWITCH[topology]}, "
        f"{follow}{hung}",
        f"{ha_keepalive.suggestion()}; see the HA31x findings above for what the front door needs",
    )
