"""
A two-master failover lab on loopback, built with pytest-salt-factories.

Used by the integration tests (through fixtures) and by ``make demo``.

Topology, as an operator would run it: masters A and B on separate loopback
addresses (127.0.0.1, 127.0.0.2) with identical ports (Salt's defaults when they
are free, else one free pair shared by both), one shared master key pair (Salt
needs one ``master.pem`` for failover without signing), minions configured with
``master: [A, B]`` and ``master_type: failover``.

Keys are accepted only where a test allows it (:class:`KeyPolicy`): salt-factories
would otherwise accept every pending key on every master it manages, which hides
the commonest failover bug (key pending on B).
"""

import concurrent.futures
import contextlib
import logging
import os
import pathlib
import signal
import socket
import sys
import time

import psutil
import salt.crypt

log = logging.getLogger(__name__)

UTILS_DIR = pathlib.Path(__file__).resolve().parents[2] / "_utils"
LOOPBACK_A = "127.0.0.1"
LOOPBACK_B = "127.0.0.2"
SALT_DEFAULT_PORTS = (4505, 4506)  # publish, ret


START_CHECK_POLL = 0.2  # seconds between two looks for a starting daemon's start event or port


class _QuickPollTime:
    """A ``time`` module whose ``sleep`` is capped at :data:`START_CHECK_POLL`."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        return getattr(self.module, name)

    @staticmethod
    def sleep(seconds):
        time.sleep(min(seconds, START_CHECK_POLL))


def quick_start_checks():
    """
    Make salt-factories look for a starting daemon's start event (and salt-api's
    port) every 0.2 s instead of every 1.5 s: a daemon whose event comes after 1.6 s
    was otherwise called started after 3 s. The checks are the same; only the
    pauses between two looks are shorter (the only sleeps in those two modules are
    such pauses). Applied when this module is imported.
    """
    # Deferred: they import pytest plugins. These are private internals of the installed
    # versions: when a module no longer has its own ``time``, the checks keep their pace.
    import pytestshellutils.shell  # pylint: disable=import-outside-toplevel
    import saltfactories.bases  # pylint: disable=import-outside-toplevel

    for module in (saltfactories.bases, pytestshellutils.shell):
        current = getattr(module, "time", None)
        if isinstance(current, _QuickPollTime):
            continue
        if callable(getattr(current, "sleep", None)):  # their own time module (pytestshellutils.utils.time)
            module.time = _QuickPollTime(current)
        else:
            log.warning("salt-factories start checks not sped up: %s has no time module of its own", module.__name__)


quick_start_checks()


def port_is_free(ip, port):
    """True when ``ip:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def free_port(ips, attempts=50):
    """A port free on every address in ``ips`` (bounded number of attempts)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((ips[0], 0))
            port = sock.getsockname()[1]
        if all(port_is_free(ip, port) for ip in ips):
            return port
    raise RuntimeError(f"no port free on all of {ips} after {attempts} attempts")


def shared_ports(ips):
    """
    ``(publish_port, ret_port)`` free on every master address: Salt's defaults if
    possible. ``SALT_HA_LAB_RANDOM_PORTS=1`` skips the defaults (several labs at once).
    """
    prefer_defaults = os.environ.get("SALT_HA_LAB_RANDOM_PORTS") != "1"
    if prefer_defaults and all(port_is_free(ip, port) for ip in ips for port in SALT_DEFAULT_PORTS):
        return SALT_DEFAULT_PORTS
    return random_shared_ports(ips)


def random_shared_ports(ips, attempts=20):
    """``(publish_port, ret_port)``: two different ports free on every address in ``ips``, never Salt's defaults."""
    publish = free_port(ips)
    for _ in range(attempts):
        ret = free_port(ips)
        if ret != publish:
            return publish, ret
    raise RuntimeError(f"no second free port on all of {ips} after {attempts} attempts")


def make_keypair(folder, name="master"):
    """Generate an RSA key pair ``<name>.pem``/``<name>.pub`` in ``folder``; return both paths."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    salt.crypt.write_keys(str(folder), name, 2048)
    return folder / f"{name}.pem", folder / f"{name}.pub"


def install_master_keypair(pki_dir, keypair):
    """Place a key pair as ``master.pem``/``master.pub`` in an (empty) master pki dir."""
    pki_dir = pathlib.Path(pki_dir)
    pki_dir.mkdir(parents=True, exist_ok=True)
    pem, pub = keypair
    (pki_dir / "master.pem").write_bytes(pathlib.Path(pem).read_bytes())
    os.chmod(pki_dir / "master.pem", 0o400)
    (pki_dir / "master.pub").write_bytes(pathlib.Path(pub).read_bytes())


def process_tree_pids(pid):
    """``pid`` and every descendant's pid (the master forks its workers)."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def signal_tree(factory, sig):
    """Send ``sig`` to a daemon's whole process tree, by pid; return the pids signalled."""
    pids = process_tree_pids(factory.pid) if factory.pid else []
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def freeze(factory):
    """SIGSTOP a daemon and all its processes: TCP connections stay ESTABLISHED (a hung host)."""
    return signal_tree(factory, signal.SIGSTOP)


