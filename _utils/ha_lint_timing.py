"""
Lint rules HA2xx: how a dead master is noticed (alive job, ZeroMQ monitor), failing
back, what signing in to a dead master costs, and the ``ha`` beacon's real interval,
as Salt 3008's ``salt/minion.py`` and ``salt/crypt.py`` do them.

Each rule takes a :class:`ha_lint_context.LintContext` and returns a list of findings
with the ids it declares (:func:`ha_lint_findings.produces`).
"""

import ha_keepalive
import ha_storm
import ha_text
import ha_watch
from ha_lint_findings import as_number, fmt_seconds, lint_finding, produces

# auth_timeout threshold. The default is 5 s; each dead master tried during a
# failover costs one auth_timeout (eval_master signs in with auth_tries forced to 0,
# i.e. a single request of auth_timeout). 10 s still lets a loaded master answer a
# sign-in while keeping one dead master under ~10 s of outage; above it the
# failover time grows past what a monitoring check or a job timeout tolerates.
AUTH_TIMEOUT_WARN_SECONDS = 10


def has_alive_job(ctx):
    """True when ``master_alive_interval`` schedules Salt's alive job (> 0)."""
    return ctx.number("master_alive_interval") > 0


@produces("HA201")
def check_alive_interval(ctx):
    """HA201: without the alive job only the ZeroMQ monitor notices a dead master."""
    options = ctx.effective_options
    # tcp: HA304; zmq_monitor off: HA202 (an error)
    if not ctx.failover or options.get("transport") == "tcp" or not ctx.flag("zmq_monitor") or has_alive_job(ctx):
        return []
    return [
        lint_finding(
            "HA201", "warning", "master_alive_interval",
            f"master_alive_interval is {options.get('master_alive_interval')!r} with "
            f"master_type {ctx.master_type}: only the ZeroMQ disconnect monitor notices a "
            "dead master, and master_failback cannot run (a hung master is never left "
            "either way)",
            "master_alive_interval: 10",
        )
    ]


@produces("HA202")
def check_zmq_monitor(ctx):
    """HA202: no disconnect monitor and no alive job: no __master_disconnected, ever."""
    options = ctx.effective_options
    if not ctx.failover or options.get("transport") != "zeromq" or ctx.flag("zmq_monitor") or has_alive_job(ctx):
        return []
    return [
        lint_finding(
            "HA202", "error", "zmq_monitor",
            f"zmq_monitor is {options.get('zmq_monitor')!r} and master_alive_interval is "
            f"{options.get('master_alive_interval')!r}: nothing fires __master_disconnected, "
            "so the minion never fails over (measured)",
            "zmq_monitor: True and master_alive_interval: 10",
        )
    ]


@produces("HA203", "HA204", "HA205")
def check_failback(ctx):
    """
    HA203, HA204, HA205: the failback job is added only inside _post_master_init's alive-job
    block (``transport != "tcp" and master_alive_interval > 0``); eval_master copies
    master_alive_interval into a 0 master_failback_interval.
    """
    if not ctx.flag("master_failback"):
        return []
    alive = ctx.number("master_alive_interval")
    if not ctx.failover:
        finding_id, severity, why, fix = (
            "HA203", "warning",
            "master_failback is only used with master_type failover, so it is ignored",
            "master_type: failover",
        )
    elif ctx.effective_options.get("transport") == "tcp" or alive <= 0:
        finding_id, severity, why, fix = (
            "HA204", "error",
            (
                "the failback job is only scheduled together with the alive job (transport "
                "not tcp and master_alive_interval > 0), so the minion never fails back"
            ),
            "master_alive_interval: 10 (and transport: zeromq)",
        )
    elif ctx.number("master_failback_interval") <= 0:
        finding_id, severity, why, fix = (
            "HA205", "info",
            (
                "master_failback_interval is unset: Salt uses master_alive_interval "
                f"({fmt_seconds(alive)} s) for it"
            ),
            f"master_failback_interval: {fmt_seconds(alive)} (to make it explicit)",
        )
    else:
        return []
    values = (
        f"master_failback is True (master_type {ha_text.printable(ctx.master_type)}, transport "
        f"{ha_text.printable(ctx.effective_options.get('transport'))}, master_alive_interval "
        f"{ctx.effective_options.get('master_alive_interval')!r})"
    )
    return [lint_finding(finding_id, severity, "master_failback", f"{values}: {why}", fix)]


