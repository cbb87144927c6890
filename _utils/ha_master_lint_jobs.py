"""
Master-side lint rules for the job store (HA73x) and the request workers (HA74x).

What a failover does to jobs: each master keeps, in its ``master_job_cache``, the
jobs it published and the returns it received. When a master dies, ``salt-run
jobs.lookup_jid`` on the survivor finds only what the survivor stored (measured in
``tests/integration/test_job_store.py``); ``salt-run ha.jobs`` merges every
answering master's store, but not a dead master's. Every rule cites the Salt 3008.4
code it relies on.
"""

import ha_text
from ha_lint_findings import as_number, lint_finding, produces

PGJSONB_EXAMPLE = "examples/master.d/job-store-pgjsonb.conf"


def several_masters(ctx):
    """True when this master has company: peers in ``ha:peers`` or a cluster."""
    section = ctx.opts.get("ha") if isinstance(ctx.opts.get("ha"), dict) else {}
    return bool(section.get("peers")) or bool(ctx.opts.get("cluster_id"))


def shared_cluster_cachedir(ctx):
    """A shared-filesystem cluster: the masters share ``cachedir``, where ``local_cache`` keeps jobs."""
    return bool(ctx.opts.get("cluster_id")) and not ctx.opts.get("cluster_isolated_filesystem")


@produces("HA731")
def check_local_cache(ctx):
    """
    ``master_job_cache: local_cache`` (the default) on one of several masters that do
    not share a ``cachedir``: ``salt.utils.job.store_job`` writes to this master's
    cache only, so the survivor of a failover cannot look up the jobs the dead
    master published or the returns it received.
    """
    opts = ctx.opts
    if opts.get("master_job_cache", "local_cache") != "local_cache" or not opts.get("job_cache", True):
        return []
    if opts.get("ext_job_cache") or not several_masters(ctx) or shared_cluster_cachedir(ctx):
        return []
    return [lint_finding(
        "HA731", "warning", "master_job_cache",
        "master_job_cache local_cache on one of several masters: each master keeps its own jobs, so after a "
        "failover salt-run jobs.lookup_jid on the survivor is empty for the jobs the dead master published "
        "(salt-run ha.jobs merges the masters that answer, not a dead one)",
        f"master_job_cache: pgjsonb   with one PostgreSQL for every master (see {PGJSONB_EXAMPLE})",
    )]


@produces("HA732")
def check_ext_job_cache(ctx):
    """
    ``ext_job_cache``: every minion sends its returns to that returner itself, and
    the master skips its own job cache for them (``salt/utils/job.py`` ``store_job``
    and ``salt/daemons/masterapi.py``: "if you have a job_cache, or an
    ext_job_cache, don't write to the regular master cache").
    """
    name = ctx.opts.get("ext_job_cache")
    if not name:
        return []
    return [lint_finding(
        "HA732", "warning", "ext_job_cache",
        f"ext_job_cache {ha_text.printable(name)}: every minion writes its returns to that store itself (each "
        "needs its connection settings and credentials) and this master stores none of them; "
        "jobs.lookup_jid and ha.jobs show no returns from this master",
        f"master_job_cache: {ha_text.printable(name)}   (the master writes the store; remove ext_job_cache)",
    )]


@produces("HA733")
def check_job_cache_off(ctx):
    """``job_cache: False``: ``store_job`` returns before writing any return (``salt/utils/job.py``)."""
    if ctx.opts.get("job_cache", True):
        return []
    return [lint_finding(
        "HA733", "warning", "job_cache",
        "job_cache is False: this master keeps no job returns; after a failover no master can tell what a "
        "job returned",
        "job_cache: True",
    )]


@produces("HA734", "HA735")
def check_keep_jobs(ctx):
    """
    ``keep_jobs`` (hours) is only a default in ``DEFAULT_MASTER_OPTS``: Salt 3008.4's
    ``salt.utils.job.get_keep_jobs_seconds`` reads ``keep_jobs_seconds`` alone, so a
    written ``keep_jobs`` changes nothing. ``keep_jobs_seconds: 0`` turns the purge
    off (``salt/returners/local_cache.py`` ``clean_old_jobs``: ``if
    keep_jobs_seconds != 0``).
    """
    findings = []
    if ctx.wrote("keep_jobs") and not ctx.wrote("keep_jobs_seconds"):
        hours = ctx.written.get("keep_jobs")
        kept = ctx.opts.get("keep_jobs_seconds", 86400)
        kept = "forever (keep_jobs_seconds 0)" if kept == 0 else f"{ha_text.printable(kept)} s (keep_jobs_seconds)"
        findings.append(lint_finding(
            "HA734", "warning", "keep_jobs",
            f"keep_jobs {ha_text.printable(hours)} is ignored: Salt 3008 reads keep_jobs_seconds only, so jobs "
            f"are kept {kept}",
            f"keep_jobs_seconds: {int(as_number(hours) * 3600)}",
        ))
    keep = ctx.opts.get("keep_jobs_seconds", 86400)
    if not isinstance(keep, bool) and isinstance(keep, (int, float)) and keep == 0:
        findings.append(lint_finding(
            "HA735", "info", "keep_jobs_seconds",
            "keep_jobs_seconds is 0: the job cache is never purged and grows without bound",
            "keep_jobs_seconds: 86400   (the same on every master)",
        ))
    return findings


@produces("HA741")
def check_worker_pools(ctx):
    """
    ``worker_pools_enabled: False`` with the zeromq transport breaks the Salt 3008.4
    request server either way. Without a catch-all pool in ``worker_pools`` (the
    default ``worker_pools`` is ``{}``: ``apply_master_config`` fills it only when
    pools are enabled) the queue device builds ``salt.master.RequestRouter(opts)``
    (``salt/transport/zeromq.py`` ``zmq_device``), which raises "Worker pool
    configuration must have exactly one pool with catchall ('*')": measured, the
    MWorkerQueue process dies and the ret port refuses every connection. With one,
    the device binds ``workers.ipc`` while every MWorker, named pool ``default``
    (``MWorker.__init__``: ``pool_name or "default"``), connects to its per-pool
    socket (``MWorker.__bind`` passes ``pool_name`` to ``post_fork``): measured, the ret port accepts and never
    answers.
    """
    opts = ctx.opts
    if opts.get("worker_pools_enabled", True) is not False or opts.get("transport", "zeromq") != "zeromq":
        return []
    return [lint_finding(
        "HA741", "error", "worker_pools_enabled",
        "worker_pools_enabled is False: Salt 3008.4's request server then answers no minion (without a "
        "catch-all pool it fails at start, \"Worker pool configuration must have exactly one pool with "
        "catchall\", and the ret port refuses connections; with one, its workers listen on another socket "
        "and requests are never answered)",
        "worker_pools_enabled: True   (the default; size the pool with worker_threads)",
    )]
