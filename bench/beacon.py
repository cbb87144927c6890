"""
Bench: what the ``ha`` beacon costs the minion's main loop.

The beacon runs in the minion's main process, on its event loop: a tick must cost
next to nothing and never wait on the network. Its probes run in a background
thread (one per beacon, every ``probe_interval``); a tick reads their latest results.

Part 1, ticks (seconds): the real beacon and ``ha`` module through Salt's loader and
Salt's own beacon framework (``salt.beacons.Beacon.process``) over daemon-like
options (an ``OptsDict`` whose ``master`` is the current master), against master
stand-ins on 127.0.0.1 (``tests/support/fake_master.py``): ZeroMQ REP sockets that
answer the ping as a master worker does, a socket that accepts TCP and never
answers (a hung master) and one publish port that accepts TCP, which this process
stays connected to as the daemon does. After the first tick (which starts the
probe thread) and its first round, ``--ticks`` ticks ``--tick-every`` s apart:
  quiet        2 masters answer, connected to the first: nothing changes
  quiet-5      5 masters answer: the cost per master
  hung-standby the second master hangs: every probe round waits ``--timeout`` for
               it, a tick waits for none of it
  transition   every tick the connected master changes (confirmed through this
               process's sockets): the cost of a tick that fires ``failover``
Tick CPU is ``time.thread_time`` of the ticking thread (what the loop pays);
"probe thread CPU" is the rest of the process's CPU over the scenario, per second.
Goals: quiet tick < 5 ms CPU median; tick wall with a hung standby < 5 ms.

Part 2, ``test.ping`` through the connected master (real daemons, ~1 min; skip
with ``--no-daemons``): masters A (127.0.0.1) and B (127.0.0.2), one minion with the
beacon (the README's recommended settings) and one without, both on A;
``--pings`` sequential ``test.ping`` round trips (LocalClient on A) to each with B
up and with B frozen (SIGSTOP: a hung standby the beacon's probes wait on), in
blocks of 10 alternating between the two cases.
Goal: with the beacon, p95 with a hung standby within 20 ms of p95 without.

Usage (from the repo root):
``.venv/bin/python bench/beacon.py [--ticks 50] [--timeout 1] [--pings 40] [--no-daemons]``
"""

import argparse
import contextlib
import socket
import statistics
import time

import _common  # sys.path: repo root and _utils
import probe as probe_bench  # noqa: E402  (bench/probe.py: minion_opts)

GOAL_CPU_MS = 5.0
GOAL_HUNG_WALL_MS = 5.0
GOAL_PING_P95_MS = 20.0
BEACON_MINION, STOCK_MINION = "bench-beacon", "bench-stock"
PING_BLOCK = 10  # pings per minion before switching between B up and B frozen
SETTLE_SECONDS = 2  # after freezing or thawing B, before pinging


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=50, help="ticks per scenario (default 50)")
    parser.add_argument("--tick-every", type=float, default=0.05, help="seconds between ticks (default 0.05)")
    parser.add_argument("--timeout", type=float, default=1.0, help="beacon probe timeout (default 1)")
    parser.add_argument("--pings", type=int, default=40, help="test.ping round trips per minion and case (default 40)")
    parser.add_argument("--no-daemons", action="store_true", help="skip part 2 (real daemons)")
    args = parser.parse_args()
    if not 5 <= args.ticks <= 1000:
        parser.error("--ticks must be between 5 and 1000")
    if not 0.001 <= args.tick_every <= 1:
        parser.error("--tick-every must be between 0.001 and 1")
    if not 0.1 <= args.timeout <= 10:
        parser.error("--timeout must be between 0.1 and 10")
    if not 5 <= args.pings <= 500:
        parser.error("--pings must be between 5 and 500")
    return args


def percentile(values, share):
    """The ``share`` (0-1) percentile of a non-empty list (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class BeaconRig:
    """Salt's beacon framework over daemon-like options for ``masters`` (entries)."""

    def __init__(self, root, masters, publish_port, timeout):
        import salt.beacons  # pylint: disable=import-outside-toplevel
        import salt.loader  # pylint: disable=import-outside-toplevel
        import salt.utils.optsdict  # pylint: disable=import-outside-toplevel

        opts = probe_bench.minion_opts(root, (publish_port, 4506))
        opts.update(master=masters[0], master_list=list(masters), master_type="failover")
        self.opts = salt.utils.optsdict.OptsDict.from_dict(opts, name="bench-beacon")
        self.masters = masters
        self.modules = salt.loader.minion_mods(self.opts, context={})
        self.framework = salt.beacons.Beacon(self.opts, self.modules)
        self.options = [{"timeout": timeout}, {"failover_on_hang": False}]
        self.config = {"ha": list(self.options)}

    def tick(self):
        """One beacon pass; ``(cpu seconds of this thread, wall seconds, events)``."""
        cpu, wall = time.thread_time(), time.perf_counter()
        events = self.framework.process(self.config, {})
        return time.thread_time() - cpu, time.perf_counter() - wall, events

    def first_round(self):
        """The first tick (starts the probe thread), then wait (bounded) for its first round."""
        self.tick()
        ha_watch = self.modules["ha.watch"].__globals__["ha_watch"]
        ha_endpoints = self.modules["ha.watch"].__globals__["ha_endpoints"]
        settings = ha_watch.settings_from(self.options)
        worker = ha_watch.probe_worker("ha", ha_endpoints.master_endpoints(self.opts), settings)
        if not worker.wait_for_round(0, 10):
            raise RuntimeError("the beacon's probe thread ended no round within 10 s")
        return ha_watch

    def close(self):
        self.opts["beacons"] = self.config
        self.framework.close_beacons()


