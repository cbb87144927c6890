"""
Bench: failover time of a minion from master A to master B.

Topology (tests/support/lab.py): masters A (127.0.0.1) and B (127.0.0.2) with one
shared key pair and identical ports, one minion ``master: [A, B]``,
``master_type: failover``, host-only entries.

Faults on A (the master the minion is connected to):
  killed   SIGKILL of A's process tree: its TCP connections close.
  frozen   SIGSTOP of A's process tree: its connections stay ESTABLISHED (a hung master).
  stall    SIGSTOP of A's process tree for --stall seconds (1.5), then SIGCONT (a busy
           or paused master): the minion should stay on A. Measured: whether the
           minion signs in on B within --stall-watch seconds, and whether it still
           answers through A after that.

Settings:
  stock        Salt's defaults for everything failover-related (no
               master_alive_interval, retry_dns 30, auth_timeout 5, auth_tries 7,
               master_tries -1, loop_interval 1).
  recommended  stock plus what ha.lint recommends: master_alive_interval 2 (ha.lint
               says 10; 2 s here to give the alive job every chance), retry_dns 0,
               auth_timeout 5.
  beacon       recommended plus the salt-ha ``ha`` beacon with the settings the README
               recommends (interval 1, timeout 1, probe_interval 0.5, hang_ticks 4:
               a master silent for 2 s is left). The fault comes once the beacon has
               reported its connection to A (a minion in its steady state: an event
               on its way to A when A hangs costs Salt's own 5 s wait at the switch).

Scenarios run by default: killed and frozen with stock and recommended, frozen and
stall with beacon (--scenarios picks others, e.g. killed-beacon).

Each run builds a fresh lab, starts A, B and the minion, checks that the minion
answers ``test.ping`` through A (the lab places the minion's key as accepted on both
masters before start, as an operator syncs keys, so B's key acceptance is not part of
the figure; --no-preseed accepts it on B only when it shows up pending there), injects the fault, then
publishes ``test.ping`` through B every --ping-interval seconds (LocalClient
``cmd_async``) until a return shows up on B's bus or the give-up time passes.
Figures are seconds from the fault to B's stamp of the first return and of
``salt/minion/<id>/start`` (read through salt-factories' event listener). A
synchronous ``test.ping`` then confirms the answer.

Why not a synchronous poll: a job published before the minion is connected to B
is lost, and ``LocalClient.cmd(timeout=1, gather_job_timeout=1)`` then spends
seconds on it (6.2 s measured once for a minion that was on B after 0.3 s).

Usage (from the repo root): ``.venv/bin/python bench/failover.py [--runs 3] [--quick]``
"""

import argparse
import contextlib
import io
import time

import _common  # sys.path: repo root and _utils

ALIVE_INTERVAL = 2
FAULTS = ("killed", "frozen", "stall")
SETTINGS = ("stock", "recommended", "beacon")
DEFAULT_SCENARIOS = ("killed-stock", "killed-recommended", "frozen-stock", "frozen-recommended",
                     "frozen-beacon", "stall-beacon")
MINION_ID = "bench-failover-minion"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="1 run for the frozen scenarios without the beacon (they wait the whole give-up time)")
    parser.add_argument("--give-up-frozen", "--give-up", dest="give_up_frozen", type=float, default=45.0,
                        help="seconds to wait for failover when A is frozen (default 45)")
    parser.add_argument("--give-up-killed", type=float, default=30.0,
                        help="seconds to wait for failover when A is killed (default 30)")
    parser.add_argument("--ping-interval", type=float, default=0.25,
                        help="seconds between test.ping publications through B (default 0.25)")
    parser.add_argument("--confirm-timeout", type=float, default=5.0,
                        help="timeout of the synchronous test.ping that confirms an answer (default 5)")
    parser.add_argument("--scenarios", default="",
                        help="comma list of fault-setting names to run, e.g. killed-stock (default all)")
    parser.add_argument("--no-preseed", action="store_true",
                        help="do not put the minion key on B: the lab accepts it when it shows up pending")
    parser.add_argument("--stall", type=float, default=1.5, help="seconds A stays stopped in a stall (default 1.5)")
    parser.add_argument("--stall-watch", type=float, default=10.0,
                        help="seconds after a stall to watch for a failover that should not happen (default 10)")
    args = parser.parse_args()
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    for name in ("give_up_frozen", "give_up_killed"):
        if not 1 <= getattr(args, name) <= 600:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and 600")
    if not 0.05 <= args.ping_interval <= 5:
        parser.error("--ping-interval must be between 0.05 and 5")
    if not 1 <= args.confirm_timeout <= 60:
        parser.error("--confirm-timeout must be between 1 and 60")
    if not 0.1 <= args.stall <= 30:
        parser.error("--stall must be between 0.1 and 30")
    if not 1 <= args.stall_watch <= 120:
        parser.error("--stall-watch must be between 1 and 120")
    known = {f"{fault}-{setting}" for fault in FAULTS for setting in SETTINGS}
    wanted = {name.strip() for name in args.scenarios.split(",") if name.strip()}
    if wanted - known:
        parser.error(f"unknown scenarios {sorted(wanted - known)}; known: {sorted(known)}")
    args.wanted = wanted or set(DEFAULT_SCENARIOS)
    return args


