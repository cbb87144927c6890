"""
Failover storms: a master with many minions dies and every one of them signs in to a
survivor at once. What a survivor can answer, and the settings that keep the tail
short, as Salt 3008.4 does it and as ``bench/storm.py`` measured it.

What Salt does (read in 3008.4):

- ``salt/minion.py`` ``Minion.handle_event`` on ``__master_disconnected`` calls
  ``eval_master(failed=True)``: the failed master goes to the end of the list and a
  *round* signs in to each master in turn (``salt/crypt.py`` ``AsyncAuth.sign_in``:
  one request of ``auth_timeout`` seconds, since ``eval_master`` sets ``auth_tries``
  to 0 and, with ``auth_safemode`` False, a timeout fails the sign-in). Between rounds
  it sleeps ``acceptance_wait_time`` (``acceptance_wait_time_max`` does not apply
  there: no backoff); after ``master_tries`` failed rounds (-1, the Linux default:
  never) it raises, sets ``restart`` and stops its loop: the salt-minion process
  exits.
- A minion whose sign-in the survivor does not answer within ``auth_timeout`` thus
  tries the dead master next (another ``auth_timeout``) and asks the survivor again
  ``acceptance_wait_time`` later: 5 + 5 + 10 s with Salt's defaults. The survivor
  still answers the abandoned request: that work is lost.
- Nothing spreads the minions in time: the ZeroMQ monitor fires
  ``__master_disconnected`` on every minion within the same half second;
  ``random_reauth_delay`` only delays a minion process restarted after a fatal error
  (``salt/scripts.py`` ``minion_process``), ``random_startup_delay`` only the start of
  the process, ``recon_default``/``recon_max``/``recon_randomize`` only the ZeroMQ
  reconnects of the publish socket to the *same* master.
- On the master, ``_auth`` requests are answered by the MWorkers: ``worker_threads``
  of them in one pool, unless ``worker_pools`` is set (then the pool that lists
  ``_auth``, else the catch-all pool): ``salt/config/worker_pools.py``
  ``get_worker_pools_config`` (loaded master options always hold ``worker_threads``).
  ``sock_pool_size`` is not read by any 3008.4 code.

Measured with ``bench/storm.py`` (Salt 3008.4, 2 CPUs shared with the simulating
clients): a sign-in costs the master 6.8-9.2 ms of CPU (all its processes; 5.4-7.3 ms
in the MWorkers), so one CPU answers roughly 110-150 sign-ins a second; more MWorkers
than CPUs add nothing (3, 5 and 10 workers, auth_timeout 60: 1,000 sign-ins in 8.2,
10.2 and 8.8 s). 1,000 minions at once: the last signed in after 23.5-27.8 s with
Salt's defaults (25-56 % of the sign-ins timed out and went round the cycle), after
7.6-9.3 s with :data:`RECOMMENDED_MINION_OPTIONS` (none timed out). The figures are
in bench/README.md and the README ("Failover storms").
"""

import math
import os

import salt.config

import ha_text
from ha_lint_findings import as_number, fmt_seconds, lint_finding

# The minion settings salt-ha recommends for storms (bench/storm.py "recommended",
# ha.lint HA801/HA802): the survivor gets 10 s to answer before a minion gives up on
# it, and a minion that did give up asks again 2 s after trying the dead master.
# acceptance_wait_time_max keeps a minion whose key is pending backing off
# (2, 4, 8, 16 s) instead of asking every 2 s. grains_cache (HA804): a minion that
# changes master runs every grains module again before it takes jobs, unless its
# grains cache is younger than grains_cache_expiration (100 real minions on this
# machine: the tail 11.9 s without, 7.7 s with).
GRAINS_CACHE_EXPIRATION = 86400
RECOMMENDED_MINION_OPTIONS = {
    "auth_timeout": 10,
    "acceptance_wait_time": 2,
    "acceptance_wait_time_max": 10,
    "grains_cache": True,
    "grains_cache_expiration": GRAINS_CACHE_EXPIRATION,
}

# Master CPU per sign-in (seconds) for planning: the top of the 6-8 ms measured.
SIGN_IN_CPU_SECONDS = 0.008
# Share of a storm's window left for the sign-ins: each re-homed minion also sends
# its start events and resource registration, and the master keeps publishing.
SIGN_IN_SHARE = 0.5
SALT_WORKER_THREADS = salt.config.DEFAULT_MASTER_OPTS["worker_threads"]
SALT_AUTH_TIMEOUT = salt.config.DEFAULT_MINION_OPTS["auth_timeout"]


def auth_workers(opts):
    """
    ``(count, option)``: how many MWorkers answer ``_auth`` for master options ``opts``
    (Salt's defaults under them) and the option that sets it (``worker_threads`` or
    ``worker_pools:<pool>``); ``(None, option)`` when that value is unusable (the
    type rules of the master lint report it).
    """
    merged = dict(salt.config.DEFAULT_MASTER_OPTS)
    merged.update(opts)
    pools = merged.get("worker_pools")
    if merged.get("worker_pools_enabled", True) and isinstance(pools, dict) and pools:
        catchall = None
        for name, pool in pools.items():
            commands = pool.get("commands") if isinstance(pool, dict) else None
            if not isinstance(commands, list):
                continue
            if "_auth" in commands:
                return _count(pool.get("worker_count")), f"worker_pools:{ha_text.printable(name)}"
            if "*" in commands and catchall is None:
                catchall = (_count(pool.get("worker_count")), f"worker_pools:{ha_text.printable(name)}")
        if catchall is not None:
            return catchall
    return _count(merged.get("worker_threads")), "worker_threads"


