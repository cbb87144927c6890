"""
Bench: from a fault of the serving master to the minion answering through the other one,
for four front doors, stock Salt against the salt-ha settings, in a network-namespace lab.

One lab (tests/support/netns_lab.py, tests/support/frontdoor.py; root, ip netns,
nftables, keepalived, haproxy, dnsmasq, curl): masters A and B with the ``ha_health``
engine, keepalived on both (``examples/keepalived/keepalived.conf``: VIP, nopreempt),
HAProxy on a balancer host (``examples/haproxy/haproxy.cfg``: A active, B backup),
dnsmasq on a DNS host, and eight minions on one minion host:

  door     master option                  stock                     salt-ha
  list     [A, B], master_type failover   master_alive_interval 2   + ha beacon + keepalive
  vip      the VIP                        Salt defaults             ha beacon + keepalive
  lb       the balancer                   Salt defaults             ha beacon + keepalive
  dns      salt.<lab> (dnsmasq, TTL 1)    Salt defaults             ha beacon + keepalive

(keepalive = ``tcp_keepalive_idle: 10, tcp_keepalive_intvl: 2, tcp_keepalive_cnt: 3``;
the beacon with the README's settings.) Faults, each ``--runs`` times, on the master T
that holds the VIP (they alternate: keepalived's nopreempt keeps the VIP where it went):

  freeze     T's salt-master process group SIGSTOPped
  partition  T cut off from every host (nftables on the bridge: silent drops)

At the fault the DNS record is switched to the other master O. The figure is the time
from the fault to the first ``test.ping`` return from the minion received on O
(``test.ping`` published through O every 0.25 s); ``-`` = no answer within
``--give-up`` s. HAProxy's active master is A: the ``lb`` minions take part only in
runs where T is A. Before each run every taking-part minion must answer through T
(a minion that does not within 25 s, e.g. a stock one still stuck on a dead
connection, is restarted), then the masters must be quiet (no job traffic) for 3 s.
After the run T is thawed or the partition healed.

Usage (from the repo root, as root):
``.venv/bin/python bench/frontdoor.py [--runs 3] [--faults freeze,partition] [--give-up 30]``
"""

import argparse
import statistics
import sys
import time

import _common  # sys.path: repo root and _utils

from tests.support import frontdoor as fdl  # noqa: E402
from tests.support import netns_lab as nl  # noqa: E402

DOORS = ("list", "vip", "lb", "dns")
SETTINGS = ("stock", "salt-ha")
SALT_HA = {**fdl.KEEPALIVE, **fdl.BEACON}
TOOLS = ("ip", "ss", "nft", "keepalived", "haproxy", "dnsmasq", "curl", "getent")
PRECHECK_SECONDS = 25
QUIET_SECONDS = 3


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per fault (default 3)")
    parser.add_argument("--faults", default="freeze,partition", help="freeze,partition (default both)")
    parser.add_argument("--give-up", type=float, default=30, help="seconds to wait for an answer (default 30)")
    args = parser.parse_args()
    args.faults = [fault for fault in args.faults.split(",") if fault]
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    if not args.faults or set(args.faults) - {"freeze", "partition"}:
        parser.error("--faults: freeze and/or partition")
    if not 5 <= args.give_up <= 600:
        parser.error("--give-up must be between 5 and 600")
    return args


def minion_id(door, setting):
    return f"{door}-{setting}"


def build(lab):
    """The lab, all daemons started, every minion answering through A."""
    fd = fdl.frontdoor_lab(lab, lb=True, dns=True)
    fd.name = f"salt.{lab.prefix}.test"
    masters = {"list": [fd.a.address, fd.b.address], "vip": fd.vip, "lb": fd.lb.address, "dns": fd.name}
    for door in DOORS:
        fdl.add_minion(fd, minion_id(door, "stock"), masters[door])
        fdl.add_minion(fd, minion_id(door, "salt-ha"), masters[door], SALT_HA)
    fdl.start_front_doors(fd)
    fd.client("a")
    fd.client("b")
    return fd


