"""
Lint a minion's failover settings against what Salt 3008's minion code really does.

Every rule below cites the code in ``salt/minion.py`` (or the measurement in
SALT-NOTES.md) it relies on. A finding is
``{"severity": "error"|"warning"|"info", "option", "message", "suggestion"}``;
``lint_options`` returns errors, then warnings, then infos, and always ends with
one info finding estimating the worst-case failover time.
"""

import dataclasses
import difflib
import glob
import ipaddress
import logging
import os

import salt.config
import salt.utils.files
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_endpoints

log = logging.getLogger(__name__)

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
FAILOVER_TYPES = ("failover", "distributed")
MASTER_TYPES = ("str", "failover", "distributed", "func", "disable")
LIST_MASTER_TYPES = ("str", "failover", "distributed")

# Measured (SALT-NOTES.md): master killed -> minion on the next master in 0.37-0.62 s,
# zmq_monitor on, with or without master_alive_interval.
CLOSED_CONNECTION_SECONDS = 0.5

# auth_timeout threshold. The default is 5 s; each dead master tried during a
# failover costs one auth_timeout (eval_master signs in with auth_tries forced to 0,
# i.e. a single request of auth_timeout). 10 s still lets a loaded master answer a
# sign-in while keeping one dead master under ~10 s of outage; above it the
# failover time grows past what a monitoring check or a job timeout tolerates.
AUTH_TIMEOUT_WARN_SECONDS = 10

# Keys that are legitimately written in a minion config or set at runtime by Salt
# without being entries of DEFAULT_MINION_OPTS / VALID_OPTS.
NON_OPTION_KEYS = frozenset(
    {
        "grains", "mine_functions", "beacons", "schedule", "engines", "ha",
        "pillar", "include", "default_include", "master_uri", "master_ip",
        "local_masters", "master_uri_list", "multimaster", "beacons_leader",
        "resources", "detect_mode", "source_ip", "proxy",
    }
)  # fmt: skip

# Names people write for failover concepts that Salt does not know, and what to
# write instead. Checked before the close-match search.
CONCEPT_SUGGESTIONS = {
    "master_type: failover": (
        "failover", "master_failover", "failover_mode", "failover_enabled",
        "enable_failover", "master_ha", "ha_mode", "multi_master", "multimaster_mode",
    ),
    "master: [master1, master2] (a list under the key master)": (
        "masters", "master_list", "masters_list", "master_hosts", "master_servers",
        "master_addresses", "failover_masters", "failover_master", "master_pool",
    ),
    "master_failback: True": (
        "failback", "master_fail_back", "failback_master", "failback_enabled",
        "enable_failback",
    ),
    "master_alive_interval: 10": (
        "master_alive", "alive_interval", "master_keepalive", "keepalive_interval",
        "master_alive_check", "master_check_interval", "master_ping_interval",
        "master_alive_timeout", "alive_check_interval",
    ),
    "master_failback_interval: 30": (
        "failback_interval", "master_failback_timeout", "failback_timeout",
    ),
    "random_master: True": (
        "master_random", "random_masters", "shuffle_masters", "randomize_masters",
        "master_randomize",
    ),
}  # fmt: skip
CONCEPTS = {name: fix for fix, names in CONCEPT_SUGGESTIONS.items() for name in names}

NUMERIC_OPTIONS = (
    "master_alive_interval", "master_failback_interval", "auth_timeout", "auth_tries",
    "auth_retries", "acceptance_wait_time", "acceptance_wait_time_max", "retry_dns",
    "master_tries",
)  # fmt: skip
BOOL_OPTIONS = (
    "master_failback", "zmq_monitor", "random_master", "master_shuffle", "auth_safemode",
)  # fmt: skip
STR_OPTIONS = ("master_type", "transport")
PORT_EXAMPLES = {
    "master_port": f"master_port: {ha_endpoints.DEFAULT_RET_PORT}",
    "publish_port": f"publish_port: {ha_endpoints.DEFAULT_PUBLISH_PORT}",
}
# The key under which written_options() hands the files it could not use to
# lint_options() (through daemon_options()): a dunder key, which rule 1 skips.
CONFIG_PROBLEMS = "__ha_config_file_problems"
RECOMMENDED = {
    "master_type": "failover",
    "transport": "zeromq",
    "master_alive_interval": 10,
    "retry_dns": 0,
}


