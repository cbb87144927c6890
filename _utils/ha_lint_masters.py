"""
Lint rules HA1xx: the master list and ``master_type``, as Salt 3008's
``salt/minion.py`` (``eval_master``, ``prep_ip_port``, ``MinionManager``) uses them.

Each rule takes a :class:`ha_lint_context.LintContext` and returns a list of findings
with the ids it declares (:func:`ha_lint_findings.produces`).
"""

import difflib
import ipaddress

import ha_endpoints
import ha_text
from ha_lint_context import MASTER_TYPES
from ha_lint_findings import as_number, lint_finding, produces

PORT_EXAMPLES = {
    "master_port": f"master_port: {ha_endpoints.DEFAULT_RET_PORT}",
    "publish_port": f"publish_port: {ha_endpoints.DEFAULT_PUBLISH_PORT}",
}


def entries_text(endpoints):
    """The entries as written, comma-separated."""
    return ", ".join(endpoint.master for endpoint in endpoints)


def dedup_text(endpoints):
    """Each host once, in list order, comma-separated."""
    hosts = []
    for endpoint in endpoints:
        if endpoint.host not in hosts:
            hosts.append(endpoint.host)
    return ", ".join(hosts)


@produces("HA101")
def check_master_type(ctx):
    """HA101: eval_master logs "Invalid keyword" and exits for any other master_type value."""
    value = ctx.master_type
    if value in MASTER_TYPES or not isinstance(value, str):
        return []
    close = difflib.get_close_matches(value.lower(), MASTER_TYPES, n=1, cutoff=0.6)
    return [
        lint_finding(
            "HA101", "error", "master_type",
            f"master_type {value!r} is not one of {', '.join(MASTER_TYPES)}: the minion "
            "logs \"Invalid keyword\" and exits at start-up",
            f"master_type: {close[0] if close else 'failover'}",
        )
    ]


@produces("HA102")
def check_master_entries(ctx):
    """HA102: a malformed entry or port (ha_endpoints raises) is a finding, not an exception."""
    if not ctx.endpoint_error:
        return []
    option = ctx.endpoint_error.split()[0]
    option = option if option in ("master_port", "publish_port") else "master"
    return [
        lint_finding(
            "HA102", "error", option,
            f"the {option} option cannot be used: {ha_text.printable(ctx.endpoint_error)}",
            PORT_EXAMPLES.get(
                option,
                "write master: [master1.example.com, master2.example.com] with host names "
                "or IP addresses only",
            ),
        )
    ]


@produces("HA103")
def check_master_count(ctx):
    """HA103: failover with one master (eval_master turns a string into a 1-item list)."""
    if not ctx.failover or ctx.endpoint_error or len(ctx.endpoints) >= 2:
        return []
    only = entries_text(ctx.endpoints) or "none"
    return [
        lint_finding(
            "HA103", "error", "master",
            f"master_type is {ctx.master_type} but master lists {len(ctx.endpoints)} "
            f"master ({only}): there is nothing to fail over to",
            f"master: [{only}, <second master>] (at least two masters)",
        )
    ]


@produces("HA104")
def check_list_without_failover(ctx):
    """
    HA104: a list with master_type str.

    MinionManager._spawn_minions creates one Minion per entry unless master_type is
    failover/distributed: the minion is connected to every master at once.
    """
    if ctx.master_type != "str" or len(ctx.endpoints) < 2:
        return []
    return [
        lint_finding(
            "HA104", "error", "master_type",
            f"master lists {len(ctx.endpoints)} masters ({entries_text(ctx.endpoints)}) "
            "but master_type is 'str' (the default): Salt then runs multi-master, one "
            "connection to every master at once (each must accept the key and each "
            "publishes jobs), not failover",
            "master_type: failover (and master_alive_interval: 10); keep master_type: str "
            "only if you want hot multi-master",
        )
    ]


@produces("HA105")
def check_duplicate_masters(ctx):
    """HA105: an entry listed twice (same host and ret port, however spelled)."""
    seen = {}
    findings = []
    for endpoint in ctx.endpoints:
        key = (endpoint.host.lower(), endpoint.ret_port)
        if key in seen:
            findings.append(
                lint_finding(
                    "HA105", "error", "master",
                    f"master entry '{endpoint.master}' duplicates '{seen[key]}' "
                    f"({endpoint.host} port {endpoint.ret_port}): failing over from it "
                    "leads to the same dead master",
                    f"list every master once: master: [{dedup_text(ctx.endpoints)}]",
                )
            )
        seen.setdefault(key, endpoint.master)
    return findings


