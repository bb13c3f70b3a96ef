"""Real servers on loopback for the production-profile tests, started from Debian's packages (.ci/run installs
them). A missing server binary fails the test that needs it: CI is expected to provide it."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([path] if (path := shutil.which(name)) else [])
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian package postgresql; .ci/run installs it)")
    return found[-1]


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables deploy/production/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db,
        }

    def connect(self):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.db)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """initdb + pg_ctl on 127.0.0.1:<free port>, password authentication, one database; removed afterwards.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user."""
    as_root = os.geteuid() == 0
    owner = pwd.getpwnam("postgres") if as_root else None
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    data, sockets, pwfile = root / "data", root / "sock", root / "pw"
    sockets.mkdir()
    pwfile.write_text("dagster-test\n")
    if owner:
        for path in (root, sockets, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    prefix = ["runuser", "-u", "postgres", "--"] if owner else []
    port = free_port()

    def run(*command: str) -> None:
        result = subprocess.run(prefix + list(command), capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")

    run(
        _postgres_bin("initdb"),
        "-D",
        str(data),
        "-U",
        "dagster",
        "--pwfile",
        str(pwfile),
        "-A",
        "scram-sha-256",
        "-E",
        "UTF8",
        "--no-sync",
    )
    run(
        _postgres_bin("pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "server.log"),
        "-w",
        "-t",
        "60",
        "start",
        "-o",
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
    )
    try:
        server = Postgres("127.0.0.1", port, "dagster", "dagster-test", "postgres")
        with contextlib.closing(server.connect()) as con:
            con.autocommit = True
            con.cursor().execute("CREATE DATABASE dagster")
        yield Postgres("127.0.0.1", port, "dagster", "dagster-test", "dagster")
    finally:
        subprocess.run(
            prefix + [_postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)
