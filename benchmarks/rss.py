"""A process's peak RSS, stdlib only: used by the benchmarks and by ``device_tests`` on devices."""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_mib", "vm_mib"]


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB."""
    # Linux: this address space's high-water mark. ru_maxrss would be wrong for a process
    # started by a larger one: Linux carries the parent's peak across fork and exec.
    hwm = vm_mib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def vm_mib(field: str, pid: int | str = "self") -> float | None:
    """``field`` of a process's /proc status (``VmRSS`` now, ``VmHWM`` its peak) in MiB;
    None where there is no /proc or the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