def run(rig, ticks, every, before_tick=None):
    """
    First round, then ``ticks`` ticks ``every`` s apart; ``(cpu ms list, wall ms list,
    events fired, probe thread CPU ms per second)``.
    """
    ha_watch = rig.first_round()
    rig.tick()  # fires connected (and degraded)
    cpus, walls, fired = [], [], 0
    process_cpu, thread_cpu, started = time.process_time(), time.thread_time(), time.perf_counter()
    for index in range(ticks):
        if before_tick:
            before_tick(index)
        cpu, wall, events = rig.tick()
        cpus.append(cpu * 1000)
        walls.append(wall * 1000)
        fired += len(events)
        time.sleep(every)
    elapsed = time.perf_counter() - started
    background = (time.process_time() - process_cpu) - (time.thread_time() - thread_cpu)
    rig.close()
    ha_watch.stop_worker("ha", wait=3)
    return cpus, walls, fired, background * 1000 / elapsed


def tick_part(args):
    """Part 1; ``(rows, quiet CPU median ms, hung-standby wall median ms)``."""
    from tests.support import fake_master  # pylint: disable=import-outside-toplevel

    rows = []
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_common.temp_root("salt-ha-bench-beacon-"))
        answering = [stack.enter_context(fake_master.AnsweringMaster()) for _ in range(5)]
        hung = stack.enter_context(fake_master.SilentMaster())
        publisher = stack.enter_context(fake_master.AcceptingPort())
        stack.enter_context(socket.create_connection(("127.0.0.1", publisher.port), timeout=2))
        entries = [f"127.0.0.1:{master.port}" for master in answering]
        scenarios = [
            ("quiet", entries[:2]),
            ("quiet-5", entries),
            ("hung-standby", [entries[0], f"127.0.0.1:{hung.port}"]),
        ]
        for name, masters in scenarios:
            rig = BeaconRig(root / name, masters, publisher.port, args.timeout)
            rows.append((name, len(masters), *run(rig, args.ticks, args.tick_every)))
        rig = BeaconRig(root / "transition", entries[:2], publisher.port, args.timeout)
        measured = run(
            rig, args.ticks, args.tick_every,
            before_tick=lambda i: rig.opts.__setitem__("master", entries[(i + 1) % 2]),
        )
        rows.append(("transition", 2, *measured))
    by_name = {row[0]: row for row in rows}
    return rows, statistics.median(by_name["quiet"][2]), statistics.median(by_name["hung-standby"][3])


def print_tick_part(args, rows, quiet_cpu, hung_wall):
    print(f"ha beacon tick, {args.ticks} ticks {args.tick_every:g} s apart per scenario, timeout {args.timeout:g} s "
          "(tick CPU = thread_time of the ticking thread)")
    _common.print_table(
        ["scenario", "masters", "CPU median", "CPU p95", "wall median", "wall p95", "wall max", "events",
         "probe thread CPU"],
        [
            (name, count, f"{statistics.median(c):.2f} ms", f"{percentile(c, 0.95):.2f} ms",
             f"{statistics.median(w):.2f} ms", f"{percentile(w, 0.95):.2f} ms", f"{max(w):.2f} ms", fired,
             f"{background:.1f} ms/s")
            for name, count, c, w, fired, background in rows
        ],
    )
    verdict = "met" if quiet_cpu < GOAL_CPU_MS else "MISSED"
    print(f"goal: quiet tick < {GOAL_CPU_MS:g} ms CPU median: {verdict} ({quiet_cpu:.2f} ms)")
    verdict = "met" if hung_wall < GOAL_HUNG_WALL_MS else "MISSED"
    print(f"goal: tick wall with a hung standby < {GOAL_HUNG_WALL_MS:g} ms median: {verdict} ({hung_wall:.2f} ms)")


