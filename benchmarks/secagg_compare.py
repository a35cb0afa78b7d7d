"""``fedrt bench secagg --flower-python PATH``: Flower's SecAgg+ at the same size, side by side.

Flower is not a dependency of fedrt: PATH is an interpreter that has ``flwr`` (for example a
throwaway venv), which runs ``secagg_flower.py`` as a script in isolated mode (``-I``) with
the same n, m, k (Flower's ``num_shares`` counts the client itself: k + 1), t, dropout,
seed, repeat count and clock, and prints one JSON line that is parsed here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from fedrt.errors import UsageError

DRIVER = Path(__file__).with_name("secagg_flower.py")
TIMEOUT_S = 3600.0  # a few Flower rounds at m = 1M take minutes on two busy cores


def check_interpreter(python: str) -> None:
    """Fail before fedrt's run when ``python`` cannot import flwr."""
    probe = "import flwr, sys; sys.stdout.write(flwr.__version__)"
    try:
        done = subprocess.run(
            [python, "-I", "-c", probe], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot run Flower's SecAgg+ with {python}: {exc}") from exc
    if done.returncode != 0:
        raise UsageError(f"{python} cannot import flwr (install flwr==1.42.* in its venv)")


def flower_report(python: str, report: dict[str, Any], seed: int) -> dict[str, Any]:
    """Run Flower's SecAgg+ under ``python`` with the parameters of fedrt's ``report``."""
    command = [
        python,
        "-I",
        str(DRIVER),
        f"--clients={report['clients']}",
        f"--params={report['params']}",
        f"--num-shares={report['neighbors'] + 1}",
        f"--threshold={report['threshold']}",
        f"--dropout={report['dropout']}",
        f"--seed={seed}",
        f"--repeat={report['repeat']}",
        f"--clock={report['clock']}",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot run Flower's SecAgg+ with {python}: {exc}") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UsageError(
            f"Flower's SecAgg+ under {python} failed (exit {done.returncode}): " + " | ".join(tail)
        )
    flower: dict[str, Any] = json.loads(lines[-1])
    return flower


def ratios(report: dict[str, Any], flower: dict[str, Any]) -> dict[str, float]:
    """Flower's figure over fedrt's: how many times faster or smaller fedrt is."""
    return {
        "server": flower["server_seconds"]["total"] / report["server_seconds"]["total"],
        "client": flower["client_seconds"]["total"] / report["client_seconds"]["total"],
        "upload": flower["upload_bytes_per_client"] / report["upload_bytes_per_client"],
    }


def side_by_side(report: dict[str, Any], flower: dict[str, Any]) -> str:
    """The comparison table printed after fedrt's own."""
    ratio = ratios(report, flower)
    rows = [
        f"side by side with Flower {flower['flwr_version']} SecAgg+ (same n={report['clients']} "
        f"m={report['params']} k={report['neighbors']} t={report['threshold']} "
        f"dropout={report['dropout']} in masked_input/unmask; median of {report['repeat']}, "
        f"{report['clock']} time); "
        f"Flower's aggregate matched the plain mean: {flower['matched_plain_mean']}",
        f"{'':<22}{'fedrt':>12}{'Flower':>12}{'Flower/fedrt':>15}",
        f"{'server s':<22}{report['server_seconds']['total']:12.3f}"
        f"{flower['server_seconds']['total']:12.3f}{ratio['server']:14.1f}x",
        f"{'client ms per client':<22}{report['client_seconds']['total'] * 1e3:12.2f}"
        f"{flower['client_seconds']['total'] * 1e3:12.2f}{ratio['client']:14.1f}x",
        f"{'upload B per client':<22}{report['upload_bytes_per_client']:12.0f}"
        f"{flower['upload_bytes_per_client']:12.0f}{ratio['upload']:14.1f}x",
    ]
    return "\n".join(rows)
