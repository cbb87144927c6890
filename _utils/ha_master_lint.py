"""
Lint a master's own settings: Salt's master cluster, the job store, the request
workers, salt-ha's ``ha:peers``, and what the peers answer (the runner's ``ha.lint``).

:func:`lint_master` runs every rule of :data:`RULES` over one
:class:`MasterLintContext` and returns the findings errors first, then warnings,
then infos. A finding has the shape of the minion's ``ha.lint``: ``{"id",
"severity", "option", "message", "suggestion"}``; the ids are HA7xx, declared in
``ha_lint_findings.MASTER_FINDING_TITLES``. The rules live by theme, each citing
the Salt 3008.4 code it relies on: :mod:`ha_master_lint_cluster` (HA70x-HA72x),
:mod:`ha_master_lint_jobs` (HA73x, HA74x), :mod:`ha_master_lint_peers` (HA75x,
HA76x).

Some rules need what the operator *wrote*, not only the effective options (Salt
drops ``cluster_peers`` without ``cluster_id``, and makes up an ``id``):
:func:`read_written_options` reads the master's config file, its
``default_include`` files (``master.d/*.conf``) and its ``include`` files as the
salt-master reads them (``ha_minion_config.read_included``, Salt's own merge).
"""

import dataclasses
import logging
import os

import salt.config
import salt.exceptions
import salt.version
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_config_file
import ha_master_lint_cluster
import ha_master_lint_jobs
import ha_master_lint_peers
import ha_minion_config
import ha_storm
from ha_lint_findings import sort_findings

log = logging.getLogger(__name__)

MASTER_DEFAULT_INCLUDE = salt.config.DEFAULT_MASTER_OPTS["default_include"]

# Every rule, in the order its findings appear within one severity.
RULES = (
    ha_master_lint_cluster.check_peers_required,
    ha_master_lint_cluster.check_options_without_cluster,
    ha_master_lint_cluster.check_peer_entries,
    ha_master_lint_cluster.check_missing_peers,
    ha_master_lint_cluster.check_id_set,
    ha_master_lint_cluster.check_id_matches_interface,
    ha_master_lint_cluster.check_interface,
    ha_master_lint_cluster.check_cluster_secret,
    ha_master_lint_cluster.check_pub_fingerprint,
    ha_master_lint_cluster.check_pki_dir,
    ha_master_lint_cluster.check_shared_folders,
    ha_master_lint_cluster.check_isolated_driver,
    ha_master_lint_cluster.check_roots,
    ha_master_lint_cluster.check_balancer_timeout,
    ha_master_lint_cluster.check_health_check,
    ha_master_lint_jobs.check_local_cache,
    ha_master_lint_jobs.check_ext_job_cache,
    ha_master_lint_jobs.check_job_cache_off,
    ha_master_lint_jobs.check_keep_jobs,
    ha_master_lint_jobs.check_worker_pools,
    ha_master_lint_peers.check_peer_entries,
    ha_master_lint_peers.check_peer_targets,
    ha_master_lint_peers.check_peer_versions,
)


@dataclasses.dataclass(frozen=True)
class MasterLintContext:
    """
    What the master rules read. ``opts``: the effective master options (Salt's
    defaults applied); ``written``: what the config files set (None: unknown);
    ``resolver(hosts) -> {host: [addresses]}`` (None: no DNS rules);
    ``filesystem_of(path) -> (fstype, mount point) or None``; ``peers``: the
    answers of :func:`ha_master_lint_peers.ask_peers` (None: not asked);
    ``salt_version``: this master's; ``path_exists``: ``os.path.exists``.
    """

    opts: dict
    written: dict = None
    resolver: object = None
    filesystem_of: object = ha_master_lint_cluster.filesystem_of
    peers: dict = None
    salt_version: str = salt.version.__version__
    path_exists: object = os.path.exists
    usable_peers: tuple = ()

    def wrote(self, option):
        """True/False: the config files set ``option``; None when the files are unknown."""
        return None if self.written is None else option in self.written

    def wrote_value(self, option):
        """
        A value the operator wrote for ``option`` that is neither empty nor Salt's
        default: from the files when known, else from the effective options.
        """
        value = self.opts.get(option) if self.written is None else self.written.get(option)
        return value if value and value != salt.config.DEFAULT_MASTER_OPTS.get(option) else None

    def resolve(self, hosts):
        """``{host: [addresses]}`` for ``hosts``: an address is itself; names need a resolver."""
        hosts = sorted({host for host in hosts if host})
        found = {host: [host] for host in hosts if ha_master_lint_cluster.is_address(host)}
        names = [host for host in hosts if host not in found]
        if self.resolver is not None and names:
            found.update(self.resolver(names) or {})
        return found


def build_context(opts, written=None, resolver=None, peers=None, **overrides):
    """A :class:`MasterLintContext` for ``opts`` (see there); ``overrides`` replace its helpers (tests)."""
    if not isinstance(opts, dict):
        raise SaltInvocationError(f"opts must be a dict, not {type(opts).__name__}")
    usable = tuple(ha_master_lint_peers.usable_peers(opts))
    return MasterLintContext(
        opts=opts, written=written, resolver=resolver, peers=peers, usable_peers=usable, **overrides
    )


def lint_master(opts, written=None, resolver=None, peers=None, minion_count=None, **overrides):
    """
    Lint a master's options; findings sorted errors, warnings, infos.

    ``opts``: the effective options (``__opts__``, or :func:`options_from_file`);
    ``written``: :func:`read_written_options` (None: unknown, the rules fall back on
    the effective values); ``resolver``, ``peers``: see :class:`MasterLintContext`;
    ``minion_count``: the minions that may sign in here at once when another master
    dies (its accepted keys), for the failover-storm rules HA811/HA812
    (:func:`ha_storm.storm_findings`); None: not checked.
    """
    ctx = build_context(opts, written, resolver, peers, **overrides)
    findings = [item for rule in RULES for item in rule(ctx)]
    if minion_count is not None:
        findings += ha_storm.storm_findings(opts, minion_count)
    findings = sort_findings(findings)
    log.debug("ha.lint (master): %d findings", len(findings))
    return findings


def read_written_options(conf_file):
    """
    The options written in the master config file ``conf_file`` and in the files its
    ``default_include`` (``master.d/*.conf``) and ``include`` name, merged as Salt
    merges them; None when ``conf_file`` is unset or cannot be read (the rules then
    use the effective options). Files Salt could not use are left out.
    """
    if not conf_file:
        return None
    try:
        options = ha_config_file.load_config_file(conf_file)
    except ha_config_file.ConfigFileError as err:
        log.debug("ha.lint: cannot read %r: %s", conf_file, err.problem)
        return None
    merged = dict(options)
    for option, default in (("default_include", MASTER_DEFAULT_INCLUDE), ("include", [])):
        included, _, problems = ha_minion_config.read_included(conf_file, option, options.get(option, default))
        for problem in problems:
            log.debug("ha.lint: %s %s", problem.path, problem.problem)
        merged.update(included)
    return merged


def options_from_file(path):
    """
    ``(effective options, written options)`` of the master config file ``path``, read
    by Salt's ``salt.config.master_config`` (defaults, includes, ``apply_master_config``).
    Raises ``CommandExecutionError`` naming the file when Salt cannot use it.
    """
    ha_config_file.load_config_file(path)  # a clear error for a missing or broken file
    try:
        opts = salt.config.master_config(path)
    except (salt.exceptions.SaltConfigurationError, ValueError, OSError) as err:
        raise CommandExecutionError(f"master config {path!r}: Salt refuses it: {err}") from err
    return dict(opts), read_written_options(path)
