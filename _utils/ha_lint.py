"""
Lint a minion's failover settings against what Salt 3008's minion code really does.

:func:`lint_options` runs every rule of :data:`RULES` over one
:class:`ha_lint_context.LintContext` and returns the findings errors first, then
warnings, then infos, ending with the failover time estimate (HA901,
:mod:`ha_failover_time`). The rules live by theme, each citing the Salt code or the
measurement it relies on: :mod:`ha_lint_masters` (HA1xx), :mod:`ha_lint_timing`
(HA2xx), :mod:`ha_lint_network` (HA3xx), :mod:`ha_lint_frontdoor` (HA31x),
:mod:`ha_lint_options` (HA4xx), :mod:`ha_lint_returns` (HA5xx), :mod:`ha_lint_keys`
(HA6xx). A finding is
``{"id", "severity", "option", "message", "suggestion"}`` (:mod:`ha_lint_findings`,
where every id is declared with its title).
"""

import logging

from salt.exceptions import SaltInvocationError

import ha_failover_time
import ha_lint_frontdoor
import ha_lint_keys
import ha_lint_masters
import ha_lint_network
import ha_lint_options
import ha_lint_returns
import ha_lint_timing
from ha_lint_context import build_context

# ha_report builds the probe findings of ha.status with these (imported from here).
from ha_lint_findings import SEVERITY_ORDER, finding, sort_findings  # noqa: F401

log = logging.getLogger(__name__)

# Every rule, in the order its findings appear within one severity.
RULES = (
    ha_lint_options.check_config_files,
    ha_lint_options.check_replaced_lists,
    ha_lint_options.check_unknown_options,
    ha_lint_options.check_option_types,
    ha_lint_masters.check_master_type,
    ha_lint_masters.check_master_entries,
    ha_lint_masters.check_master_count,
    ha_lint_masters.check_list_without_failover,
    ha_lint_masters.check_duplicate_masters,
    ha_lint_masters.check_host_port_entries,
    ha_lint_masters.check_ret_ports,
    ha_lint_masters.check_inherited_ports,
    ha_lint_network.check_resolution,
    ha_lint_masters.check_master_uri_format,
    ha_lint_timing.check_alive_interval,
    ha_lint_timing.check_zmq_monitor,
    ha_lint_timing.check_failback,
    ha_lint_network.check_tcp_transport,
    ha_lint_timing.check_auth_timeout,
    ha_lint_timing.check_grains_cache,
    ha_lint_timing.check_auth_safemode,
    ha_lint_network.check_retry_dns,
    ha_lint_frontdoor.check_front_door_declaration,
    ha_lint_frontdoor.check_front_door_detection,
    ha_lint_frontdoor.check_front_door_keys,
    ha_lint_frontdoor.check_front_door_topology,
    ha_lint_timing.check_random_master,
    ha_lint_timing.check_ha_beacon_timing,
    ha_lint_timing.check_tcp_keepalive,
    ha_lint_returns.check_returns_engine,
    ha_lint_keys.check_signing_key_file,
    ha_lint_keys.check_signing_options,
)


def lint_options(opts, written_keys=None, resolver=None, config_problems=()):
    """
    Lint minion options for failover.

    ``opts``: a running minion's options (see :func:`ha_minion_config.daemon_options`)
    or the mapping read from a config file; missing options take Salt's defaults.
    ``written_keys``: the option names the operator wrote (None: every key of
    ``opts``, or none for a running minion's ``__opts__``). ``resolver(hosts) ->
    {host: [addresses]}`` enables the DNS rules. ``config_problems``: the
    :class:`ha_minion_config.ConfigFileProblem` of the files read for ``opts``.
    Returns findings sorted errors, warnings, infos; the last is the failover estimate.
    """
    if not isinstance(opts, dict):
        raise SaltInvocationError(f"opts must be a dict, not {type(opts).__name__}")
    ctx = build_context(opts, written_keys, resolver, config_problems)
    findings = sort_findings([item for rule in RULES for item in rule(ctx)])
    log.debug("lint: %d findings for %d options", len(findings), len(opts))
    return findings + [ha_failover_time.estimate_finding(opts)]
