"""
Bench: ``ha.sync_keys`` of 10,000 minion keys from master A to two empty peers over
salt-api on loopback, beside ``cp -r`` of the same key files (the floor).

Three real salt-masters (127.0.0.1/.2/.3), each with salt-api (rest_cherrypy, plain
HTTP on 127.0.0.1). A gets ``--keys`` distinct public keys (random 2048-bit RSA
moduli: valid, distinct PEM public keys made in microseconds; no private halves are
needed to sync them). Each run empties the peers' ``minions`` folders, then times:

  (a) full sync:   ``ha.sync_keys`` with both peers empty          goal < 10 s
  (b) no-op rerun: ``ha.sync_keys`` again, nothing to do           goal < 1 s
  (c) drift:       ``ha.drift`` over the three synced masters       goal < 2 s
  (d) the floor:   ``cp -r`` of A's ``minions`` folder to two folders at once

The runner is called in this process through Salt's loader with A's options (what
``salt-run`` does after its own start-up, ~1 s, which is not counted).

Salt stores every runner job in the master job cache and, doing so, matches the
job's target against every accepted key (``local_cache.save_load`` ->
``CkMinions.check_minions`` -> ``localfs_key.list_all``): ~1 s per salt-api runner
call on a master with 10,000 keys, whatever the runner does. ``--peer-option``
sets a master option on both peers to measure the two ways around it:
``runnerclient_returns=False`` (the option Salt 3008 reads for ``RunnerClient``;
``runner_returns`` is not consulted there) skips storing runner jobs;
``key_cache=sched`` makes Salt match against a key list its maintenance process
refreshes every ``loop_interval``.

Usage (from the repo root):
``.venv/bin/python bench/sync_keys.py [--runs 3] [--keys 10000] [--batch 5000] [--peer-option NAME=VALUE ...]``
"""

import argparse
import os
import shutil
import subprocess
import time

import _common  # sys.path: repo root and _utils
import yaml

import ha_keysync

GOALS = {"full sync": 10.0, "no-op rerun": 1.0, "drift": 2.0}
# salt-factories logs at debug in the masters' log files and its event-forwarding
# engine logs the repr of every event: with ~3 MB events (each receive_keys job's
# arguments) that alone costs the masters seconds. Salt's default is warning.
SALT_DEFAULT_LOGGING = {"log_level_logfile": "warning", "pytest-master": {"log": {"level": "warning"}}}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--keys", type=int, default=10000, help="minion keys on A (default 10000)")
    parser.add_argument(
        "--batch",
        type=int,
        default=ha_keysync.DEFAULT_BATCH_SIZE,
        help=f"keys per request (ha:sync_batch_size, default {ha_keysync.DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--peer-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a master option (YAML value) set on both peers, e.g. runnerclient_returns=False; repeatable",
    )
    args = parser.parse_args()
    try:
        args.peer_options = dict(peer_option(text) for text in args.peer_option)
    except ValueError as err:
        parser.error(str(err))
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    if not 1 <= args.keys <= 100000:
        parser.error("--keys must be between 1 and 100000")
    return args


