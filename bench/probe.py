"""
Bench: ``ha.status``-style probe of 4 masters versus Salt's serial ``status.ping_master``.

The 4 masters: one up (a real salt-master on 127.0.0.1), one frozen (a real
salt-master on 127.0.0.2, SIGSTOPped: the kernel still completes TCP handshakes),
one refused (127.0.0.3 on the same ports, nothing listens) and one unresolvable
name (``salt-ha-bench.invalid``).

Measured over ``--runs`` runs:
  (a) wall time of ``ha_probe.probe_endpoints`` over the 4, against ``--timeout``;
  (b) the serial baseline: ``status.ping_master`` on each master in turn, through
      Salt's loader, with a minion config in a temp dir; once with Salt's default
      ``auth_timeout`` and once with ``auth_timeout`` equal to ``--timeout``;
  (c) the healthy probe latency of the up master;
  (d) ``--pings`` application-level pings of the up master one after the other
      (``ha_probe.app_ping``, what a beacon tick runs): latency, wall time per ping,
      open descriptors and threads (the kernel's count) before and after; for
      zeromq also Salt's own request channel (``ha_probe.channel_ping``), the
      alternative to the hand-built ZeroMQ ping.

Every master runs ``--transport`` (zeromq, tcp or ws), and so does every probe.

Usage (from the repo root):
``.venv/bin/python bench/probe.py [--runs 7] [--timeout 2] [--transport zeromq] [--pings 200]``
"""

import argparse
import os
import statistics
import threading
import time

import _common  # sys.path: repo root and _utils

import ha_endpoints  # noqa: E402  pylint: disable=wrong-import-order
import ha_probe  # noqa: E402  pylint: disable=wrong-import-order

UP_IP = "127.0.0.1"
FROZEN_IP = "127.0.0.2"
REFUSED_IP = "127.0.0.3"
UNRESOLVABLE = "salt-ha-bench.invalid"
GOAL_RATIO = 1.2
# salt-factories calls a master started before its request server answers (1.5-3.5 s here).
READY_SECONDS = 60


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (default 7)")
    parser.add_argument("--timeout", type=float, default=2.0, help="probe timeout in seconds (default 2)")
    parser.add_argument(
        "--transport", choices=ha_probe.TRANSPORTS, default="zeromq", help="the masters' transport (default zeromq)"
    )
    parser.add_argument("--pings", type=int, default=200, help="pings of the up master for (d) (default 200)")
    args = parser.parse_args()
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be between 1 and 50")
    if not 0.1 <= args.timeout <= 30:
        parser.error("--timeout must be between 0.1 and 30")
    if not 1 <= args.pings <= 5000:
        parser.error("--pings must be between 1 and 5000")
    return args


