"""
A network-namespace lab: hosts on a Linux bridge, silent partitions, real daemons.

The measured recipe is ``NETNS-LAB.md`` (shared notes); this module makes it reusable
by tests and benches:

- :class:`NetnsLab` creates a *switch* namespace holding a bridge and, per
  :meth:`NetnsLab.add_host`, a host namespace whose ``eth0`` is one end of a veth
  pair, the other end a port of that bridge. Every name starts with a prefix unique
  to the run (``shn<hex>-``) and every lab picks its own private /24
  (``10.<100-250>.<0-255>.0/24``) inside its own namespaces: the root namespace's
  interfaces, routes and firewall are never touched, and labs running at the same
  time never collide.
- :meth:`NetnsLab.partition` / :meth:`NetnsLab.isolate` / :meth:`NetnsLab.heal`:
  an nftables ``bridge`` table in the switch namespace drops the frames between two
  ports (or everything to and from one port). Carrier stays up and nothing answers:
  TCP connections across the cut stay ESTABLISHED, as on a real partition (the
  kernel here has no ``netem``).
- :meth:`NetnsLab.spawn` starts a daemon inside a host namespace with
  ``ip netns exec`` in a session (process group) of its own; :meth:`NetnsLab.freeze`,
  :meth:`NetnsLab.thaw` and :meth:`NetnsLab.stop` signal that group, by pid.
- :class:`SaltSetup` writes Salt configs into the lab's folder and starts real
  ``salt-master`` / ``salt-minion`` daemons (the project venv's) in the namespaces,
  with one shared master key pair and the minion key pre-accepted on every master
  (pytest-salt-factories cannot start daemons inside a namespace).
  :class:`MasterClient` runs ``tests/support/netns_client.py`` next to a master:
  publishes jobs and streams the master's events with their times.

Leaving the lab stops every process it started (SIGCONT, SIGTERM, then SIGKILL to its
process group, bounded waits), deletes its namespaces by name (which removes the
veths, the bridge and the nftables table with them) and the ``/etc/netns/<name>``
folders it created. Every wait is bounded.

:func:`require` says why the lab cannot run here (not root, no ``ip netns``, a tool
missing); :func:`lab_or_skip` turns that into a loud ``pytest.skip`` (a failure with
``SALT_HA_REQUIRE_NETNS=1``).
"""

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import pathlib
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

import yaml

from tests.support import lab as lablib

log = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = pathlib.Path(sys.executable).parent
CLIENT_SCRIPT = REPO_ROOT / "tests" / "support" / "netns_client.py"
COMMAND_TIMEOUT = 20
STOP_SECONDS = 10
NFT_TABLE = "shnlab"
# The Debian packages that hold the tools (the Makefile's netns-lab target installs them).
PACKAGES = {
    "ip": "iproute2",
    "ss": "iproute2",
    "bridge": "iproute2",
    "nft": "nftables",
    "keepalived": "keepalived",
    "haproxy": "haproxy",
    "dnsmasq": "dnsmasq-base",
    "curl": "curl",
}
SBIN = ("/usr/sbin", "/sbin")


class NetnsUnavailable(RuntimeError):
    """The lab cannot run here; the message says why and what to install."""


def which(tool):
    """Full path of ``tool`` on PATH or in /usr/sbin, /sbin; None when missing."""
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def require(tools=("ip", "ss", "nft")):
    """
    Raise :class:`NetnsUnavailable` naming the reason when the lab cannot run here:
    not root, a tool of ``tools`` missing (with its Debian package), or ``ip netns``
    not usable (a namespace is created and deleted to find out).
    """
    if os.geteuid() != 0:
        raise NetnsUnavailable(f"network-namespace lab needs root (ip netns, nftables); running as uid {os.geteuid()}")
    missing = [tool for tool in tools if which(tool) is None]
    if missing:
        packages = sorted({PACKAGES.get(tool, tool) for tool in missing})
        raise NetnsUnavailable(
            f"missing {', '.join(missing)}: install the Debian package(s) {' '.join(packages)} "
            "(make test does so as root with apt-get: target netns-lab)"
        )
    probe = f"shnprobe{secrets.token_hex(3)}"
    proc = _run([which("ip"), "netns", "add", probe], check=False)
    if proc.returncode != 0:
        raise NetnsUnavailable(f"`ip netns add` does not work here: {(proc.stderr or proc.stdout).strip()}")
    _run([which("ip"), "netns", "del", probe], check=False)