def thaw(factory):
    """SIGCONT what :func:`freeze` stopped."""
    return signal_tree(factory, signal.SIGCONT)


@contextlib.contextmanager
def frozen(factory):
    """:func:`freeze` ``factory`` for the block, then :func:`thaw` it, whatever happens."""
    freeze(factory)
    try:
        yield factory
    finally:
        thaw(factory)


def kill(factory):
    """SIGKILL a daemon's whole process tree (its sockets close), then reset the factory."""
    pids = signal_tree(factory, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and _alive(p) for p in pids):
        time.sleep(0.05)
    terminate(factory)
    return pids


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class KeyPolicy:
    """Accept a pending minion key on a master only where a test allowed it."""

    def __init__(self):
        self.allowed = set()

    def allow(self, master_id, minion_id):
        """Accept ``minion_id`` on ``master_id`` when its key shows up pending there."""
        self.allowed.add((master_id, minion_id))

    def on_auth_event(self, master, payload):
        """salt-factories' auth event hook (``on_auth_event_callback``)."""
        if payload.get("act") != "pend" or (master.id, payload["id"]) not in self.allowed:
            return
        ret = master.salt_key_cli().run("--yes", "--accept", payload["id"])
        if ret.returncode != 0:
            log.error("Accepting %s on %s failed: %s", payload["id"], master.id, ret.stderr)


def master_overrides(ip, ports):
    """Master options: listen on ``ip`` with the shared ports."""
    publish, ret = ports
    return {
        "interface": ip,
        "publish_port": publish,
        "ret_port": ret,
        "open_mode": False,
        "auto_accept": False,
    }


def minion_failover_overrides(ips, ports, alive_interval=None):
    """
    Minion options for ``master: [A, B]`` failover: what ha.lint asks of the master
    list, with short sign-in settings that make a test's failures show fast
    (``master_tries: 1`` exits after one failed round: ha.lint warns about it in
    production, HA803).
    """
    publish, ret = ports
    overrides = {
        "master": list(ips),
        "master_type": "failover",
        "master_port": ret,
        "publish_port": publish,
        "retry_dns": 0,
        "random_master": False,
        "auth_timeout": 5,
        "auth_tries": 1,
        "master_tries": 1,
    }
    if alive_interval:
        overrides["master_alive_interval"] = alive_interval
    return overrides


class Lab:
    """Masters A and B (shared key pair, identical ports) and failover minions."""

    def __init__(self, factories, root, ips=(LOOPBACK_A, LOOPBACK_B), ports=None):
        self.factories = factories
        self.root = pathlib.Path(root)
        self.ips = tuple(ips)
        self.ports = ports or shared_ports(self.ips)
        self.keypair = make_keypair(self.root / "shared-master-key")
        self.keys = KeyPolicy()
        self.masters = {}
        self.minions = {}

    def add_master(self, name, ip, keypair=None, overrides=None):
        """Configure (not start) a master listening on ``ip``."""
        options = master_overrides(ip, self.ports)
        options.update(overrides or {})
        factory = self.factories.salt_master_daemon(
            f"ha-master-{name}",
            overrides=options,
            on_auth_event_callback=self.keys.on_auth_event,
        )
        install_master_keypair(factory.config["pki_dir"], keypair or self.keypair)
        factory.after_start(wait_until_answering, [factory])  # every start: the first and any restart
        self.masters[name] = factory
        return factory

    def add_failover_minion(self, minion_id, accept_on=("a", "b"), alive_interval=2, overrides=None):
        """
        Configure (not start) a failover minion whose key is already accepted on the
        masters in ``accept_on`` (as in production, where keys are synced before a
        master fails) and accepted there again if it shows up pending.
        """
        first = self.masters["a"]
        options = minion_failover_overrides(self.ips, self.ports, alive_interval)
        options.update(overrides or {})
        factory = first.salt_minion_daemon(minion_id, overrides=options)
        self.seed_minion_key(factory, accept_on)
        for name in accept_on:
            self.keys.allow(self.masters[name].id, minion_id)
        self.minions[minion_id] = factory
        return factory

    def seed_minion_key(self, minion, accept_on):
        """Give ``minion`` a key pair now and place its public key as accepted on ``accept_on``."""
        pki_dir = pathlib.Path(minion.config["pki_dir"])
        pki_dir.mkdir(parents=True, exist_ok=True)
        if not (pki_dir / "minion.pem").exists():
            salt.crypt.write_keys(str(pki_dir), "minion", 2048)
        public = (pki_dir / "minion.pub").read_bytes()
        for name in accept_on:
            accepted = pathlib.Path(self.masters[name].config["pki_dir"]) / "minions"
            accepted.mkdir(parents=True, exist_ok=True)
            (accepted / minion.id).write_bytes(public)


