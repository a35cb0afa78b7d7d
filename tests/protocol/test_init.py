"""The package stays device-light: importing it never loads TensorFlow or aiohttp."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_protocol_core_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, fedrt.protocol, fedrt.protocol.vectors;"
        "heavy = [m for m in ('tensorflow', 'aiohttp', 'keras') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
