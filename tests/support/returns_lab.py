"""
Job returns across a failover, on the two-master lab (tests/support/lab.py): minions
with the ``ha_returns`` engine, jobs published asynchronously, and their ``ret``
events counted on each master's bus.
"""

import re
import time

import salt.utils.jid

from tests.support import lab as lablib

JID = re.compile(r"\b(\d{20})\b")
ENGINE = {"engines": [{"ha_returns": {}}]}


def engine_overrides(**options):
    """Minion options turning the ``ha_returns`` engine on (with ``options``)."""
    return {"engines": [{"ha_returns": dict(options)}]}


def publish_async(master, minion_ids, fun, *args):
    """Publish ``fun`` to the minions through ``master`` without waiting; the jid."""
    cli = master.salt_cli(timeout=60)
    targeting = ["-L"] if len(minion_ids) > 1 else []  # one minion: a plain glob target, as an operator types it
    ret = cli.run("--async", *targeting, fun, *map(str, args), minion_tgt=",".join(minion_ids))
    found = JID.search(ret.stdout or "")
    assert found, f"no jid in the output of an async publish: {ret.stdout!r} {ret.stderr[-500:]!r}"
    return found.group(1)


def salt_run(master, *args, timeout=120):
    """``salt-run`` on ``master``; its parsed return (the run must succeed)."""
    ret = master.salt_run_cli(timeout=timeout).run(*args)
    assert ret.returncode == 0, ret.stderr[-3000:] + ret.stdout[-3000:]
    return ret.data


def ret_tag(jid, minion_id):
    """The tag of a minion's return of ``jid`` on a master's bus."""
    return f"salt/job/{jid}/ret/{minion_id}"


def wait_for_returns(event_listener, master, expected, after, timeout):
    """
    Bounded: wait until every ``(jid, minion)`` in ``expected`` has a ``ret`` event on
    ``master``'s bus after POSIX time ``after``; ``{(jid, minion): [events]}`` of all seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = returns_seen(event_listener, master, expected, after)
        if all(seen[pair] for pair in expected) or time.monotonic() >= deadline:
            return seen
        time.sleep(0.25)


def returns_seen(event_listener, master, expected, after):
    """``{(jid, minion): [ret events on master after ``after``]}`` (no wait)."""
    return {
        (jid, minion): sorted(
            event_listener.get_events([(master.id, ret_tag(jid, minion))], after_time=after), key=lambda e: e.stamp
        )
        for jid, minion in expected
    }


def salt_call(minion, *args):
    """``salt-call --local`` on the minion's host (its config); the parsed return."""
    ret = minion.salt_call_cli(timeout=60).run("--local", *args)
    assert ret.returncode == 0, ret.stderr[-2000:]
    return ret.data


def fake_return_load(minion_id, fun="test.echo", value="salt-ha"):
    """A job return load as a job process hands it to the minion's main process."""
    return {
        "cmd": "_return", "id": minion_id, "jid": salt.utils.jid.gen_jid({}), "fun": fun,
        "fun_args": [value], "return": value, "retcode": 0, "success": True,
    }


def ledger_dir(minion):
    """The engine's ledger folder with the default options."""
    return f"{minion.config['cachedir'].rstrip('/')}/ha_returns"


def start_lab(factories, root, minion_ids, minion_overrides=None):
    """Masters A and B and failover minions with the engine; configured, not started."""
    lab = lablib.Lab(factories, root)
    lab.add_master("a", lablib.LOOPBACK_A)
    lab.add_master("b", lablib.LOOPBACK_B)
    for minion_id in minion_ids:
        lab.add_failover_minion(minion_id, alive_interval=None, overrides={**ENGINE, **(minion_overrides or {})})
    return lab
