"""
Bench: failover drills (``salt-run ha.drill``) on real daemons, issue 11.

The drill lab of the tests (tests/support/drill_lab.py): masters A (127.0.0.1) and
B (127.0.0.2), each with salt-api and the other as its peer, both allowing hang
drills; ``--minions`` failover minions ``[A, B]`` with the ``ha`` beacon (the
README's recommended settings), the ``ha_returns`` engine and the minion settings
``ha.lint`` recommends (``ha_storm.RECOMMENDED_MINION_OPTIONS``: the storm settings
and the grains cache, HA804; ``--minion-option grains_cache=False`` measures without
it), all on A at start. salt-factories' event-forwarding engine is removed from the
minions (a process per minion, fed every event of its bus, that real minions do not
run).

Per run, in this order (``--runs`` times):

``minion``  ``salt-run ha.drill count=<all> budget=30`` on A: every minion leaves A,
            is timed until it answers through B (the leave's publication to its
            first answer to a ping B publishes every 0.25 s), is moved back.
``hang``    ``salt-run ha.drill mode=hang master=<A> duration=<--duration>`` on B:
            A is frozen by its watchdog; every minion is timed from the freeze to
            its first answer through B (the beacon leaves the frozen master), then
            moved back once A is thawed.

Figures: per mode, p50 / p95 / max of the per-minion RTOs over all runs, the
drill's wall time, returns lost; the goals: minion drill p95 <= 2 s, hang drill p95
<= the beacon's hang detection (``hang_ticks`` x ``probe_interval``, 2 s with the
recommended settings) + 2 s. Overhead on the masters: CPU seconds of each master's
process tree (salt-master and its salt-api) during the drills, against the same
masters idle for the same time before the first run.

Usage (from the repo root):
``.venv/bin/python bench/drill.py [--minions 5] [--runs 3] [--minion-option NAME=VALUE]``
"""

import argparse
import statistics
import time

import _common  # sys.path: repo root and _utils
import psutil

import ha_storm

MODES = ("minion", "hang")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minions", type=int, default=5, help="failover minions (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="drills per mode (default 3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds A stays frozen (default 8)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of minion,hang")
    parser.add_argument("--minion-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a minion option set over the recommended ones (YAML value)")
    args = parser.parse_args()
    args.minion_options = {**ha_storm.RECOMMENDED_MINION_OPTIONS, **_common.parse_options(parser, args.minion_option)}
    return args


def tree_cpu(factories):
    """CPU seconds (user + system) of the daemons' process trees, children included."""
    total = 0.0
    for factory in factories:
        if not factory.pid:
            continue
        try:
            root = psutil.Process(factory.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def quantiles(values):
    if not values:
        return None, None, None
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, -(-95 * len(ordered) // 100) - 1)], ordered[-1]


def run_drill(rlab, master, args, mode, lab):
    if mode == "minion":
        return rlab.salt_run(master, "ha.drill", f"count={args.minions}", "budget=30", timeout=300)
    target = lab.masters["a"].id
    return rlab.salt_run(master, "ha.drill", "mode=hang", f"master={target}", f"duration={args.duration:g}",
                         "budget=30", timeout=300)


def main():
    args = parse_args()
    modes = [mode for mode in args.modes.split(",") if mode in MODES]
    rtos = {mode: [] for mode in modes}
    walls = {mode: [] for mode in modes}
    lost = {mode: 0 for mode in modes}
    problems = []
    with _common.session("sha-dr-") as root:
        from tests.support import beacon_lab, drill_lab  # pylint: disable=import-outside-toplevel
        from tests.support import lab as lablib  # pylint: disable=import-outside-toplevel
        from tests.support import returns_lab as rlab  # pylint: disable=import-outside-toplevel

        with lablib.StandaloneFactories(root / "f", event_seconds=600) as env:
            minions = [f"dr{index}" for index in range(args.minions)]
            lab = drill_lab.build(env.manager, root / "lab", minions, args.minion_options)
            for minion in lab.minions.values():
                _common.drop_test_engine(minion)
            print(f"minion settings over the lab's: {args.minion_options}", flush=True)
            with lablib.RunningDaemons(lablib.daemons(lab) + list(lab.apis.values())):
                for minion_id in minions:
                    if lablib.answers_through(lab.masters["a"], minion_id, 90) is None:
                        raise SystemExit(f"{minion_id} never answered through A")
                masters = [*lab.masters.values(), *lab.apis.values()]
                time.sleep(3)
                idle_started, idle_cpu = time.monotonic(), tree_cpu(masters)
                time.sleep(20)
                idle_rate = (tree_cpu(masters) - idle_cpu) / (time.monotonic() - idle_started)
                busy_cpu, busy_seconds = 0.0, 0.0
                for run in range(args.runs):
                    for mode in modes:
                        drilling = lab.masters["a"] if mode == "minion" else lab.masters["b"]
                        started, cpu = time.monotonic(), tree_cpu(masters)
                        report = run_drill(rlab, drilling, args, mode, lab)
                        wall = time.monotonic() - started
                        busy_cpu += tree_cpu(masters) - cpu
                        busy_seconds += wall
                        walls[mode].append(wall)
                        rtos[mode] += [entry["rto_s"] for entry in report["minions"].values()
                                       if entry["rto_s"] is not None]
                        lost[mode] += report.get("returns_lost") or 0
                        if not report["result"]:
                            problems.append(f"{mode} run {run + 1}: {report.get('aborted')} {report.get('notes')}")
                        print(f"[{mode} {run + 1}] result {report['result']}, rto {report['rto']}, "
                              f"wall {wall:.1f} s, returns lost {report.get('returns_lost')}", flush=True)
                        time.sleep(2)
        hang_detection = beacon_lab.hang_seconds()
    print()
    rows = []
    for mode in modes:
        p50, p95, worst = quantiles(rtos[mode])
        rows.append([mode, len(rtos[mode]), _common.fmt(p50), _common.fmt(p95), _common.fmt(worst),
                     _common.fmt(statistics.median(walls[mode]) if walls[mode] else None), lost[mode]])
    _common.print_table(["drill", "minion RTOs", "p50", "p95", "max", "drill wall (median)", "returns lost"], rows)
    print()
    goals = {"minion": 2.0, "hang": hang_detection + 2.0}
    for mode in modes:
        p95 = quantiles(rtos[mode])[1]
        verdict = "met" if p95 is not None and p95 <= goals[mode] else "MISSED"
        print(f"goal: {mode} drill p95 <= {goals[mode]:g} s: {verdict} (p95 {_common.fmt(p95)})")
    extra = busy_cpu - idle_rate * busy_seconds
    print(f"masters' CPU (2 salt-masters + 2 salt-apis): idle {idle_rate:.3f} CPU-s per s; during the drills "
          f"{busy_cpu:.1f} CPU-s over {busy_seconds:.0f} s, {extra:.1f} CPU-s above idle "
          f"({extra / max(1, sum(len(walls[m]) for m in modes)):.1f} CPU-s per drill)")
    for problem in problems:
        print(f"problem: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
