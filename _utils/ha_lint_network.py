"""
Lint rules HA3xx: name resolution and transport, as Salt 3008's ``resolve_dns``,
``eval_master`` and the alive-job scheduling in ``salt/minion.py`` handle them.

Each rule takes a :class:`ha_lint_context.LintContext` and returns a list of findings
with the ids it declares (:func:`ha_lint_findings.produces`).
"""

from ha_lint_findings import fmt_seconds, lint_finding, produces


def resolvable_hosts(endpoints):
    """The entries' host names (IP addresses left out), each once, in list order."""
    hosts = []
    for endpoint in endpoints:
        if not endpoint.is_ip and endpoint.host not in hosts:
            hosts.append(endpoint.host)
    return hosts


@produces("HA301", "HA302")
def check_resolution(ctx):
    """
    HA301, HA302: names that do not resolve (a failover minion skips them silently),
    and masters on one address.
    """
    hosts = resolvable_hosts(ctx.endpoints)
    if ctx.resolver is None or not hosts:
        return []
    addresses = ctx.resolver(hosts) or {}
    findings = [unresolved_finding(ctx, host) for host in hosts if not addresses.get(host)]
    return findings + shared_address_findings(ctx.endpoints, addresses)


def unresolved_finding(ctx, host):
    """HA301. resolve_dns: failover skips the name; otherwise retry_dns retries or 127.0.0.1."""
    if ctx.master_type == "failover":
        effect = "a failover minion skips it, so it can never take over"
    else:
        effect = (
            f"the minion retries it every retry_dns ({fmt_seconds(ctx.number('retry_dns'))}) "
            "s, or uses 127.0.0.1 when retry_dns is 0"
        )
    return lint_finding(
        "HA301", "error", "master",
        f"master name '{host}' does not resolve: {effect}",
        f"make '{host}' resolvable on the minion (DNS or /etc/hosts) or list that master "
        "by its IP address",
    )


def shared_address_findings(endpoints, addresses):
    """HA302: two entries on one address: status.master cannot tell them apart."""
    owners = {}
    for endpoint in endpoints:
        found = [endpoint.host] if endpoint.is_ip else (addresses.get(endpoint.host) or [])
        for address in found:
            owners.setdefault(address, [])
            if endpoint.host not in owners[address]:
                owners[address].append(endpoint.host)
    return [
        lint_finding(
            "HA302", "warning", "master",
            f"masters {', '.join(hosts)} resolve to the same address {address}: the "
            "minion cannot tell them apart (status.master checks by IP), and if they are "
            "one machine a failover goes nowhere",
            "give every master its own address",
        )
        for address, hosts in owners.items()
        if len(hosts) > 1
    ]


@produces("HA303")
def check_retry_dns(ctx):
    """
    HA303: eval_master sets retry_dns to 0 for failover (logging CRITICAL at each
    connection); for distributed, resolve_dns retries an unresolvable name forever.
    """
    retry = ctx.number("retry_dns")
    if not ctx.failover or retry <= 0:
        return []
    if ctx.master_type == "failover":
        why = (
            "Salt overrides it to 0 and logs a CRITICAL \"retry_dns is not 0\" message at "
            "every connection; an unresolvable master is skipped, not retried"
        )
        severity = "warning"
    else:
        why = (
            "a master name that does not resolve blocks the minion retrying it every "
            f"{fmt_seconds(retry)} s instead of moving on to the next master"
        )
        severity = "error"
    written = "" if "retry_dns" in ctx.supplied_options else " (the default)"
    return [
        lint_finding(
            "HA303", severity, "retry_dns",
            f"retry_dns is {fmt_seconds(retry)}{written} with master_type {ctx.master_type}: {why}",
            "retry_dns: 0",
        )
    ]


@produces("HA304")
def check_tcp_transport(ctx):
    """
    HA304: minion.py schedules the alive job only when
    ``self.opts["transport"] != "tcp" and self.opts["master_alive_interval"] > 0``.
    """
    if not ctx.failover or ctx.effective_options.get("transport") != "tcp":
        return []
    return [
        lint_finding(
            "HA304", "warning", "transport",
            f"transport is tcp with master_type {ctx.master_type}: Salt schedules no "
            "master alive job on tcp, so master_alive_interval "
            f"({ctx.effective_options.get('master_alive_interval')!r}) and master_failback do nothing; "
            "only a closed connection triggers a failover",
            "transport: zeromq (on the minion and every master)",
        )
    ]
