"""
Front doors in the network-namespace lab (tests/support/netns_lab.py): keepalived VIP,
HAProxy and dnsmasq, run from the recipes under ``examples/`` (templated with the lab's
addresses, so the files the README shows are the files tested), and the minion options
of each topology.

:func:`frontdoor_lab` builds the common topology: masters A and B (the ``ha_health``
engine on 4510), a minion host, and on demand a balancer host and a DNS host.
"""

import dataclasses
import pathlib
import time

from tests.support import netns_lab as nl

EXAMPLES = nl.REPO_ROOT / "examples"
KEEPALIVED_CONF = EXAMPLES / "keepalived" / "keepalived.conf"
HAPROXY_CFG = EXAMPLES / "haproxy" / "haproxy.cfg"

# The addresses and names the recipes use, replaced by the lab's.
EXAMPLE_VIP = "192.0.2.100/24"
EXAMPLE_MASTER_A = "192.0.2.11"
EXAMPLE_MASTER_B = "192.0.2.12"
EXAMPLE_STATS_SOCKET = "/run/haproxy/admin.sock"
EXAMPLE_LOG = "log /dev/log local0"
EXAMPLE_MAXCONN = "maxconn 20000"  # needs 2 x 20000 descriptors: more than a test process may open

# Host parts of the lab addresses.
INDEX = {"a": 1, "b": 2, "m": 10, "lb": 20, "dns": 53, "vip": 100}

# TCP keepalive settings that make a minion notice a dead connection (a VIP that moved,
# a silently dropped master) within idle + intvl x cnt seconds of silence.
KEEPALIVE = {"tcp_keepalive_idle": 10, "tcp_keepalive_intvl": 2, "tcp_keepalive_cnt": 3}
# The ha beacon as the README recommends it (tests/support/beacon_lab.py), at Salt's loop_interval 1.
BEACON = {"loop_interval": 1, "beacons": {"ha": [{"interval": 1}, {"timeout": 1}, {"probe_interval": 0.5},
                                                 {"hang_ticks": 4}]}}
MINION_BASE = {"auth_timeout": 5, "acceptance_wait_time": 1, "random_master": False}


def template(path, replacements):
    """
    The text of the recipe at ``path`` with each key of ``replacements`` replaced by its
    value; ``AssertionError`` when a key is not in the file (the recipe changed: the test
    would no longer test it).
    """
    text = pathlib.Path(path).read_text()
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{path}: {old!r} not found (the recipe changed; update tests/support/frontdoor.py)")
        text = text.replace(old, new)
    return text


@dataclasses.dataclass
class FrontDoorLab:
    """The hosts and daemons of a front-door lab."""

    lab: nl.NetnsLab
    salt: nl.SaltSetup
    a: nl.Host
    b: nl.Host
    m: nl.Host
    vip: str
    lb: nl.Host = None
    dns: nl.Host = None
    keepalived: dict = dataclasses.field(default_factory=dict)
    haproxy: nl.Daemon = None
    dnsmasq: nl.Daemon = None
    clients: dict = dataclasses.field(default_factory=dict)

    def holders(self):
        """The names of the masters whose eth0 holds the VIP now."""
        return [host.name for host in (self.a, self.b) if host.holds(self.vip)]

    def client(self, name):
        """The (one) :class:`netns_lab.MasterClient` of master ``name``."""
        if name not in self.clients:
            self.clients[name] = self.salt.client(name)
        return self.clients[name]


def frontdoor_lab(lab, lb=False, dns=False):
    """Hosts A, B, the minion host (and the balancer and DNS hosts); masters configured (not started)."""
    a, b, m = lab.add_host("a", INDEX["a"]), lab.add_host("b", INDEX["b"]), lab.add_host("m", INDEX["m"])
    setup = nl.SaltSetup(lab)
    for name, host in (("a", a), ("b", b)):
        setup.add_master(name, host, interface="0.0.0.0", health=True)
    fd = FrontDoorLab(lab, setup, a, b, m, lab.address(INDEX["vip"]))
    if lb:
        fd.lb = lab.add_host("lb", INDEX["lb"])
    if dns:
        fd.dns = lab.add_host("dns", INDEX["dns"])
    return fd


def start_masters(fd, timeout=90):
    """Start A and B and wait (bounded) until their health endpoints listen."""
    for name in ("a", "b"):
        fd.salt.start_master(name, timeout)
    for name in ("a", "b"):
        fd.salt.wait_health(name, timeout)


# --- keepalived ---------------------------------------------------------------------


def keepalived_conf(fd, name):
    """``examples/keepalived/keepalived.conf`` for master ``name`` (B: priority 100) with the lab's VIP."""
    replacements = {EXAMPLE_VIP: f"{fd.vip}/{fd.lab.subnet.prefixlen}",
                    "router_id salt_master_a": f"router_id {fd.lab.prefix}_{name}"}
    if name == "b":
        replacements["priority 150"] = "priority 100"
    return template(KEEPALIVED_CONF, replacements)


def start_keepalived(fd, name):
    """keepalived from the recipe on master ``name``'s host (config checked with ``keepalived -t`` first)."""
    folder = fd.lab.root / "keepalived"
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / f"keepalived-{name}.conf"
    conf.write_text(keepalived_conf(fd, name))
    nl._run([nl.which("keepalived"), "-t", "-f", conf])  # pylint: disable=protected-access
    host = fd.a if name == "a" else fd.b
    daemon = fd.lab.spawn(host, f"keepalived-{name}", [
        nl.which("keepalived"), "--dont-fork", "--log-console", "--log-detail", "--vrrp", "-f", conf,
        "-p", folder / f"ka-{name}.pid", "-r", folder / f"ka-{name}-vrrp.pid",
    ])
    fd.keepalived[name] = daemon
    return daemon


