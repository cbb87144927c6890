"""
The worst-case time a minion needs to fail over with given settings, computed from
what Salt 3008's ``salt/minion.py`` does and the figures measured with real daemons
(SALT-NOTES.md); ``ha.lint`` ends with it as finding HA901.
"""

from salt.exceptions import SaltInvocationError

from ha_lint_context import FAILOVER_TYPES, effective_options, parse_endpoints
from ha_lint_findings import as_number, fmt_seconds, lint_finding

# Measured (SALT-NOTES.md): master killed -> minion on the next master in 0.37-0.62 s,
# zmq_monitor on, with or without master_alive_interval.
CLOSED_CONNECTION_SECONDS = 0.5


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

    Returns ``{"closed_connection": float or None, "hung_master": None,
    "per_dead_master_retry": float, "dead_masters_tried_first": int,
    "all_masters_down_wait": float, "never_reason": str or None}``: None means never.
    ``hung_master`` is None for stock Salt: status.master only checks that a TCP
    connection to the master is ESTABLISHED, which a frozen master keeps.
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
    return {
        "closed_connection": closed,
        "hung_master": None,
        "per_dead_master_retry": per_retry,
        "dead_masters_tried_first": retried,
        "all_masters_down_wait": as_number(merged.get("acceptance_wait_time")),
        "never_reason": reason,
    }


def estimate_finding(opts):
    """HA901, the closing info finding: :func:`estimate_failover_seconds` in words."""
    estimate = estimate_failover_seconds(opts)
    hung = (
        "never when a master hangs with its TCP connection open (stock Salt; the salt-ha "
        "beacon handles that)"
    )
    if estimate["closed_connection"] is None:
        closed = f"never when a master's connection closes ({estimate['never_reason']})"
    else:
        closed = (
            f"{fmt_seconds(estimate['closed_connection'])} s when a master's connection "
            f"closes (+{fmt_seconds(estimate['per_dead_master_retry'])} s per dead master "
            "tried first)"
        )
    return lint_finding(
        "HA901", "info", "master",
        f"estimated worst-case failover: {closed}; {hung}",
        "see the warnings and errors above to shorten it; for hung masters add the salt-ha "
        "beacon (beacons: {ha: []}: it probes every 0.5 s and leaves a master silent for 2 s)",
    )
