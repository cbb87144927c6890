"""
What a lint finding is: its stable id, its shape, its order, and how values from a
config are written into its message.

A finding is ``{"id", "severity": "error"|"warning"|"info", "option", "message",
"suggestion"}``. Every id is declared once in :data:`FINDING_TITLES` (the README's
``ha.lint`` table lists the same ids); a rule declares the ids it may return with
:func:`produces`. Ids are numbered by theme: HA1xx the master list and
``master_type``, HA2xx detection, failback and sign-in timing (HA22x partitioned
masters and TCP keepalive), HA3xx DNS and
transport (HA31x front doors: a VIP, a balancer or a DNS name in front of several
masters), HA4xx unknown options, value types and config files, HA5xx job returns
across a failover (the ``ha_returns`` engine), HA6xx the master keys the minion
accepts (one shared master key or master pubkey signing), HA80x failover storms
(many minions signing in to one survivor at once), HA9xx the failover time
estimate. The master's own rules (the runner's ``ha.lint``) use HA7xx, declared in
:data:`MASTER_FINDING_TITLES`; the master's storm rules (``ha_storm.storm_findings``)
HA81x, declared in :data:`STORM_FINDING_TITLES`.
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
    # HA22x: partitioned masters, TCP keepalive (ha_lint_timing, facts in ha_keepalive)
    "HA221": "a partitioned master is left only when TCP keepalive gives up",
    "HA222": "tcp_keepalive False: a partitioned master is never left",
    "HA223": "a TCP keepalive value pyzmq refuses (not a whole number)",
    # HA3xx: DNS and transport (ha_lint_network)
    "HA301": "a master name does not resolve",
    "HA302": "masters on one address",
    "HA303": "retry_dns above 0 with failover",
    "HA304": "transport tcp: no alive job",
    # HA31x: front doors, one address for several masters (ha_lint_frontdoor)
    "HA311": "one master address and no failover list: a front door or no failover",
    "HA312": "ha:front_door is not vip, balancer or dns",
    "HA313": "ha:front_door with a failover list",
    "HA314": "a front door without short TCP keepalive: the minion does not follow the master behind it",
    "HA315": "a front door needs the same master key on every master and the minion's key accepted on all",
    "HA316": "a front door without a disconnect monitor or alive job: the minion never reconnects",
    "HA317": "a TCP balancer must close the minion's sessions when a master goes down",
    "HA318": "a DNS front door: records that move, short TTLs",
    "HA319": "a keepalived VIP must follow the masters' application-level health",
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
    # HA6xx: the master keys the minion accepts (ha_lint_keys)
    "HA601": "the key model: one shared master key, or master pubkey signing",
    "HA602": "verify_master_pubkey_sign without the signing public key",
    "HA603": "a signing public key Salt cannot use",
    "HA604": "master_finger pins one master key while signing lets the keys differ",
    "HA605": "a signing public key without verify_master_pubkey_sign",
    "HA606": "always_verify_signature without verify_master_pubkey_sign",
    # HA80x: failover storms, the minion's side (ha_lint_timing, values from ha_storm)
    "HA801": "acceptance_wait_time above 2 s: a long retry cycle in a failover storm",
    "HA802": "auth_timeout below 10 s: a busy survivor's answers come too late in a failover storm",
    "HA803": "master_tries above 0: the minion gives up and exits when a storm makes its rounds fail",
    "HA804": "no fresh grains cache: every failover runs every grains module again before the minion takes jobs",
    # HA9xx: the estimate (ha_failover_time)
    "HA901": "the estimated worst-case failover time",
}

# The master's own settings (the runner's ha.lint, ha_master_lint): a table of their
# own, so the minion's rule set (FINDING_TITLES) stays exactly what ha.lint on a
# minion can return. HA70x cluster membership and identity, HA71x the cluster's
# shared or isolated filesystem, HA72x the balancer in front, HA73x the job store,
# HA74x request workers, HA75x ha:peers, HA76x what the peers answer.
MASTER_FINDING_TITLES = {
    # HA70x: cluster membership and identity (ha_master_lint_cluster)
    "HA701": "cluster_id without cluster_peers: the salt-master exits at start",
    "HA702": "cluster options without cluster_id are ignored",
    "HA703": "a cluster_peers entry Salt cannot use",
    "HA704": "cluster_peers lists this master itself",
    "HA705": "cluster_peers misses a master of the cluster",
    "HA706": "id not set on a cluster master",
    "HA707": "id is not the name the other masters list for this master",
    "HA708": "interface is a wildcard address on a cluster master",
    "HA709": "a cluster without cluster_secret: any host reaching the pool port can join",
    "HA710": "an isolated-filesystem cluster without cluster_pub_fingerprint",
    # HA71x: the cluster's shared or isolated filesystem (ha_master_lint_cluster)
    "HA711": "cluster_pki_dir unset: minion keys fall back to pki_dir",
    "HA712": "a folder the cluster masters must share is on a local filesystem",
    "HA713": "cluster_isolated_filesystem without keys.cache_driver mmap_key",
    "HA714": "file_roots and pillar_roots of a cluster master",
    # HA72x: the balancer in front of the cluster (ha_master_lint_cluster)
    "HA721": "the balancer's idle timeout on the publish port",
    "HA722": "a TCP health check cannot see a hung master",
    # HA73x: the job store (ha_master_lint_jobs)
    "HA731": "local_cache on several masters: the survivor cannot look up the dead master's jobs",
    "HA732": "ext_job_cache: the master keeps no returns of its own",
    "HA733": "job_cache False: the master keeps no returns",
    "HA734": "keep_jobs is ignored (Salt reads keep_jobs_seconds)",
    "HA735": "keep_jobs_seconds 0: jobs are never purged",
    # HA74x: request workers (ha_master_lint_jobs)
    "HA741": "worker_pools_enabled False: the 3008.4 request server answers no minion",
    # HA75x: ha:peers (ha_master_lint_peers)
    "HA751": "an ha:peers entry salt-ha cannot use",
    "HA752": "an ha:peers entry with TLS verification off",
    "HA753": "an ha:peers CA bundle that does not exist",
    "HA754": "an ha:peers URL over plain http",
    "HA755": "an ha:peers entry pointing at this master",
    "HA756": "two ha:peers entries with one URL",
    # HA76x: what the peers answer (ha_master_lint_peers)
    "HA761": "a peer runs another Salt version",
    "HA762": "a peer did not answer: not compared",
}

# The master's side of failover storms (ha_storm.storm_findings, called by the
# runner's ha.lint with the number of minions that may sign in at once).
STORM_FINDING_TITLES = {
    "HA811": "too few MWorkers answer _auth for the minions that may sign in at once",
    "HA812": "the master's CPUs cannot answer the minions that may sign in at once within auth_timeout",
}

# Every declared id, minion and master side: what produces and lint_finding accept.
ALL_FINDING_TITLES = {**FINDING_TITLES, **MASTER_FINDING_TITLES, **STORM_FINDING_TITLES}


def produces(*finding_ids):
    """
    Decorate a rule with the ids of the findings it may return: sets
    ``rule.finding_ids`` and appends each id with its title to the rule's docstring.
    """
    unknown = [finding_id for finding_id in finding_ids if finding_id not in ALL_FINDING_TITLES]
    if unknown:
        raise ValueError(f"finding ids {unknown} are not declared in FINDING_TITLES")

    def mark(rule):
        rule.finding_ids = finding_ids
        titles = "".join(f"\n    {finding_id}: {ALL_FINDING_TITLES[finding_id]}" for finding_id in finding_ids)
        rule.__doc__ = f"{(rule.__doc__ or '').rstrip()}\n\n    Findings:{titles}\n"
        return rule

    return mark


def finding(severity, option, message, suggestion):
    """One finding dict without an id (the probe findings of ``ha.status`` use it)."""
    return {"severity": severity, "option": option, "message": message, "suggestion": suggestion}


def lint_finding(finding_id, severity, option, message, suggestion):
    """One lint finding: :func:`finding` with its declared ``id`` first."""
    if finding_id not in ALL_FINDING_TITLES:
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
