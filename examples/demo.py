#!/usr/bin/env python3
"""
``make demo``: the salt-ha story on real daemons on loopback, start to finish.

Masters A (127.0.0.1) and B (127.0.0.2) share one master key pair; a minion starts
configured for A only. A highstate from A (the shipped examples: ``ha.minion_failover``
from pillar, the ``ha`` beacon from pillar) gives it its failover setup; it restarts.
Then master A is SIGKILLed while a job it published runs: the beacon's ``failover``
event shows up on B's bus, the minion answers through B, and the job started on A
finishes on B (the ``ha_returns`` engine delivers its return there; ``jobs.lookup_jid``
on B finds it); ``ha.status``, ``ha.check`` and ``ha.metrics`` tell the truth.
A comes back: the minion fails back and the beacon says so. Last, a failover drill
(``salt-run ha.drill``): its gates and plan, then the minion moved to B, timed, and
put back. Every process the demo
started is stopped at the end, also on Ctrl-C or an error; everything lives in a
temporary directory.
"""

import logging
import pathlib
import shutil
import signal
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support import api_lab, drill_lab, returns_lab, state_lab  # noqa: E402 (after the sys.path line above)
from tests.support import lab as lablib  # noqa: E402

MINION_ID = "demo-minion"
NEW_MINION_ID = "web-42"  # a key accepted on A only, as happens when nobody syncs
PROBE_TIMEOUT = 2
JOB_SECONDS = 4
EVENT_GIVE_UP = 30


def say(text=""):
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def heading(text):
    say()
    say(f"=== {text} " + "=" * max(0, 70 - len(text)))


def salt_call(minion, *args, local=False):
    cli = minion.salt_call_cli(timeout=60)
    extra = ["--local"] if local else []
    return cli.run(*extra, *args)


def show_status(minion, local=False):
    ret = salt_call(minion, "ha.status", f"timeout={PROBE_TIMEOUT}", local=local)
    if ret.returncode != 0:
        say(f"ha.status failed: {ret.stderr.strip()[-500:]}")
        return None
    status = ret.data
    say(f"{'master':<12} {'up':<6} {'latency':>10}  {'connected':<10} error")
    for entry in status["masters"]:
        latency = "-" if entry["latency_ms"] is None else f"{entry['latency_ms']:.1f} ms"
        say(
            f"{entry['master']:<12} {str(entry['up']):<6} {latency:>10}  "
            f"{str(entry['connected']):<10} {entry['error'] or ''}"
        )
    say(
        f"connected: {status['connected']}   up: {status['up']}/{status['total']}   "
        f"failover_ready: {status['failover_ready']}"
    )
    return status


def show_lint(minion):
    ret = salt_call(minion, "ha.lint", local=True)
    for finding in ret.data or []:
        say(f"[{finding['severity']:<7}] {finding['option'] or '-'}: {finding['message']}")
        if finding["severity"] != "info":
            say(f"          fix: {finding['suggestion']}")


def show_check(minion):
    ret = salt_call(minion, "--retcode-passthrough", "ha.check", f"timeout={PROBE_TIMEOUT}", local=True)
    say(f"{ret.data}")
    say(f"(exit code {ret.returncode}: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)")


def show_metrics(minion):
    ret = salt_call(minion, "ha.metrics", f"timeout={PROBE_TIMEOUT}", local=True)
    for line in str(ret.data).splitlines():
        if line.startswith("salt_ha_"):
            say(line)


def show_highstate(master, minion):
    ret = master.salt_cli(timeout=120).run("state.highstate", minion_tgt=minion.id)
    for result in state_lab.state_results(ret.data):
        say(f"{result['__id__']}: result={result['result']}")
        say(f"  changes: {sorted(result['changes'])}")
        say(f"  comment: {result['comment']}")


def ping_through(master, minion_id):
    return lablib.answers_through(master, minion_id, seconds=10, timeout=5) is not None


def wait_for_event(event_listener, master, tag, after):
    """Bounded: the first ``tag`` event on ``master``'s bus after wall-clock ``after``, or None."""
    matched = event_listener.wait_for_events([(master.id, tag)], after_time=after, timeout=EVENT_GIVE_UP)
    events = sorted(matched.matches, key=lambda event: event.stamp)
    return events[0] if events else None


