"""A throwaway PostgreSQL cluster for one pytest session.

Used by the ``pg_server`` fixture in ``tests/conftest.py``; usable on its own too::

    with PgServer() as pg:
        url = pg.create_database("demo")   # postgresql+psycopg://postgres@127.0.0.1:PORT/demo
        ...
        pg.drop_database("demo")

How it works (see /work/shared/docs/TESTING_NOTES.md):

* ``initdb`` and ``pg_ctl`` refuse to run as root.  As root, the cluster lives in a
  ``tempfile.mkdtemp`` directory chowned to the ``postgres`` OS user and both tools run via
  ``runuser -u postgres --``.  (pytest's own tmp dirs are 0700 root, postgres cannot enter them.)
  As any other user they run directly.
* Durability is switched off (``--no-sync``, ``fsync=off`` ...): start ≈ 1 s, stop ≈ 0.1 s.
* The server listens on 127.0.0.1 on a free port and on a Unix socket in the same temp directory,
  authentication is ``trust`` for the superuser ``postgres``.
* Per-test databases are copied from ``template0`` with ``STRATEGY FILE_COPY`` (cheapest with
  fsync off) and dropped ``WITH (FORCE)``.

If the server binaries are missing we raise :class:`PgServerError` — never skip silently: the
fix is ``make install`` (which apt-installs ``postgresql``).
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = ["PgServer", "PgServerError", "find_pg_bindir"]

#: Set to a directory holding initdb/pg_ctl to override the search below.
BINDIR_ENV = "PG_BINDIR"

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found under "
    "/usr/lib/postgresql/*/bin (or ${PG_BINDIR}, or PATH). Run `make install` "
    "(it runs scripts/install-system-deps.sh: apt-get install postgresql postgresql-contrib)."
)


class PgServerError(RuntimeError):
    """The throwaway PostgreSQL server could not be found, started or used."""


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin/initdb -> (15,)
    version = Path(path).parent.parent.name
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


def find_pg_bindir() -> Path:
    """Directory with ``initdb`` and ``pg_ctl``: $PG_BINDIR, else the highest
    /usr/lib/postgresql/<version>/bin, else wherever PATH finds initdb."""
    env = os.environ.get(BINDIR_ENV)
    candidates: list[Path] = []
    if env:
        candidates.append(Path(env))
    candidates += [
        Path(p).parent
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    ]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    raise PgServerError(_INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temp directory. ``start()``/``stop()`` or use as a context manager."""

    user = "postgres"
    host = "127.0.0.1"

    def __init__(self, bindir: str | os.PathLike | None = None):
        self.bindir = Path(bindir) if bindir else find_pg_bindir()
        self.port: int | None = None
        self.basedir: Path | None = None
        self._admin: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._as_root = os.geteuid() == 0

    # -- process handling -------------------------------------------------------------------

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            self._cmd(tool, *args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.basedir,  # runuser keeps the cwd; postgres must be able to enter it
        )
        if proc.returncode != 0:
            log = ""
            if self.basedir and (self.basedir / "log").exists():
                log = (self.basedir / "log").read_text(errors="replace")[-3000:]
            raise PgServerError(
                f"{tool} failed (exit {proc.returncode}): {' '.join(proc.args)}\n"
                f"{proc.stdout}{proc.stderr}{log}"
            )

    def start(self) -> "PgServer":
        if self.basedir is not None:
            return self
        if self._as_root:
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PgServerError(
                    "Running as root but there is no `postgres` OS user to own the cluster. "
                    + _INSTALL_HINT
                ) from None
        self.basedir = Path(tempfile.mkdtemp(prefix="crm-pg-"))
        atexit.register(self._cleanup)  # safety net if stop() is never reached
        if self._as_root:
            os.chown(self.basedir, pw.pw_uid, pw.pw_gid)
        data, log = self.basedir / "data", self.basedir / "log"
        self._run(
            "initdb", "-D", str(data), "-A", "trust", "-U", self.user, "-E", "UTF8",
            "--locale=C.UTF-8", "--no-sync", "--no-instructions",
        )
        # A free port can be taken between probing and binding: retry a couple of times.
        last_error: PgServerError | None = None
        for _ in range(3):
            self.port = _free_port()
            opts = (
                f"-p {self.port} -h {self.host} -k {shlex.quote(str(self.basedir))} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", opts, "start")
                break
            except PgServerError as exc:
                last_error = exc
        else:
            self._cleanup()
            raise last_error  # type: ignore[misc]
        return self

    def stop(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        with self._lock:
            if self._admin is not None:
                try:
                    self._admin.close()
                except Exception:
                    pass
                self._admin = None
            basedir, self.basedir = self.basedir, None
        if basedir is None:
            return
        data = basedir / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                self._cmd("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"),
                stdin=subprocess.DEVNULL, capture_output=True, cwd=basedir, timeout=30,
            )
        shutil.rmtree(basedir, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases --------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL for ``dbname`` on this server."""
        self._require_running()
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def _require_running(self) -> None:
        if self.basedir is None:
            raise PgServerError("PgServer is not running; call start() first")

    def _admin_conn(self) -> psycopg.Connection:
        self._require_running()
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(
                host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
            )
        return self._admin

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its SQLAlchemy URL."""
        with self._lock:
            self._admin_conn().execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY").format(
                    sql.Identifier(name)
                )
            )
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` (if it exists), kicking out any connection still using it."""
        with self._lock:
            conn = self._admin_conn()
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def list_databases(self) -> list[str]:
        """Names of all non-template databases (handy for tests of the fixtures themselves)."""
        with self._lock:
            rows = self._admin_conn().execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname"
            ).fetchall()
        return [r[0] for r in rows]
