"""
Unit tests for ha_connection: which master a real process is connected to.

The "minion daemon" is a child Python process that connects to a TCP server this
test opens on 127.0.0.1 and sleeps; its pid goes into a pidfile.
"""

import json
import os
import pathlib
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import ha_connection

LOCALHOST = "127.0.0.1"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

CONNECT_AND_SLEEP = """
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
print("connected", flush=True)
time.sleep(30)
"""

FORK_AND_CONNECT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print("grandchild", child.pid, flush=True)
child.wait(30)
"""


def read_lines(proc, count, timeout=10):
    """``count`` lines from ``proc``'s stdout, waiting at most ``timeout`` seconds."""
    lines = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(lines) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"child {proc.pid} said only {lines!r}"
            if selector.select(left):
                line = proc.stdout.readline()
                assert line, f"child {proc.pid} exited early with {proc.poll()}"
                lines.append(line.strip())
    return lines


@pytest.fixture
def tcp_server():
    """A listening TCP socket on 127.0.0.1; returns its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def spawn():
    """Factory: start a Python child; it (and any pid registered) is killed by pid at teardown."""
    procs, extra_pids = [], []

    def start(code, *args):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        return proc

    start.also_kill = extra_pids.append
    yield start
    for pid in extra_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        proc.kill()
        proc.wait(5)
        proc.stdout.close()


@pytest.fixture
def connected_child(spawn, tcp_server):
    """A child process with an ESTABLISHED connection to ``tcp_server``."""
    proc = spawn(CONNECT_AND_SLEEP, tcp_server)
    assert read_lines(proc, 1) == ["connected"]
    return proc


def write_pidfile(tmp_path, content):
    pidfile = tmp_path / "salt-minion.pid"
    pidfile.write_text(str(content))
    return str(pidfile)


def master(name, ret_port, publish_port=4505, addresses=(LOCALHOST,)):
    return {
        "master": name,
        "addresses": list(addresses),
        "ret_port": ret_port,
        "publish_port": publish_port,
        "up": True,
        "connected": False,
    }


@pytest.fixture
def dead_pid(spawn):
    proc = spawn("pass")
    proc.wait(10)
    return proc.pid


# --- normalize_ip -------------------------------------------------------------


@pytest.mark.parametrize(
    "address,normal",
    [
        ("127.10.0.1", "127.10.0.1"),
        ("::ffff:127.10.0.1", "127.10.0.1"),
        ("::FFFF:127.0.0.1", "127.0.0.1"),
        ("::ffff:7f0a:1", "127.10.0.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("fe80:0::1%2", "fe80::1"),
        ("garbage", "garbage"),
        ("m1.example.com", "m1.example.com"),
        ("", ""),
        ("127.10.0.256", "127.10.0.256"),
    ],
)
def test_normalize_ip(address, normal):
    assert ha_connection.normalize_ip(address) == normal


# --- is_connected -------------------------------------------------------------


@pytest.mark.parametrize(
    "addresses,remotes,connected",
    [
        (["127.10.0.1"], {("127.10.0.1", 4506)}, False),  # ret port only: a probe, a leftover request socket
        (["127.10.0.1"], {("127.10.0.1", 4505)}, True),
        (["127.10.0.1"], {("127.10.0.1", 4507)}, False),  # same IP, other port
        (["127.10.0.1"], {("127.10.0.2", 4506)}, False),  # same port, other IP
        (["127.10.0.1"], {("127.10.0.1", 22), ("127.10.0.2", 4506)}, False),
        (["127.10.0.1"], set(), False),
        ([], {("127.10.0.1", 4506)}, False),
        (["127.10.0.2", "127.10.0.1"], {("127.10.0.1", 4505)}, True),
        (["::ffff:127.10.0.1"], {("127.10.0.1", 4505)}, True),
        (["2001:DB8::1"], {("2001:db8::1", 4505)}, True),
        (["fe80::1%eth0"], {("fe80::1", 4505)}, True),
    ],
)
def test_is_connected(addresses, remotes, connected):
    entry = master("m1", 4506, 4505, addresses)
    assert ha_connection.is_connected(entry, remotes) is connected


# --- read_pid -----------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "abc", "12x", "1.5", "\n"])
def test_read_pid_garbage(tmp_path, content):
    assert ha_connection.read_pid(write_pidfile(tmp_path, content)) is None


def test_read_pid_missing_file(tmp_path):
    assert ha_connection.read_pid(str(tmp_path / "missing.pid")) is None


def test_read_pid_none():
    assert ha_connection.read_pid(None) is None


def test_read_pid_dead_process(tmp_path, dead_pid):
    assert ha_connection.read_pid(write_pidfile(tmp_path, dead_pid)) is None


def test_read_pid_running_process(tmp_path):
    assert ha_connection.read_pid(write_pidfile(tmp_path, f" {os.getpid()}\n")) == os.getpid()


# --- established_remotes, mark_connected with a real process ------------------


def test_established_remotes_of_a_real_process(connected_child, tcp_server):
    remotes = ha_connection.established_remotes(ha_connection.process_tree(connected_child.pid))
    assert (LOCALHOST, tcp_server) in remotes


def test_mark_connected(tmp_path, connected_child, tcp_server):
    pidfile = write_pidfile(tmp_path, connected_child.pid)
    entries = [
        master("same-ip-other-ports", tcp_server + 1, tcp_server + 2),
        master("other-ip", 4506, tcp_server, addresses=["127.10.0.1"]),
        master("via-ret-port-only", tcp_server, tcp_server + 1),
        master("target", 4506, tcp_server),
        master("v4-mapped", 4506, tcp_server, addresses=["::ffff:127.0.0.1"]),
    ]
    assert ha_connection.mark_connected(entries, pidfile) == "target"
    assert {e["master"]: e["connected"] for e in entries} == {
        "same-ip-other-ports": False,
        "other-ip": False,
        "via-ret-port-only": False,
        "target": True,
        "v4-mapped": True,
    }


def test_mark_connected_finds_a_forked_process(tmp_path, spawn, tcp_server):
    parent = spawn(FORK_AND_CONNECT, CONNECT_AND_SLEEP, tcp_server)
    lines = read_lines(parent, 2)
    grandchild = int(next(line for line in lines if line.startswith("grandchild")).split()[1])
    spawn.also_kill(grandchild)
    assert "connected" in lines
    entries = [master("m1", 4506, tcp_server + 1), master("m2", 4506, tcp_server)]
    assert ha_connection.mark_connected(entries, write_pidfile(tmp_path, parent.pid)) == "m2"
    assert [e["connected"] for e in entries] == [False, True]


def test_mark_connected_daemon_not_connected(tmp_path, spawn, tcp_server):
    idle = spawn("import time; print('idle', flush=True); time.sleep(30)")
    assert read_lines(idle, 1) == ["idle"]
    entries = [master("m1", tcp_server), master("m2", tcp_server + 1)]
    assert ha_connection.mark_connected(entries, write_pidfile(tmp_path, idle.pid)) is None
    assert [e["connected"] for e in entries] == [False, False]


@pytest.mark.parametrize("pidfile", ["missing", "dead", "garbage", None])
def test_mark_connected_falls_back_to_the_calling_process(tmp_path, tcp_server, dead_pid, pidfile):
    # Without a running daemon in the pidfile, the calling process (a call run inside
    # the daemon) is what counts: here, this test's own connection.
    path = {
        "missing": str(tmp_path / "missing.pid"),
        "dead": write_pidfile(tmp_path, dead_pid),
        "garbage": write_pidfile(tmp_path, "abc"),
        None: None,
    }[pidfile]
    entries = [master("m1", 4506, tcp_server)]
    assert ha_connection.mark_connected(entries, path) is None
    with socket.create_connection((LOCALHOST, tcp_server), timeout=5):
        assert ha_connection.mark_connected(entries, path) == "m1"
    assert entries[0]["connected"] is True


# --- a daemon that cannot be read is not "no daemon" ----------------------------


def test_read_pid_of_a_pidfile_that_cannot_be_read_names_the_path_and_the_error(tmp_path):
    pidfile = tmp_path / "salt-minion.pid"
    pidfile.mkdir()  # an OSError that is not "no such file"; root reads any file
    with pytest.raises(ha_connection.DaemonUnreadable) as err:
        ha_connection.read_pid(str(pidfile))
    assert str(err.value) == f"cannot read the salt-minion pidfile {str(pidfile)!r}: IsADirectoryError: Is a directory"
    assert isinstance(err.value.__cause__, IsADirectoryError)


def test_read_pid_under_a_file_is_no_daemon(tmp_path):
    assert ha_connection.read_pid(write_pidfile(tmp_path, "1") + "/salt-minion.pid") is None


@pytest.mark.parametrize("pidfile", [["/run/salt-minion.pid"], 4506])
def test_read_pid_of_a_pidfile_option_that_is_not_a_path(pidfile):
    with pytest.raises(ha_connection.DaemonUnreadable, match=f"^the pidfile option {re.escape(repr(pidfile))} is not a path$"):
        ha_connection.read_pid(pidfile)


@pytest.mark.parametrize("content", ["0", "-1", "2147483648", str(10**30), "\xff\xfe"])
def test_read_pid_without_a_usable_pid(tmp_path, content):
    pidfile = tmp_path / "salt-minion.pid"
    pidfile.write_bytes(content.encode("latin-1"))
    assert ha_connection.read_pid(str(pidfile)) is None


def test_read_pid_logs_garbage_escaped(tmp_path, caplog):
    pidfile = write_pidfile(tmp_path, "12x\nWARNING forged line")
    with caplog.at_level("DEBUG", logger="ha_connection"):
        assert ha_connection.read_pid(pidfile) is None
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == f"The salt-minion pidfile {pidfile!r} holds no pid: '12x\\nWARNING forged line'"


def test_process_tree_of_a_process_that_is_gone_is_empty(dead_pid):
    assert ha_connection.process_tree(dead_pid) == []


def test_mark_connected_with_an_unreadable_pidfile_raises_and_marks_nothing(tmp_path, tcp_server):
    pidfile = tmp_path / "salt-minion.pid"
    pidfile.mkdir()
    entries = [master("m1", 4506, tcp_server)]
    with socket.create_connection((LOCALHOST, tcp_server), timeout=5):
        with pytest.raises(ha_connection.DaemonUnreadable, match="IsADirectoryError"):
            ha_connection.mark_connected(entries, str(pidfile))
    assert entries[0]["connected"] is False


AS_ANOTHER_USER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import ha_connection  # as root: the interpreter may live where nobody cannot read
os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # from here on: nobody, no capabilities
result = {}
try:
    result["read_pid"] = ha_connection.read_pid(sys.argv[2])
except ha_connection.DaemonUnreadable as err:
    result["read_pid"] = str(err)
entries = [{"master": "m1", "addresses": ["127.0.0.1"], "ret_port": int(sys.argv[4]), "publish_port": 1}]
try:
    result["mark_connected"] = ha_connection.mark_connected(entries, sys.argv[3])
except ha_connection.DaemonUnreadable as err:
    result["mark_connected"] = str(err)
print(json.dumps(result))
"""


