"""``fedrt.ops`` and its commands run on a laptop without aiohttp, numpy or the coordinator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fedrt.ops.cli import EXIT_UNREACHABLE
from tests.support.process import free_port

# Any import of these fails loudly, as on an operator's machine with only the base install.
PROBE = r"""
import json, sys
class Forbid:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("aiohttp", "numpy", "cryptography") or name.startswith(
            ("fedrt.coordinator", "fedrt.sdk", "fedrt.protocol")
        ):
            raise ImportError(f"the operator client imported {name}")
        return None
sys.meta_path.insert(0, Forbid())
import fedrt.ops
from fedrt.cli import main
code = main(["tasks", "list", "--url", sys.argv[1]])
print(json.dumps({"code": code, "heavy": sorted(
    m for m in sys.modules if m.split(".")[0] in ("aiohttp", "numpy", "cryptography"))}))
"""


def test_the_commands_import_only_the_standard_library() -> None:
    env = {**os.environ, "FEDRT_ADMIN_TOKEN": "t" * 20}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, f"http://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=120, env=env, cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"code": EXIT_UNREACHABLE, "heavy": []}
