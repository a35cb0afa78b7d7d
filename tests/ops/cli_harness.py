"""Run ``fedrt …`` in-process (``fedrt.cli.main``) or as the console script, output captured."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from fedrt.cli import main
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread

FEDRT = shutil.which("fedrt", path=str(Path(sys.executable).parent)) or "fedrt"
# Every variable the commands read: a test states each one it relies on.
OPS_ENV = ("FEDRT_URL", "FEDRT_ADMIN_TOKEN", "FEDRT_CA_FILE")


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    out: str
    err: str


def env_for(svc: ServiceThread, token: str = ADMIN_TOKEN) -> dict[str, str | None]:
    return {"FEDRT_URL": f"http://127.0.0.1:{svc.port}", "FEDRT_ADMIN_TOKEN": token,
            "FEDRT_CA_FILE": None}  # fmt: skip


def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else 1


def fedrt(*argv: str, env: Mapping[str, str | None]) -> Ran:
    """``fedrt ARGV`` in this process with ``env`` (None unsets); never a traceback."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    unset = {k: None for k in OPS_ENV}
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):  # fmt: skip
        for key, value in {**unset, **env}.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = _exit_code(exc)
        finally:
            # main() configures logging for a command; the test process keeps its own.
            root.handlers[:] = handlers
            root.setLevel(level)
    ran = Ran(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in ran.err, ran.err
    return ran


def fedrt_process(*argv: str, env: Mapping[str, str | None]) -> Ran:
    """The installed ``fedrt`` console script as a child process."""
    full = {k: v for k, v in os.environ.items() if k not in OPS_ENV}
    full.update({k: v for k, v in env.items() if v is not None})
    done = subprocess.run(
        [FEDRT, *argv], capture_output=True, text=True, timeout=120, env=full, check=False
    )
    ran = Ran(done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in ran.err, ran.err
    return ran
