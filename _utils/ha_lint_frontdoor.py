"""
Lint rules HA31x: front doors, one master address in front of several masters.

Three topologies give a minion one ``master`` (no failover list, ``master_type``
not failover) that reaches another master when one fails: a **VIP** (keepalived
moves an address between the masters), a TCP **balancer** (HAProxy in front of
4505/4506) or a **DNS** name whose answer changes. A minion cannot see which one, or
whether the name is a front door at all: the operator declares it in the minion's
config, which Salt ignores and salt-ha reads::

    ha:
      front_door: vip        # or balancer, dns

What each needs, measured in a network-namespace lab (NETNS-LAB.md) and read in Salt
3008's ``salt/minion.py``:

- The minion notices that the master behind the address changed only when its
  connection breaks: ``__master_disconnected`` (ZeroMQ's monitor, or the alive job)
  makes it sign in again at the same address (``eval_master``), which now reaches
  another master. Its publish connection is idle, so behind a VIP that moved, or to
  a partitioned master behind DNS, only TCP keepalive breaks it: with Salt's defaults
  the first probe comes after 300 s (never within 90 s, measured); with 10/2/3 the
  minion answered through B 8.5 s after the VIP moved (:mod:`ha_keepalive`).
- The master it reaches must accept it and be accepted by it: the same master key
  pair on every master (or master pubkey signing), the minion's key accepted on all
  (``salt-run ha.readiness`` checks both).
- The front door itself must follow the masters' application-level health: a TCP
  check passes a frozen master (the ``ha_health`` engine's ``/health`` does not).

Each rule takes a :class:`ha_lint_context.LintContext` and returns a list of findings
with the ids it declares (:func:`ha_lint_findings.produces`).
"""

import ha_keepalive
import ha_text
from ha_lint_context import FAILOVER_TYPES
from ha_lint_findings import fmt_seconds, lint_finding, produces

TOPOLOGIES = ("vip", "balancer", "dns")
DECLARE = "ha: {front_door: vip} (or balancer, dns)"
HEALTH_URL = "http://<master>:4510/health"
CHECKS = {
    "vip": "keepalived moves the address",
    "balancer": "the balancer sends new connections to another master",
    "dns": "the name's answer changes",
}


def declared_front_door(options):
    """
    ``(topology or None, problem or None)`` from the ``ha:front_door`` minion option:
    ``(None, None)`` when not declared, ``(None, why)`` when it cannot be used.
    """
    section = options.get("ha")
    if section is None:
        return None, None
    if not isinstance(section, dict):
        return None, f"ha is {ha_text.shown(section)}, not a mapping"
    if "front_door" not in section:
        return None, None
    value = section["front_door"]
    if isinstance(value, str) and value.strip().lower() in TOPOLOGIES:
        return value.strip().lower(), None
    return None, f"ha:front_door is {ha_text.shown(value)}, not one of {', '.join(TOPOLOGIES)}"


def single_address(ctx):
    """True when the minion has one master entry and no failover master_type."""
    return len(ctx.endpoints) == 1 and ctx.master_type not in FAILOVER_TYPES


def front_door(ctx):
    """The declared topology when it applies (one address, no failover), else None."""
    topology, _ = declared_front_door(ctx.effective_options)
    return topology if topology and single_address(ctx) else None


@produces("HA311", "HA312", "HA313")
def check_front_door_declaration(ctx):
    """
    HA311: one master address without a failover list and no declaration (info: it may
    be a front door, or there is no failover). HA312: a declaration salt-ha cannot
    read. HA313: a declaration next to a failover list (the minion fails over itself;
    the declaration is ignored).
    """
    topology, problem = declared_front_door(ctx.effective_options)
    if problem:
        return [
            lint_finding(
                "HA312", "warning", "ha",
                f"{problem}: salt-ha cannot tell which front door the minion's master is, and does not check "
                "what it needs (Salt itself ignores the ha option)",
                DECLARE,
            )
        ]
    if topology and not single_address(ctx):
        return [
            lint_finding(
                "HA313", "warning", "ha",
                f"ha:front_door is {topology} but the minion has a failover list ({len(ctx.endpoints)} masters, "
                f"master_type {ha_text.printable(ctx.master_type)}): a front door is one address; the declaration "
                "is ignored",
                "remove ha:front_door, or give the minion only the front door's address (master: <address>, "
                "no master_type)",
            )
        ]
    if topology or not single_address(ctx):
        return []
    if "master" not in ctx.written_keys and not ctx.running_minion:
        return []
    master = ctx.endpoints[0].master
    return [
        lint_finding(
            "HA311", "info", "master",
            f"one master address ({ha_text.printable(master)}) and no failover list: if it is a front door (a "
            "keepalived VIP, a TCP balancer or a DNS name in front of several masters) declare which, so that "
            "ha.lint checks what it needs; otherwise this minion has no failover",
            f"{DECLARE}; or a failover list: master: [master1, master2], master_type: failover",
        )
    ]