class StandaloneFactories:
    """
    salt-factories outside pytest (``make demo``, ``bench/``): an event listener, a
    log server and a FactoriesManager rooted in ``root``. Use as a context manager;
    leaving it stops the listener and the log server (daemons are stopped by
    whoever started them).
    """

    def __init__(self, root, log_level="error", event_seconds=120):
        """``event_seconds``: how long forwarded events stay in the listener's store."""
        self.root = pathlib.Path(root)
        self.log_level = log_level
        self.event_seconds = event_seconds
        self.event_listener = None
        self.log_server = None
        self.manager = None

    def __enter__(self):
        # Deferred: these import pytest plugins, needed only here.
        from saltfactories.manager import FactoriesManager  # pylint: disable=import-outside-toplevel
        from saltfactories.plugins.event_listener import EventListener  # pylint: disable=import-outside-toplevel
        from saltfactories.plugins.log_server import LogServer  # pylint: disable=import-outside-toplevel

        self.root.mkdir(parents=True, exist_ok=True)
        self.event_listener = EventListener(timeout=self.event_seconds)
        self.event_listener.__enter__()
        self.log_server = LogServer(log_host="127.0.0.1", log_level=self.log_level)
        self.log_server.start()
        self.manager = FactoriesManager(
            root_dir=self.root,
            log_server_host=self.log_server.log_host,
            log_server_port=self.log_server.log_port,
            log_server_level=self.log_level,
            event_listener=self.event_listener,
            start_timeout=60,
        )
        return self

    def __exit__(self, *exc):
        if self.log_server is not None:
            self.log_server.stop()
        if self.event_listener is not None:
            self.event_listener.__exit__(*exc)


class RunningDaemons:
    """
    Start factories in order; stop every one that started (also on error).

    Neighbours that may start together do (:func:`start_waves`: the masters and
    their salt-apis, then the minions, once every master answers a ping). Leaving
    the block SIGKILLs them all at once (:func:`kill_all`): nothing is tested on the
    way down, and a SIGTERM stop costs seconds per daemon. ``graceful=True`` stops
    them one by one, in reverse, with SIGTERM, for a test whose scenario is the stop.
    """

    def __init__(self, factories, graceful=False, one_by_one=False):
        """``one_by_one=True``: start each daemon only once the one before it runs (as a cluster's masters need)."""
        self.factories = list(factories)
        self.graceful = graceful
        self.one_by_one = one_by_one
        self.started = []

    def __enter__(self):
        try:
            waves = [[factory] for factory in self.factories] if self.one_by_one else start_waves(self.factories)
            for wave in waves:
                if _is_minion(wave[0]):
                    wait_until_answering([f for f in self.started if _is_master(f)])
                self._start_together(wave)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_together(self, wave):
        errors = []
        if len(wave) == 1:
            try:
                wave[0].start()
            except Exception as err:  # noqa: BLE001 (raised below, once the factory is accounted for)
                errors.append(err)
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(wave)) as pool:
                futures = [pool.submit(factory.start) for factory in wave]
            errors = [future.exception() for future in futures if future.exception() is not None]
        # Also one whose after-start check failed: it runs, so it must be stopped.
        self.started.extend(factory for factory in wave if factory.is_running())
        if errors:
            raise errors[0]

    def __exit__(self, *exc):
        if self.graceful:
            for factory in reversed(self.started):
                thaw(factory)  # a frozen daemon cannot be terminated cleanly
                terminate(factory)
        else:
            kill_all(reversed(self.started))
        self.started = []


def start_waves(factories):
    """
    ``factories`` cut, in order, into runs that may start together: neighbouring
    minions, or neighbouring servers (masters and salt-apis: a salt-api needs no
    running master to start). A minion signs in to a running master, so a run of
    minions starts only once the servers before it run.
    """
    waves = []
    for factory in factories:
        if waves and _is_minion(waves[-1][-1]) == _is_minion(factory):
            waves[-1].append(factory)
        else:
            waves.append([factory])
    return waves


