"""``python -m device_tests [--json REPORT] [--coordinator URL --token TOKEN]``: run every check.

Needs only ``fedrt[device]`` (no pytest, no tensorflow). Exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from device_tests import protocol_kat, rebuild_kat, state_check, training_kat
from device_tests.report import Check, Report, run_check
from device_tests.round_check import RoundOptions, take_part_in_a_round


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m device_tests", description=__doc__)
    parser.add_argument("--json", type=Path, metavar="REPORT", help="write the report here")
    parser.add_argument("--coordinator", metavar="URL", help="also take part in one round")
    parser.add_argument("--token", help="enrollment token (or FEDRT_ENROLLMENT_TOKEN)")
    parser.add_argument("--task", help="task id (default: the first task announced)")
    parser.add_argument("--round-timeout", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument("--skip", action="append", default=[], metavar="CHECK",
                        help="leave a check out (repeatable)")  # fmt: skip
    return parser


def _line(check: Check) -> str:
    mark = "ok  " if check.ok else "FAIL"
    keys = ("error", "decision", "max_weight_error", "step_ms_median", "peak_rss_mib",
            "vectors", "round_seconds")  # fmt: skip
    shown = ", ".join(f"{k}={check.detail[k]}" for k in keys if k in check.detail)
    return f"{mark} {check.name:<22} {check.seconds:8.3f} s  {shown}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    token: str | None = args.token or os.environ.get("FEDRT_ENROLLMENT_TOKEN")
    if args.coordinator and not token:
        print("--coordinator needs --token (or FEDRT_ENROLLMENT_TOKEN)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    checks = {
        "training_known_answer": training_kat.mlp_known_answer,
        "protocol_vectors": protocol_kat.known_answer_vectors,
        "rotation": protocol_kat.rotation,
        "bit_packing": protocol_kat.bit_packing,
        "codec": protocol_kat.codec_round_trip,
        "model_rebuild": rebuild_kat.model_rebuild,
        "device_state": state_check.device_state,
        "cnn_step_time": training_kat.cnn_step_time,
    }
    if args.coordinator and token:
        options = RoundOptions(coordinator_url=args.coordinator, token=token, task_id=args.task,
                               timeout_s=args.round_timeout)  # fmt: skip
        checks["coordinator_round"] = lambda: take_part_in_a_round(options)
    unknown = sorted(set(args.skip) - set(checks))
    if unknown:
        print(f"unknown check(s) to skip: {', '.join(unknown)}", file=sys.stderr)
        return 2
    report = Report()
    interp = report.interpreter
    print(f"machine {report.machine}, {report.python}, numpy {report.numpy}, "
          f"interpreter {interp.get('package')} {interp.get('version')}")  # fmt: skip
    for name, fn in checks.items():
        if name in args.skip:
            continue
        check = run_check(name, fn)
        report.checks.append(check)
        print(_line(check), flush=True)
    print("all checks passed" if report.ok else "SOME CHECKS FAILED")
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
