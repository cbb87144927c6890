#!/usr/bin/env python3
"""
``make demo``: a two-master failover lab on loopback, start to finish.

Starts masters A (127.0.0.1) and B (127.0.0.2) sharing one master key pair and a
failover minion, prints ``salt-call ha.status`` and ``ha.lint``, SIGKILLs master A,
measures how long until the minion answers ``test.ping`` through B, prints
``ha.status``, ``ha.check`` and ``ha.metrics`` again, and stops every process it
started (also on Ctrl-C or an error). Everything lives in a temporary directory.
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

from tests.support import lab as lablib  # noqa: E402  pylint: disable=wrong-import-position

MINION_ID = "demo-minion"
PROBE_TIMEOUT = 2
FAILOVER_GIVE_UP = 30


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


def ping_through(master, minion_id):
    ret = master.salt_cli(timeout=30).run("test.ping", minion_tgt=minion_id, _timeout=10)
    return ret.returncode == 0 and ret.data is True


def wait_for_start_event(event_listener, master, minion_id, after):
    """Bounded: seconds from ``after`` (wall clock) until the minion's start event is on ``master``'s bus."""
    matched = event_listener.wait_for_events(
        [(master.id, f"salt/minion/{minion_id}/start")], after_time=after, timeout=FAILOVER_GIVE_UP
    )
    if not matched.found_all_events:
        return None
    event = next(iter(matched.matches))
    return event.stamp.timestamp() - after


def run_story(lab, event_listener):
    minion = lab.minions[MINION_ID]
    master_a, master_b = lab.masters["a"], lab.masters["b"]
    heading(f"Lab: A={lablib.LOOPBACK_A} B={lablib.LOOPBACK_B} ports publish/ret={lab.ports}")
    say(f"minion {MINION_ID}: master: [{lablib.LOOPBACK_A}, {lablib.LOOPBACK_B}], master_type: failover")

    heading("salt-call ha.status")
    show_status(minion)
    heading("salt-call ha.lint")
    show_lint(minion)

    heading("SIGKILL master A")
    killed_at = time.time()
    lablib.kill(master_a)
    elapsed = wait_for_start_event(event_listener, master_b, MINION_ID, killed_at)
    if elapsed is None:
        say(f"no salt/minion/{MINION_ID}/start on B within {FAILOVER_GIVE_UP} s")
    else:
        say(f"salt/minion/{MINION_ID}/start on B's event bus {elapsed:.2f} s after A was killed")
    answered = ping_through(master_b, MINION_ID)
    say(f"test.ping through B: {'True' if answered else 'no answer'}")

    heading("salt-call ha.status (after failover)")
    show_status(minion, local=True)
    heading("salt-call --retcode-passthrough ha.check")
    show_check(minion)
    heading("salt-call ha.metrics")
    show_metrics(minion)


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
            lab = lablib.two_master_lab(factories.manager, root / "lab", MINION_ID)
            with lablib.RunningDaemons(lablib.daemons(lab)):
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