@produces("HA206", "HA207", "HA801", "HA802", "HA803")
def check_auth_timeout(ctx):
    """
    HA206, HA207: every dead master tried during a failover costs one auth_timeout.
    HA801-HA803: what the sign-in settings do in a failover storm (:func:`storm_timing`).
    """
    return dead_master_timing(ctx) + storm_timing(ctx)


def dead_master_timing(ctx):
    """HA206, HA207 (see :func:`check_auth_timeout`)."""
    timeout = ctx.number("auth_timeout")
    if not ctx.failover or 0 < timeout <= AUTH_TIMEOUT_WARN_SECONDS:
        return []
    if timeout <= 0:
        finding_id, severity, why = "HA207", "error", "a sign-in can never succeed"
    else:
        finding_id, severity = "HA206", "warning"
        why = "each dead master tried during a failover costs that long"
    return [
        lint_finding(
            finding_id, severity, "auth_timeout",
            f"auth_timeout is {ctx.effective_options.get('auth_timeout')!r} s: {why}",
            "auth_timeout: 5 (the default)",
        )
    ]


STORM_AUTH_TIMEOUT = ha_storm.RECOMMENDED_MINION_OPTIONS["auth_timeout"]
STORM_ACCEPTANCE_WAIT = ha_storm.RECOMMENDED_MINION_OPTIONS["acceptance_wait_time"]
STORM_ACCEPTANCE_WAIT_MAX = ha_storm.RECOMMENDED_MINION_OPTIONS["acceptance_wait_time_max"]
# bench/storm.py, 1,000 simulated minions signing in to one survivor at once (the
# figures in bench/README.md and the README's "Failover storms").
STORM_FIGURES = {
    "stock": "25-56 % of the sign-ins not answered within 5 s, the last minion on after 23.5-27.8 s",
    "wait": "14.7 s with acceptance_wait_time 2 alone",
    "timeout": "none unanswered with auth_timeout 10 (the last after 6.1 s; 7.6-9.3 s with both settings)",
}


def storm_timing(ctx):
    """
    HA801, HA802, HA803: a failover storm (a master with many minions dies; all of them
    sign in to the survivor at once; :mod:`ha_storm` has the Salt code). A minion
    whose sign-in the survivor does not answer within ``auth_timeout`` tries the dead
    master next (another ``auth_timeout``) and asks the survivor again only
    ``acceptance_wait_time`` later; after ``master_tries`` such rounds it exits.

    HA801 and HA802 are infos, and only about values the operator wrote: Salt's
    defaults are fine for a few hundred minions per master, and a minion cannot know
    how many others share its master (the runner's ``ha.lint`` can: HA811, HA812
    recommend these settings when the fleet needs them).
    """
    if not ctx.failover:
        return []
    findings = []
    wait, timeout = ctx.number("acceptance_wait_time"), ctx.number("auth_timeout")
    if wait > STORM_ACCEPTANCE_WAIT and storm_judged(ctx, "acceptance_wait_time"):
        findings.append(
            lint_finding(
                "HA801", "info", "acceptance_wait_time",
                f"acceptance_wait_time is {fmt_seconds(wait)} s: in a failover storm a minion whose "
                f"sign-in the survivor does not answer within auth_timeout tries the dead master next and "
                f"asks the survivor again {fmt_seconds(timeout)} + {fmt_seconds(timeout)} + "
                f"{fmt_seconds(wait)} s after the failure (eval_master sleeps acceptance_wait_time between "
                f"rounds, without backoff); bench/storm.py, 1,000 minions at once: {STORM_FIGURES['stock']}, "
                f"{STORM_FIGURES['wait']}",
                f"acceptance_wait_time: {STORM_ACCEPTANCE_WAIT} and acceptance_wait_time_max: "
                f"{STORM_ACCEPTANCE_WAIT_MAX} (a minion whose key is pending still backs off)",
            )
        )
    if 0 < timeout < STORM_AUTH_TIMEOUT and storm_judged(ctx, "auth_timeout"):
        findings.append(
            lint_finding(
                "HA802", "info", "auth_timeout",
                f"auth_timeout is {fmt_seconds(timeout)} s: in a failover storm the survivor must answer "
                f"every minion's sign-in within that, or the minion goes round the retry cycle "
                f"({fmt_seconds(timeout)} + {fmt_seconds(timeout)} + {fmt_seconds(wait)} s) while the "
                f"survivor still answers the abandoned request; bench/storm.py, 1,000 minions at once: "
                f"{STORM_FIGURES['stock']}, {STORM_FIGURES['timeout']}",
                f"auth_timeout: {STORM_AUTH_TIMEOUT} (a dead master tried first then costs "
                f"{STORM_AUTH_TIMEOUT} s: HA901)",
            )
        )
    tries = ctx.number("master_tries")
    if tries >= 1:
        findings.append(
            lint_finding(
                "HA803", "warning", "master_tries",
                f"master_tries is {ha_text.printable(ctx.effective_options.get('master_tries'))}: after "
                f"{fmt_seconds(tries)} round(s) in which no master answered a sign-in within auth_timeout, "
                "eval_master raises and the salt-minion process exits; a failover storm makes the "
                "survivor slower than auth_timeout (bench/storm.py: with master_tries 1 a minion "
                "whose round failed exited and never came back)",
                "master_tries: -1 (Salt's default on Linux: rounds until a master answers)",
            )
        )
    return findings