@dataclasses.dataclass(frozen=True)
class LintContext:
    """What every rule looks at: effective options, parsed masters, operator's keys."""

    opts: dict
    given: dict
    written: tuple
    endpoints: tuple
    endpoint_error: str
    resolver: object

    @property
    def master_type(self):
        return self.opts.get("master_type")

    @property
    def failover(self):
        return self.master_type in FAILOVER_TYPES

    def number(self, option):
        """The option as a float, tolerant of numeric strings; 0.0 when unusable."""
        return as_number(self.opts.get(option))

    def flag(self, option):
        return bool(self.opts.get(option))


def finding(severity, option, message, suggestion):
    """One finding dict."""
    return {"severity": severity, "option": option, "message": message, "suggestion": suggestion}


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


def escaped(value):
    """``str(value)`` with control and other non-printable characters escaped as repr does."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def effective_options(opts):
    """
    Salt's defaults overlaid with ``opts``.

    A running minion (``__role`` present) keeps the configured master list in
    ``master_list`` once connected (``opts["master"]`` is then the current master),
    so that list is linted instead.
    """
    merged = dict(salt.config.DEFAULT_MINION_OPTS)
    merged.update(opts)
    merged["master"] = ha_endpoints.configured_master_option(opts)
    return merged


def parse_endpoints(opts):
    """``(endpoints, error message or None)``; no endpoints for func/disable master types."""
    if opts.get("master_type") not in LIST_MASTER_TYPES:
        return (), None
    try:
        return tuple(ha_endpoints.master_endpoints(opts)), None
    except SaltInvocationError as err:
        return (), str(err)


def build_context(opts, written_keys, resolver):
    """The :class:`LintContext` for ``lint_options``."""
    if written_keys is None:
        # A running minion's __opts__ holds every default and runtime key: without
        # the keys the operator wrote, nothing can be called a typo.
        written = () if "__role" in opts else tuple(opts)
    else:
        written = tuple(written_keys)
    merged = effective_options(opts)
    endpoints, error = parse_endpoints(merged)
    return LintContext(merged, dict(opts), written, endpoints, error, resolver)


def entries_text(endpoints):
    return ", ".join(endpoint.master for endpoint in endpoints)


def known_options():
    return set(salt.config.DEFAULT_MINION_OPTS) | set(salt.config.VALID_OPTS)


def yaml_value(value):
    """A value the way an operator writes it in YAML flow style."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(escaped(item) for item in value) + "]"
    return escaped(value)


# --- rule 1: unknown options and typos -------------------------------------


def check_unknown_options(ctx):
    """Options Salt does not know are ignored silently: typos of failover options break it."""
    known = known_options()
    findings = []
    for key in ctx.written:
        text = str(key)
        if text.startswith("__") or "." in text or (text in known or text in NON_OPTION_KEYS):
            continue  # "mysql.host"-style keys are module configuration
        if text.endswith("_dirs"):
            continue  # <loader>_dirs (engines_dirs, log_handlers_dirs, ...): Salt's loader reads any
        findings.append(unknown_option_finding(text, ctx.given.get(key), known))
    return findings


def unknown_option_finding(key, value, known):
    normalized = key.lower().replace("-", "_").strip()
    if normalized in CONCEPTS:
        fix = CONCEPTS[normalized]
        if fix.startswith("master: [") and isinstance(value, (list, tuple)) and value:
            fix = f"master: {yaml_value(value)}"
        also = "" if fix == "master_type: failover" else " with master_type: failover"
        return finding(
            "error", key,
            f"{key!r} is not a Salt minion option: Salt ignores it silently, so this "
            "setting does nothing for failover",
            f"did you mean {fix}? Write `{fix}`{also} and remove {key!r}",
        )  # fmt: skip
    match = normalized if normalized in known else None
    match = match or next(iter(difflib.get_close_matches(normalized, known, n=1, cutoff=0.8)), None)
    if match:
        return finding(
            "error", key,
            f"{key!r} is not a Salt minion option (Salt ignores it silently); "
            f"it looks like a misspelling of '{match}'",
            f"did you mean {match}? Write `{match}: {yaml_value(value)}` instead of {key!r}",
        )  # fmt: skip
    return finding(
        "warning", key,
        f"unknown option {key!r}: it is not a Salt minion option and Salt ignores it "
        "silently (unless a custom module reads it)",
        f"remove {key!r} or check its spelling against the minion configuration reference",
    )  # fmt: skip


# --- config files Salt cannot read ---------------------------------------------


