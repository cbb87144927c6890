"""
What a lint finding is: its stable id, its shape, its order, and how values from a
config are written into its message.

A finding is ``{"id", "severity": "error"|"warning"|"info", "option", "message",
"suggestion"}``. Every id is declared once in :data:`FINDING_TITLES` (the README's
``ha.lint`` table lists the same ids); a rule declares the ids it may return with
:func:`produces`. Ids are numbered by theme: HA1xx the master list and
``master_type``, HA2xx detection, failback and sign-in timing, HA3xx DNS and
transport, HA4xx unknown options, value types and config files, HA5xx job returns
across a failover (the ``ha_returns`` engine), HA9xx the failover time estimate.
"""

import ha_text

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}

FINDING_TITLES = {
    # HA1xx: the master list and master_type (ha_lint_masters)
    "HA101": "master_type is not a keyword Salt knows",
    "HA102": "the master, master_port or publish_port option cannot be parsed",
    "HA103": "failover with fewer than two masters",
    "HA104": "a master list with master_type str is multi-master, not failover",
    "HA105": "a master listed twice",
    "HA106": "host:port entries in a failover list",
    "HA107": "masters on different ret ports",
    "HA108": "a portless entry inherits the port of a host:port entry",
    "HA109": "master_uri_format ip_only with master names",
    # HA2xx: noticing a dead master, failing back, signing in (ha_lint_timing)
    "HA201": "failover without master_alive_interval",
    "HA202": "no disconnect monitor and no alive job: never fails over",
    "HA203": "master_failback without failover is ignored",
    "HA204": "master_failback without the alive job never fails back",
    "HA205": "master_failback_interval unset (master_alive_interval is used)",
    "HA206": "auth_timeout above 10 s",
    "HA207": "auth_timeout 0 or less",
    "HA208": "auth_safemode with failover retries a dead master",
    "HA209": "random_master reshuffles the list, the failed master included",
    "HA210": "master_shuffle is deprecated",
    "HA211": "loop_interval changes the ha beacon's interval",
    # HA3xx: DNS and transport (ha_lint_network)
    "HA301": "a master name does not resolve",
    "HA302": "masters on one address",
    "HA303": "retry_dns above 0 with failover",
    "HA304": "transport tcp: no alive job",
    # HA4xx: options and config files (ha_lint_options)
    "HA401": "an unknown option named after a failover concept",
    "HA402": "a misspelled option",
    "HA403": "an unknown option",
    "HA404": "an option of the wrong type",
    "HA405": "a config file the salt-minion refuses to start with",
    "HA406": "a broken _schedule.conf (Salt renames it and runs without it)",
    "HA407": "a config file this process cannot read",
    "HA408": "an included file Salt ignores (invalid YAML or not a mapping)",
    "HA409": "include or default_include is not a path or a list of paths",
    "HA410": "an include entry that matches no file",
    "HA411": "an engines list that another file's engines replace (Salt never starts those engines)",
    # HA5xx: job returns across a failover (ha_lint_returns)
    "HA501": "failover without the ha_returns engine: returns in flight are dropped",
    "HA502": "the ha_returns engine's options are invalid",
    # HA9xx: the estimate (ha_failover_time)
    "HA901": "the estimated worst-case failover time",
}


def produces(*finding_ids):
    """
    Decorate a rule with the ids of the findings it may return: sets
    ``rule.finding_ids`` and appends each id with its title to the rule's docstring.
    """
    unknown = [finding_id for finding_id in finding_ids if finding_id not in FINDING_TITLES]
    if unknown:
        raise ValueError(f"finding ids {unknown} are not declared in FINDING_TITLES")

    def mark(rule):
        rule.finding_ids = finding_ids
        titles = "".join(f"\n    {finding_id}: {FINDING_TITLES[finding_id]}" for finding_id in finding_ids)
        rule.__doc__ = f"{(rule.__doc__ or '').rstrip()}\n\n    Findings:{titles}\n"
        return rule

    return mark


def finding(severity, option, message, suggestion):
    """One finding dict without an id (the probe findings of ``ha.status`` use it)."""
    return {"severity": severity, "option": option, "message": message, "suggestion": suggestion}


def lint_finding(finding_id, severity, option, message, suggestion):
    """One lint finding: :func:`finding` with its declared ``id`` first."""
    if finding_id not in FINDING_TITLES:
        raise ValueError(f"finding id {finding_id!r} is not declared in FINDING_TITLES")
    return {"id": finding_id, **finding(severity, option, message, suggestion)}


def sort_findings(findings):
    """Errors first, then warnings, then info; stable within a severity."""
    return sorted(findings, key=lambda item: SEVERITY_ORDER[item["severity"]])


def as_number(value):
    """``value`` as a float (numeric strings accepted), 0.0 when it is not a number."""
    if isinstance(value, bool) or value is None:
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def fmt_seconds(value):
    """``5.0`` -> ``"5"``, ``0.5`` -> ``"0.5"``."""
    return f"{value:g}"



def yaml_value(value):
    """A value the way an operator writes it in YAML flow style (escaped)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(ha_text.printable(item) for item in value) + "]"
    return ha_text.printable(value)
