"""cProfile of every thread of a fedrt command: ``python -m fedrt.benchmarks.thread_profile
OUT.pstats -m fedrt ARGS...``. cProfile on its own sees only the main thread, and a simulate
run does its work on others (the coordinator's event loop, the device hubs); here each
thread gets its own profiler and ``OUT.pstats`` holds them merged (``python -m pstats``).
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import sys
import threading
from typing import Any

__all__ = ["main"]

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _profiled_run(original: Any) -> Any:
    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        with _lock:
            _profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    return run


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "-m":
        print(__doc__, file=sys.stderr)
        return 2
    out, module, rest = argv[0], argv[2], argv[3:]
    threading.Thread.run = _profiled_run(threading.Thread.run)  # type: ignore[method-assign]
    main_prof = cProfile.Profile()
    _profiles.append(main_prof)
    sys.argv = [module, *rest]
    code = 0
    main_prof.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        main_prof.disable()
        with _lock:
            profiles = [p for p in _profiles if p.getstats()]
        stats = pstats.Stats(profiles[0])
        for p in profiles[1:]:
            stats.add(p)
        stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