def minion_settings(setting):
    """``(alive_interval, minion_overrides)`` for ``stock``, ``recommended`` or ``beacon``."""
    import salt.config  # pylint: disable=import-outside-toplevel

    from tests.support import beacon_lab as blab  # pylint: disable=import-outside-toplevel

    defaults = salt.config.DEFAULT_MINION_OPTS
    # Undo the lab's tuned values (and salt-factories' loop_interval 0.05); the
    # topology (master list, master_type failover, shared ports) stays.
    stock = {
        key: defaults[key]
        for key in ("retry_dns", "auth_timeout", "auth_tries", "master_tries", "loop_interval", "random_master")
    }
    if setting == "stock":
        return None, stock
    recommended = {**stock, "retry_dns": 0, "auth_timeout": 5}
    if setting == "recommended":
        return ALIVE_INTERVAL, recommended
    return ALIVE_INTERVAL, {**recommended, **blab.beacon_overrides()}


def ping(client, minion_id, timeout):
    """True when ``minion_id`` answers a synchronous ``test.ping`` through ``client``."""
    try:
        ret = client.cmd(minion_id, "test.ping", timeout=timeout, gather_job_timeout=1)
    except Exception as err:  # pylint: disable=broad-except
        _common.log.debug("test.ping through the client failed: %s", err)
        return False
    return ret.get(minion_id) is True


def first_event(event_listener, master, tag, after_wall):
    """Seconds from ``after_wall`` to the first ``tag`` event on ``master``'s bus, or None."""
    events = event_listener.get_events([(master.id, tag)], after_time=after_wall)
    stamps = [event.stamp.timestamp() for event in events]
    return min(stamps) - after_wall if stamps else None


def wait_for_first_answer(event_listener, client, master, minion_id, fault_wall, give_up, interval):
    """
    Publish ``test.ping`` to ``minion_id`` through ``master`` every ``interval``
    seconds (asynchronously: a job published before the minion is connected is
    lost, so a synchronous poll would waste a whole timeout on it) until a return
    shows up on the master's bus, or ``give_up`` seconds after the fault. Bounded in
    time and count. Returns ``(answered, pings)``: seconds from the fault to the
    first return (the master's event stamp), None when none came.
    """
    tag = f"salt/job/*/ret/{minion_id}"
    deadline = fault_wall + give_up
    max_pings = int(give_up / interval) + 2
    for pings in range(1, max_pings + 1):
        try:
            # LocalClient prints "No minions matched the target" while B lacks the key.
            with contextlib.redirect_stdout(io.StringIO()):
                client.cmd_async(minion_id, "test.ping")
        except Exception as err:  # pylint: disable=broad-except
            _common.log.debug("publishing test.ping failed: %s", err)
        time.sleep(interval)
        answered = first_event(event_listener, master, tag, fault_wall)
        if answered is not None:
            return answered, pings
        if time.time() >= deadline:
            break
    # Returns are forwarded to the listener asynchronously: one last bounded look.
    matched = event_listener.wait_for_events([(master.id, tag)], after_time=fault_wall, timeout=1)
    stamps = [event.stamp.timestamp() - fault_wall for event in matched.matches]
    answered = min(stamps) if stamps else None
    return (answered if answered is not None and answered <= give_up else None), pings


