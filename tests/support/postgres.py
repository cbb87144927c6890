"""
A throwaway PostgreSQL server for tests (the shared job store of Salt's ``pgjsonb``).

:func:`running_postgres` runs ``initdb`` and ``pg_ctl`` into a fresh temporary
directory, listening only on 127.0.0.1 on a free port (its unix socket inside that
directory too), creates a database and a role that logs in with a password over TCP,
and creates the tables Salt's ``pgjsonb`` returner needs, read from that returner's
own docstring (so the schema is always the one of the installed Salt). On leaving,
the server is stopped with ``pg_ctl stop`` (or, if that fails, by the postmaster's
pid) and the directory is removed.

``initdb`` refuses to run as root: as root (CI) every server command runs as the
Debian ``postgres`` user through ``runuser``, and the directory belongs to it.
The binaries are found on ``PATH`` or under ``/usr/lib/postgresql/<version>/bin``
(Debian's package ``postgresql``, which ``make test`` installs when missing).

:func:`postgres_or_skip` turns "cannot be had here" into a loud ``pytest.skip``
naming the reason (with ``SALT_HA_REQUIRE_POSTGRES=1``, a failure instead).
:func:`recipe_options` is the master config of ``examples/master.d/job-store-pgjsonb.conf``
pointed at a server, so tests run the recipe users copy.
"""

import contextlib
import dataclasses
import glob
import logging
import os
import pathlib
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import warnings

import psutil

from tests.support import lab as lablib

log = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPE = REPO_ROOT / "examples" / "master.d" / "job-store-pgjsonb.conf"
RECIPE_PREFIX = "returner.pgjsonb."
HOST = "127.0.0.1"
SERVER_OS_USER = "postgres"  # Debian's; initdb refuses root
SUPERUSER = "postgres"
BIN_DIR_GLOB = "/usr/lib/postgresql/*/bin"
COMMAND_TIMEOUT = 120
START_ATTEMPTS = 3  # a free port may be taken between choosing it and binding it
SCHEMA_START = "Use the following Pg database schema:"
SCHEMA_END = "Required python modules"
SERVER_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",  # a test database: speed over durability
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be run here; the message says why and what to install."""


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    """A running server: where it listens and the password-authenticated role and database."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    root: pathlib.Path
    pid: int

    def connect(self):
        """A psycopg2 connection as the role, over TCP with the password."""
        import psycopg2  # pylint: disable=import-outside-toplevel

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.dbname, connect_timeout=5
        )

    def query(self, sql, params=()):
        """All rows of ``sql`` (a short-lived connection)."""
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def __repr__(self):
        return f"PostgresServer({self.host}:{self.port}, db={self.dbname!r}, user={self.user!r}, pid={self.pid})"


def recipe_options(server, path=RECIPE):
    """
    The master options of the job store recipe at ``path`` with ``server``'s host, port
    and password in place of the placeholders (user and database must be the recipe's).
    """
    import salt.utils.yaml  # pylint: disable=import-outside-toplevel

    options = salt.utils.yaml.safe_load(pathlib.Path(path).read_text())
    missing = [name for name in ("host", "port", "pass", "user", "db") if RECIPE_PREFIX + name not in options]
    if missing:
        raise AssertionError(f"{path}: no {', '.join(RECIPE_PREFIX + name for name in missing)}")
    wanted = (options[RECIPE_PREFIX + "user"], options[RECIPE_PREFIX + "db"])
    if wanted != (server.user, server.dbname):
        raise AssertionError(f"{path} names user/db {wanted}, the server has {(server.user, server.dbname)}")
    options.update({RECIPE_PREFIX + "host": server.host, RECIPE_PREFIX + "port": server.port})
    options[RECIPE_PREFIX + "pass"] = server.password
    return options


def _version_key(path):
    """Sort key of a ``/usr/lib/postgresql/<version>/bin`` folder: the numeric version."""
    match = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/", path)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)


