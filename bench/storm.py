"""
Bench: a failover storm. Master A, which every minion is connected to, dies and all
of them sign in to the survivor B at once.

Two parts, each with Salt's defaults (``stock``: the failover-related minion options
put back to Salt's values, which the lab and salt-factories tune) and with the
settings salt-ha recommends (``recommended``: ``ha_storm.RECOMMENDED_MINION_OPTIONS``,
auth_timeout 10, acceptance_wait_time 2, acceptance_wait_time_max 10, and the
master's ``worker_threads`` from ``ha_storm.recommended_worker_threads``: the values
``ha.lint`` suggests, HA801/HA802/HA811/HA812):

real minions
    Masters A (127.0.0.1) and B (127.0.0.2) with one shared key pair and the same
    random ports; N real salt-minion daemons with ``master: [A, B]``,
    ``master_type: failover`` and their keys accepted on both, started in parallel
    batches; once every minion has signed in on A, A's process tree is SIGKILLed.
    Figure: seconds from the kill until 50 / 95 / 100 % of the minions have fired
    ``salt/minion/<id>/start`` on B (B's event stamps, read through salt-factories'
    event listener), and until B answered their sign-ins (its ``salt/auth`` events,
    also fired for a sign-in the minion had already given up on); then one
    ``test.ping`` through B to all of them confirms they answer there. N is capped
    by free memory (``--min-free-gb`` stays free; a minion costs about
    ``--mb-per-minion``); the N that ran is printed. Each setting gets a
    fresh lab. The minion logs (level info) are read afterwards for Salt's
    "could not be reached, trying next master" (a sign-in that timed out). The CPU
    seconds the minions, B and the whole machine spent until the last minion was on B
    are printed: on one machine the minions share its CPUs, which real hosts do not.
    salt-factories' event-forwarding engine is removed from the minions' config (one
    process each that a real minion does not run; ``--minion-engine`` keeps it).

simulated sign-ins
    One master S (127.0.0.2) with H minion ids accepted (a pool of real RSA key pairs,
    one per ``--key-pool`` ids); ``--clients`` processes run H concurrent copies of
    what a failing-over minion does: Salt's own ``salt.crypt.AsyncAuth.authenticate``
    (the ``_auth`` sign-in over the ZeroMQ ret port, RSA and AES as a minion does it,
    the master's key verified) against S, then, as ``eval_master`` does with the list
    ``[survivor, dead master]``, against a port where nothing listens (the dead A),
    ``acceptance_wait_time`` between rounds. All start at one instant. Figure: seconds
    until 50 / 95 / 100 % have signed in on S, and how many sign-ins timed out.

Both parts share this machine's CPUs between the master(s) and the clients (real
minions or simulating processes): read the figures as what one small machine does.

Usage (from the repo root):
``.venv/bin/python bench/storm.py [--minions 100] [--handshakes 300,1000]``
"""

import argparse
import asyncio
import concurrent.futures
import contextlib
import io
import math
import multiprocessing
import pathlib
import re
import shutil
import time

import _common  # sys.path: repo root and _utils
import psutil

import ha_storm