def show_event(event, after, what):
    if event is None:
        say(f"no {what} within {EVENT_GIVE_UP} s")
        return
    data = {key: value for key, value in event.data.items() if not key.startswith("_")}
    say(f"{event.tag}  (+{event.stamp.timestamp() - after:.2f} s)")
    say(f"  {data}")


def build_lab(manager, root):
    """Masters A (serving the examples) and B, peered over salt-api; a minion configured for A only."""
    pillar_folder = state_lab.pillar_root(root / "pillar", demo_pillar([lablib.LOOPBACK_A, lablib.LOOPBACK_B]))
    # Peers may call what drills need (ha.local_drill, ha.local_jobs) besides key sync.
    auth = {"external_auth": {"sharedsecret": {api_lab.SYNC_USER: [{"@runner": drill_lab.PEER_FUNCTIONS}]}}}
    lab = api_lab.ApiLab(
        manager,
        root,
        [("a", lablib.LOOPBACK_A), ("b", lablib.LOOPBACK_B)],
        extra_master_overrides={"a": {**state_lab.example_roots(pillar_folder), **auth}, "b": auth},
    )
    for name in lab.masters:
        lab.add_api(name)
    # Salt counts a beacon's interval in loop_intervals; salt-factories sets 0.05.
    # The ha_returns engine goes in the minion's config file: salt-factories lists its own
    # engine there, which a drop-in's engines list would replace (see ha.minion_failover).
    state_lab.add_single_master_minion(lab, MINION_ID, overrides={"loop_interval": 1, **returns_lab.ENGINE})
    return lab


def show_key_sync(lab):
    """A key accepted on A only: ha.drift sees it, ha.sync_keys fixes it, ha.drift agrees."""
    master_a = lab.masters["a"]
    api_lab.write_minion_keys(master_a.config["pki_dir"], {NEW_MINION_ID: api_lab.random_public_pem()})
    say(f"{NEW_MINION_ID}'s key was accepted on A only (B would leave it pending forever)")
    run = master_a.salt_run_cli(timeout=120)
    drift = run.run("ha.drift").data
    for difference in drift["differences"]:
        say(f"  drift: {difference['what']}: {difference['masters']}")
    say("salt-run ha.sync_keys (on A)")
    synced = run.run("ha.sync_keys").data
    for peer, outcome in synced["peers"].items():
        accepted, conflicts, error = outcome.get("accepted"), outcome.get("conflicts"), outcome.get("error")
        say(f"  {peer}: accepted {accepted} conflicts {conflicts} error {error}")
    after = run.run("ha.drift").data
    remaining = ", ".join(d["what"] for d in after["differences"]) or "none"
    say(f"salt-run ha.drift after the sync: keys in sync; still different: {remaining}")
    say("  (only A serves the example state and pillar trees in this lab)")


def demo_pillar(masters):
    return {
        "ha": {
            "minion": {
                "masters": list(masters),
                "alive_interval": 2,
                "failback": True,
                "failback_interval": 5,
                "restart": False,  # salt-factories runs the minion without a supervisor
            }
        },
        "beacons": {"ha": [{"interval": 1}, {"timeout": 1}, {"probe_interval": 0.5}, {"hang_ticks": 4}]},
    }


