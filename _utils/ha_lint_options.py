"""
Lint rules HA4xx: the options as written. Names Salt does not know (Salt ignores
them silently, so a typo of a failover option breaks failover), values of the wrong
type (Salt only logs a warning), config files the minion cannot use
(:mod:`ha_minion_config` finds them; the daemon exits, crashes or skips them), and
``engines`` lists one file silently replaces in another.

Each rule takes a :class:`ha_lint_context.LintContext` and returns a list of findings
with the ids it declares (:func:`ha_lint_findings.produces`).
"""

import difflib

import salt.config

import ha_minion_config
import ha_text
from ha_lint_findings import as_number, fmt_seconds, lint_finding, produces, yaml_value

# Keys that are legitimately written in a minion config or set at runtime by Salt
# without being entries of DEFAULT_MINION_OPTS / VALID_OPTS.
NON_OPTION_KEYS = frozenset(
    {
        "grains", "mine_functions", "beacons", "schedule", "engines", "ha",
        "pillar", "include", "default_include", "master_uri", "master_ip",
        "local_masters", "master_uri_list", "multimaster", "beacons_leader",
        "resources", "detect_mode", "source_ip", "proxy",
    }
)

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
}
CONCEPTS = {name: fix for fix, names in CONCEPT_SUGGESTIONS.items() for name in names}

NUMERIC_OPTIONS = (
    "master_alive_interval", "master_failback_interval", "auth_timeout", "auth_tries",
    "auth_retries", "acceptance_wait_time", "acceptance_wait_time_max", "retry_dns",
    "master_tries",
)
BOOL_OPTIONS = (
    "master_failback", "zmq_monitor", "random_master", "master_shuffle", "auth_safemode",
)
STR_OPTIONS = ("master_type", "transport")
RECOMMENDED = {
    "master_type": "failover",
    "transport": "zeromq",
    "master_alive_interval": 10,
    "retry_dns": 0,
}


def known_options():
    """Every minion option name Salt knows."""
    return set(salt.config.DEFAULT_MINION_OPTS) | set(salt.config.VALID_OPTS)


@produces("HA401", "HA402", "HA403")
def check_unknown_options(ctx):
    """
    HA401, HA402, HA403: options Salt does not know are ignored silently, so typos of
    failover options break failover.
    """
    known = known_options()
    findings = []
    for key in ctx.written_keys:
        text = str(key)
        if text.startswith("__") or "." in text or (text in known or text in NON_OPTION_KEYS):
            continue  # "mysql.host"-style keys are module configuration
        if text.endswith("_dirs"):
            continue  # <loader>_dirs (engines_dirs, log_handlers_dirs, ...): Salt's loader reads any
        findings.append(unknown_option_finding(text, ctx.supplied_options.get(key), known))
    return findings


def unknown_option_finding(key, value, known):
    """HA401 (a failover concept), HA402 (a misspelling) or HA403 (unknown) for ``key``."""
    normalized = key.lower().replace("-", "_").strip()
    if normalized in CONCEPTS:
        fix = CONCEPTS[normalized]
        if fix.startswith("master: [") and isinstance(value, (list, tuple)) and value:
            fix = f"master: {yaml_value(value)}"
        also = "" if fix == "master_type: failover" else " with master_type: failover"
        return lint_finding(
            "HA401", "error", key,
            f"{key!r} is not a Salt minion option: Salt ignores it silently, so this "
            "setting does nothing for failover",
            f"did you mean {fix}? Write `{fix}`{also} and remove {key!r}",
        )
    match = normalized if normalized in known else None
    match = match or next(iter(difflib.get_close_matches(normalized, known, n=1, cutoff=0.8)), None)
    if match:
        return lint_finding(
            "HA402", "error", key,
            f"{key!r} is not a Salt minion option (Salt ignores it silently); "
            f"it looks like a misspelling of '{match}'",
            f"did you mean {match}? Write `{match}: {yaml_value(value)}` instead of {key!r}",
        )
    return lint_finding(
        "HA403", "warning", key,
        f"unknown option {key!r}: it is not a Salt minion option and Salt ignores it "
        "silently (unless a custom module reads it)",
        f"remove {key!r} or check its spelling against the minion configuration reference",
    )


@produces("HA404")
def check_option_types(ctx):
    """HA404: wrongly typed values pass Salt's config validation with a log line and break later."""
    findings = []
    supplied = ctx.supplied_options
    for option in NUMERIC_OPTIONS + BOOL_OPTIONS + STR_OPTIONS:
        if option in supplied and not has_type(option, supplied[option]):
            findings.append(type_finding(option, supplied[option]))
    return findings


def has_type(option, value):
    """Whether ``value`` has the type Salt needs for ``option``."""
    if option in BOOL_OPTIONS:
        return isinstance(value, bool)
    if option in STR_OPTIONS:
        return isinstance(value, str)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_finding(option, value):
    """HA404 for ``option`` written as ``value``."""
    wanted = "True or False" if option in BOOL_OPTIONS else "a number"
    wanted = "a string" if option in STR_OPTIONS else wanted
    return lint_finding(
        "HA404", "error", option,
        f"{option} is {value!r} ({type(value).__name__}); Salt needs {wanted} and only "
        "logs a warning at start-up, then uses the value as is (a quoted number makes "
        "the minion fail when it compares it)",
        f"write {option}: {typed_example(option, value)} (unquoted)",
    )


