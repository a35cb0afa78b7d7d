"""A simulation's report: a row per round, the run's totals, its JSON file and progress line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REPORT_VERSION", "Report", "RoundRow", "progress_line", "write_report"]

REPORT_VERSION = 1


@dataclass(slots=True)
class RoundRow:
    round: int
    status: str
    accuracy: float | None
    loss: float | None
    selected: int
    reported: int
    dropped: int
    bytes_up: int
    bytes_down: int
    seconds: float
    model_sha256: str | None = None
    reason: str = ""
    # DP tasks: cumulative epsilon at the task's delta; noise std on the aggregate sum.
    epsilon: float | None = None
    noise_stddev: float | None = None
    # SecAgg+ cohorts the round ran in, and how many made it into the aggregate.
    cohorts: int = 0
    cohorts_committed: int = 0
    # Per cohort, from the round's record: its index, the coordinator instance that ran it
    # (``[cluster] spread_cohorts`` hands some to other instances; null on one instance
    # without an id) and, for one left out of the aggregate, why ("left_out").
    cohort_owners: list[dict[str, Any]] | None = None
    # The coordinator's count of the round's bytes by direction and kind, in total and per
    # device (rounds.versions.round_traffic; downlink-traffic).
    traffic: dict[str, Any] | None = None
    # The coordinator instance that ran the round (``--coordinators``: sim-1, sim-2, ...).
    instance: str | None = None
    # Seconds from the task's start to this round's end (time-to-accuracy curves).
    elapsed_s: float | None = None
    # Async commits (--mode async): updates by staleness (versions behind, as a string ->
    # count) and the buffer size the commit was made with (simulation/async_rows.py).
    staleness: dict[str, int] | None = None
    buffer_size: int | None = None
    lobby: dict[str, int] | None = None
    # Federated evaluation rounds (simulation/eval_rows.py; coordinator/rounds/eval_figures):
    # example-weighted accuracy on the devices' held-out examples, the personalized models'
    # (when devices personalize), the mean of the worst 10 % of devices, the spread over
    # devices, how many devices, and the same per device label ("key=value" -> figures).
    federated_accuracy: float | None = None
    personalized_accuracy: float | None = None
    worst_decile_accuracy: float | None = None
    accuracy_std: float | None = None
    eval_devices: int | None = None
    by_label: dict[str, dict[str, float]] | None = None


@dataclass(slots=True)
class Report:
    config: dict[str, Any]
    rounds: list[RoundRow] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    baseline_accuracy: float | None = None
    initial_accuracy: float | None = None
    final_accuracy: float | None = None
    broker: str = ""
    wall_seconds: float = 0.0
    completed: bool = False
    # What the fleet went through: devices that vanished mid-round (--dropout) and spells
    # without connectivity from the availability trace.
    crashes: int = 0
    offline_spells: int = 0
    # Why the coordinator ended the task early (e.g. its privacy budget), or "".
    stopped: str = ""
    # Each --chaos event: when it fired, what it did (simulation/chaos.py), ok or not.
    chaos: list[dict[str, Any]] = field(default_factory=list)
    # Bytes per device per round: down in rounds after the first against up, by kind
    # (simulation/traffic.py; downlink-traffic).
    downlink: dict[str, Any] = field(default_factory=dict)
    # --target-accuracy: seconds from the task's start and rounds (commits, in async mode)
    # until the first version whose held-out accuracy reached it; None while never reached.
    seconds_to_target: float | None = None
    rounds_to_target: int | None = None
    # --personal-layers / --finetune-steps: every device's global and personalized model on
    # its own held-out share after the last round (simulation/personal_eval.py).
    personalization: dict[str, Any] | None = None

    def reached_target(self, row: RoundRow, target: float | None, *, commits: bool) -> bool:
        """Note ``row`` as the first to reach ``target``; whether it was (only once).

        ``rounds_to_target`` is the round's number, or with ``commits`` (async mode) how
        many versions were committed up to and including it."""
        if target is None or self.rounds_to_target is not None:
            return False
        if row.accuracy is None or row.accuracy < target:
            return False
        done = self.rounds[: self.rounds.index(row) + 1] if row in self.rounds else [row]
        number = sum(r.status == "committed" for r in done) if commits else row.round
        self.rounds_to_target = number
        self.seconds_to_target = row.elapsed_s
        return True

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["format_version"] = REPORT_VERSION
        return out


def progress_line(row: RoundRow, total: int) -> str:
    """One round's line of the live progress display."""
    width = 20
    done = min(width, round(width * row.round / max(1, total)))
    bar = "#" * done + "." * (width - done)
    acc = f"{row.accuracy:.3f}" if row.accuracy is not None else "  -  "
    loss = f"{row.loss:.3f}" if row.loss is not None else "  -  "
    text = (
        f"[{bar}] round {row.round:3d}/{total} {row.status:9s} acc {acc} loss {loss} "
        f"sel {row.selected:3d} rep {row.reported:3d} drop {row.dropped:2d} "
        f"up {_kib(row.bytes_up)} down {_kib(row.bytes_down)} {row.seconds:6.1f}s"
    )
    if row.cohorts > 1:
        text += f" cohorts {row.cohorts_committed}/{row.cohorts}"
    if row.staleness:
        text += " staleness " + ",".join(f"{k}:{v}" for k, v in row.staleness.items())
    return text + (f"  ({row.reason})" if row.reason else "")


def _kib(n: int) -> str:
    return f"{n / 1024:8.1f}KiB"


def write_report(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2))