def check_config_files(ctx):
    """
    Files :func:`written_options` could not use. salt.config._read_conf_file raises
    on invalid YAML and on a document that is not a mapping, and the minion exits
    (``exit_on_config_errors``); a directory or non-UTF-8 file fails it too. Only a
    broken ``*_schedule.conf`` is renamed to ``*YAMLError`` and started without.
    """
    problems = ctx.given.get(CONFIG_PROBLEMS)
    findings = []
    for item in problems if isinstance(problems, list) else []:
        if not isinstance(item, dict) or not {"path", "option", "problem", "fatal"} <= set(item):
            continue
        path, problem = item["path"], escaped(item["problem"])
        if item["fatal"]:
            every = " (Salt reads every minion.d/*.conf)" if item["option"] == "default_include" else ""
            findings.append(
                finding(
                    "error", item["option"],
                    f"config file {path!r} {problem}: the salt-minion exits at start-up "
                    "while it is there, and the options in it are not linted",
                    f"fix {path!r} or move it out of the way{every}",
                )  # fmt: skip
            )
        elif str(path).endswith("_schedule.conf"):
            findings.append(
                finding(
                    "warning", item["option"],
                    f"config file {path!r} {problem}: Salt renames it to *YAMLError at "
                    "start-up and runs without the schedule it held",
                    f"fix {path!r} or remove it (Salt rewrites it when the schedule changes)",
                )  # fmt: skip
            )
        else:
            findings.append(
                finding(
                    "warning", item["option"],
                    f"config file {path!r} {problem}: the options in it are not linted",
                    "run ha.lint as the user the salt-minion runs as (usually root)",
                )  # fmt: skip
            )
    return findings


# --- option types and master_type --------------------------------------------


def check_option_types(ctx):
    """Wrongly typed values pass Salt's config validation with a log line and break later."""
    findings = []
    for option in NUMERIC_OPTIONS + BOOL_OPTIONS + STR_OPTIONS:
        if option in ctx.given and not has_type(option, ctx.given[option]):
            findings.append(type_finding(option, ctx.given[option]))
    return findings


def has_type(option, value):
    if option in BOOL_OPTIONS:
        return isinstance(value, bool)
    if option in STR_OPTIONS:
        return isinstance(value, str)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_finding(option, value):
    wanted = "True or False" if option in BOOL_OPTIONS else "a number"
    wanted = "a string" if option in STR_OPTIONS else wanted
    return finding(
        "error", option,
        f"{option} is {value!r} ({type(value).__name__}); Salt needs {wanted} and only "
        "logs a warning at start-up, then uses the value as is (a quoted number makes "
        "the minion fail when it compares it)",
        f"write {option}: {typed_example(option, value)} (unquoted)",
    )  # fmt: skip


def typed_example(option, value):
    """The value the operator probably meant, in the right type."""
    if option in BOOL_OPTIONS:
        return str(str(value).strip().lower() in ("true", "yes", "on", "1"))
    if option in STR_OPTIONS:
        return RECOMMENDED[option]
    if as_number(value) or str(value).strip() == "0":
        return fmt_seconds(as_number(value))
    return RECOMMENDED.get(option, salt.config.DEFAULT_MINION_OPTS.get(option))


def check_master_type(ctx):
    """eval_master: any other master_type value logs "Invalid keyword" and exits."""
    value = ctx.master_type
    if value in MASTER_TYPES or not isinstance(value, str):
        return []
    close = difflib.get_close_matches(value.lower(), MASTER_TYPES, n=1, cutoff=0.6)
    return [
        finding(
            "error", "master_type",
            f"master_type {value!r} is not one of {', '.join(MASTER_TYPES)}: the minion "
            "logs \"Invalid keyword\" and exits at start-up",
            f"master_type: {close[0] if close else 'failover'}",
        )  # fmt: skip
    ]


# --- the master list -----------------------------------------------------------


def check_master_entries(ctx):
    """A malformed entry (ha_endpoints raises) is a finding, not an exception."""
    if not ctx.endpoint_error:
        return []
    option = ctx.endpoint_error.split()[0]
    option = option if option in ("master_port", "publish_port") else "master"
    return [
        finding(
            "error", option,
            f"the {option} option cannot be used: {escaped(ctx.endpoint_error)}",
            PORT_EXAMPLES.get(
                option,
                "write master: [master1.example.com, master2.example.com] with host names "
                "or IP addresses only",
            ),
        )  # fmt: skip
    ]


def check_master_count(ctx):
    """Rule 2: failover with one master (eval_master turns a string into a 1-item list)."""
    if not ctx.failover or ctx.endpoint_error or len(ctx.endpoints) >= 2:
        return []
    only = entries_text(ctx.endpoints) or "none"
    return [
        finding(
            "error", "master",
            f"master_type is {ctx.master_type} but master lists {len(ctx.endpoints)} "
            f"master ({only}): there is nothing to fail over to",
            f"master: [{only}, <second master>] (at least two masters)",
        )  # fmt: skip
    ]