def typed_example(option, value):
    """The value the operator probably meant, in the right type."""
    if option in BOOL_OPTIONS:
        return str(str(value).strip().lower() in ("true", "yes", "on", "1"))
    if option in STR_OPTIONS:
        return RECOMMENDED[option]
    if as_number(value) or str(value).strip() == "0":
        return fmt_seconds(as_number(value))
    return RECOMMENDED.get(option, salt.config.DEFAULT_MINION_OPTS.get(option))


# --- config files the minion cannot use --------------------------------------------


@produces("HA405", "HA406", "HA407", "HA408", "HA409", "HA410")
def check_config_files(ctx):
    """
    HA405, HA406, HA407, HA408, HA409, HA410: the files
    :func:`ha_minion_config.read_minion_config` could not use.
    salt.config._read_conf_file raises on invalid YAML and on a document that is not
    a mapping, and the minion exits (``exit_on_config_errors``); a directory, a
    non-UTF-8 file or an include cycle crashes it. Only a broken ``*_schedule.conf``
    is renamed to ``*YAMLError`` and started without, and a broken file named by a
    nested ``include`` is skipped with an error in the log.
    """
    return [
        config_file_finding(problem)
        for problem in ctx.config_problems
        if problem.effect != ha_minion_config.REPLACED
    ]


@produces("HA411")
def check_replaced_lists(ctx):
    """
    HA411: an ``engines`` list Salt drops. ``salt.config.minion_config`` updates the
    config file's options with the merged ``default_include`` files by a plain
    ``dict.update`` (then with the ``include`` files): lists are merged only between
    the files of one layer, so an ``engines`` key in any ``minion.d/*.conf`` drop-in
    replaces the config file's ``engines`` whole, and those engines never start
    (:func:`ha_minion_config.replaced_lists` finds them).
    """
    return [
        replaced_list_finding(problem)
        for problem in ctx.config_problems
        if problem.effect == ha_minion_config.REPLACED
    ]


def replaced_list_finding(problem):
    """HA411 for one :data:`ha_minion_config.REPLACED` problem."""
    kept = ", ".join(repr(path) for path in problem.replaced_by)
    option = ha_text.printable(problem.option)
    return lint_finding(
        "HA411", "warning", problem.option,
        f"config file {problem.path!r} {ha_text.printable(problem.problem)}",
        f"move the {option} of {problem.path!r} into {kept}, or keep every {option} list in "
        f"minion.d/*.conf drop-ins, where Salt merges them",
    )


# effect -> (id, severity, what it does to the minion, suggestion); the texts are
# formatted with path, options_of (whose options are not linted), included_by, every.
CONFIG_FILE_FINDINGS = {
    ha_minion_config.EXITS: (
        "HA405", "error",
        "the salt-minion exits at start-up while it is there, and the options {options_of} are not linted",
        "fix {path!r} or move it out of the way{every}",
    ),
    ha_minion_config.RENAMED: (
        "HA406", "warning",
        "Salt renames it to *YAMLError at start-up and runs without the schedule it held",
        "fix {path!r} or remove it (Salt rewrites it when the schedule changes)",
    ),
    ha_minion_config.UNREADABLE_HERE: (
        "HA407", "warning",
        "the options {options_of} are not linted",
        "run ha.lint as the user the salt-minion runs as (usually root)",
    ),
    ha_minion_config.IGNORED: (
        "HA408", "warning",
        "the salt-minion logs an error at start-up and runs without it; the options {options_of} are not linted",
        "fix {path!r} or remove it from the include of {included_by!r}",
    ),
    ha_minion_config.BAD_VALUE: (
        "HA409", "error",
        "the salt-minion fails at start-up reading it, and the files it means to include are not linted",
        "write a file path or glob, or a list of them (e.g. include: [failover.conf])",
    ),
}
UNMATCHED_INCLUDE_FINDING = (
    "HA410", "warning",
    "Salt logs a warning at start-up and reads nothing for it",
    "create the file, correct the include entry or remove it",
)


def config_file_finding(problem):
    """The finding for one :class:`ha_minion_config.ConfigFileProblem`."""
    finding_id, severity, effect, suggestion = CONFIG_FILE_FINDINGS.get(problem.effect, UNMATCHED_INCLUDE_FINDING)
    every = ""
    if problem.option == "default_include" and not problem.included_by:
        every = f" (Salt reads every {ha_text.printable(problem.pattern)})"
    values = {
        "path": problem.path,
        "included_by": problem.included_by,
        "options_of": "in it and in the files that include it" if problem.included_by else "in it",
        "every": every,
    }
    by = f" (included by {problem.included_by!r})" if problem.included_by else ""
    named = f"config file {problem.path!r}{by} {ha_text.printable(problem.problem)}"
    return lint_finding(
        finding_id, severity, problem.option, f"{named}: {effect.format(**values)}", suggestion.format(**values)
    )
