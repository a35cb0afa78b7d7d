"""limit_malloc_arenas: what `fedrt device run` calls before it starts its threads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedrt.sdk.process_memory import limit_malloc_arenas


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        limit_malloc_arenas(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_the_setting_in_a_fresh_process() -> None:
    # A child process: the setting is process-wide and the test runner's own must not change.
    code = (
        "import platform, sys\n"
        "from fedrt.sdk.process_memory import limit_malloc_arenas\n"
        "ok = limit_malloc_arenas(1)\n"
        "glibc = platform.libc_ver()[0] == 'glibc'\n"
        "sys.exit(0 if ok == glibc else 1)\n"
    )
    cmd = [sys.executable, "-c", code]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
