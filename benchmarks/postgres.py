"""A throwaway PostgreSQL server: initdb in a temp dir, trust auth for one address range only.

Tests start one on loopback (tests/support/postgres.py); the multi-host tests and
``fedrt bench failover`` start one inside a LAN host (``lan.Host``), listening on that host's
address, by passing the host's ``argv`` (every command then runs in its namespace). ``initdb``
refuses to run as root, so a root run hands the cluster to the ``postgres`` OS user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedrt.coordinator.broker.mosquitto import free_port

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bin_dir", "start_postgres"]

OS_USER = "postgres"
_TIMEOUT_S = 60

Argv = Callable[[Sequence[str]], list[str]]


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed here (no /usr/lib/postgresql/*/bin/initdb)."""


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin directory holding ``initdb``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    return Path(found[-1]).parent if found else None


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _here(command: Sequence[str]) -> list[str]:
    return list(command)


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running cluster: superuser ``postgres``, trust auth from ``host``'s range only."""

    bin_dir: Path
    data_dir: Path
    host: str
    port: int
    # How a command reaches the server's network (a LAN host's ``argv``; here by default).
    argv: Argv = _here

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def psql(self, sql: str) -> None:
        subprocess.run(
            self.argv([str(self.bin_dir / "psql"), "-q", "-v", "ON_ERROR_STOP=1",
                       "-d", self.url(), "-c", sql]),
            check=True, capture_output=True, timeout=_TIMEOUT_S,
        )  # fmt: skip

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh empty database; its URL; dropped afterwards."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *argv]
    return argv


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        command = next((a for a in argv if "/bin/" in a), argv[0])
        raise PostgresUnavailable(f"{command} failed: {proc.stderr.strip()[-500:]}")


@contextmanager
def start_postgres(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    trust: str | None = None,
    argv: Argv = _here,
) -> Iterator[PostgresServer]:
    """Init, start, yield, then stop the cluster and remove its directory.

    ``host``: the one address it listens on (with ``argv``, an address of that namespace).
    ``trust``: a CIDR (a LAN's ``10.X.Y.0/24``) whose clients log in without a password,
    besides loopback; nobody else is let in. ``port``: a free loopback port when None."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs
    # as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="fedrt-pg-"))
    data = root / "data"
    port = free_port(host) if port is None else port
    try:
        if os.geteuid() == 0:
            shutil.chown(root, OS_USER, OS_USER)
        _run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"]))  # fmt: skip
        if trust is not None:
            # initdb's pg_hba.conf trusts loopback only; the LAN's range joins it, no more.
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {trust} trust\n")
        # fsync off: throwaway data need not survive power loss; it makes the suite faster.
        opts = f"-k {root} -p {port} -h {host} -c fsync=off -c max_connections=200"
        _run(argv(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                             "-w", "-t", str(_TIMEOUT_S), "-o", opts, "start"])))  # fmt: skip
        try:
            yield PostgresServer(bin_dir=bin_dir, data_dir=data, host=host, port=port, argv=argv)
        finally:
            subprocess.run(
                argv(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                "-w", "stop"])),
                check=False, capture_output=True, timeout=_TIMEOUT_S,
            )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