def minion_opts(root, ports, **overrides):
    """Minion opts from ``salt.config.minion_config`` with every path in ``root``."""
    import salt.config  # pylint: disable=import-outside-toplevel

    root.mkdir(parents=True, exist_ok=True)
    publish, ret = ports
    conf = root / "minion"
    conf.write_text(
        "\n".join(
            [
                "id: salt-ha-bench",
                f"root_dir: {root}",
                f"pki_dir: {root / 'pki'}",
                f"cachedir: {root / 'cache'}",
                f"sock_dir: {root / 'sock'}",
                f"log_file: {root / 'minion.log'}",
                f"master_port: {ret}",
                f"publish_port: {publish}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    opts = salt.config.minion_config(str(conf))
    opts.update(overrides)
    return opts


def ping_master_function(opts):
    """``status.ping_master`` loaded by Salt's loader for ``opts``."""
    import salt.loader  # pylint: disable=import-outside-toplevel

    return salt.loader.minion_mods(opts)["status.ping_master"]


BLOCKED = "blocked"


def serial_ping(ping_master, hosts, bound, blocked_hosts):
    """
    Call ``ping_master`` on each host in turn; ``(total seconds, {host: (result, seconds)})``.

    Each call runs in a daemon thread and is given ``bound`` seconds: one that has
    not returned by then counts as ``BLOCKED`` for ``bound`` seconds (a lower bound),
    and its host is added to ``blocked_hosts`` and not called again (its thread
    keeps going until the bench exits). With ``transport: tcp`` Salt's client
    reconnects to a refused port forever; with ``ws`` it ignores the timeout.
    """
    per_host = {}
    for host in hosts:
        if host in blocked_hosts:
            per_host[host] = (BLOCKED, bound)
            continue
        host_started = time.monotonic()
        outcome = []
        done = threading.Event()

        def call(host=host, outcome=outcome, done=done):
            try:
                outcome.append(ping_master(host))
            finally:
                done.set()

        threading.Thread(target=call, daemon=True, name=f"bench-ping-{host}").start()
        if done.wait(bound):
            per_host[host] = (outcome[0] if outcome else "raised", time.monotonic() - host_started)
        else:
            blocked_hosts.add(host)
            per_host[host] = (BLOCKED, bound)
    return sum(seconds for _, seconds in per_host.values()), per_host


def still_blocked_after(func, arg, seconds):
    """Run ``func(arg)`` in a daemon thread; True when it has not returned after ``seconds``."""
    done = threading.Event()

    def target():
        try:
            func(arg)
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="bench-retry-dns").start()
    return not done.wait(seconds)


def measure(args, lablib, root, lab):
    """Run every measurement against the running masters; print the figures."""
    publish, ret = lab.ports
    hosts = [UP_IP, FROZEN_IP, REFUSED_IP, UNRESOLVABLE]
    endpoints = ha_endpoints.master_endpoints(
        {"master": hosts, "master_port": ret, "publish_port": publish}
    )

    # Sanity before the fault: both real masters answer (bounded wait for their workers).
    started = time.monotonic()
    warm = ha_probe.probe_endpoints(endpoints[:2], args.timeout, args.transport)
    while not all(entry["up"] for entry in warm) and time.monotonic() - started < READY_SECONDS:
        time.sleep(0.2)
        warm = ha_probe.probe_endpoints(endpoints[:2], args.timeout, args.transport)
    if not all(entry["up"] for entry in warm):
        raise SystemExit(f"masters not up {READY_SECONDS} s after the start: {warm}")

    import zmq  # pylint: disable=import-outside-toplevel

    context = zmq.Context()  # one for the process's life, as the beacon keeps it
    try:
        pings = {"ha_probe.app_ping": measure_pings(
            lambda: ha_probe.app_ping(UP_IP, ret, args.timeout, args.transport, context), args.pings
        )}
        if args.transport == "zeromq":
            pings["ha_probe.channel_ping (Salt's channel)"] = measure_pings(
                lambda: ha_probe.channel_ping(UP_IP, ret, args.timeout, "zeromq"), args.pings
            )
    finally:
        context.destroy(linger=0)

    lablib.freeze(lab.masters["frozen"])

    probe_walls, up_latencies, last_probe = [], [], None
    for _ in range(args.runs):
        started = time.monotonic()
        last_probe = ha_probe.probe_endpoints(endpoints, args.timeout, args.transport)
        probe_walls.append(time.monotonic() - started)
        up_flags = [entry["up"] for entry in last_probe]
        if up_flags != [True, False, False, False]:
            print(f"WARNING: unexpected probe verdicts {up_flags}: {last_probe}")
        if last_probe[0]["latency_ms"] is not None:
            up_latencies.append(last_probe[0]["latency_ms"])

    default_opts = minion_opts(root / "minion-default", lab.ports, transport=args.transport)
    default_auth_timeout = default_opts["auth_timeout"]
    default_retry_dns = default_opts["retry_dns"]
    # With retry_dns > 0 and no retry_dns_count, resolve_dns retries an unresolvable
    # master forever: the serial baseline would never finish. Show it, bounded.
    blocked = still_blocked_after(ping_master_function(default_opts), UNRESOLVABLE, args.timeout + 1)

    baselines = {}
    for label, auth_timeout in (
        (f"auth_timeout {default_auth_timeout:g} (default)", default_auth_timeout),
        (f"auth_timeout {args.timeout:g} (= probe timeout)", args.timeout),
    ):
        opts = minion_opts(
            root / f"minion-{auth_timeout:g}", lab.ports, retry_dns=0, auth_timeout=auth_timeout,
            transport=args.transport,
        )
        ping_master = ping_master_function(opts)
        walls, per_host, blocked_hosts = [], {host: [] for host in hosts}, set()
        for _ in range(args.runs):
            wall, found = serial_ping(ping_master, hosts, 2 * auth_timeout + 3, blocked_hosts)
            walls.append(wall)
            for host, (result, seconds) in found.items():
                per_host[host].append((result, seconds))
        baselines[label] = (walls, per_host)

    report(args, hosts, lab, probe_walls, up_latencies, last_probe, baselines,
           default_auth_timeout, default_retry_dns, blocked)
    report_pings(args, pings)


def process_counts():
    """``(open descriptors, threads)`` of this process, as the kernel counts them."""
    return len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task"))


def measure_pings(ping, count):
    """
    ``count`` calls of ``ping`` one after the other, after 20 to warm up: latencies
    and walls in ms, process counts before and after (read again for up to 2 s
    while above "before": executor and ZeroMQ reaper threads end a moment late).
    """
    for _ in range(20):
        ping()
    before = process_counts()
    latencies, walls = [], []
    for _ in range(count):
        started = time.monotonic()
        latencies.append(ping() * 1000)
        walls.append((time.monotonic() - started) * 1000)
    deadline = time.monotonic() + 2
    after = process_counts()
    while any(now > then for now, then in zip(after, before, strict=True)) and time.monotonic() < deadline:
        time.sleep(0.05)
        after = process_counts()
    return latencies, walls, before, after


def report_pings(args, pings):
    """Print (d): the figures of one healthy ping after another."""
    print()
    print(f"(d) {args.pings} pings of {UP_IP} one after the other ({args.transport}), ms:")
    rows = []
    for label, (latencies, walls, before, after) in pings.items():
        rows.append([
            label,
            f"{statistics.median(latencies):.2f}",
            f"{statistics.median(walls):.2f}",
            f"{statistics.quantiles(walls, n=10)[-1]:.2f}" if len(walls) > 1 else "-",
            f"{max(walls):.2f}",
            f"{before[0]} -> {after[0]}",
            f"{before[1]} -> {after[1]}",
        ])
    _common.print_table(
        ["ping", "latency median", "wall median", "wall p90", "wall max", "descriptors", "threads"], rows
    )


def shorten(text, width=48):
    """``text`` cut to ``width`` characters for a table cell."""
    text = str(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def report(args, hosts, lab, probe_walls, up_latencies, last_probe, baselines,
           default_auth_timeout, default_retry_dns, blocked):
    """Print the tables and ratios."""
    probe_median, probe_min, probe_max = _common.spread(probe_walls)
    print()
    print(f"salt-ha bench/probe.py: 4 masters, transport {args.transport}, timeout {args.timeout:g} s, "
          f"{args.runs} runs, ports publish {lab.ports[0]} / ret {lab.ports[1]}")
    print(f"  up {UP_IP} (salt-master), frozen {FROZEN_IP} (salt-master, SIGSTOP), "
          f"refused {REFUSED_IP} (nothing listens), unresolvable {UNRESOLVABLE}")
    print()
    rows = [[
        "ha_probe.probe_endpoints (concurrent)",
        _common.fmt(probe_median), _common.fmt(probe_min), _common.fmt(probe_max),
        f"{probe_median / args.timeout:.2f}x",
    ]]
    for label, (walls, _) in baselines.items():
        median, low, high = _common.spread(walls)
        rows.append([
            f"serial status.ping_master, {label}",
            _common.fmt(median), _common.fmt(low), _common.fmt(high),
            f"{median / args.timeout:.2f}x",
        ])
    _common.print_table(["wall time over the 4 masters", "median", "min", "max", "/ timeout"], rows)

    print()
    print("per master, median seconds (verdict):")
    header = ["master", "ha_probe verdict", *baselines]
    rows = []
    for index, host in enumerate(hosts):
        entry = last_probe[index]
        verdict = "up" if entry["up"] else f"down: {shorten(entry['error'])}"
        cells = [host, verdict]
        for _, per_host in baselines.values():
            results = per_host[host]
            median = statistics.median(seconds for _, seconds in results)
            answered = sorted({str(result) for result, _ in results})
            cells.append(f"{median:.2f} s ({'/'.join(answered)})")
        rows.append(cells)
    _common.print_table(header, rows)

    print()
    up_median, up_min, up_max = _common.spread(up_latencies)
    print(f"(c) healthy probe latency of {UP_IP}: median {_common.fmt(up_median, 'ms', 3)} "
          f"(min {_common.fmt(up_min, 'ms', 3)}, max {_common.fmt(up_max, 'ms', 3)})")
    ratio = probe_median / args.timeout
    verdict = "MET" if ratio <= GOAL_RATIO else "MISSED"
    print(f"(a) probe median / timeout = {ratio:.2f} (goal <= {GOAL_RATIO}: {verdict})")
    for label, (walls, _) in baselines.items():
        print(f"(b) serial [{label}] / probe = {statistics.median(walls) / probe_median:.1f}x slower")
    print()
    print(f"NOTE: the serial baseline runs with retry_dns: 0 (Salt's default is {default_retry_dns:g}).")
    print(f"  With retry_dns {default_retry_dns:g} and no retry_dns_count, status.ping_master on an "
          f"unresolvable name loops in resolve_dns forever (one retry every {default_retry_dns:g} s):")
    print(f"  measured here: still blocked after {args.timeout + 1:g} s = {blocked}.")
    print("  ping_master on the up master also waits ~1 s after the answer: it fires a failback "
          "event on a minion bus that no minion serves here (fire_event's 1000 ms connect timeout).")
    print(f"  auth_timeout is Salt's real default ({default_auth_timeout:g} s in salt 3008; "
          "ping_master's fallback 60 applies only when the option is missing).")
    print(f"  Theoretical serial cost with Salt defaults: up ~0 + frozen {default_auth_timeout:g} "
          f"+ refused {default_auth_timeout:g} + unresolvable = never returns "
          f"(with retry_dns 0: ~{2 * default_auth_timeout:g} s; N dead masters cost N x auth_timeout).")
    print(f"  {BLOCKED}: the serial call had not returned after 2 x auth_timeout + 3 s (its figure is "
          "that bound, a lower bound); it was not called again. Salt 3008's tcp client reconnects "
          "to a refused port forever, its ws client ignores the timeout (aiohttp's own is 300 s).")


def main():
    args = parse_args()
    with _common.session("sha-pr-") as root:
        from tests.support import lab as lablib  # pylint: disable=import-outside-toplevel

        with lablib.StandaloneFactories(root / "f") as env:
            lab = lablib.Lab(env.manager, root / "lab", ips=(UP_IP, FROZEN_IP, REFUSED_IP))
            lab.add_master("up", UP_IP, overrides={"transport": args.transport})
            lab.add_master("frozen", FROZEN_IP, overrides={"transport": args.transport})
            with lablib.RunningDaemons(lab.masters.values()):
                # RunningDaemons thaws the frozen master before stopping it.
                if not all(lablib.port_is_free(REFUSED_IP, port) for port in lab.ports):
                    raise SystemExit(f"{REFUSED_IP} ports {lab.ports} are in use: cannot bench a refused port")
                measure(args, lablib, root, lab)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