def skip_loudly(reason):
    """``pytest.skip`` with a ``PytestWarning`` in the summary (``SALT_HA_REQUIRE_NETNS=1``: a failure)."""
    import warnings  # pylint: disable=import-outside-toplevel

    import pytest  # pylint: disable=import-outside-toplevel

    message = f"network-namespace lab unavailable, front-door tests NOT run: {reason}"
    if os.environ.get("SALT_HA_REQUIRE_NETNS") == "1":
        pytest.fail(message)
    warnings.warn(message, pytest.PytestWarning, stacklevel=3)
    pytest.skip(message)


@contextlib.contextmanager
def lab_or_skip(root, tools=("ip", "ss", "nft"), **kwargs):
    """A running :class:`NetnsLab`, or :func:`skip_loudly` naming why not."""
    try:
        require(tools)
    except NetnsUnavailable as err:
        skip_loudly(str(err))
    with NetnsLab(root, **kwargs) as lab:
        yield lab


def _run(argv, check=True, timeout=COMMAND_TIMEOUT, input_text=None):
    """Run a command (bounded); raise ``RuntimeError`` with its output when ``check`` and it fails."""
    try:
        proc = subprocess.run(
            [str(part) for part in argv], capture_output=True, text=True, timeout=timeout, check=False, input=input_text
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{' '.join(map(str, argv))} did not end within {timeout} s") from err
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Poll ``predicate`` (bounded by ``timeout`` s); its truthy value, else ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached within {timeout} s")
        time.sleep(interval)


def random_subnet():
    """A private /24 for one lab: ``10.<100-250>.<0-255>.0/24`` (only ever used inside the lab's namespaces)."""
    return ipaddress.ip_network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")


@dataclasses.dataclass
class Host:
    """A host of the lab: its namespace, address and bridge port (in the switch namespace)."""

    name: str
    netns: str
    address: str
    port: str
    lab: "NetnsLab"

    def run(self, *argv, check=True, timeout=COMMAND_TIMEOUT, input_text=None):
        """Run a command inside this host's namespace (bounded)."""
        return _run([which("ip"), "netns", "exec", self.netns, *argv], check, timeout, input_text)

    def established(self, address, port):
        """True when a TCP connection from this host to ``address:port`` is ESTABLISHED."""
        proc = self.run("ss", "-Htn", "state", "established", "dst", f"{address}:{port}", check=False)
        return bool(proc.stdout.strip())

    def listening(self, port):
        """True when something listens on TCP ``port`` in this host's namespace."""
        proc = self.run("ss", "-Hltn", "sport", "=", f":{port}", check=False)
        return bool(proc.stdout.strip())

    def holds(self, address):
        """True when ``address`` is assigned to this host's ``eth0`` (a VIP)."""
        proc = self.run("ip", "-o", "-4", "addr", "show", "dev", "eth0", check=False)
        return f" {address}/" in proc.stdout


@dataclasses.dataclass
class Daemon:
    """A process the lab started in a session of its own (its pid is its process group)."""

    name: str
    host: Host
    popen: subprocess.Popen
    log_path: pathlib.Path

    @property
    def pid(self):
        """The leader's pid (= the process group id)."""
        return self.popen.pid

    def running(self):
        """True while the leader has not exited."""
        return self.popen.poll() is None

    def log_text(self):
        """The daemon's captured stdout/stderr (or log file) so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class NetnsLab:
    """
    Hosts (namespaces) on one bridge, partitions, daemons; torn down on leaving.

    root
        A folder for the lab's files (configs, logs); kept (the caller owns it).
    subnet
        The lab's IPv4 /24 (default :func:`random_subnet`).
    """

    def __init__(self, root, subnet=None, prefix=None):
        self.root = pathlib.Path(root)
        self.subnet = ipaddress.ip_network(subnet) if subnet else random_subnet()
        self.prefix = prefix or f"shn{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = {}
        self.daemons = []
        self.namespaces = []
        self.etc_dirs = []
        self.cut = set()
        self.ip = which("ip")

    # --- topology ------------------------------------------------------------

    def address(self, index):
        """The lab address with host part ``index`` (1-254)."""
        return str(self.subnet.network_address + index)

    def _add_netns(self, name):
        _run([self.ip, "netns", "add", name])
        self.namespaces.append(name)
        _run([self.ip, "-n", name, "link", "set", "lo", "up"])

    def __enter__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._add_netns(self.switch)
            _run([self.ip, "-n", self.switch, "link", "add", "br0", "type", "bridge"])
            _run([self.ip, "-n", self.switch, "link", "set", "br0", "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def add_host(self, name, index):
        """A host namespace ``<prefix>-<name>`` with ``eth0`` = lab address ``index`` on the bridge."""
        if name in self.hosts or not name.isalnum() or len(name) > 12:
            raise ValueError(f"host name {name!r}: must be new, alphanumeric, at most 12 characters")
        netns, port, address = f"{self.prefix}-{name}", f"p{name}", self.address(index)
        self._add_netns(netns)
        _run([self.ip, "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns])
        _run([self.ip, "-n", self.switch, "link", "set", port, "master", "br0"])
        _run([self.ip, "-n", self.switch, "link", "set", port, "up"])
        _run([self.ip, "-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0"])
        _run([self.ip, "-n", netns, "link", "set", "eth0", "up"])
        host = Host(name, netns, address, port, self)
        self.hosts[name] = host
        return host

    def resolv_conf(self, host, nameserver):
        """``/etc/netns/<ns>/resolv.conf`` naming ``nameserver``: what ``ip netns exec`` mounts over /etc/resolv.conf."""
        folder = pathlib.Path("/etc/netns") / host.netns
        folder.mkdir(parents=True, exist_ok=True)
        self.etc_dirs.append(folder)
        (folder / "resolv.conf").write_text(f"nameserver {nameserver}\n")
        # ip netns exec bind-mounts every file of the folder over /etc: hosts too, so
        # the lab's names resolve through the lab's DNS only.
        (folder / "hosts").write_text("127.0.0.1 localhost\n")

    # --- partitions ----------------------------------------------------------

    def _apply_cut(self):
        """Replace the lab's nftables table by one dropping :attr:`cut` (one atomic ``nft -f`` transaction)."""
        ruleset = f"add table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\n"
        if self.cut:
            rules = "\n".join(f'    iifname "{a}" oifname "{b}" drop' for a, b in sorted(self.cut))
            ruleset += (
                f"table bridge {NFT_TABLE} {{\n  chain cut {{\n"
                "    type filter hook forward priority 0; policy accept;\n"
                f"{rules}\n  }}\n}}\n"
            )
        _run([self.ip, "netns", "exec", self.switch, "nft", "-f", "-"], input_text=ruleset)

    def partition(self, a, b):
        """Drop every frame between hosts ``a`` and ``b`` (both ways, silently; others still reach both)."""
        a, b = self.hosts[getattr(a, "name", a)], self.hosts[getattr(b, "name", b)]
        self.cut |= {(a.port, b.port), (b.port, a.port)}
        self._apply_cut()

    def isolate(self, host):
        """Drop every frame between ``host`` and every other host (carrier stays up)."""
        host = self.hosts[getattr(host, "name", host)]
        for other in self.hosts.values():
            if other is not host:
                self.cut |= {(host.port, other.port), (other.port, host.port)}
        self._apply_cut()

    def heal(self):
        """Remove every partition."""
        self.cut = set()
        self._apply_cut()

    # --- processes -------------------------------------------------------------

    def spawn(self, host, name, argv, stdin=None, stdout=None):
        """
        Start ``argv`` inside ``host``'s namespace in a new session; output goes to
        ``<root>/logs/<name>.out`` unless ``stdout`` is given (e.g. ``subprocess.PIPE``).
        """
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.out"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(  # pylint: disable=consider-using-with  (stopped in close)
                [self.ip, "netns", "exec", host.netns, *map(str, argv)],
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else out,
                stderr=out,
                start_new_session=True,
                cwd=self.root,
            )
        daemon = Daemon(name, host, popen, log_path)
        self.daemons.append(daemon)
        return daemon

    @staticmethod
    def signal(daemon, sig):
        """Send ``sig`` to ``daemon``'s process group; False when the group is gone."""
        try:
            os.killpg(daemon.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def freeze(self, daemon):
        """SIGSTOP ``daemon``'s whole process group (a hung host: TCP stays up)."""
        return self.signal(daemon, signal.SIGSTOP)

    def thaw(self, daemon):
        """SIGCONT what :meth:`freeze` stopped."""
        return self.signal(daemon, signal.SIGCONT)

    def stop(self, daemon, seconds=STOP_SECONDS):
        """SIGCONT + SIGTERM ``daemon``'s group, wait (bounded), then SIGKILL what is left."""
        self.signal(daemon, signal.SIGCONT)
        self.signal(daemon, signal.SIGTERM)
        for sig in (None, signal.SIGKILL):
            if sig is not None:
                log.warning("%s did not stop within %s s; SIGKILL", daemon.name, seconds)
                self.signal(daemon, sig)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    daemon.popen.wait(timeout=0.05)
                if daemon.popen.poll() is not None and not self.signal(daemon, 0):
                    break
            else:
                continue
            break
        if daemon in self.daemons:
            self.daemons.remove(daemon)

    def close(self):
        """Stop every daemon (all at once), delete every namespace and /etc/netns folder this lab created."""
        daemons = list(reversed(self.daemons))
        for daemon in daemons:
            self.signal(daemon, signal.SIGCONT)
            self.signal(daemon, signal.SIGTERM)
        for daemon in daemons:
            try:
                self.stop(daemon)
            except Exception as err:  # pylint: disable=broad-except  (teardown goes on)
                log.error("stopping %s failed: %s", daemon.name, err)
        for name in reversed(self.namespaces):
            _run([self.ip, "netns", "del", name], check=False)
        self.namespaces = []
        for folder in self.etc_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self.etc_dirs = []


# --- Salt ------------------------------------------------------------------------


def write_yaml(path, data):
    """Write ``data`` as YAML to ``path`` (parents created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, default_flow_style=False))


def ha_health_available():
    """True when the pack has the ``ha_health`` master engine (``_engines/ha_health.py``)."""
    return (REPO_ROOT / "_engines" / "ha_health.py").exists()


class SaltSetup:
    """
    Salt daemons of a :class:`NetnsLab`: masters sharing one key pair, minions whose key
    is accepted on every master before anything starts (the NETNS-LAB.md recipe).
    """

    HEALTH_PORT = 4510

    def __init__(self, lab):
        self.lab = lab
        self.root = lab.root / "salt"
        self.keypair = lablib.make_keypair(self.root / "shared-master-key")
        self.masters = {}  # name -> {"host", "conf", "id", "daemon"}
        self.minions = {}

    def _dirs(self, folder):
        return {
            "user": "root",
            "root_dir": str(folder),
            "pki_dir": str(folder / "pki"),
            "cachedir": str(folder / "cache"),
            "sock_dir": str(folder / "sock"),
            "pidfile": str(folder / "daemon.pid"),
            "log_file": str(folder / "log"),
            "log_level_logfile": "info",
        }

    def add_master(self, name, host, interface="0.0.0.0", health=True, overrides=None):
        """Configure (not start) master ``name`` on ``host``; with ``health``, the ``ha_health`` engine on 4510."""
        folder = self.root / f"m{name}"
        options = {
            "id": f"{self.lab.prefix}-master-{name}",
            "interface": interface,
            "worker_threads": 2,
            "open_mode": False,
            "auto_accept": False,
            **self._dirs(folder),
        }
        if health:
            options["engines"] = [{"ha_health": {"host": "0.0.0.0", "port": self.HEALTH_PORT}}]
        options.update(overrides or {})
        write_yaml(folder / "conf" / "master", options)
        lablib.install_master_keypair(folder / "pki", self.keypair)
        self.masters[name] = {"host": host, "conf": folder / "conf", "id": options["id"], "daemon": None,
                              "folder": folder}
        for minion in self.minions.values():
            self._accept(minion, name)
        return self.masters[name]

    def add_minion(self, minion_id, host, options):
        """Configure (not start) a minion; its key is accepted on every configured master."""
        folder = self.root / f"n{minion_id}"
        config = {"id": minion_id, "retry_dns": 0, **self._dirs(folder), **options}
        write_yaml(folder / "conf" / "minion", config)
        pki = folder / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        import salt.crypt  # pylint: disable=import-outside-toplevel

        salt.crypt.write_keys(str(pki), "minion", 2048)
        minion = {"host": host, "conf": folder / "conf", "id": minion_id, "daemon": None, "folder": folder,
                  "pub": (pki / "minion.pub").read_bytes()}
        self.minions[minion_id] = minion
        for name in self.masters:
            self._accept(minion, name)
        return minion

    def _accept(self, minion, master_name):
        accepted = self.masters[master_name]["folder"] / "pki" / "minions"
        accepted.mkdir(parents=True, exist_ok=True)
        (accepted / minion["id"]).write_bytes(minion["pub"])

    def start_master(self, name, timeout=60):
        """Start master ``name`` in its host's namespace; wait (bounded) until its ret and publish ports listen."""
        master = self.masters[name]
        master["daemon"] = self.lab.spawn(
            master["host"], f"master-{name}", [VENV_BIN / "salt-master", "-c", master["conf"], "-l", "warning"]
        )
        wait_until(
            lambda: self.check_alive(master["daemon"])
            and master["host"].listening(4506) and master["host"].listening(4505),
            timeout, 0.2, f"salt-master {name} listening on 4505/4506",
        )
        return master["daemon"]

    def start_minion(self, minion_id):
        """Start a minion in its host's namespace (the caller waits for it to sign in)."""
        minion = self.minions[minion_id]
        minion["daemon"] = self.lab.spawn(
            minion["host"], f"minion-{minion_id}", [VENV_BIN / "salt-minion", "-c", minion["conf"], "-l", "warning"]
        )
        return minion["daemon"]

    @staticmethod
    def check_alive(daemon):
        """True while ``daemon`` runs; ``RuntimeError`` with its output when it exited."""
        if not daemon.running():
            raise RuntimeError(f"{daemon.name} exited {daemon.popen.returncode}: {daemon.log_text()[-3000:]}")
        return True

    def wait_health(self, name, timeout=60):
        """Wait (bounded) until master ``name``'s ``ha_health`` endpoint listens."""
        master = self.masters[name]
        return wait_until(lambda: self.check_alive(master["daemon"]) and master["host"].listening(self.HEALTH_PORT),
                          timeout, 0.2, f"ha_health of master {name} listening on {self.HEALTH_PORT}")

    def client(self, name):
        """A :class:`MasterClient` next to master ``name`` (started)."""
        master = self.masters[name]
        return MasterClient(self.lab, master["host"], master["conf"], name)

    def minion_log(self, minion_id):
        """The minion's log file so far."""
        try:
            return (self.minions[minion_id]["folder"] / "log").read_text(errors="replace")
        except OSError:
            return ""


class MasterClient:
    """
    ``tests/support/netns_client.py`` in a master's namespace: publishes jobs through
    the master (asynchronously) and streams the master's events (tag, POSIX time
    received, a JSON-able part of the data), read into :attr:`events` by a thread.
    """

    def __init__(self, lab, host, conf, name, start_timeout=60):
        self.name = name
        self.events = []
        self.lines = queue.Queue()
        self.cond = threading.Condition()
        self.daemon = lab.spawn(
            host, f"client-{name}", [sys.executable, CLIENT_SCRIPT, conf],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"netns-client-{name}")
        self.reader.start()
        if not self.wait(lambda e: e["tag"] == "__client_ready", 0, start_timeout):
            raise RuntimeError(f"netns client of master {name} not ready: {self.daemon.log_text()[-3000:]}")

    def _read(self):
        for line in self.daemon.popen.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def publish(self, tgt, fun="test.ping", arg=(), tgt_type="glob"):
        """Publish ``fun`` to ``tgt`` through this master (returns at once)."""
        job = {"tgt": tgt, "fun": fun, "arg": list(arg), "tgt_type": tgt_type}
        self.daemon.popen.stdin.write((json.dumps(job) + "\n").encode())
        self.daemon.popen.stdin.flush()

    def wait(self, predicate, after, timeout):
        """The first event received at or after POSIX time ``after`` matching ``predicate``, or None (bounded)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events:
                    if event["at"] >= after and predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.2))

    def matching(self, predicate, after=0):
        """Every event received at or after ``after`` matching ``predicate`` (no wait)."""
        with self.cond:
            return [event for event in self.events if event["at"] >= after and predicate(event)]

    def first_returns(self, minion_ids, after):
        """``{minion id: POSIX time}`` of the first job return received here from each, at or after ``after``."""
        firsts = {}
        for event in self.matching(lambda e: e["tag"].startswith("salt/job/") and "/ret/" in e["tag"], after):
            minion = event["tag"].rsplit("/ret/", 1)[1]
            if minion in minion_ids and minion not in firsts:
                firsts[minion] = event["at"]
        return firsts

    def quiet(self, seconds, timeout=30):
        """
        Wait (bounded) until no job return or job publication has reached this master for
        ``seconds`` s: nothing of a previous poll is in flight when a fault comes. True when quiet.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.matching(lambda e: e["tag"].startswith("salt/job/"), time.time() - seconds)
            if not last:
                return True
            time.sleep(0.2)
        return False

    def answered(self, minion_ids, after, timeout, every=0.25):
        """
        Publish ``test.ping`` to ``minion_ids`` (one id or a list) every ``every`` s
        until each has returned here (bounded by ``timeout``); ``{minion id: POSIX time
        of its first return received at or after ``after``}`` (missing: no answer).
        """
        ids = [minion_ids] if isinstance(minion_ids, str) else list(minion_ids)
        deadline, published = time.monotonic() + timeout, 0.0
        while True:
            firsts = self.first_returns(ids, after)
            now = time.monotonic()
            if len(firsts) == len(ids) or now >= deadline:
                return firsts
            if now - published >= every:
                self.publish(",".join(i for i in ids if i not in firsts), tgt_type="list")
                published = now
            with self.cond:
                self.cond.wait(min(every, max(0.0, deadline - now)))