def _count(value):
    """A worker count: a whole number >= 1 (bools refused), else None."""
    number = as_number(value)
    return int(number) if number >= 1 and number == int(number) else None


def sign_ins_per_second(workers, cpu_count):
    """Planning rate of sign-ins a master answers with ``workers`` MWorkers on ``cpu_count`` CPUs."""
    return min(workers, cpu_count) * SIGN_IN_SHARE / SIGN_IN_CPU_SECONDS


def storm_seconds(minion_count, workers, cpu_count):
    """Seconds a master needs (planning figure) to answer ``minion_count`` sign-ins at once."""
    return minion_count / sign_ins_per_second(workers, cpu_count)


def workers_needed(minion_count, auth_timeout):
    """MWorkers (each on a CPU of its own) that answer ``minion_count`` sign-ins within ``auth_timeout`` s."""
    return max(1, math.ceil(minion_count * SIGN_IN_CPU_SECONDS / SIGN_IN_SHARE / auth_timeout))


def recommended_worker_threads(minion_count, cpu_count, auth_timeout=SALT_AUTH_TIMEOUT):
    """
    ``worker_threads`` for a master that may take ``minion_count`` minions at once: one
    MWorker per CPU needed to answer them within the minions' ``auth_timeout``, never
    more than the CPUs (they add nothing) nor fewer than Salt's default (5).
    """
    return max(SALT_WORKER_THREADS, min(workers_needed(minion_count, auth_timeout), cpu_count))


def recommended_master_options(minion_count, cpu_count):
    """The master options for a survivor of ``minion_count`` minions (the bench's "recommended")."""
    return {"worker_threads": recommended_worker_threads(minion_count, cpu_count)}


def storm_findings(opts, minion_count, cpu_count=None, auth_timeout=SALT_AUTH_TIMEOUT):
    """
    Master-side storm findings (HA811, HA812) for master options ``opts`` (a loaded
    master's options or a config file's mapping; Salt's defaults fill the rest).

    ``minion_count``: the minions that may sign in to this master at once when another
    master dies (with one key set on every master: every accepted minion).
    ``cpu_count``: this master's CPUs (None: ``os.cpu_count()`` of this process).
    ``auth_timeout``: the minions' ``auth_timeout`` (Salt's default 5).
    Returns findings in the minion lint's shape, ids declared in
    ``ha_lint_findings.STORM_FINDING_TITLES``; none for a fleet the master answers in time.
    """
    count = int(as_number(minion_count))
    timeout = as_number(auth_timeout)
    workers, option = auth_workers(opts)
    if count <= 0 or timeout <= 0 or workers is None:
        return []
    cpus = max(1, int(cpu_count or os.cpu_count() or 1))
    needed = workers_needed(count, timeout)
    findings = []
    if workers < min(needed, cpus):
        findings.append(_workers_finding(count, timeout, workers, option, min(needed, cpus), cpus))
    if needed > cpus:
        findings.append(_cpus_finding(count, timeout, cpus))
    return findings


def _cycle(timeout):
    """The retry cycle of a minion whose sign-in timed out, with Salt's acceptance_wait_time."""
    return f"{fmt_seconds(timeout)} + {fmt_seconds(timeout)} + acceptance_wait_time (10) s"


def _workers_finding(count, timeout, workers, option, wanted, cpus):
    """HA811: too few MWorkers answer _auth (``option`` says which setting sets them)."""
    seconds = storm_seconds(count, workers, cpus)
    if option == "worker_threads":
        suggestion = f"worker_threads: {wanted}"
    else:
        suggestion = f"worker_count: {wanted} in worker_pools {option.split(':', 1)[1]} (the pool that answers _auth)"
    return lint_finding(
        "HA811", "warning", option.split(":", 1)[0],
        f"{count} minions sign in to this master at once when another master dies, and {workers} "
        f"MWorkers answer _auth ({option}): about {seconds:.0f} s for all of them (planning "
        f"{SIGN_IN_CPU_SECONDS * 1000:g} ms of master CPU per sign-in, half the time left for the rest "
        f"of the storm), above the minions' auth_timeout ({fmt_seconds(timeout)} s): the late ones time "
        f"out and come back {_cycle(timeout)} later (bench/storm.py, 1,000 sign-ins at once on 2 CPUs: the last "
        "after 23.5-27.8 s)",
        f"{suggestion} (this master has {cpus} CPUs; more MWorkers than CPUs add nothing)",
    )


def _cpus_finding(count, timeout, cpus):
    """HA812: even an MWorker per CPU cannot answer the storm within the minions' auth_timeout."""
    seconds = storm_seconds(count, cpus, cpus)
    doubled = workers_needed(count, 2 * timeout) <= cpus
    fix = (
        "on the minions: auth_timeout: 10, acceptance_wait_time: 2, acceptance_wait_time_max: 10 "
        "(ha.lint HA801, HA802)"
        if doubled and timeout < RECOMMENDED_MINION_OPTIONS["auth_timeout"]
        else f"more CPUs or more masters (a master of {cpus} CPUs answers about "
        f"{math.floor(sign_ins_per_second(cpus, cpus) * timeout)} sign-ins within {fmt_seconds(timeout)} s)"
    )
    return lint_finding(
        "HA812", "warning", "auth_timeout",
        f"{count} minions sign in to this master at once when another master dies: about "
        f"{seconds:.0f} s of its {cpus} CPUs even with an MWorker per CPU (planning "
        f"{SIGN_IN_CPU_SECONDS * 1000:g} ms per sign-in), above the minions' auth_timeout "
        f"({fmt_seconds(timeout)} s): the late ones time out and come back {_cycle(timeout)} later",
        fix,
    )