def find_bin_dir():
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest Debian one."""
    on_path = shutil.which("initdb")
    candidates = [os.path.dirname(os.path.realpath(on_path))] if on_path else []
    candidates += sorted(glob.glob(BIN_DIR_GLOB), key=_version_key, reverse=True)
    for folder in candidates:
        if all(os.access(os.path.join(folder, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return pathlib.Path(folder)
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in {BIN_DIR_GLOB}: "
        "install the Debian package postgresql (make test does so when run as root)"
    )


def server_account():
    """``(runuser prefix, uid, gid)``: as root, Debian's ``postgres`` user; else this user."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    try:
        account = pwd.getpwnam(SERVER_OS_USER)
    except KeyError as err:
        raise PostgresUnavailable(
            f"running as root and there is no OS user {SERVER_OS_USER!r} to run the server as "
            "(initdb refuses root; the Debian package postgresql creates that user)"
        ) from err
    runuser = shutil.which("runuser")
    if not runuser:
        raise PostgresUnavailable("running as root and runuser (util-linux) is missing: cannot drop to the postgres user")
    return [runuser, "-u", SERVER_OS_USER, "--"], account.pw_uid, account.pw_gid


def import_psycopg2():
    """psycopg2, or :class:`PostgresUnavailable` saying how to install it."""
    try:
        import psycopg2  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise PostgresUnavailable(
            f"psycopg2 is not importable ({err}): pip install -c constraints.txt -e '.[test]' (psycopg2-binary)"
        ) from err
    return psycopg2


def pgjsonb_schema():
    """
    The SQL of the schema in the docstring of Salt's ``pgjsonb`` returner, without its
    ``CREATE DATABASE`` statement (the database is made by :func:`running_postgres`).
    """
    import salt.returners.pgjsonb as pgjsonb  # pylint: disable=import-outside-toplevel

    doc = pgjsonb.__doc__ or ""
    if SCHEMA_START not in doc or SCHEMA_END not in doc.split(SCHEMA_START, 1)[1]:
        raise RuntimeError(
            f"salt/returners/pgjsonb.py ({pgjsonb.__file__}): its docstring no longer holds the schema "
            f"between {SCHEMA_START!r} and {SCHEMA_END!r}"
        )
    block = doc.split(SCHEMA_START, 1)[1].split(SCHEMA_END, 1)[0]
    block = block.replace(".. code-block:: sql", "")
    statements = [statement.strip() for statement in block.split(";")]
    kept = [s for s in statements if s and not re.match(r"(--[^\n]*\n\s*)*CREATE\s+DATABASE\b", s, re.IGNORECASE)]
    return ";\n".join(kept) + ";\n"


class _Runner:
    """Runs server commands as the server's OS user, from a folder that user can enter."""

    def __init__(self, prefix, cwd):
        self.prefix = prefix
        self.cwd = cwd

    def __call__(self, *argv, check=True):
        command = [*self.prefix, *map(str, argv)]
        try:
            proc = subprocess.run(
                command, cwd=self.cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise PostgresUnavailable(f"{command[len(self.prefix)]} failed to run: {err}") from err
        if check and proc.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(command)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-1500:]}"
            )
        return proc