def new_result(**values):
    """What one run measured (seconds after the fault); None where nothing happened."""
    result = {"answered": None, "start_event": None, "pings": 0, "inject": None,
              "confirmed": None, "error": None, "setup": None, "teardown": None, "stayed": None}
    result.update(values)
    return result


def beacon_settled(env, master_a, after_wall):
    """
    Wait (bounded) for the beacon's ``connected`` event on A: a minion in its steady
    state. A fault while an event is on its way to A would add Salt's own 5 s wait
    for that request (``RequestClient.close_async``) to the failover, whatever sent it.
    """
    tag = f"salt/beacon/{MINION_ID}/ha/connected"
    matched = env.event_listener.wait_for_events([(master_a.id, tag)], after_time=after_wall, timeout=30)
    time.sleep(0.5)
    return bool(matched.matches)


def give_up_for(fault, args):
    """Seconds after the fault a run waits for the minion to answer through B."""
    return {"killed": args.give_up_killed, "frozen": args.give_up_frozen, "stall": args.stall + args.stall_watch}[fault]


def watch_stall(lablib, env, master_a, master_b, client_a, fault_wall, args, result):
    """
    A stall of A: stopped for ``--stall`` s, then continued; then ``--stall-watch`` s
    in which the minion should not sign in on B, and a synchronous ping through A.
    """
    with lablib.frozen(master_a):
        result["inject"] = time.time() - fault_wall
        time.sleep(args.stall)
    time.sleep(args.stall_watch)
    result["start_event"] = first_event(env.event_listener, master_b, f"salt/minion/{MINION_ID}/start", fault_wall)
    result["stayed"] = ping(client_a, MINION_ID, args.confirm_timeout)


def run_once(lablib, root, fault, setting, args):
    """One fresh lab, one fault; a dict of what was measured."""
    alive_interval, overrides = minion_settings(setting)
    give_up = give_up_for(fault, args)
    result = new_result()
    begun, begun_wall = time.monotonic(), time.time()
    with lablib.StandaloneFactories(root / "f") as env:
        lab = lablib.two_master_lab(
            env.manager, root / "lab", MINION_ID, alive_interval=alive_interval,
            minion_overrides=overrides, accept_on=("a",) if args.no_preseed else ("a", "b"),
        )
        master_a, master_b = lab.masters["a"], lab.masters["b"]
        with lablib.RunningDaemons(lablib.daemons(lab)):
            client_a, client_b = _common.local_client(master_a), _common.local_client(master_b)
            try:
                if not any(ping(client_a, MINION_ID, 10) for _ in range(3)):
                    result["error"] = "minion did not answer through A before the fault"
                    return result
                if setting == "beacon" and not beacon_settled(env, master_a, begun_wall):
                    result["error"] = "the beacon reported no connection to A before the fault"
                    return result
                result["setup"] = time.monotonic() - begun
                fault_wall = time.time()
                if fault == "stall":
                    watch_stall(lablib, env, master_a, master_b, client_a, fault_wall, args, result)
                    return result
                if fault == "killed":
                    lablib.kill(master_a)
                else:
                    lablib.freeze(master_a)
                result["inject"] = time.time() - fault_wall
                answered, pings = wait_for_first_answer(
                    env.event_listener, client_b, master_b, MINION_ID, fault_wall, give_up, args.ping_interval
                )
                result.update(answered=answered, pings=pings)
                result["start_event"] = first_event(
                    env.event_listener, master_b, f"salt/minion/{MINION_ID}/start", fault_wall
                )
                if answered is not None:
                    # Sanity check of the figure with a plain synchronous call.
                    result["confirmed"] = ping(client_b, MINION_ID, args.confirm_timeout)
            finally:
                client_a.destroy()
                client_b.destroy()
                stopping = time.monotonic()
        result["teardown"] = time.monotonic() - stopping
    return result