@produces("HA314", "HA316")
def check_front_door_detection(ctx):
    """
    HA314: behind a front door the minion follows another master only once its idle
    connection breaks, which TCP keepalive does (error with ``tcp_keepalive: False``,
    warning when it takes longer than :data:`ha_keepalive.SHORT_SECONDS`). HA316:
    without ZeroMQ's disconnect monitor and without the alive job nothing fires
    ``__master_disconnected``, so the minion never signs in again (zeromq only; the
    tcp transport's stream-closed callback fires it).
    """
    topology = front_door(ctx)
    if topology is None:
        return []
    options = ctx.effective_options
    findings = []
    seconds = ha_keepalive.abort_seconds(options)
    why = (
        f"behind a {topology} front door the minion reaches another master only once its connection breaks, and "
        f"its publish connection is idle: only TCP keepalive breaks it after {CHECKS[topology]} (measured: "
        f"{ha_keepalive.MEASURED['vip']})"
    )
    if topology == "balancer":
        why += "; behind a balancer keepalive covers the balancer's own failure, its sessions to a frozen master: HA317"
    if seconds is None:
        findings.append(
            lint_finding(
                "HA314", "error", "tcp_keepalive",
                f"tcp_keepalive is False: {why}; without keepalive it never breaks",
                ha_keepalive.suggestion(),
            )
        )
    elif seconds > ha_keepalive.SHORT_SECONDS:
        findings.append(
            lint_finding(
                "HA314", "warning", "tcp_keepalive_idle",
                f"TCP keepalive {ha_keepalive.describe(options)} = {fmt_seconds(seconds)} s: {why}",
                f"{ha_keepalive.suggestion()} (ha.minion_failover writes them)",
            )
        )
    silent = not ctx.flag("zmq_monitor") and ctx.number("master_alive_interval") <= 0
    if options.get("transport") == "zeromq" and silent:
        findings.append(
            lint_finding(
                "HA316", "error", "zmq_monitor",
                f"zmq_monitor is {ha_text.printable(options.get('zmq_monitor'))} and master_alive_interval is "
                f"{ha_text.printable(options.get('master_alive_interval'))}: nothing fires __master_disconnected "
                f"when the connection behind the {topology} front door breaks, so the minion never signs in to "
                "the master now behind it",
                "zmq_monitor: True (Salt's default)",
            )
        )
    return findings


@produces("HA315")
def check_front_door_keys(ctx):
    """
    HA315 (info): the master behind the address changes without the minion choosing
    it: each one must serve the key the minion accepts (one ``master.pem`` on every
    master, or master pubkey signing) and hold the minion's key as accepted
    (SALT-NOTES.md: a different master key loops on "The master key has changed", a
    pending key waits forever).
    """
    topology = front_door(ctx)
    if topology is None:
        return []
    if ctx.flag("verify_master_pubkey_sign"):
        model = (
            "master pubkey signing is on: every master behind it must sign with the signing pair whose "
            "master_sign.pub this minion holds"
        )
        fix = "ha.master_signing with one signing pair on every master"
    else:
        model = "the minion accepts only the master key it cached: every master behind it needs the same master.pem"
        fix = "ha.master_keypair with one key pair on every master (or master pubkey signing)"
    return [
        lint_finding(
            "HA315", "info", "master",
            f"behind a {topology} front door the minion signs in to whichever master answers: {model}, and its "
            "own key must be accepted on every master (a pending key waits forever)",
            f"{fix}; ha.sync_keys on the masters; salt-run ha.readiness checks both",
        )
    ]


@produces("HA317", "HA318", "HA319")
def check_front_door_topology(ctx):
    """
    HA317 (balancer, info): the minion's keepalive probes are answered by the balancer,
    not the master: the balancer must check the masters over HTTP (a TCP check passes a
    frozen master) and close the minion's sessions to a master it marks down (HAProxy
    ``on-marked-down shutdown-sessions``), with idle timeouts of at least
    ``publish_session``. HA318 (dns): an IP address never moves (warning); a name must
    change its answer to the live masters with a short TTL (Salt's ``dns_check`` takes
    the first address that accepts TCP, which a frozen master does; each silently
    dropping address costs 2 s), and a hung master behind DNS is not left (its kernel
    answers the keepalive probes). HA319 (vip, info): keepalived must track the masters'
    application-level health, and the masters must accept connections on the VIP.
    """
    topology = front_door(ctx)
    if topology is None:
        return []
    endpoint = ctx.endpoints[0]
    if topology == "balancer":
        return [
            lint_finding(
                "HA317", "info", "ha",
                "behind a TCP balancer the minion's keepalive probes reach the balancer, not the master: the "
                "balancer itself must check the masters at the application level and close the minion's "
                "sessions to a master it marks down, or the minion stays on a frozen master's session",
                f"HAProxy, on 4505 and 4506: option httpchk GET /health, server ... check port 4510 "
                f"on-marked-down shutdown-sessions (the ha_health engine, {HEALTH_URL}), timeout client/server "
                "at least publish_session",
            )
        ]
    if topology == "dns":
        if endpoint.is_ip:
            return [
                lint_finding(
                    "HA318", "warning", "master",
                    f"ha:front_door is dns but the master is the address {ha_text.printable(endpoint.host)}: an "
                    "address never moves with DNS",
                    "master: <the DNS name> (or the front door that address is: vip, balancer)",
                )
            ]
        return [
            lint_finding(
                "HA318", "info", "master",
                f"a DNS front door ({ha_text.printable(endpoint.host)}): the minion resolves the name again only "
                "when it signs in again; Salt's dns_check takes the first address that accepts TCP (a frozen "
                "master does; each silently dropping address costs 2 s); TCP keepalive never leaves a frozen "
                "master behind DNS (its kernel answers the probes): the ha beacon does, once the name resolves "
                "elsewhere",
                f"answer only live masters (a health-checked DNS on {HEALTH_URL}), with a TTL of a few seconds "
                "that the minion's resolver cache honors",
            )
        ]
    return [
        lint_finding(
            "HA319", "info", "ha",
            f"behind a keepalived VIP ({ha_text.printable(endpoint.host)}): the VIP must stay only where the "
            "master answers at the application level (a TCP or process check passes a frozen master), and "
            "every master must accept connections on the VIP",
            f"vrrp_script with script \"/usr/bin/curl -fsS -m 1 {HEALTH_URL.replace('<master>', '127.0.0.1')}\" "
            "in track_script (examples/keepalived/keepalived.conf); interface: 0.0.0.0 on the masters",
        )
    ]