def _make_root(uid, gid):
    """A short temp folder owned by the server's user (socket paths end at 107 bytes)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="sha-pg-"))
    (root / "sock").mkdir()
    for path in (root, root / "sock"):
        os.chown(path, uid, gid)
    root.chmod(0o700)
    return root


def _initdb(run, bin_dir, data):
    run(
        bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync",
        "--auth-local=trust", "--auth-host=scram-sha-256",
    )
    settings = dict(SERVER_SETTINGS, unix_socket_directories=f"'{data.parent / 'sock'}'")
    with open(data / "postgresql.conf", "a", encoding="utf-8") as handle:
        handle.write("\n# tests/support/postgres.py\n")
        handle.writelines(f"{name} = {value}\n" for name, value in settings.items())


def _start(run, bin_dir, data):
    """Start on a free port (a few attempts); ``(port, postmaster pid)``."""
    last_error = None
    for _ in range(START_ATTEMPTS):
        port = lablib.free_port([HOST])
        log_file = data.parent / f"server-{port}.log"
        proc = run(bin_dir / "pg_ctl", "-D", data, "-l", log_file, "-o", f"-p {port}", "-w", "-t", "60", "start",
                   check=False)
        if proc.returncode == 0:
            return port, _postmaster_pid(data)
        last_error = f"pg_ctl start exited {proc.returncode}: {_tail(log_file)}"
        log.warning("PostgreSQL did not start on port %s: %s", port, last_error)
    raise PostgresUnavailable(f"PostgreSQL did not start after {START_ATTEMPTS} attempts; last: {last_error}")


def _tail(path, size=1500):
    try:
        return path.read_text(errors="replace")[-size:].strip()
    except OSError as err:
        return f"(no server log {path}: {err})"


def _postmaster_pid(data):
    """The postmaster's pid, from the first line of ``postmaster.pid``; None when unreadable."""
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _running(pid):
    """True while ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _create_role_and_db(psycopg2, root, port, user, password, dbname):
    """As the superuser over the unix socket (trust): the role, with a password, and its database."""
    conn = psycopg2.connect(host=str(root / "sock"), port=port, user=SUPERUSER, dbname="postgres", connect_timeout=5)
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{user}" LOGIN PASSWORD %s', (password,))
        cur.execute(f'CREATE DATABASE "{dbname}" OWNER "{user}" ENCODING \'UTF8\' TEMPLATE template0')


def _stop(run, bin_dir, data, pid):
    """``pg_ctl stop``; if it fails, SIGQUIT then SIGKILL the postmaster's tree, by pid."""
    pid = pid or _postmaster_pid(data)
    proc = run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "30", "stop", check=False)
    if proc.returncode == 0 or not pid:
        return
    log.warning("pg_ctl stop exited %s (%s); signalling postmaster %s", proc.returncode, proc.stderr.strip(), pid)
    tree = lablib.process_tree_pids(pid)
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        for member in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(member) for member in tree):
            time.sleep(0.1)


@contextlib.contextmanager
def running_postgres(user="salt", dbname="salt"):
    """
    A running :class:`PostgresServer` with the ``pgjsonb`` tables in ``dbname``, owned
    by ``user`` (who logs in over TCP with a random password); stopped and removed on
    leaving. :class:`PostgresUnavailable` when it cannot be had here.
    """
    psycopg2 = import_psycopg2()
    bin_dir = find_bin_dir()
    prefix, uid, gid = server_account()
    root = _make_root(uid, gid)
    run, data, pid = _Runner(prefix, root), root / "data", None
    try:
        started = time.monotonic()
        _initdb(run, bin_dir, data)
        port, pid = _start(run, bin_dir, data)
        password = "pg-" + secrets.token_hex(16)
        _create_role_and_db(psycopg2, root, port, user, password, dbname)
        server = PostgresServer(HOST, port, user, password, dbname, root, pid)
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute(pgjsonb_schema())
            conn.commit()
        log.info("%r ready in %.1f s", server, time.monotonic() - started)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            _stop(run, bin_dir, data, pid)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_or_skip(**kwargs):
    """:func:`running_postgres`, or a loud ``pytest.skip`` naming why it cannot run here."""
    import pytest  # pylint: disable=import-outside-toplevel

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_postgres(**kwargs))
        except PostgresUnavailable as err:
            message = f"PostgreSQL test server unavailable, job store tests NOT run: {err}"
            if os.environ.get("SALT_HA_REQUIRE_POSTGRES") == "1":
                pytest.fail(message)
            warnings.warn(message, pytest.PytestWarning, stacklevel=3)
            pytest.skip(message)
        yield server