def timed_pings(client, minion_ids, count):
    """``count`` sequential ``test.ping`` round trips to each minion (interleaved); ``{id: [ms]}`` (failures: None)."""
    times = {minion_id: [] for minion_id in minion_ids}
    for _ in range(count):
        for minion_id in minion_ids:
            started = time.perf_counter()
            try:
                ret = client.cmd(minion_id, "test.ping", timeout=5, gather_job_timeout=1)
            except Exception as err:  # pylint: disable=broad-except
                _common.log.debug("test.ping of %s failed: %s", minion_id, err)
                ret = {}
            elapsed = (time.perf_counter() - started) * 1000
            times[minion_id].append(elapsed if ret.get(minion_id) is True else None)
    return times


def ping_part(args, root):
    """Part 2 on real daemons; ``{(minion, case): [ms or None]}``."""
    from tests.support import beacon_lab as blab  # pylint: disable=import-outside-toplevel
    from tests.support import lab as lablib  # pylint: disable=import-outside-toplevel

    results = {}
    with lablib.StandaloneFactories(root / "f") as env:
        lab = lablib.Lab(env.manager, root / "lab")
        lab.add_master("a", lablib.LOOPBACK_A)
        lab.add_master("b", lablib.LOOPBACK_B)
        lab.add_failover_minion(BEACON_MINION, overrides=blab.beacon_overrides())
        lab.add_failover_minion(STOCK_MINION, overrides=dict(blab.STOCK_LOOP_INTERVAL))
        master_a, master_b = lab.masters["a"], lab.masters["b"]
        with lablib.RunningDaemons(lablib.daemons(lab)):
            client = _common.local_client(master_a)
            try:
                for minion_id in (BEACON_MINION, STOCK_MINION):
                    if lablib.answers_through(master_a, minion_id, 60) is None:
                        raise RuntimeError(f"{minion_id} does not answer through A")
                timed_pings(client, (BEACON_MINION, STOCK_MINION), 3)  # warm-up
                # Blocks of each case in turn, so that a change of the machine's load
                # during the run weighs on both cases alike.
                blocks = [PING_BLOCK] * (args.pings // PING_BLOCK) + [args.pings % PING_BLOCK]
                for count in filter(None, blocks):
                    for case in ("B up", "B frozen"):
                        frozen = case == "B frozen"
                        with (lablib.frozen(master_b) if frozen else contextlib.nullcontext()):
                            # Frozen: the beacon's probe rounds now wait on B; thawed: B answers again.
                            time.sleep(SETTLE_SECONDS)
                            times = timed_pings(client, (BEACON_MINION, STOCK_MINION), count)
                        for minion_id, values in times.items():
                            results.setdefault((minion_id, case), []).extend(values)
            finally:
                client.destroy()
    return results


def print_ping_part(args, results):
    print()
    print(f"test.ping through the connected master A, {args.pings} sequential round trips per minion and case, "
          f"in blocks of {PING_BLOCK} alternating between the cases "
          f"(beacon: {BEACON_MINION} with the recommended settings; {STOCK_MINION}: no beacon)")
    rows = []
    for (minion_id, case), values in results.items():
        answered = [value for value in values if value is not None]
        rows.append((minion_id, case, f"{len(answered)}/{len(values)}",
                     _common.fmt(statistics.median(answered) if answered else None, "ms", 1),
                     _common.fmt(percentile(answered, 0.95) if answered else None, "ms", 1),
                     _common.fmt(max(answered) if answered else None, "ms", 1)))
    _common.print_table(["minion", "standby B", "answered", "p50", "p95", "max"], rows)
    up = [v for v in results[(BEACON_MINION, "B up")] if v is not None]
    frozen = [v for v in results[(BEACON_MINION, "B frozen")] if v is not None]
    if up and frozen:
        gap = percentile(frozen, 0.95) - percentile(up, 0.95)
        verdict = "met" if abs(gap) <= GOAL_PING_P95_MS else "MISSED"
        print(f"goal: with the beacon, p95 with a hung standby within {GOAL_PING_P95_MS:g} ms of p95 without: "
              f"{verdict} ({gap:+.1f} ms)")
    stock_up = [v for v in results[(STOCK_MINION, "B up")] if v is not None]
    stock_frozen = [v for v in results[(STOCK_MINION, "B frozen")] if v is not None]
    if stock_up and stock_frozen:
        gap = percentile(stock_frozen, 0.95) - percentile(stock_up, 0.95)
        print(f"  the same difference without the beacon (the machine's noise): {gap:+.1f} ms")


def main():
    args = parse_args()
    with _common.session("sha-be-") as root:
        rows, quiet_cpu, hung_wall = tick_part(args)
        print_tick_part(args, rows, quiet_cpu, hung_wall)
        if not args.no_daemons:
            print_ping_part(args, ping_part(args, root))


if __name__ == "__main__":
    main()