def describe(run, give_up):
    """One raw run as text."""
    if run["error"]:
        return f"ERROR: {run['error']}"
    event = "none" if run["start_event"] is None else f"{run['start_event']:.2f} s"
    if run["stayed"] is not None:  # a stall
        left = "not left" if run["start_event"] is None else f"LEFT (start event on B {event})"
        return (f"fault injected in {run['inject']:.2f} s; {left} within {give_up:g} s; "
                f"answers through A afterwards: {'yes' if run['stayed'] else 'NO'}")
    inject = f"fault injected in {run['inject']:.2f} s; "
    if run["answered"] is None:
        return f"{inject}no failover within {give_up:g} s ({run['pings']} pings; start event on B: {event})"
    confirmed = {True: "confirmed", False: "NOT confirmed", None: "-"}[run["confirmed"]]
    return (f"{inject}start event on B {event}, first test.ping return on B {run['answered']:.2f} s "
            f"(ping {run['pings']}; synchronous re-ping {confirmed})")


def report(results, args):
    """Print the summary table and the raw runs."""
    print()
    print(f"salt-ha bench/failover.py: A fails -> test.ping through B answers (test.ping published "
          f"every {args.ping_interval:g} s, time = B's stamp of the first return; key "
          f"{'not pre-seeded' if args.no_preseed else 'pre-seeded'} on B)")
    print(f"  stock: Salt defaults {minion_settings('stock')[1]}, no master_alive_interval")
    print(f"  recommended: master_alive_interval {ALIVE_INTERVAL} (bench value; ha.lint says 10), "
          "retry_dns 0, auth_timeout 5")
    print(f"  beacon: recommended plus the ha beacon {minion_settings('beacon')[1]['beacons']['ha']}")
    print(f"  stall: A stopped for {args.stall:g} s, then continued; watched for {args.stall_watch:g} s more")
    print()
    rows = []
    for (fault, setting), runs in results.items():
        give_up = give_up_for(fault, args)
        if fault == "stall":
            stayed = [run for run in runs if run["stayed"] and run["start_event"] is None]
            rows.append([f"A {fault} {args.stall:g} s", setting, f"left {len(runs) - len(stayed)}/{len(runs)}",
                         "-", "-", "-", "-", "-", "-", f"stayed on A in {len(stayed)} of {len(runs)} runs"])
            continue
        answered = [run["answered"] for run in runs if run["answered"] is not None]
        events = [run["start_event"] for run in runs if run["start_event"] is not None]
        ping_med, ping_min, ping_max = _common.spread(answered)
        event_med, event_min, event_max = _common.spread(events)
        rows.append([
            f"A {fault}", setting, f"{len(answered)}/{len(runs)}",
            _common.fmt(ping_med), _common.fmt(ping_min), _common.fmt(ping_max),
            _common.fmt(event_med), _common.fmt(event_min), _common.fmt(event_max),
            "-" if len(answered) == len(runs) else f"no failover within {give_up:g} s",
        ])
    _common.print_table(
        ["fault", "setting", "failed over", "ping ret med", "min", "max", "start event med", "min", "max", "note"],
        rows,
    )
    print()
    print("raw runs (seconds after the fault):")
    for (fault, setting), runs in results.items():
        give_up = give_up_for(fault, args)
        for index, run in enumerate(runs, 1):
            print(f"  A {fault:<6} {setting:<11} run {index}: {describe(run, give_up)}")


def main():
    args = parse_args()
    results = {}
    with _common.session("sha-fo-") as root:
        from tests.support import lab as lablib  # pylint: disable=import-outside-toplevel

        started = time.monotonic()
        for fault in FAULTS:
            for setting in SETTINGS:
                if f"{fault}-{setting}" not in args.wanted:
                    continue
                runs = 1 if (args.quick and fault == "frozen" and setting != "beacon") else args.runs
                results[(fault, setting)] = []
                for index in range(1, runs + 1):
                    run_started = time.monotonic()
                    try:
                        run = run_once(lablib, root / f"{fault[0]}{setting[0]}{index}", fault, setting, args)
                    except Exception as err:  # pylint: disable=broad-except
                        run = new_result(error=f"{type(err).__name__}: {str(err)[:200]}")
                    results[(fault, setting)].append(run)
                    give_up = give_up_for(fault, args)
                    phases = ""
                    if run["setup"] is not None and run["teardown"] is not None:
                        phases = f": setup {run['setup']:.0f} s, teardown {run['teardown']:.0f} s"
                    print(f"[{time.monotonic() - started:5.0f} s] A {fault} / {setting} run {index}: "
                          f"{describe(run, give_up)} (run took {time.monotonic() - run_started:.0f} s{phases})",
                          flush=True)
        report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