def wait_single_holder(fd, expected=None, timeout=30, stable=1.5):
    """
    Wait (bounded) until exactly one master holds the VIP (``expected`` if given) and
    keeps it for ``stable`` s; its name. ``TimeoutError`` otherwise, naming the holders.
    """
    deadline = time.monotonic() + timeout
    since, last = None, None
    while time.monotonic() < deadline:
        holders = fd.holders()
        ok = len(holders) == 1 and (expected is None or holders[0] == expected)
        if ok and holders == last:
            if time.monotonic() - since >= stable:
                return holders[0]
        else:
            since = time.monotonic()
        last = holders if ok else None
        time.sleep(0.1)
    raise TimeoutError(f"VIP {fd.vip}: holders {fd.holders()} after {timeout} s (wanted exactly one: {expected})")


# --- HAProxy ------------------------------------------------------------------------


def haproxy_cfg(fd, stats_socket):
    """``examples/haproxy/haproxy.cfg`` with the lab's master addresses, stats socket, log to stdout."""
    return template(HAPROXY_CFG, {
        EXAMPLE_MASTER_A: fd.a.address,
        EXAMPLE_MASTER_B: fd.b.address,
        EXAMPLE_STATS_SOCKET: str(stats_socket),
        EXAMPLE_LOG: "log stdout format raw local0",
        EXAMPLE_MAXCONN: "maxconn 1000",
    })


def start_haproxy(fd):
    """HAProxy from the recipe on the balancer host (config checked with ``haproxy -c`` first)."""
    folder = fd.lab.root / "haproxy"
    folder.mkdir(parents=True, exist_ok=True)
    cfg, sock = folder / "haproxy.cfg", folder / "admin.sock"
    cfg.write_text(haproxy_cfg(fd, sock))
    nl._run([nl.which("haproxy"), "-c", "-q", "-f", cfg])  # pylint: disable=protected-access
    fd.haproxy = fd.lab.spawn(fd.lb, "haproxy", [nl.which("haproxy"), "-db", "-f", cfg])
    fd.haproxy_socket = sock
    nl.wait_until(lambda: nl.SaltSetup.check_alive(fd.haproxy) and sock.exists() and fd.lb.listening(4505)
                  and fd.lb.listening(4506), 30, 0.1, "haproxy listening on 4505/4506 with its stats socket")
    return fd.haproxy


def haproxy_states(fd):
    """``{(backend, server): status}`` from HAProxy's stats socket (``show stat``): UP, DOWN, ..."""
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(fd.haproxy_socket))
        sock.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    states = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") not in (None, "", "FRONTEND", "BACKEND"):
            states[(row["pxname"], row["svname"])] = row["status"]
    return states


# --- dnsmasq -----------------------------------------------------------------------


def start_dnsmasq(fd, name, address):
    """dnsmasq on the DNS host answering ``name`` with ``address`` (TTL 1 s); the minion host resolves through it."""
    folder = fd.lab.root / "dns"
    folder.mkdir(parents=True, exist_ok=True)
    fd.dns_hosts = folder / "hosts"
    fd.dns_hosts.write_text(f"{address} {name}\n")
    fd.dnsmasq = fd.lab.spawn(fd.dns, "dnsmasq", [
        nl.which("dnsmasq"), "--keep-in-foreground", "--user=root", "--no-resolv", "--no-hosts",
        f"--addn-hosts={fd.dns_hosts}", f"--listen-address={fd.dns.address}", "--bind-interfaces",
        f"--pid-file={folder / 'dnsmasq.pid'}", "--local-ttl=1", "--log-facility=-", "--log-queries",
    ])
    fd.lab.resolv_conf(fd.m, fd.dns.address)
    nl.wait_until(lambda: address in fd.m.run("getent", "ahostsv4", name, check=False).stdout, 20, 0.1,
                  f"{name} resolving to {address} in the minion's namespace")
    return fd.dnsmasq


def switch_dns(fd, name, address):
    """Point ``name`` at ``address`` (dnsmasq re-reads its hosts file on SIGHUP)."""
    import signal  # pylint: disable=import-outside-toplevel

    tmp = fd.dns_hosts.with_suffix(".tmp")
    tmp.write_text(f"{address} {name}\n")
    tmp.replace(fd.dns_hosts)
    fd.lab.signal(fd.dnsmasq, signal.SIGHUP)


# --- Salt ---------------------------------------------------------------------------


def start_front_doors(fd):
    """Masters, keepalived on A (the first VIP holder) then B, HAProxy, dnsmasq (the name on A), then the minions."""
    start_masters(fd)
    start_keepalived(fd, "a")
    wait_single_holder(fd, "a", timeout=30, stable=0.5)
    start_keepalived(fd, "b")
    start_haproxy(fd)
    start_dnsmasq(fd, fd.name, fd.a.address)
    for minion in fd.salt.minions:
        fd.salt.start_minion(minion)


def add_minion(fd, minion_id, master, options=None):
    """A minion on the minion host with ``master`` (an address, a name or a list) and ``options``."""
    config = {"master": master, **MINION_BASE, **(options or {})}
    if isinstance(master, list):
        config.update(master_type="failover", master_alive_interval=2)
    return fd.salt.add_minion(minion_id, fd.m, config)


def connected_to(fd, address, port=4505):
    """True when the minion host has an ESTABLISHED connection to ``address:port``."""
    return fd.m.established(address, port)