def _is_minion(factory):
    from saltfactories.daemons.minion import SaltMinion  # pylint: disable=import-outside-toplevel

    return isinstance(factory, SaltMinion)


def _is_master(factory):
    from saltfactories.daemons.master import SaltMaster  # pylint: disable=import-outside-toplevel

    return isinstance(factory, SaltMaster)


def wait_until_answering(masters, seconds=60):
    """
    Bounded: until the request server of every master answers a ping
    (``ha_probe.app_ping``). salt-factories calls a master started when its event
    bus is up; its request server workers answer a few seconds later, and a minion
    signing in before then may give up on it (``auth_timeout``).
    """
    if str(UTILS_DIR) not in sys.path:  # as Salt's loader makes _utils importable (tests/conftest.py does too)
        sys.path.insert(0, str(UTILS_DIR))
    import ha_probe  # pylint: disable=import-outside-toplevel

    for master in masters:
        address, port = master.config["interface"], master.config["ret_port"]
        transport = master.config.get("transport", "zeromq")
        deadline = time.monotonic() + seconds
        while True:
            try:
                ha_probe.app_ping(address, port, 2, transport, None)
                break
            except (OSError, TimeoutError) as err:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"{master.id}: no answer to a ping on {address}:{port} within {seconds} s") from err
                time.sleep(0.1)


def kill_all(factories, seconds=10):
    """
    SIGKILL several daemons' whole process trees at once, then reset the factories.
    Each tree is SIGSTOPped first and listed again for the SIGKILL, so a process it
    forks meanwhile is caught too. Waits (bounded) until every process is gone.
    """
    factories = list(factories)
    for factory in factories:
        freeze(factory)
    pids = [pid for factory in factories for pid in signal_tree(factory, signal.SIGKILL)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for factory in factories:
        terminate(factory)
    return pids


def bring_back(lab, seconds=30):
    """
    Undo a test's kills in a lab shared by several tests: start every master that
    is not running and, when one had to be started, restart every minion (a
    failover minion stays on the master it moved to) and check that each answers
    through master ``a`` again (bounded). Returns the names of the masters started;
    with none, nothing is done or checked.
    """
    started = [name for name, master in lab.masters.items() if not master.is_running()]
    if not started:
        return []
    for name in started:
        lab.masters[name].start()  # Lab.add_master: it answers a ping when this returns
    minions = list(lab.minions.values())
    kill_all(minions)
    for minion in minions:
        minion.start()
        if answers_through(lab.masters["a"], minion.id, seconds) is None:
            raise RuntimeError(f"{minion.id} does not answer through master a after the lab was brought back")
    return started


def terminate(factory, attempts=3):
    """
    ``factory.terminate()``, again when it fails because some process ended while
    pytest-shell-utilities looked at it: to find leftovers listening on the daemon's
    ports it reads the connections of every process on the machine, and one that
    exits meanwhile raises ``psutil.NoSuchProcess``.
    """
    for attempt in range(1, attempts + 1):
        try:
            return factory.terminate()
        except psutil.NoSuchProcess:
            if attempt == attempts:
                raise
            log.warning("Terminating %s: a process ended during the port scan; trying again", factory)
    return None


def two_master_lab(factories, root, minion_id, alive_interval=2, minion_overrides=None, accept_on=("a", "b")):
    """Masters A (127.0.0.1) and B (127.0.0.2) and one failover minion; not started."""
    lab = Lab(factories, root)
    lab.add_master("a", LOOPBACK_A)
    lab.add_master("b", LOOPBACK_B)
    lab.add_failover_minion(
        minion_id, accept_on=accept_on, alive_interval=alive_interval, overrides=minion_overrides
    )
    return lab


def wait_for(condition, seconds, what, step=0.1):
    """Bounded: call ``condition`` until its value is truthy and return that value; AssertionError naming ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(step)


def answers_through(master, minion_id, seconds, timeout=3):
    """Bounded: ``test.ping`` through ``master`` until the minion answers; seconds taken or None."""
    started = time.monotonic()
    cli = master.salt_cli(timeout=timeout + 5)
    while time.monotonic() - started < seconds:
        ret = cli.run("test.ping", minion_tgt=minion_id, _timeout=timeout)
        if ret.returncode == 0 and ret.data is True:
            return time.monotonic() - started
        time.sleep(0.3)
    return None


def daemons(lab):
    """A lab's daemons in start order: masters first."""
    return [*lab.masters.values(), *lab.minions.values()]