def check_list_without_failover(ctx):
    """
    Rule 14: a list with master_type str.

    MinionManager._spawn_minions creates one Minion per entry unless master_type is
    failover/distributed: the minion is connected to every master at once.
    """
    if ctx.master_type != "str" or len(ctx.endpoints) < 2:
        return []
    return [
        finding(
            "error", "master_type",
            f"master lists {len(ctx.endpoints)} masters ({entries_text(ctx.endpoints)}) "
            "but master_type is 'str' (the default): Salt then runs multi-master, one "
            "connection to every master at once (each must accept the key and each "
            "publishes jobs), not failover",
            "master_type: failover (and master_alive_interval: 10); keep master_type: str "
            "only if you want hot multi-master",
        )  # fmt: skip
    ]


def check_duplicate_masters(ctx):
    """Rule 12: an entry listed twice (same host and ret port, however spelled)."""
    seen = {}
    findings = []
    for endpoint in ctx.endpoints:
        key = (endpoint.host.lower(), endpoint.ret_port)
        if key in seen:
            findings.append(
                finding(
                    "error", "master",
                    f"master entry '{endpoint.master}' duplicates '{seen[key]}' "
                    f"({endpoint.host} port {endpoint.ret_port}): failing over from it "
                    "leads to the same dead master",
                    f"list every master once: master: [{dedup_text(ctx.endpoints)}]",
                )  # fmt: skip
            )
        seen.setdefault(key, endpoint.master)
    return findings


def dedup_text(endpoints):
    hosts = []
    for endpoint in endpoints:
        if endpoint.host not in hosts:
            hosts.append(endpoint.host)
    return ", ".join(hosts)