def restart_minion(fd, minion):
    """Stop and start one minion (a stock one stuck on a dead connection)."""
    fd.lab.stop(fd.salt.minions[minion]["daemon"], seconds=3)
    fd.salt.start_minion(minion)


def prepare(fd, target, participants):
    """Every participant answers through ``target`` (restarting the stuck ones once); those that do."""
    client = fd.client(target)
    answered = client.answered(participants, time.time(), PRECHECK_SECONDS, every=1)
    stuck = [m for m in participants if m not in answered]
    for minion in stuck:
        restart_minion(fd, minion)
    if stuck:
        answered.update(client.answered(stuck, time.time(), 60, every=1))
    missing = [m for m in participants if m not in answered]
    if missing:
        print(f"  (not on {target.upper()} before the fault, left out: {', '.join(missing)})")
    for name in ("a", "b"):
        fd.client(name).quiet(QUIET_SECONDS)
    return [m for m in participants if m in answered]


def run_once(fd, fault, give_up):
    """One fault on the VIP holder; ``{minion: seconds or None}`` and notes."""
    (target,) = fd.holders() or ["a"]
    other = "b" if target == "a" else "a"
    host = fd.a if target == "a" else fd.b
    fdl.switch_dns(fd, fd.name, host.address)
    participants = [minion_id(door, s) for door in DOORS for s in SETTINGS if door != "lb" or target == "a"]
    participants = prepare(fd, target, participants)
    t0 = time.time()
    if fault == "freeze":
        fd.lab.freeze(fd.salt.masters[target]["daemon"])
    else:
        fd.lab.isolate(host)
    fdl.switch_dns(fd, fd.name, (fd.b if target == "a" else fd.a).address)
    notes = {}
    try:
        answered = fd.client(other).answered(participants, t0, give_up)
        other_host = fd.b if target == "a" else fd.a
        notes["vip"] = other_host.holds(fd.vip)
    finally:
        if fault == "freeze":
            fd.lab.thaw(fd.salt.masters[target]["daemon"])
        else:
            fd.lab.heal()
    fdl.wait_single_holder(fd, timeout=30, stable=1)
    figures = {m: (answered[m] - t0 if m in answered else None) for m in participants}
    return target, figures


def main():
    args = parse_args()
    try:
        nl.require(TOOLS)
    except nl.NetnsUnavailable as err:
        print(f"bench/frontdoor.py cannot run here: {err}")
        return 2
    if not nl.ha_health_available():
        print("bench/frontdoor.py cannot run here: no _engines/ha_health.py")
        return 2
    results = {fault: {minion_id(d, s): [] for d in DOORS for s in SETTINGS} for fault in args.faults}
    with _common.session("shfd-") as root, nl.NetnsLab(root) as lab:
        started = time.monotonic()
        fd = build(lab)
        print(f"lab up in {time.monotonic() - started:.0f} s (subnet {lab.subnet}, netns prefix {lab.prefix})")
        for fault in args.faults:
            for run in range(1, args.runs + 1):
                target, figures = run_once(fd, fault, args.give_up)
                shown = ", ".join(f"{m} {_common.fmt(v)}" for m, v in figures.items())
                print(f"{fault} run {run} (fault on {target.upper()}): {shown}")
                for minion, value in figures.items():
                    results[fault][minion].append(value)
    print(f"\nseconds from the fault to the first test.ping answer through the other master "
          f"(median of the runs; '-' = no answer within {args.give_up:g} s; n = answered/runs)")
    rows = []
    for fault in args.faults:
        for door in DOORS:
            row = [fault, door]
            for setting in SETTINGS:
                values = results[fault][minion_id(door, setting)]
                done = [v for v in values if v is not None]
                median = statistics.median(done) if len(done) * 2 > len(values) and done else None
                shown = "-" if median is None else f"{median:.2f} s"
                row.append(f"{shown} ({len(done)}/{len(values)}: {', '.join(_common.fmt(v, '', 1) for v in values)})")
            rows.append(row)
    _common.print_table(["fault", "door", "stock", "salt-ha"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