SETTINGS = ("stock", "recommended")
MINION_PREFIX = "storm-"
SIM_PREFIX = "sim-"
START_TAG = "salt/minion/*/start"
# Salt's minion log line when a sign-in to a master of the list failed (eval_master).
NOT_REACHED = re.compile(r"Master \S+ could not be reached, trying next master")
# Minion options put back to Salt's defaults for "stock" (the lab and salt-factories
# tune some of them); "recommended" sets ha_storm's values over these.
STOCK_MINION_KEYS = (
    "acceptance_wait_time", "acceptance_wait_time_max", "auth_timeout", "auth_tries", "auth_safemode",
    "master_tries", "random_reauth_delay", "random_startup_delay", "recon_default", "recon_max",
    "recon_randomize", "retry_dns", "random_master", "loop_interval", "enable_legacy_startup_events",
)
GiB = 2**30
MiB = 2**20


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minions", type=int, default=100,
                        help="real minions (default 100; capped by free memory, 0 skips the part)")
    parser.add_argument("--handshakes", default="300,1000",
                        help="comma list of simulated sign-in storm sizes (default 300,1000; empty skips the part)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list of stock,recommended")
    parser.add_argument("--runs", type=int, default=1, help="storms per setting with real minions (default 1)")
    parser.add_argument("--batch", type=int, default=12, help="minions started at once (default 12)")
    parser.add_argument("--give-up", type=float, default=60.0,
                        help="seconds after the kill to wait for every minion on B (default 60)")
    parser.add_argument("--sim-give-up", type=float, default=45.0,
                        help="seconds a simulated storm may last (default 45)")
    parser.add_argument("--clients", type=int, default=4, help="processes simulating sign-ins (default 4)")
    parser.add_argument("--key-pool", type=int, default=50,
                        help="simulated minion ids per real key pair (default 50)")
    parser.add_argument("--min-free-gb", type=float, default=6.0,
                        help="memory that must stay available, GiB (default 6)")
    parser.add_argument("--mb-per-minion", type=float, default=100.0,
                        help="memory one real minion is expected to take, MiB (default 100; 76 measured)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds between the last minion start and the kill (default 15)")
    parser.add_argument("--minion-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a minion option set on top of every setting (YAML value; exploration)")
    parser.add_argument("--master-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a master option set on top of every setting (YAML value; exploration)")
    parser.add_argument("--minion-engine", action="store_true",
                        help="keep salt-factories' event-forwarding engine in every minion (one more process each)")
    parser.add_argument("--log-level", default="info",
                        help="log_level_logfile of the minions (default info: the sign-in failures are read)")
    parser.add_argument("--keep-logs", default="", metavar="DIR",
                        help="copy the daemons' log files to DIR (created) before each lab is torn down")
    args = parser.parse_args()
    if not 0 <= args.minions <= 1000:
        parser.error("--minions must be between 0 and 1000")
    if not 1 <= args.runs <= 5:
        parser.error("--runs must be between 1 and 5")
    if not 1 <= args.batch <= 50:
        parser.error("--batch must be between 1 and 50")
    if not 5 <= args.give_up <= 600 or not 5 <= args.sim_give_up <= 600:
        parser.error("--give-up and --sim-give-up must be between 5 and 600")
    if not 1 <= args.clients <= 32:
        parser.error("--clients must be between 1 and 32")
    if not 1 <= args.key_pool <= 10000:
        parser.error("--key-pool must be between 1 and 10000")
    if not 0 <= args.settle <= 120:
        parser.error("--settle must be between 0 and 120")
    try:
        args.sizes = [int(size) for size in args.handshakes.split(",") if size.strip()]
    except ValueError:
        parser.error("--handshakes must be a comma list of numbers")
    if any(not 1 <= size <= 20000 for size in args.sizes):
        parser.error("--handshakes sizes must be between 1 and 20000")
    wanted = [name.strip() for name in args.settings.split(",") if name.strip()]
    if not wanted or set(wanted) - set(SETTINGS):
        parser.error(f"--settings must name some of {', '.join(SETTINGS)}")
    args.wanted = [name for name in SETTINGS if name in wanted]
    args.minion_extra = _common.parse_options(parser, args.minion_option)
    args.master_extra = _common.parse_options(parser, args.master_option)
    return args


# --- settings ------------------------------------------------------------------


def minion_settings(setting, extra):
    """Minion options of ``setting`` (``stock`` = Salt's defaults) plus ``extra``."""
    import salt.config  # pylint: disable=import-outside-toplevel

    options = {key: salt.config.DEFAULT_MINION_OPTS[key] for key in STOCK_MINION_KEYS}
    if setting == "recommended":
        options.update(ha_storm.RECOMMENDED_MINION_OPTIONS)
    options.update(extra)
    return options


def master_settings(setting, minion_count, extra):
    """Master options of ``setting`` for ``minion_count`` minions (stock: none) plus ``extra``."""
    options = {}
    if setting == "recommended":
        options.update(ha_storm.recommended_master_options(minion_count, psutil.cpu_count() or 1))
    options.update(extra)
    return options


def describe_settings(setting, args, minion_count):
    """The options a setting changes, as text."""
    import salt.config  # pylint: disable=import-outside-toplevel

    minion = minion_settings(setting, args.minion_extra)
    changed = {key: value for key, value in minion.items() if key in ha_storm.RECOMMENDED_MINION_OPTIONS
               or key in args.minion_extra}
    master = master_settings(setting, minion_count, args.master_extra)
    worker_threads = master.get("worker_threads", salt.config.DEFAULT_MASTER_OPTS["worker_threads"])
    return f"minion {changed}, master worker_threads {worker_threads}" + (
        f" {args.master_extra}" if args.master_extra else "")


