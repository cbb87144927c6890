"""
What every lint rule looks at: :class:`LintContext`, built once per lint from the
options given, Salt's minion defaults and the parsed master list.
"""

import dataclasses

import salt.config
from salt.exceptions import SaltInvocationError

import ha_endpoints
from ha_lint_findings import as_number

FAILOVER_TYPES = ("failover", "distributed")
MASTER_TYPES = ("str", "failover", "distributed", "func", "disable")
LIST_MASTER_TYPES = ("str", "failover", "distributed")


@dataclasses.dataclass(frozen=True)
class LintContext:
    """
    The options a lint looks at, each under a name that says what it holds.

    ``effective_options``: Salt's minion defaults overlaid with the supplied options
    (what the minion runs with; ``master`` is the configured list, see
    :func:`effective_options`). ``supplied_options``: the mapping given to the lint
    as is (a config file's options, or a running daemon's). ``written_keys``: the
    option names the operator wrote in config files (the only ones the unknown-option
    rules judge). ``endpoints``/``endpoint_error``: the parsed master list, or why it
    cannot be parsed. ``resolver``: ``hosts -> {host: [addresses]}`` or None (no DNS
    rule). ``config_problems``: the config files that could not be used
    (:class:`ha_minion_config.ConfigFileProblem`).
    """

    effective_options: dict
    supplied_options: dict
    written_keys: tuple
    endpoints: tuple
    endpoint_error: str
    resolver: object
    config_problems: tuple = ()

    @property
    def master_type(self):
        return self.effective_options.get("master_type")

    @property
    def failover(self):
        return self.master_type in FAILOVER_TYPES

    @property
    def running_minion(self):
        """The options are a running minion's (``__role`` present): its whole configuration."""
        return "__role" in self.supplied_options

    def number(self, option):
        """The effective option as a float, tolerant of numeric strings; 0.0 when unusable."""
        return as_number(self.effective_options.get(option))

    def flag(self, option):
        """The effective option as a bool."""
        return bool(self.effective_options.get(option))


def effective_options(supplied):
    """
    Salt's minion defaults overlaid with the ``supplied`` options.

    A running minion (``__role`` present) keeps the configured master list in
    ``master_list`` once connected (``supplied["master"]`` is then the current
    master), so that list is linted instead.
    """
    merged = dict(salt.config.DEFAULT_MINION_OPTS)
    merged.update(supplied)
    merged["master"] = ha_endpoints.configured_master_option(supplied)
    return merged


def parse_endpoints(options):
    """``(endpoints, error message or None)``; no endpoints for func/disable master types."""
    if options.get("master_type") not in LIST_MASTER_TYPES:
        return (), None
    try:
        return tuple(ha_endpoints.master_endpoints(options)), None
    except SaltInvocationError as err:
        return (), str(err)


def build_context(supplied, written_keys=None, resolver=None, config_problems=()):
    """
    The :class:`LintContext` for the ``supplied`` options. ``written_keys`` None: every
    key of ``supplied`` counts as written, except for a running minion's ``__opts__``
    (``__role`` present), which holds every default and runtime key: without the
    keys the operator wrote, nothing can be called a typo.
    """
    if written_keys is None:
        written = () if "__role" in supplied else tuple(supplied)
    else:
        written = tuple(written_keys)
    merged = effective_options(supplied)
    endpoints, error = parse_endpoints(merged)
    return LintContext(merged, dict(supplied), written, endpoints, error, resolver, tuple(config_problems))