# bench/drill.py and bench/storm.py without and with grains_cache (the README's
# "Failover storms" and "Failover drills").
GRAINS_FIGURES = (
    "the grains took 0.3-0.4 s of each minion's failover here; 100 minions failing over at once: the last "
    "on the survivor after 11.9 s without the cache, 7.7 s with it"
)


@produces("HA804")
def check_grains_cache(ctx):
    """
    HA804: a minion that changes master re-initialises its subsystems (Salt's
    ``_load_modules`` after ``eval_master``), and ``salt.loader.grains`` runs every
    grains module again unless ``grains_cache`` is on and the cache is younger than
    ``grains_cache_expiration`` (300 s by default: older than that at almost every
    failover, since the grains run at start and at each failover).
    """
    if not ctx.failover:
        return []
    expiration = ctx.number("grains_cache_expiration")
    if ctx.flag("grains_cache") and expiration >= ha_storm.GRAINS_CACHE_EXPIRATION:
        return []
    if ctx.flag("grains_cache"):
        option = "grains_cache_expiration"
        why = (f"grains_cache_expiration is {fmt_seconds(expiration)} s: a failover later than that after the "
               "grains last ran (at the minion's start or its last failover) runs every grains module again")
    else:
        option = "grains_cache"
        why = "grains_cache is off: every failover runs every grains module again"
    return [
        lint_finding(
            "HA804", "info", option,
            f"{why}, in the minion's main process, before it takes jobs on the new master ({GRAINS_FIGURES}; "
            "slow custom or cloud-metadata grains add their own time)",
            f"grains_cache: True and grains_cache_expiration: {ha_storm.GRAINS_CACHE_EXPIRATION} (a minion "
            "restarted within that time also starts with the cached grains: run saltutil.refresh_grains "
            "after a change to what they report, such as a Salt upgrade)",
        )
    ]


def storm_judged(ctx, option):
    """True when a storm info about ``option`` applies: the operator wrote the option."""
    return option in ctx.written_keys


