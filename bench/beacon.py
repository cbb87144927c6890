"""
Bench: CPU and wall time of one tick of the ``ha`` beacon, as the minion runs it.

The beacon runs in the minion's main process (its event loop), so a tick must cost
next to nothing when nothing changes. This loads the real beacon and ``ha``
module through Salt's loader and runs Salt's own beacon framework
(``salt.beacons.Beacon.process``) over daemon-like options (an ``OptsDict`` whose
``master`` is the current master), against master stand-ins on 127.0.0.1
(``tests/support/fake_master.py``): ZeroMQ REP sockets that answer the ping as a
master worker does, a socket that accepts TCP and never answers (a hung master)
and one publish port that accepts TCP (``tests/support/fake_master.AcceptingPort``),
which this process stays connected to as the daemon does.

Scenarios (``--ticks`` ticks each, after one warm-up tick that fires ``connected``):
  quiet        2 masters answer, connected to the first: nothing changes
  quiet-5      5 masters answer: the cost per master
  hung-standby the second master hangs: nothing changes after the first tick,
               each tick waits ``--timeout`` for it (wall), CPU stays low
  transition   every tick the connected master changes (confirmed through this
               process's sockets): the cost of a tick that fires ``failover``

CPU is ``time.process_time`` of the whole process (the probe threads included).
Goal: quiet tick < 5 ms CPU median.

Usage (from the repo root): ``.venv/bin/python bench/beacon.py [--ticks 50] [--timeout 1]``
"""

import argparse
import contextlib
import socket
import statistics
import time

import _common  # sys.path: repo root and _utils
import probe as probe_bench  # noqa: E402  (bench/probe.py: minion_opts)

GOAL_CPU_MS = 5.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=50, help="ticks per scenario (default 50)")
    parser.add_argument("--timeout", type=float, default=1.0, help="beacon probe timeout (default 1)")
    args = parser.parse_args()
    if not 5 <= args.ticks <= 1000:
        parser.error("--ticks must be between 5 and 1000")
    if not 0.1 <= args.timeout <= 10:
        parser.error("--timeout must be between 0.1 and 10")
    return args


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
        modules = salt.loader.minion_mods(self.opts, context={})
        self.framework = salt.beacons.Beacon(self.opts, modules)
        self.config = {"ha": [{"timeout": timeout}, {"failover_on_hang": False}]}

    def tick(self):
        """One beacon pass; ``(cpu seconds, wall seconds, events)``."""
        cpu, wall = time.process_time(), time.perf_counter()
        events = self.framework.process(self.config, {})
        return time.process_time() - cpu, time.perf_counter() - wall, events


def run(rig, ticks, before_tick=None):
    """Warm up (first tick), then ``ticks`` ticks; ``(cpu ms list, wall ms list, event count)``."""
    rig.tick()
    cpus, walls, fired = [], [], 0
    for index in range(ticks):
        if before_tick:
            before_tick(index)
        cpu, wall, events = rig.tick()
        cpus.append(cpu * 1000)
        walls.append(wall * 1000)
        fired += len(events)
    return cpus, walls, fired


def p90(values):
    return sorted(values)[max(0, int(len(values) * 0.9) - 1)]


def main():
    args = parse_args()
    _common.quiet_logging()
    from tests.support import fake_master  # pylint: disable=import-outside-toplevel

    rows, quiet_median = [], None
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(_common.temp_root("salt-ha-bench-beacon-"))
        answering = [stack.enter_context(fake_master.AnsweringMaster()) for _ in range(5)]
        hung = stack.enter_context(fake_master.SilentMaster())
        publisher = stack.enter_context(fake_master.AcceptingPort())
        stack.enter_context(socket.create_connection(("127.0.0.1", publisher.port), timeout=2))
        entries = [f"127.0.0.1:{master.port}" for master in answering]

        scenarios = [
            ("quiet", entries[:2], None),
            ("quiet-5", entries, None),
            ("hung-standby", [entries[0], f"127.0.0.1:{hung.port}"], None),
        ]
        for name, masters, _ in scenarios:
            rig = BeaconRig(root / name, masters, publisher.port, args.timeout)
            cpus, walls, fired = run(rig, args.ticks)
            rows.append((name, len(masters), cpus, walls, fired))
            if name == "quiet":
                quiet_median = statistics.median(cpus)

        rig = BeaconRig(root / "transition", entries[:2], publisher.port, args.timeout)
        cpus, walls, fired = run(
            rig, args.ticks, before_tick=lambda i: rig.opts.__setitem__("master", entries[(i + 1) % 2])
        )
        rows.append(("transition", 2, cpus, walls, fired))

    print(f"ha beacon tick, {args.ticks} ticks per scenario, timeout {args.timeout:g} s "
          f"(CPU = process_time of the whole process)")
    _common.print_table(
        ["scenario", "masters", "CPU median", "CPU p90", "CPU max", "wall median", "wall max", "events"],
        [
            (name, count, f"{statistics.median(c):.2f} ms", f"{p90(c):.2f} ms", f"{max(c):.2f} ms",
             f"{statistics.median(w):.2f} ms", f"{max(w):.2f} ms", fired)
            for name, count, c, w, fired in rows
        ],
    )
    verdict = "met" if quiet_median < GOAL_CPU_MS else "MISSED"
    print(f"goal: quiet tick < {GOAL_CPU_MS:g} ms CPU median: {verdict} ({quiet_median:.2f} ms)")


if __name__ == "__main__":
    main()
