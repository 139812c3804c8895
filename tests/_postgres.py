"""A throwaway PostgreSQL server for the tests, from the binaries installed on the machine.

:class:`PostgresServer` runs ``initdb`` and ``pg_ctl`` (found on ``PATH`` or under
``/usr/lib/postgresql/*/bin``, as Debian's ``postgresql`` package installs them) on a
data directory in a temporary directory, listening on a free loopback port and a
private socket directory, with ``fsync=off`` (a test database). Both programs refuse to
run as root: as root they run as the ``postgres`` user (``runuser``). Importing this
module starts nothing; :func:`missing_reason` says why a server cannot be started here
(the tests then skip with that reason).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "missing_reason"]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _run_as() -> list[str]:
    """The prefix that runs a PostgreSQL program as a non-root user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def missing_reason() -> str | None:
    """Why no PostgreSQL server can be started here (``None``: it can)."""
    for name in ("initdb", "pg_ctl"):
        if _binary(name) is None:
            return (
                f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql; "
                ".ci/run installs it)"
            )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed: pip install 'l2l-tune[postgresql]'"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in a fresh temporary directory (its own: the ``postgres`` user
    cannot enter pytest's, which belong to root with mode 0700); :meth:`start`,
    :meth:`restart`, :meth:`stop`, :meth:`remove`.

    Attributes:
        url: The SQLAlchemy URL of its database ``l2l`` (user ``postgres``, trust auth).
    """

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="l2l-tune-postgres-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/l2l"
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        assert initdb is not None and pg_ctl is not None, missing_reason()
        self._initdb, self._pg_ctl = initdb, pg_ctl

    def _run(self, *command: str) -> None:
        result = subprocess.run([*_run_as(), *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}\n{log[-2000:]}"
            )

    def start(self) -> PostgresServer:
        """``initdb`` (the first time), start the server and create the database."""
        if not self.data.exists():
            self.sockets.mkdir(parents=True, exist_ok=True)
            self.data.mkdir(parents=True)
            if os.geteuid() == 0:
                entry = pwd.getpwnam("postgres")
                for path in (self.base, self.data, self.sockets):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            self._run(
                self._initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            )
            self._pg_ctl_start()
            self._sql("CREATE DATABASE l2l")
        else:
            self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=100"
        )
        self._run(
            self._pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def _sql(self, statement: str) -> None:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def restart(self) -> None:
        """Stop the server (``-m fast``: open connections are cut) and start it again."""
        self.stop()
        self._pg_ctl_start()

    def stop(self) -> None:
        """Stop the server (``-m fast``)."""
        self._run(self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
