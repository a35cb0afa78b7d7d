"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a free loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.process import free_port

# initdb refuses to run as root, so a root test run hands the cluster to this OS user.
_OS_USER = "postgres"
_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin directory holding ``initdb``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    return Path(found[-1]).parent if found else None


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running cluster: trust authentication on 127.0.0.1 only, superuser ``postgres``."""

    bin_dir: Path
    data_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str) -> None:
        subprocess.run(
            [str(self.bin_dir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(),
             "-c", sql],
            check=True, capture_output=True, timeout=_TIMEOUT_S,
        )  # fmt: skip

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh empty database for one test; its URL; dropped afterwards."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", _OS_USER, "--", *argv]
    return argv


@contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """Init, start, yield, then stop the cluster and remove its directory."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs
    # as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="fedrt-pg-"))
    data = root / "data"
    port = free_port()
    try:
        if os.geteuid() == 0:
            shutil.chown(root, _OS_USER, _OS_USER)
        run = {"check": True, "capture_output": True, "timeout": _TIMEOUT_S}
        subprocess.run(
            _as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                       "--auth=trust", "-E", "UTF8", "--no-sync"]),
            **run,  # type: ignore[arg-type]
        )  # fmt: skip
        # fsync off: test data need not survive power loss; it makes the suite faster.
        opts = f"-k {root} -p {port} -h 127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                       "-w", "-t", str(_TIMEOUT_S), "-o", opts, "start"]),
            **run,  # type: ignore[arg-type]
        )  # fmt: skip
        try:
            yield PostgresServer(bin_dir=bin_dir, data_dir=data, port=port)
        finally:
            subprocess.run(
                _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                           "-w", "stop"]),
                check=False, capture_output=True, timeout=_TIMEOUT_S,
            )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One cluster for the whole run (initdb takes seconds); skipped where not installed."""
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs the postgresql package)")
    with start_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database of its own for one test."""
    with postgres_server.database() as url:
        yield url


__all__ = [
    "PostgresServer", "find_bin_dir", "postgres_server", "postgres_url", "start_postgres",
]  # fmt: skip