def check_host_port_entries(ctx):
    """
    Rule 6: ``host:port`` entries in a failover list.

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
        finding(
            "error" if shared else "warning", "master", message,
            f"run every master on the same ports on its own host and write host-only "
            f"entries: master: [{dedup_text(ctx.endpoints)}], "
            f"master_port: {ctx.endpoints[0].ret_port}",
        )  # fmt: skip
    ]


def check_ret_ports(ctx):
    """Rule 7: different ret ports; the minion has one publish_port for all masters."""
    ports = sorted({endpoint.ret_port for endpoint in ctx.endpoints})
    if not ctx.failover or len(ports) < 2:
        return []
    listing = ", ".join(f"{e.master} -> {e.ret_port}" for e in ctx.endpoints)
    publish = ctx.endpoints[0].publish_port
    return [
        finding(
            "warning", "master",
            f"the masters use different ret ports ({listing}) but the minion has a single "
            f"publish_port ({publish}) for all of them: status.master checks that port "
            "only, so a master publishing elsewhere looks disconnected",
            f"give every master the same ret_port and publish_port and write host-only "
            f"entries with master_port: {ports[0]} and publish_port: {publish}",
        )  # fmt: skip
    ]


def check_inherited_ports(ctx):
    """Rule 8: prep_ip_port overwrites master_port, so later portless entries inherit it."""
    default_port = int(as_number(ctx.opts.get("master_port"))) or ha_endpoints.DEFAULT_RET_PORT
    findings = []
    for endpoint in ctx.endpoints:
        if endpoint.explicit_port or endpoint.ret_port == default_port:
            continue
        findings.append(
            finding(
                "warning", "master",
                f"master entry '{endpoint.master}' has no port and follows a host:port "
                f"entry: the minion contacts it on port {endpoint.ret_port} (inherited), "
                f"not on master_port {default_port}",
                f"write every entry without a port and set master_port once "
                f"(master: [{dedup_text(ctx.endpoints)}])",
            )  # fmt: skip
        )
    return findings


def check_resolution(ctx):
    """Rule 13: names that do not resolve (a failover minion skips them silently)."""
    hosts = resolvable_hosts(ctx.endpoints)
    if ctx.resolver is None or not hosts:
        return []
    addresses = ctx.resolver(hosts) or {}
    findings = [unresolved_finding(ctx, host) for host in hosts if not addresses.get(host)]
    return findings + shared_address_findings(ctx.endpoints, addresses)


def resolvable_hosts(endpoints):
    hosts = []
    for endpoint in endpoints:
        if not endpoint.is_ip and endpoint.host not in hosts:
            hosts.append(endpoint.host)
    return hosts


def unresolved_finding(ctx, host):
    """resolve_dns: failover skips the name; otherwise retry_dns retries or 127.0.0.1."""
    if ctx.master_type == "failover":
        effect = "a failover minion skips it, so it can never take over"
    else:
        effect = (
            f"the minion retries it every retry_dns ({fmt_seconds(ctx.number('retry_dns'))}) "
            "s, or uses 127.0.0.1 when retry_dns is 0"
        )
    return finding(
        "error", "master",
        f"master name '{host}' does not resolve: {effect}",
        f"make '{host}' resolvable on the minion (DNS or /etc/hosts) or list that master "
        "by its IP address",
    )  # fmt: skip


def shared_address_findings(endpoints, addresses):
    """Two entries on one address: status.master cannot tell them apart."""
    owners = {}
    for endpoint in endpoints:
        found = [endpoint.host] if endpoint.is_ip else (addresses.get(endpoint.host) or [])
        for address in found:
            owners.setdefault(address, [])
            if endpoint.host not in owners[address]:
                owners[address].append(endpoint.host)
    return [
        finding(
            "warning", "master",
            f"masters {', '.join(hosts)} resolve to the same address {address}: the "
            "minion cannot tell them apart (status.master checks by IP), and if they are "
            "one machine a failover goes nowhere",
            "give every master its own address",
        )  # fmt: skip
        for address, hosts in owners.items()
        if len(hosts) > 1
    ]


def check_master_uri_format(ctx):
    """prep_ip_port with master_uri_format ip_only calls ipaddress.ip_address(entry)."""
    if ctx.opts.get("master_uri_format") != "ip_only":
        return []
    bad = [e.master for e in ctx.endpoints if not is_ip_literal(e.master)]
    if not bad:
        return []
    return [
        finding(
            "error", "master_uri_format",
            f"master_uri_format is ip_only but master entries {', '.join(bad)} are not "
            "bare IP addresses: the minion fails parsing them (ValueError) when connecting",
            "list the masters as bare IP addresses, or remove master_uri_format",
        )  # fmt: skip
    ]


def is_ip_literal(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- how a dead master is noticed ------------------------------------------------


def check_alive_interval(ctx):
    """Rule 3: without the alive job only the ZeroMQ monitor notices a dead master."""
    if not ctx.failover or ctx.opts.get("transport") == "tcp" or not ctx.flag("zmq_monitor"):
        return []  # tcp: rule 11; zmq_monitor off: rule 4 (an error)
    if ctx.number("master_alive_interval") > 0:
        return []
    return [
        finding(
            "warning", "master_alive_interval",
            f"master_alive_interval is {ctx.opts.get('master_alive_interval')!r} with "
            f"master_type {ctx.master_type}: only the ZeroMQ disconnect monitor notices a "
            "dead master, and master_failback cannot run (a hung master is never left "
            "either way)",
            "master_alive_interval: 10",
        )  # fmt: skip
    ]


def check_zmq_monitor(ctx):
    """Rule 4: no disconnect monitor and no alive job: no __master_disconnected, ever."""
    if not ctx.failover or ctx.opts.get("transport") != "zeromq" or ctx.flag("zmq_monitor"):
        return []
    if ctx.number("master_alive_interval") > 0:
        return []
    return [
        finding(
            "error", "zmq_monitor",
            f"zmq_monitor is {ctx.opts.get('zmq_monitor')!r} and master_alive_interval is "
            f"{ctx.opts.get('master_alive_interval')!r}: nothing fires __master_disconnected, "
            "so the minion never fails over (measured)",
            "zmq_monitor: True and master_alive_interval: 10",
        )  # fmt: skip
    ]


def check_failback(ctx):
    """
    Rule 5: the failback job is added only inside _post_master_init's alive-job block
    (``transport != "tcp" and master_alive_interval > 0``); eval_master copies
    master_alive_interval into a 0 master_failback_interval.
    """
    if not ctx.flag("master_failback"):
        return []
    alive = ctx.number("master_alive_interval")
    if not ctx.failover:
        severity, why, fix = (
            "warning",
            "master_failback is only used with master_type failover, so it is ignored",
            "master_type: failover",
        )
    elif ctx.opts.get("transport") == "tcp" or alive <= 0:
        severity, why, fix = (
            "error",
            "the failback job is only scheduled together with the alive job (transport "
            "not tcp and master_alive_interval > 0), so the minion never fails back",
            "master_alive_interval: 10 (and transport: zeromq)",
        )
    elif ctx.number("master_failback_interval") <= 0:
        severity, why, fix = (
            "info",
            f"master_failback_interval is unset: Salt uses master_alive_interval "
            f"({fmt_seconds(alive)} s) for it",
            f"master_failback_interval: {fmt_seconds(alive)} (to make it explicit)",
        )
    else:
        return []
    return [failback_finding(severity, ctx, why, fix)]


def failback_finding(severity, ctx, why, suggestion):
    values = (
        f"master_failback is True (master_type {escaped(ctx.master_type)}, transport "
        f"{escaped(ctx.opts.get('transport'))}, master_alive_interval "
        f"{ctx.opts.get('master_alive_interval')!r})"
    )
    return finding(severity, "master_failback", f"{values}: {why}", suggestion)


def check_tcp_transport(ctx):
    """
    Rule 11: minion.py schedules the alive job only when
    ``self.opts["transport"] != "tcp" and self.opts["master_alive_interval"] > 0``.
    """
    if not ctx.failover or ctx.opts.get("transport") != "tcp":
        return []
    return [
        finding(
            "warning", "transport",
            f"transport is tcp with master_type {ctx.master_type}: Salt schedules no "
            "master alive job on tcp, so master_alive_interval "
            f"({ctx.opts.get('master_alive_interval')!r}) and master_failback do nothing; "
            "only a closed connection triggers a failover",
            "transport: zeromq (on the minion and every master)",
        )  # fmt: skip
    ]


# --- what a failover costs -------------------------------------------------------


def check_auth_timeout(ctx):
    """Rule 9: every dead master tried during a failover costs one auth_timeout."""
    timeout = ctx.number("auth_timeout")
    if not ctx.failover or 0 < timeout <= AUTH_TIMEOUT_WARN_SECONDS:
        return []
    why = (
        "a sign-in can never succeed"
        if timeout <= 0
        else "each dead master tried during a failover costs that long"
    )
    return [
        finding(
            "error" if timeout <= 0 else "warning", "auth_timeout",
            f"auth_timeout is {ctx.opts.get('auth_timeout')!r} s: {why}",
            "auth_timeout: 5 (the default)",
        )  # fmt: skip
    ]


def check_auth_safemode(ctx):
    """
    AsyncAuth.sign_in returns "retry" on a timeout when auth_safemode is True, and
    _authenticate then retries the same master forever unless auth_retries > 0.
    """
    if not ctx.failover or not ctx.flag("auth_safemode"):
        return []
    retries = int(ctx.number("auth_retries"))
    if retries > 0:
        cost = retries * (ctx.number("auth_timeout") + ctx.number("acceptance_wait_time"))
        why = f"each dead master tried costs about {fmt_seconds(cost)} s ({retries} retries)"
    else:
        why = "a dead master tried first is retried forever and the minion never moves on"
    return [
        finding(
            "warning" if retries > 0 else "error", "auth_safemode",
            f"auth_safemode is True with master_type {ctx.master_type} (auth_retries "
            f"{ctx.opts.get('auth_retries')!r}): {why}",
            "auth_safemode: False",
        )  # fmt: skip
    ]


def check_retry_dns(ctx):
    """
    Rule 10: eval_master sets retry_dns to 0 for failover (logging CRITICAL at each
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
    written = "" if "retry_dns" in ctx.given else " (the default)"
    return [
        finding(
            severity, "retry_dns",
            f"retry_dns is {fmt_seconds(retry)}{written} with master_type {ctx.master_type}: {why}",
            "retry_dns: 0",
        )  # fmt: skip
    ]


def check_random_master(ctx):
    """
    Rule 15: eval_master shuffles local_masters at every (re)connection, the failed
    master included (only the primary stays first with master_failback).
    """
    findings = []
    if ctx.flag("master_shuffle"):
        findings.append(
            finding(
                "warning", "master_shuffle",
                "master_shuffle is True: it is deprecated and only copied to random_master",
                "random_master: True (and remove master_shuffle)",
            )
        )
    if ctx.failover and (ctx.flag("random_master") or ctx.flag("master_shuffle")):
        findings.append(
            finding(
                "info", "random_master",
                f"random_master is True with master_type {ctx.master_type}: the list is "
                "reshuffled at every reconnection, the failed master included, so a "
                "failover may try a dead master first (+auth_timeout "
                f"{fmt_seconds(ctx.number('auth_timeout'))} s)",
                "random_master: False, unless spreading minions over the masters matters more",
            )  # fmt: skip
        )
    return findings


def ha_beacon_options(opts):
    """The ``ha`` beacon's options (Salt's list-of-dicts form merged), or None when not configured."""
    beacons = opts.get("beacons")
    config = beacons.get("ha") if isinstance(beacons, dict) else None
    if config is None:
        return None
    merged = {}
    for item in config if isinstance(config, list) else [config]:
        if isinstance(item, dict):
            merged.update(item)
    return merged


def check_ha_beacon_timing(ctx):
    """
    Rule 16: Salt counts a beacon's ``interval`` in ``loop_interval`` units
    (salt/beacons/__init__.py), so any loop_interval but 1 s changes the ha beacon's
    real interval, and with it the hang detection time.
    """
    beacon = ha_beacon_options(ctx.opts)
    if beacon is None:
        return []
    findings = []
    loop = ctx.number("loop_interval")
    if loop and loop != 1:
        findings.append(
            finding(
                "warning", "loop_interval",
                f"loop_interval is {fmt_seconds(loop)} s: Salt counts the ha beacon's interval "
                f"in loop_intervals, so interval {escaped(beacon.get('interval', 5))} means "
                f"{fmt_seconds(as_number(beacon.get('interval', 5)) * loop)} s",
                "loop_interval: 1 (Salt's default)",
            )  # fmt: skip
        )
    return findings


RULES = (
    check_config_files,
    check_unknown_options,
    check_option_types,
    check_master_type,
    check_master_entries,
    check_master_count,
    check_list_without_failover,
    check_duplicate_masters,
    check_host_port_entries,
    check_ret_ports,
    check_inherited_ports,
    check_resolution,
    check_master_uri_format,
    check_alive_interval,
    check_zmq_monitor,
    check_failback,
    check_tcp_transport,
    check_auth_timeout,
    check_auth_safemode,
    check_retry_dns,
    check_random_master,
    check_ha_beacon_timing,
)


# --- failover time estimate ---------------------------------------------------------


def detection_seconds(opts):
    """
    How long until ``__master_disconnected`` fires for a closed connection, or None.

    tcp transport: the stream-closed callback; zeromq: the socket monitor
    (zmq_monitor, measured ~0.5 s); otherwise the status.master alive job, which
    runs every master_alive_interval.
    """
    if opts.get("transport") == "tcp" or opts.get("zmq_monitor"):
        return CLOSED_CONNECTION_SECONDS
    alive = as_number(opts.get("master_alive_interval"))
    return alive + CLOSED_CONNECTION_SECONDS if alive > 0 else None


def failed_master_retried_first(opts, endpoints):
    """
    Dead masters tried before a live one when one master fails: 0 with host-only
    entries (eval_master moves the failed master to the end), 1 when the list resets
    (host:port entries) or is reshuffled (random_master).
    """
    if any(endpoint.explicit_port for endpoint in endpoints):
        return 1
    return 1 if opts.get("random_master") or opts.get("master_shuffle") else 0


def never_reason(opts, endpoints, error):
    """Why a closed connection never leads to a failover, or None."""
    hosts = [endpoint.host.lower() for endpoint in endpoints]
    if error:
        return "the master option cannot be parsed"
    if opts.get("master_type") not in FAILOVER_TYPES:
        return f"master_type is {opts.get('master_type')!r}, not failover"
    if len(endpoints) < 2:
        return "there is only one master"
    if detection_seconds(opts) is None:
        return "zmq_monitor is off and master_alive_interval is 0"
    if any(e.explicit_port for e in endpoints) and len(set(hosts)) < len(hosts):
        return "host:port entries share one host"
    return None


def estimate_failover_seconds(opts):
    """
    Worst-case seconds until the minion works through another master.

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
    """The closing info finding."""
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
    return finding(
        "info", "master",
        f"estimated worst-case failover: {closed}; {hung}",
        "see the warnings and errors above to shorten it; for hung masters add the salt-ha "
        "beacon (beacons: {ha: [{interval: 5}, {timeout: 2}]})",
    )  # fmt: skip


# --- public entry points -------------------------------------------------------


def lint_options(opts, written_keys=None, resolver=None):
    """
    Lint minion options for failover.

    ``opts``: a running minion's ``__opts__`` or the mapping read from a config file;
    missing options take Salt's defaults. ``written_keys``: the option names the
    operator wrote (None: every key of ``opts``, or none for a running minion's
    ``__opts__``). ``resolver(hosts) -> {host: [addresses]}`` enables the DNS rule.
    Returns findings sorted errors, warnings, infos; the last is the failover estimate.
    """
    if not isinstance(opts, dict):
        raise SaltInvocationError(f"opts must be a dict, not {type(opts).__name__}")
    ctx = build_context(opts, written_keys, resolver)
    findings = [item for rule in RULES for item in rule(ctx)]
    findings = sort_findings(findings)
    log.debug("lint: %d findings for %d options", len(findings), len(opts))
    return findings + [estimate_finding(opts)]


class ConfigFileError(CommandExecutionError):
    """
    A config file Salt cannot use, or that cannot be read.

    ``path`` and ``problem`` (what is wrong, file-sourced parts escaped);
    ``fatal``: Salt refuses to start with it (a read failure of this process, or a
    broken ``_schedule.conf`` that Salt renames and starts without, is not fatal).
    """

    def __init__(self, path, problem, fatal=True):
        super().__init__(f"config file {path!r} {problem}")
        self.path = path
        self.problem = problem
        self.fatal = fatal


def yaml_problem(err):
    """A YAML error in one line: what is wrong and where (1-based line and column)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or not problem:
        return " ".join(str(err).split())
    context = f"{err.context}: " if getattr(err, "context", None) else ""
    return f"{context}{problem} (line {mark.line + 1}, column {mark.column + 1})"


def parse_config(data, path):
    """
    The options of a config file's ``data`` (str or bytes) read as Salt reads it
    (``salt.config._read_conf_file``): an empty or false document is ``{}``; invalid
    YAML or a document that is not a mapping raises :class:`ConfigFileError`
    naming ``path`` and the problem (escaped).
    """
    try:
        loaded = salt.utils.yaml.safe_load(data)
    except salt.utils.yaml.YAMLError as err:
        # Salt renames a broken *_schedule.conf to *YAMLError and starts without it.
        raise ConfigFileError(
            path,
            f"is not valid YAML: {yaml_problem(err)!r}",
            fatal=not str(path).endswith("_schedule.conf"),
        ) from err
    if not loaded:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigFileError(
            path, f"holds a {type(loaded).__name__}, not a mapping of options"
        )
    return loaded


def load_config_file(path):
    """
    Read a minion YAML config file: ``{}`` for an empty file, the mapping otherwise.

    Raises :class:`ConfigFileError` (a ``CommandExecutionError``) naming ``path`` when
    it is missing, unreadable, not UTF-8, not YAML, or not a mapping.
    """
    if not isinstance(path, str) or not path:
        raise ConfigFileError(path, "is not a file path", fatal=False)
    try:
        with salt.utils.files.fopen(path, "r") as handle:
            text = handle.read()
    except FileNotFoundError as err:
        raise ConfigFileError(path, "does not exist", fatal=False) from err
    except IsADirectoryError as err:
        raise ConfigFileError(path, "is a directory") from err
    except UnicodeDecodeError as err:
        raise ConfigFileError(path, f"cannot be read: it is not UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise ConfigFileError(
            path, f"cannot be read by this process: {err.strerror or err}", fatal=False
        ) from err
    return parse_config(text, path)


def written_options(conf_file):
    """
    The options written for a running minion: ``conf_file`` merged with every
    ``minion.d/*.conf`` next to it (Salt's default_include), later files winning.

    A file that cannot be used is left out of the merge and listed under
    ``CONFIG_PROBLEMS`` as ``{"path", "option", "problem", "fatal"}``; :func:`lint_options`
    turns each into a finding (an error when Salt refuses to start with it). A
    missing ``conf_file`` is not a problem (Salt runs on its defaults).
    """
    if not conf_file:
        return {}
    paths = [conf_file] + sorted(
        glob.glob(os.path.join(os.path.dirname(conf_file), "minion.d", "*.conf"))
    )
    written, problems = {}, []
    for path in paths:
        try:
            written.update(load_config_file(path))
        except ConfigFileError as err:
            if isinstance(err.__cause__, FileNotFoundError):
                continue  # no config file (Salt's defaults), or a drop-in removed meanwhile
            log.debug("lint: cannot use %r: %s", path, err.problem)
            option = "conf_file" if path == conf_file else "default_include"
            problems.append({"path": path, "option": option, "problem": err.problem, "fatal": err.fatal})
    if problems:
        written[CONFIG_PROBLEMS] = problems
    return written


# Options a salt-call process overrides from its own command line (``-t``/``--timeout``
# defaults to 60 and lands in auth_timeout); the daemon never sees those values.
SALT_CALL_CLI_OPTIONS = ("auth_timeout",)


def daemon_options(opts, written):
    """
    The running daemon's options as seen from any process: ``opts`` with the
    options a salt-call command line overrides put back to Salt's defaults, then
    what the operator wrote (config file and ``minion.d``) on top.
    """
    reset = {key: salt.config.DEFAULT_MINION_OPTS[key] for key in SALT_CALL_CLI_OPTIONS}
    return {**opts, **reset, **written}


def written_option_keys(conf_file):
    """Option names written for a running minion (see :func:`written_options`)."""
    return set(written_options(conf_file)) - {CONFIG_PROBLEMS}