# --- figures -------------------------------------------------------------------


def percentile_times(times, total):
    """
    ``{50: s, 95: s, 100: s}``: seconds until that share of ``total`` was done (None
    when fewer were done). ``times``: the done times (None for not done).
    """
    done = sorted(value for value in times if value is not None)
    figures = {}
    for share in (50, 95, 100):
        needed = max(1, math.ceil(total * share / 100))
        figures[share] = done[needed - 1] if len(done) >= needed else None
    return figures


def histogram(times, width=1.0):
    """``"0-1 s: 12, 1-2 s: 30, ..."`` of the done times."""
    counts = {}
    for value in times:
        if value is not None:
            counts[int(value // width)] = counts.get(int(value // width), 0) + 1
    return ", ".join(f"{b * width:g}-{(b + 1) * width:g} s: {n}" for b, n in sorted(counts.items()))


# --- memory --------------------------------------------------------------------


def available_bytes():
    return psutil.virtual_memory().available


def minion_cap(requested, args, reserve_mb=1500):
    """How many real minions fit now: ``--min-free-gb`` + ``reserve_mb`` (masters) stay free."""
    spare = available_bytes() - args.min_free_gb * GiB - reserve_mb * MiB
    return max(0, min(requested, int(spare // (args.mb_per_minion * MiB))))


def tree_rss(pids):
    """Summed RSS (bytes) of ``pids`` and their descendants (shared pages counted per process)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
    return total


# --- real minions -----------------------------------------------------------------



def make_key_pool(folder, count):
    """``count`` RSA key pairs ``k<i>.pem/.pub`` in ``folder`` (kept across labs); their paths."""
    import salt.crypt  # pylint: disable=import-outside-toplevel

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in range(count):
        name = f"k{index}"
        if not (folder / f"{name}.pem").exists():
            salt.crypt.write_keys(str(folder), name, 2048)
        pairs.append((folder / f"{name}.pem", folder / f"{name}.pub"))
    return pairs


def place_minion_key(pki_dir, pair):
    """Put a key pair as ``minion.pem``/``minion.pub`` into a minion pki dir."""
    pki_dir = pathlib.Path(pki_dir)
    pki_dir.mkdir(parents=True, exist_ok=True)
    pem, pub = pair
    shutil.copyfile(pem, pki_dir / "minion.pem")
    (pki_dir / "minion.pem").chmod(0o400)
    shutil.copyfile(pub, pki_dir / "minion.pub")


def build_storm_lab(lablib, env, root, count, setting, keys, args):
    """Masters A and B and ``count`` failover minions (not started), each with its own key."""
    lab = lablib.Lab(env.manager, root, ports=lablib.random_shared_ports((lablib.LOOPBACK_A, lablib.LOOPBACK_B)))
    master_options = {"log_level_logfile": "warning", **master_settings(setting, count, args.master_extra)}
    lab.add_master("a", lablib.LOOPBACK_A, overrides=master_options)
    lab.add_master("b", lablib.LOOPBACK_B, overrides=master_options)
    options = lablib.minion_failover_overrides(lab.ips, lab.ports)
    options.update(minion_settings(setting, args.minion_extra))
    options["log_level_logfile"] = args.log_level
    for index in range(count):
        minion_id = f"{MINION_PREFIX}{index:04d}"
        factory = lab.masters["a"].salt_minion_daemon(minion_id, overrides=options)
        place_minion_key(factory.config["pki_dir"], keys[index])
        if not args.minion_engine:
            _common.drop_test_engine(factory)
        lab.seed_minion_key(factory, ("a", "b"))
        for name in ("a", "b"):
            lab.keys.allow(lab.masters[name].id, minion_id)
        lab.minions[minion_id] = factory
    return lab


def start_one(factory):
    """Start one daemon (one attempt); None or why it failed."""
    try:
        factory.start(max_start_attempts=1, start_timeout=90)
    except Exception as err:  # pylint: disable=broad-except
        return f"{type(err).__name__}: {str(err)[:120]}"
    return None


def start_minions(minions, args, progress):
    """
    Start ``minions`` in parallel batches of ``--batch`` while memory allows; return
    ``(started, failed, stopped_for_memory)``. A batch waits for each minion's start
    event on A (salt-factories' start check).
    """
    started, failed = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.batch) as pool:
        for offset in range(0, len(minions), args.batch):
            chunk = minions[offset:offset + args.batch]
            if available_bytes() - len(chunk) * args.mb_per_minion * MiB < args.min_free_gb * GiB:
                return started, failed, True
            for factory, error in zip(chunk, pool.map(start_one, chunk), strict=True):
                (failed if error else started).append(factory)
                if error:
                    _common.log.warning("minion %s did not start: %s", factory.id, error)
            progress(len(started), len(failed))
    return started, failed, False


def stop_all(factories, workers):
    """Terminate ``factories`` in parallel (salt-factories stops each by its pid)."""

    def stop(factory):
        with contextlib.suppress(Exception):
            factory.terminate()

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(stop, factories))


def first_auths(env, master, after_wall, minion_ids):
    """
    ``{minion id: seconds from after_wall to the master's first accepted sign-in}``:
    the ``salt/auth`` event the master fires when it answers a minion's ``_auth``.
    """
    wanted, firsts = set(minion_ids), {}
    for event in env.event_listener.get_events([(master.id, "salt/auth")], after_time=after_wall):
        data = event.data if isinstance(event.data, dict) else {}
        minion_id = data.get("id")
        if minion_id in wanted and data.get("result") is not False and data.get("act") == "accept":
            seconds = event.stamp.timestamp() - after_wall
            firsts[minion_id] = min(seconds, firsts.get(minion_id, seconds))
    return firsts


def first_starts(env, master, after_wall):
    """``{minion id: seconds from after_wall (a wall time; 0.0: any time) to its first start event on master}``."""
    firsts = {}
    for event in env.event_listener.get_events([(master.id, START_TAG)], after_time=after_wall):
        minion_id = event.tag.split("/")[2]
        seconds = event.stamp.timestamp() - after_wall
        if minion_id not in firsts or seconds < firsts[minion_id]:
            firsts[minion_id] = seconds
    return firsts


def cpu_seconds():
    """CPU seconds this machine has spent busy (all processes, everyone's) so far."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + getattr(times, "steal", 0.0)


def wait_for_rehome(env, master, minion_ids, fault_wall, give_up, on_done=None):
    """
    Bounded: poll B's start events until every minion has one or ``give_up`` s
    passed; ``on_done()`` is called right then (CPU figures of the storm).
    """
    wanted = set(minion_ids)
    deadline = fault_wall + give_up
    for _ in range(int(give_up / 0.5) + 2):
        firsts = first_starts(env, master, fault_wall)
        if wanted <= set(firsts) or time.time() >= deadline:
            break
        time.sleep(0.5)
    if on_done:
        on_done()
    # Events reach the listener asynchronously: one last short look.
    time.sleep(1)
    return {minion_id: seconds for minion_id, seconds in first_starts(env, master, fault_wall).items()
            if minion_id in wanted}


def ping_all(master, minion_ids, timeout=20):
    """How many of ``minion_ids`` answer one ``test.ping`` through ``master``."""
    client = _common.local_client(master)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ret = client.cmd(list(minion_ids), "test.ping", tgt_type="list", timeout=timeout, gather_job_timeout=5)
    except Exception as err:  # pylint: disable=broad-except
        _common.log.warning("test.ping through %s failed: %s", master.id, err)
        return 0
    finally:
        client.destroy()
    return sum(1 for minion_id in minion_ids if ret.get(minion_id) is True)


def sign_in_failures(minions):
    """``(minions that logged a failed sign-in, failed sign-ins)`` from the minion logs."""
    affected = total = 0
    for factory in minions:
        path = pathlib.Path(factory.config.get("log_file") or "")
        with contextlib.suppress(OSError):
            count = len(NOT_REACHED.findall(path.read_text(encoding="utf-8", errors="replace")))
            affected += count > 0
            total += count
    return affected, total


def keep_logs(lab, label, args):
    """``--keep-logs``: copy every daemon's log file to ``DIR/<label>-<daemon id>.log``."""
    if not args.keep_logs:
        return
    target = pathlib.Path(args.keep_logs)
    target.mkdir(parents=True, exist_ok=True)
    for daemon in [*lab.masters.values(), *lab.minions.values()]:
        source = pathlib.Path(daemon.config.get("log_file") or "")
        if source.is_file():
            shutil.copyfile(source, target / f"{label}-{daemon.id}.log")


def real_storm(lablib, root, setting, run, count, keys, args):
    """One lab, one storm; a dict of what was measured."""
    result = {"setting": setting, "run": run, "requested": count, "minions": 0, "error": None}
    begun = time.monotonic()
    label = f"{setting}-{run}"
    with lablib.StandaloneFactories(root / "f", event_seconds=600) as env:
        lab = build_storm_lab(lablib, env, root / "lab", count, setting, keys, args)
        master_a, master_b = lab.masters["a"], lab.masters["b"]
        minions = list(lab.minions.values())
        started = []
        with lablib.RunningDaemons([master_a, master_b]):
            try:
                def progress(up, failed):
                    print(f"  [{label}] {up} minions up ({failed} failed), "
                          f"{available_bytes() / GiB:.1f} GiB available, {time.monotonic() - begun:.0f} s",
                          flush=True)

                started, failed, memory_stop = start_minions(minions, args, progress)
                result.update(minions=len(started), start_failed=len(failed), memory_stop=memory_stop,
                              setup=time.monotonic() - begun)
                if not started:
                    result["error"] = "no minion started"
                    return result
                result["rss_per_minion"] = tree_rss([m.pid for m in started if m.pid]) / len(started)
                time.sleep(args.settle)
                ids = [factory.id for factory in started]
                on_a = first_starts(env, master_a, 0.0)
                result["on_a"] = sum(1 for minion_id in ids if minion_id in on_a)
                load_before = psutil.getloadavg()[0]
                pids = [factory.pid for factory in started if factory.pid]
                cpu_before = tree_cpu(pids)[0], master_cpu(master_b)[0], cpu_seconds()
                fault_wall = time.time()
                lablib.kill(master_a)
                result["kill"] = time.time() - fault_wall
                firsts = wait_for_rehome(env, master_b, ids, fault_wall, args.give_up, on_done=lambda: (
                    result.update(cpu=[after - before for after, before in zip(
                        (tree_cpu(pids)[0], master_cpu(master_b)[0], cpu_seconds()), cpu_before, strict=True)])))
                result["times"] = [firsts.get(minion_id) for minion_id in ids]
                auths = first_auths(env, master_b, fault_wall, ids)
                result["auth_times"] = [auths.get(minion_id) for minion_id in ids]
                result["load_before"] = load_before
                result["alive"] = sum(1 for factory in started if factory.is_running())
                result["answered"] = ping_all(master_b, ids)
                result["affected"], result["failures"] = sign_in_failures(started)
                keep_logs(lab, label, args)
            finally:
                stopping = time.monotonic()
                stop_all(started, args.batch)
                result["teardown_minions"] = time.monotonic() - stopping
    result["total"] = time.monotonic() - begun
    return result


# --- simulated sign-ins ---------------------------------------------------------------


def sim_minion_opts(minion_id, pki_dir, ip, port, settings):
    """The options a failover minion signs in with, for the master at ``ip:port``."""
    import salt.config  # pylint: disable=import-outside-toplevel

    opts = dict(salt.config.DEFAULT_MINION_OPTS)  # shallow: nested values are only read
    opts.update(settings)
    opts.update({
        "__role": "minion",
        "id": minion_id,
        "pki_dir": str(pki_dir),
        "master": ip,
        "master_ip": ip,
        "master_port": port,
        "master_uri": f"tcp://{ip}:{port}",
        "transport": "zeromq",
        # eval_master sets auth_tries 0 for failover; the creds event needs a minion bus.
        "auth_tries": 0,
        "auth_events": False,
        "local_masters": [ip],
    })
    return opts


async def failover_sign_in(survivor, dead, wait, t0, deadline):
    """
    What ``eval_master(failed=True)`` does with ``[survivor, dead]``: sign in to each
    in turn (Salt's ``AsyncAuth.authenticate``), ``wait`` s between rounds. Returns
    ``(seconds from t0 to success or None, failed sign-ins)``.
    """
    from salt.exceptions import SaltClientError  # pylint: disable=import-outside-toplevel

    failures = 0
    for attempt in range(1000):
        if attempt:
            await asyncio.sleep(wait)
        for auth in (survivor, dead):
            if time.time() >= deadline:
                return None, failures
            try:
                await auth.authenticate()
            except SaltClientError:
                failures += 1
                continue
            return time.time() - t0, failures
    return None, failures


async def sign_in_storm(job):
    """One client process's share of a storm; a list of ``(seconds or None, failures)``."""
    import salt.crypt  # pylint: disable=import-outside-toplevel

    auths, private_keys = [], {}
    for minion_id, pki_dir in job["minions"]:
        # AsyncAuth is a singleton per (pki_dir, id, master_uri) while referenced:
        # built before the storm (each holds a key cache loader), reused for retries.
        survivor = salt.crypt.AsyncAuth(sim_minion_opts(minion_id, pki_dir, *job["survivor"], job["settings"]))
        dead = salt.crypt.AsyncAuth(sim_minion_opts(minion_id, pki_dir, *job["dead"], job["settings"]))
        # A minion loads its private key (get_keys, 50-70 ms of CPU here) when it
        # first signs in to a master; on real hosts that runs in parallel, so here
        # it is done before the storm, once per key pair, and shared.
        if pki_dir not in private_keys:
            private_keys[pki_dir] = survivor.get_keys()
        survivor._private_key = dead._private_key = private_keys[pki_dir]  # pylint: disable=protected-access
        auths.append((survivor, dead))
    # Every client is ready: the parent then sets one start instant for all.
    job["ready"].put(len(auths))
    job["go"].wait(timeout=300)
    t0 = job["start"]["t0"]
    await asyncio.sleep(max(0.0, t0 - time.time()))
    wait = float(job["settings"]["acceptance_wait_time"])
    deadline = t0 + job["give_up"]
    cpu = time.process_time()
    outcomes = await asyncio.gather(*(failover_sign_in(s, d, wait, t0, deadline) for s, d in auths))
    stats = {}
    stats["cpu"] = time.process_time() - cpu
    return outcomes, stats


def sign_in_worker(job):
    """Process entry point (spawned): run :func:`sign_in_storm` quietly."""
    import logging  # pylint: disable=import-outside-toplevel

    logging.disable(logging.CRITICAL)
    return asyncio.run(sign_in_storm(job))


def wait_until_ready(ready, futures, clients, timeout):
    """Bounded: until ``clients`` have reported ready, one of them failed (raised) or ``timeout`` s."""
    import queue  # pylint: disable=import-outside-toplevel

    deadline = time.monotonic() + timeout
    count = 0
    while count < clients and time.monotonic() < deadline:
        failed = [future for future in futures if future.done()]
        if failed:
            failed[0].result()  # raises the client's error
            return
        try:
            ready.get(timeout=1)
            count += 1
        except queue.Empty:
            continue


def sim_pki_dirs(root, pool, master_pub):
    """One minion pki dir per key pair of ``pool`` (``minion.pem/pub`` + the master's key)."""
    dirs = []
    for index, pair in enumerate(pool):
        pki_dir = pathlib.Path(root) / f"p{index}"
        place_minion_key(pki_dir, pair)
        shutil.copyfile(master_pub, pki_dir / "minion_master.pub")
        dirs.append(pki_dir)
    return dirs


def sim_storm(lablib, env, root, setting, size, pool, args):
    """One master, ``size`` simulated failover sign-ins at once; a dict of what was measured."""
    result = {"setting": setting, "size": size, "error": None}
    ip = lablib.LOOPBACK_B
    publish, ret = lablib.random_shared_ports((lablib.LOOPBACK_A, lablib.LOOPBACK_B))
    dead_port = lablib.free_port((lablib.LOOPBACK_A,))
    options = lablib.master_overrides(ip, (publish, ret))
    options.update({"log_level_logfile": "warning", **master_settings(setting, size, args.master_extra)})
    master = env.manager.salt_master_daemon(f"sim-{setting[0]}{size}", overrides=options)
    keypair = lablib.make_keypair(root / "master-key")
    lablib.install_master_keypair(master.config["pki_dir"], keypair)
    dirs = sim_pki_dirs(root / "pki", pool, keypair[1])
    accepted = pathlib.Path(master.config["pki_dir"]) / "minions"
    accepted.mkdir(parents=True, exist_ok=True)
    minions = []
    for index in range(size):
        minion_id = f"{SIM_PREFIX}{index:05d}"
        pki_dir = dirs[index // args.key_pool % len(dirs)]
        shutil.copyfile(pki_dir / "minion.pub", accepted / minion_id)
        minions.append((minion_id, str(pki_dir)))
    settings = minion_settings(setting, args.minion_extra)
    result["worker_threads"] = master.config.get("worker_threads")
    context = multiprocessing.get_context("spawn")
    with lablib.RunningDaemons([master]), context.Manager() as manager:
        clients = min(args.clients, size)
        ready, go, start = manager.Queue(), manager.Event(), manager.dict()
        jobs = [{"minions": minions[index::clients], "survivor": (ip, ret), "dead": (lablib.LOOPBACK_A, dead_port),
                 "settings": settings, "give_up": args.sim_give_up, "ready": ready, "go": go, "start": start}
                for index in range(clients)]
        with concurrent.futures.ProcessPoolExecutor(max_workers=clients, mp_context=context) as pool_exec:
            futures = [pool_exec.submit(sign_in_worker, job) for job in jobs]
            try:
                wait_until_ready(ready, futures, clients, timeout=300)
            finally:
                # Released whatever happened (a broken barrier frees the clients too).
                start["t0"] = time.time() + 0.5
                go.set()
            cpu_before = master_cpu(master)
            parts = [future.result(timeout=args.sim_give_up + 360) for future in futures]
        cpu_after = master_cpu(master)
        result["master_cpu"], result["worker_cpu"] = (
            after - before for after, before in zip(cpu_after, cpu_before, strict=True))
        outcomes = [item for part, _ in parts for item in part]
        result["client_cpu"] = sum(stats["cpu"] for _, stats in parts)
    result["times"] = [seconds for seconds, _ in outcomes]
    result["failures"] = sum(failures for _, failures in outcomes)
    result["affected"] = sum(1 for _, failures in outcomes if failures)
    return result


def tree_cpu(pids, marker="MWorker"):
    """
    ``(CPU seconds so far of the process trees of pids, of those whose command line
    holds marker)``. Processes that ended meanwhile are not counted.
    """
    total = marked = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
                    if marker in " ".join(proc.cmdline()):
                        marked += times.user + times.system
    return total, marked


def master_cpu(master):
    """``(CPU seconds of a master's whole process tree, of its MWorkers)`` so far."""
    return tree_cpu([master.pid])


# --- report ---------------------------------------------------------------------------


def describe_real(result):
    if result.get("error"):
        return f"ERROR: {result['error']}"
    times = result.get("times") or []
    figures = percentile_times(times, len(times))
    done = sum(1 for value in times if value is not None)
    auths = percentile_times(result.get("auth_times") or [], len(times))
    return (f"{done}/{len(times)} on B; 50 % {_common.fmt(figures[50])}, 95 % {_common.fmt(figures[95])}, "
            f"100 % {_common.fmt(figures[100])}; sign-in answered by B (salt/auth): 50 % {_common.fmt(auths[50])}, "
            f"95 % {_common.fmt(auths[95])}, 100 % {_common.fmt(auths[100])}; "
            f"test.ping through B {result.get('answered')}/{len(times)}; "
            f"{result.get('alive')} minion processes still running; "
            f"{result.get('affected')} minions logged {result.get('failures')} failed sign-ins; "
            f"CPU s until the last re-homed (minions, B, whole machine): "
            f"{', '.join(f'{value:.1f}' for value in result.get('cpu') or [])}; "
            f"load before {result.get('load_before', 0):.1f}; per minion "
            f"{result.get('rss_per_minion', 0) / MiB:.0f} MiB RSS; [{histogram(times)}]")


def describe_sim(result):
    if result.get("error"):
        return f"ERROR: {result['error']}"
    times = result["times"]
    figures = percentile_times(times, len(times))
    done = sum(1 for value in times if value is not None)
    return (f"{done}/{len(times)} signed in; 50 % {_common.fmt(figures[50])}, 95 % {_common.fmt(figures[95])}, "
            f"100 % {_common.fmt(figures[100])}; {result['affected']} clients had {result['failures']} failed "
            f"sign-ins; worker_threads {result['worker_threads']}; master CPU {result['master_cpu']:.1f} s "
            f"({1000 * result['master_cpu'] / max(1, done):.1f} ms per sign-in, MWorkers "
            f"{1000 * result['worker_cpu'] / max(1, done):.1f} ms); client CPU {result['client_cpu']:.1f} s; "
            f"[{histogram(times)}]")


def report(real, sims, args, count):
    print()
    print("salt-ha bench/storm.py: master A killed, every minion signs in to B at once")
    for setting in args.wanted:
        print(f"  {setting}: {describe_settings(setting, args, count)}")
    rows = []
    for result in real:
        times = result.get("times") or []
        figures = percentile_times(times, len(times)) if times else {50: None, 95: None, 100: None}
        auths = percentile_times(result.get("auth_times") or [], len(times)) if times else {100: None}
        rows.append(["real minions", result["setting"], f"{result['minions']}",
                     _common.fmt(figures[50]), _common.fmt(figures[95]), _common.fmt(figures[100]),
                     _common.fmt(auths[100]), f"{result.get('answered', '-')}", f"{result.get('failures', '-')}"])
    for result in sims:
        times = result.get("times") or []
        figures = percentile_times(times, len(times)) if times else {50: None, 95: None, 100: None}
        rows.append(["simulated sign-ins", result["setting"], f"{result['size']}",
                     _common.fmt(figures[50]), _common.fmt(figures[95]), _common.fmt(figures[100]),
                     _common.fmt(figures[100]), "-", f"{result.get('failures', '-')}"])
    print()
    print("(real minions: seconds from the kill to salt/minion/<id>/start on B; simulated: to the answered "
          "sign-in; 'signed in 100 %': the last sign-in B answered)")
    _common.print_table(["storm", "setting", "minions", "50 %", "95 %", "100 %", "signed in 100 %",
                         "answer ping on B", "failed sign-ins"], rows)
    print()
    print("raw:")
    for result in real:
        print(f"  real {result['setting']:<11} run {result['run']}: {describe_real(result)}")
    for result in sims:
        print(f"  sim  {result['setting']:<11} {result['size']:>5}: {describe_sim(result)}")


def main():
    args = parse_args()
    real, sims = [], []
    with _common.session("sha-st-") as root:
        from tests.support import lab as lablib  # pylint: disable=import-outside-toplevel

        started = time.monotonic()
        count = minion_cap(args.minions, args)
        if args.minions:
            print(f"{available_bytes() / GiB:.1f} GiB available: {count} of {args.minions} real minions fit "
                  f"({args.mb_per_minion:g} MiB each, {args.min_free_gb:g} GiB kept free)", flush=True)
            if count < min(args.minions, 10):
                print("not enough free memory for the real-minion storm: skipped", flush=True)
                count = 0
        keys = make_key_pool(root / "keys", max(count, math.ceil(max(args.sizes or [0]) / args.key_pool)))
        for setting in args.wanted if count else ():
            for run in range(1, args.runs + 1):
                try:
                    result = real_storm(lablib, root / f"r{setting[0]}{run}", setting, run, count, keys, args)
                except Exception as err:  # pylint: disable=broad-except
                    result = {"setting": setting, "run": run, "minions": 0, "error": f"{type(err).__name__}: {err}"}
                real.append(result)
                print(f"[{time.monotonic() - started:5.0f} s] real {setting} run {run}: {describe_real(result)}",
                      flush=True)
        for size in args.sizes:
            for setting in args.wanted:
                with lablib.StandaloneFactories(root / f"s{setting[0]}{size}" / "f") as env:
                    try:
                        result = sim_storm(lablib, env, root / f"s{setting[0]}{size}", setting, size,
                                           keys[: max(1, math.ceil(size / args.key_pool))], args)
                    except Exception as err:  # pylint: disable=broad-except
                        result = {"setting": setting, "size": size, "error": f"{type(err).__name__}: {err}"}
                sims.append(result)
                print(f"[{time.monotonic() - started:5.0f} s] sim {setting} {size}: {describe_sim(result)}",
                      flush=True)
        report(real, sims, args, count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