@produces("HA208")
def check_auth_safemode(ctx):
    """
    HA208: AsyncAuth.sign_in returns "retry" on a timeout when auth_safemode is True,
    and _authenticate then retries the same master forever unless auth_retries > 0.
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
        lint_finding(
            "HA208", "warning" if retries > 0 else "error", "auth_safemode",
            f"auth_safemode is True with master_type {ctx.master_type} (auth_retries "
            f"{ctx.effective_options.get('auth_retries')!r}): {why}",
            "auth_safemode: False",
        )
    ]


@produces("HA209", "HA210")
def check_random_master(ctx):
    """
    HA209, HA210: eval_master shuffles local_masters at every (re)connection, the
    failed master included (only the primary stays first with master_failback);
    master_shuffle is only copied to random_master.
    """
    findings = []
    if ctx.flag("master_shuffle"):
        findings.append(
            lint_finding(
                "HA210", "warning", "master_shuffle",
                "master_shuffle is True: it is deprecated and only copied to random_master",
                "random_master: True (and remove master_shuffle)",
            )
        )
    if ctx.failover and (ctx.flag("random_master") or ctx.flag("master_shuffle")):
        findings.append(
            lint_finding(
                "HA209", "info", "random_master",
                f"random_master is True with master_type {ctx.master_type}: the list is "
                "reshuffled at every reconnection, the failed master included, so a "
                "failover may try a dead master first (+auth_timeout "
                f"{fmt_seconds(ctx.number('auth_timeout'))} s)",
                "random_master: False, unless spreading minions over the masters matters more",
            )
        )
    return findings


def ha_beacon_options(options):
    """
    The ``ha`` beacon's options merged as the beacon merges them
    (:func:`ha_watch.beacon_options`), or None when it is not configured or its
    configuration is not a list of dicts (the beacon's own validation says so).
    """
    beacons = options.get("beacons")
    config = beacons.get("ha") if isinstance(beacons, dict) else None
    if config is None:
        return None
    try:
        return ha_watch.beacon_options(config)
    except ValueError:
        return None


@produces("HA211")
def check_ha_beacon_timing(ctx):
    """
    HA211: Salt counts a beacon's ``interval`` in ``loop_interval`` units
    (salt/beacons/__init__.py), so any loop_interval but 1 s changes the ha beacon's
    real interval: how soon its events fire and a hung master is left once its
    probe thread (which runs on ``probe_interval``, not on loop_interval) has seen
    the hang.
    """
    beacon = ha_beacon_options(ctx.effective_options)
    if beacon is None:
        return []
    loop = ctx.number("loop_interval")
    if not loop or loop == 1:
        return []
    interval = beacon.get("interval", ha_watch.DEFAULTS["interval"])
    return [
        lint_finding(
            "HA211", "warning", "loop_interval",
            f"loop_interval is {fmt_seconds(loop)} s: Salt counts the ha beacon's interval "
            f"in loop_intervals, so interval {ha_text.printable(interval)} means "
            f"{fmt_seconds(as_number(interval) * loop)} s",
            "loop_interval: 1 (Salt's default)",
        )
    ]


@produces("HA221", "HA222", "HA223")
def check_tcp_keepalive(ctx):
    """
    HA221, HA222: a partitioned master (packets dropped silently) keeps the minion's
    idle publish connection ESTABLISHED; only TCP keepalive aborts it, after
    ``idle + cnt x intvl`` seconds (:mod:`ha_keepalive`; Salt's defaults: 300 s +
    the kernel's 9 x 75 s). Failover minions only (front doors: HA314).
    HA223: zeromq sets the keepalive options with pyzmq's ``setsockopt``, which
    takes whole numbers only (``salt/transport/zeromq.py``), on every minion.
    """
    findings = []
    options = ctx.effective_options
    if options.get("transport", "zeromq") == "zeromq":
        for option, value in ha_keepalive.non_integer_options(options):
            findings.append(
                lint_finding(
                    "HA223", "error", option,
                    f"{option} is {ha_text.shown(value)}: Salt hands it to pyzmq's setsockopt when it sets up "
                    "the connection to the master, and pyzmq takes whole numbers only (TypeError)",
                    f"{option}: {ha_keepalive.RECOMMENDED[option]} (a whole number, unquoted)",
                )
            )
    if not ctx.failover or len(ctx.endpoints) < 2:
        return findings
    seconds = ha_keepalive.abort_seconds(options)
    if seconds is None:
        findings.append(
            lint_finding(
                "HA222", "warning", "tcp_keepalive",
                "tcp_keepalive is False: no keepalive probe ever runs on the minion's idle connection, so a "
                "partitioned master (packets dropped silently, the connection stays ESTABLISHED) is never "
                "left (the salt-ha beacon still leaves it)",
                ha_keepalive.suggestion(),
            )
        )
    elif seconds > ha_keepalive.SHORT_SECONDS:
        findings.append(
            lint_finding(
                "HA221", "info", "tcp_keepalive_idle",
                f"a partitioned master (packets dropped silently, the connection stays ESTABLISHED) is left only "
                f"when TCP keepalive aborts the idle connection: {ha_keepalive.describe(options)} = "
                f"{fmt_seconds(seconds)} s (measured: {ha_keepalive.MEASURED['stock']}, "
                f"{ha_keepalive.MEASURED['recommended']}); the salt-ha beacon leaves it sooner, keepalive is "
                "stock Salt's own remedy (it never helps against a hung master, whose kernel answers the probes)",
                f"{ha_keepalive.suggestion()} (ha.minion_failover writes them)",
            )
        )
    return findings