def run_story(lab, event_listener):
    minion = lab.minions[MINION_ID]
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    heading(f"Lab: A={lablib.LOOPBACK_A} B={lablib.LOOPBACK_B} ports publish/ret={lab.ports}")
    say(f"minion {MINION_ID} starts with master: {lablib.LOOPBACK_A} (one master, no failover)")
    heading("salt-call ha.lint (before)")
    show_lint(minion)

    heading("keys across masters: salt-run ha.drift / ha.sync_keys (peers over salt-api)")
    show_key_sync(lab)

    heading("salt '*' state.highstate from A: examples/salt/ha/minion.sls + pillar")
    show_highstate(master_a, minion)
    heading("restarting the minion (the drop-in and the beacon take effect)")
    minion.terminate()
    minion.start()
    say(f"test.ping through A: {ping_through(master_a, MINION_ID)}")
    heading("salt-call ha.status")
    show_status(minion)
    heading("salt-call ha.lint (after)")
    show_lint(minion)

    heading(f"a job in flight: test.sleep {JOB_SECONDS} published through A, then SIGKILL master A")
    jid = returns_lab.publish_async(master_a, [MINION_ID], "test.sleep", JOB_SECONDS)
    say(f"job {jid} is running on {MINION_ID}")
    time.sleep(1)
    killed_at = time.time()
    lablib.kill(master_a)
    show_event(wait_for_event(event_listener, master_b, f"salt/minion/{MINION_ID}/start", killed_at),
               killed_at, "minion start event on B")
    show_event(wait_for_event(event_listener, master_b, f"salt/beacon/{MINION_ID}/ha/failover", killed_at),
               killed_at, "beacon failover event on B")
    say(f"test.ping through B: {ping_through(master_b, MINION_ID)}")

    heading("the job started on A finishes on B (engine ha_returns)")
    show_event(wait_for_event(event_listener, master_b, returns_lab.ret_tag(jid, MINION_ID), killed_at),
               killed_at, "the job's return on B")
    lookup = master_b.salt_run_cli(timeout=60).run("jobs.lookup_jid", jid)
    say(f"salt-run jobs.lookup_jid {jid} (on B): {lookup.data}")
    replayed = [item for item in salt_call(minion, "ha.returns", local=True).data["replayed"] if item["jid"] == jid]
    say(f"salt-call ha.returns: replayed {replayed}")
    say("(stock Salt drops this return: the job process hands it to the old master, which is gone)")

    heading("salt-call ha.status (after failover)")
    show_status(minion, local=True)
    heading("salt-call --retcode-passthrough ha.check")
    show_check(minion)
    heading("salt-call ha.metrics")
    show_metrics(minion)

    heading("master A comes back (master_failback: True)")
    back_at = time.time()
    master_a.start()
    show_event(wait_for_event(event_listener, master_a, f"salt/beacon/{MINION_ID}/ha/failback", back_at),
               back_at, "beacon failback event on A")
    say(f"test.ping through A: {ping_through(master_a, MINION_ID)}")

    heading("a failover drill: salt-run ha.drill (on A)")
    show_drill(master_a)


def show_drill(master):
    """The drill's dry run (gates and plan), then one minion drill and its report."""
    run = master.salt_run_cli(timeout=180)
    plan = run.run("ha.drill", "test=True", "count=1").data
    gates = (f"{gate['gate']} {'ok' if gate['ok'] else 'REFUSED: ' + str(gate['reason'])}" for gate in plan["gates"])
    say("salt-run ha.drill test=True count=1: gates " + ", ".join(gates))
    say(f"  plan: canaries {plan['plan']['canaries']} (seed {plan['plan']['seed']}), origins {plan['plan']['origins']}")
    report = run.run("ha.drill", "count=1", "budget=30").data
    for minion_id, entry in report["minions"].items():
        say(f"  {minion_id}: {entry['from']} -> {entry['to']} in {entry['rto_s']} s, back: {entry['back']}, "
            f"return of the job in flight arrived: {entry.get('return_arrived')}")
    say(f"salt-run ha.drill count=1: result {report['result']}, rto {report['rto']}, returns lost "
        f"{report['returns_lost']}, restored {report['restored']}, aborted {report['aborted']}")
    say(f"salt-run ha.drill_history: {[item['id'] for item in run.run('ha.drill_history').data]}")


def raise_keyboard_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def quiet_logging():
    """The demo prints its own story; daemon logs stay in their log files."""
    import salt._logging.impl  # pylint: disable=import-outside-toplevel

    salt._logging.impl.shutdown_temp_handler()
    logging.root.handlers[:] = [logging.NullHandler()]
    logging.root.setLevel(logging.CRITICAL)


def main():
    quiet_logging()
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    root = pathlib.Path(tempfile.mkdtemp(prefix="salt-ha-demo-"))
    say(f"salt-ha demo: lab under {root} (removed at the end)")
    started = time.monotonic()
    try:
        with lablib.StandaloneFactories(root / "factories", log_level="critical") as factories:
            lab = build_lab(factories.manager, root / "lab")
            with lablib.RunningDaemons(api_lab.daemons(lab)):
                run_story(lab, factories.event_listener)
                heading("stopping every daemon the demo started")
    except KeyboardInterrupt:
        say("\ninterrupted: every daemon the demo started has been stopped")
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    say(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