def peer_option(text):
    """``"name=value"`` -> ``(name, YAML value)``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"--peer-option {text!r} is not NAME=VALUE")
    return name.strip(), yaml.safe_load(value)


def timed(function):
    started = time.monotonic()
    result = function()
    return time.monotonic() - started, result


def empty_minions(master):
    folder = _common.pathlib.Path(master.config["pki_dir"]) / "minions"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()


def copy_floor(source, root):
    """``cp -r`` of ``source`` to two fresh folders at once (two peers); seconds."""
    targets = [root / f"cp-{n}" for n in range(2)]
    for target in targets:
        shutil.rmtree(target, ignore_errors=True)
    os.sync()
    started = time.monotonic()
    processes = [subprocess.Popen(["cp", "-r", str(source), str(target)]) for target in targets]
    for process in processes:
        if process.wait(timeout=600) != 0:
            raise SystemExit("cp -r failed")
    return time.monotonic() - started


def measure(args, lab, root):
    import salt.loader  # pylint: disable=import-outside-toplevel

    a = lab.masters["a"]
    opts = dict(a.config)
    opts["ha"] = {**opts["ha"], "sync_batch_size": args.batch}
    runners = salt.loader.runner(opts, utils=salt.loader.utils(opts))
    figures = {name: [] for name in ("full sync", "no-op rerun", "drift", "cp -r (2 copies)")}
    for run in range(1, args.runs + 1):
        for name in ("b", "c"):
            empty_minions(lab.masters[name])
        os.sync()  # what the bench wrote so far is not the sync's to flush
        seconds, full = timed(runners["ha.sync_keys"])
        accepted = {peer: len(entry.get("accepted", [])) for peer, entry in full["peers"].items()}
        if not full["result"] or set(accepted.values()) != {args.keys}:
            raise SystemExit(f"full sync incomplete: {full['failed']} {accepted}")
        figures["full sync"].append(seconds)
        seconds, again = timed(runners["ha.sync_keys"])
        if any(entry["accepted"] for entry in again["peers"].values()):
            raise SystemExit("the rerun changed something")
        figures["no-op rerun"].append(seconds)
        seconds, drift = timed(runners["ha.drift"])
        if drift["differences"] or drift["unreachable"]:
            raise SystemExit(f"drift after sync: {drift['differences'][:3]} {drift['unreachable']}")
        figures["drift"].append(seconds)
        figures["cp -r (2 copies)"].append(copy_floor(_common.pathlib.Path(a.config["pki_dir"]) / "minions", root))
        print(f"run {run}: " + ", ".join(f"{name} {_common.fmt(values[-1])}" for name, values in figures.items()))
    return figures


def report(args, figures):
    floor = _common.spread(figures["cp -r (2 copies)"])[0]
    options = ", ".join(f"{name}: {value!r}" for name, value in args.peer_options.items()) or "Salt's defaults"
    print(
        f"\n{args.keys} keys, 2 peers over salt-api (loopback), batch {args.batch}, peers with {options},"
        f" {args.runs} runs; medians:"
    )
    rows = []
    for name, values in figures.items():
        median, low, high = _common.spread(values)
        goal = GOALS.get(name)
        verdict = "" if goal is None else ("met" if median < goal else "MISSED")
        rows.append(
            [name, _common.fmt(median), f"{_common.fmt(low)} - {_common.fmt(high)}",
             f"{median / floor:.1f}x" if floor else "-", "-" if goal is None else f"< {goal:g} s {verdict}"]
        )
    _common.print_table(["measure", "median", "min - max", "vs cp -r", "goal"], rows)


def main():
    args = parse_args()
    with _common.session("sha-sk-") as root:
        from tests.support import api_lab  # pylint: disable=import-outside-toplevel
        from tests.support import lab as lablib  # pylint: disable=import-outside-toplevel

        # Every receive_keys job puts its ~3 MB of arguments on the bus, and the
        # factories forward each event to this process: keep them 5 s, not 120 s,
        # or later runs measure this process's memory instead of the sync.
        with lablib.StandaloneFactories(root / "f", event_seconds=5) as env:
            options = {
                "a": SALT_DEFAULT_LOGGING,
                "b": {**SALT_DEFAULT_LOGGING, **args.peer_options},
                "c": {**SALT_DEFAULT_LOGGING, **args.peer_options},
            }
            lab = api_lab.three_master_lab(env.manager, root / "lab", tls=(), extra_master_overrides=options)
            made, keys = timed(lambda: {f"bench-{n:05d}": api_lab.random_public_pem() for n in range(args.keys)})
            api_lab.write_minion_keys(lab.masters["a"].config["pki_dir"], keys)
            print(f"{args.keys} distinct keys made in {made:.2f} s")
            with lablib.RunningDaemons(api_lab.daemons(lab)):
                report(args, measure(args, lab, root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