@pytest.fixture
def readable_dir():
    """A directory every user can read (tmp_path's parents are private to root)."""
    path = tempfile.mkdtemp(prefix="sha-conn-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_a_salt_call_as_another_user_than_the_daemon_is_told_why_it_cannot_tell(
    tmp_path, readable_dir, connected_child, tcp_server
):
    # The usual case: a root daemon, a salt-call as a user. The pidfile may be
    # private (permission denied) or readable, but the daemon's sockets are not.
    private = write_pidfile(tmp_path, connected_child.pid)
    readable = readable_dir / "salt-minion.pid"
    readable.write_text(str(connected_child.pid))
    readable.chmod(0o644)
    child = subprocess.run(
        [sys.executable, "-c", AS_ANOTHER_USER, str(REPO_ROOT / "_utils"), private, str(readable), str(tcp_server)],
        cwd="/", capture_output=True, text=True, timeout=60, check=False,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["read_pid"] == f"cannot read the salt-minion pidfile {private!r}: PermissionError: Permission denied"
    assert result["mark_connected"].startswith(
        f"cannot read the TCP connections of the salt-minion process {connected_child.pid}: AccessDenied"
    )
    # The same call as root sees the connection.
    entries = [master("m1", 4506, tcp_server)]
    assert ha_connection.mark_connected(entries, str(readable)) == "m1"


# --- process_remotes: one process, not its children ----------------------------


def test_process_remotes_reads_one_process_not_its_children(spawn, tcp_server, dead_pid):
    parent = spawn(FORK_AND_CONNECT, CONNECT_AND_SLEEP, tcp_server)
    lines = read_lines(parent, 2)
    grandchild = int(next(line for line in lines if line.startswith("grandchild")).split()[1])
    spawn.also_kill(grandchild)
    assert (LOCALHOST, tcp_server) in ha_connection.process_remotes(grandchild)
    assert (LOCALHOST, tcp_server) not in ha_connection.process_remotes(parent.pid)
    assert ha_connection.process_remotes(dead_pid) == set()