@produces("HA106")
def check_host_port_entries(ctx):
    """
    HA106: ``host:port`` entries in a failover list.

    eval_master stores prep_ip_port's host as opts["master"], so the "move the failed
    master to the end" test (``opts["master"] in opts["local_masters"]``) never matches
    and the list resets to master_list: the dead master is retried first (measured
    10.7 s; no failover at all when the masters share one IP). With master_failback the
    primary never equals the current master, so it reconnects every interval.
    """
    explicit = [endpoint for endpoint in ctx.endpoints if endpoint.explicit_port]
    if not ctx.failover or not explicit:
        return []
    hosts = [endpoint.host.lower() for endpoint in ctx.endpoints]
    shared = sorted({host for host in hosts if hosts.count(host) > 1})
    message = (
        f"master entries with a port ({entries_text(explicit)}) break Salt's failover "
        "bookkeeping: the minion keeps only the host as its current master, so the dead "
        "master is retried first (measured 10.7 s)"
    )
    if ctx.flag("master_failback"):
        message += ", and master_failback reconnects to the primary every interval"
    if shared:
        message += f"; {', '.join(shared)} is shared by several entries: no failover at all"
    return [
        lint_finding(
            "HA106", "error" if shared else "warning", "master", message,
            f"run every master on the same ports on its own host and write host-only "
            f"entries: master: [{dedup_text(ctx.endpoints)}], "
            f"master_port: {ctx.endpoints[0].ret_port}",
        )
    ]


@produces("HA107")
def check_ret_ports(ctx):
    """HA107: different ret ports; the minion has one publish_port for all masters."""
    ports = sorted({endpoint.ret_port for endpoint in ctx.endpoints})
    if not ctx.failover or len(ports) < 2:
        return []
    listing = ", ".join(f"{e.master} -> {e.ret_port}" for e in ctx.endpoints)
    publish = ctx.endpoints[0].publish_port
    return [
        lint_finding(
            "HA107", "warning", "master",
            f"the masters use different ret ports ({listing}) but the minion has a single "
            f"publish_port ({publish}) for all of them: status.master checks that port "
            "only, so a master publishing elsewhere looks disconnected",
            f"give every master the same ret_port and publish_port and write host-only "
            f"entries with master_port: {ports[0]} and publish_port: {publish}",
        )
    ]


@produces("HA108")
def check_inherited_ports(ctx):
    """HA108: prep_ip_port overwrites master_port, so later portless entries inherit it."""
    default_port = int(as_number(ctx.effective_options.get("master_port"))) or ha_endpoints.DEFAULT_RET_PORT
    findings = []
    for endpoint in ctx.endpoints:
        if endpoint.explicit_port or endpoint.ret_port == default_port:
            continue
        findings.append(
            lint_finding(
                "HA108", "warning", "master",
                f"master entry '{endpoint.master}' has no port and follows a host:port "
                f"entry: the minion contacts it on port {endpoint.ret_port} (inherited), "
                f"not on master_port {default_port}",
                f"write every entry without a port and set master_port once "
                f"(master: [{dedup_text(ctx.endpoints)}])",
            )
        )
    return findings


@produces("HA109")
def check_master_uri_format(ctx):
    """HA109: prep_ip_port with master_uri_format ip_only calls ipaddress.ip_address(entry)."""
    if ctx.effective_options.get("master_uri_format") != "ip_only":
        return []
    bad = [e.master for e in ctx.endpoints if not is_ip_literal(e.master)]
    if not bad:
        return []
    return [
        lint_finding(
            "HA109", "error", "master_uri_format",
            f"master_uri_format is ip_only but master entries {', '.join(bad)} are not "
            "bare IP addresses: the minion fails parsing them (ValueError) when connecting",
            "list the masters as bare IP addresses, or remove master_uri_format",
        )
    ]


def is_ip_literal(text):
    """Whether ``text`` is an IPv4 or IPv6 address as written."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True

