"""Bytes per device per round, down against up, from the coordinator's round records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedrt.simulation.report import RoundRow

__all__ = ["downlink_summary", "traffic_line"]


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def downlink_summary(rows: Sequence[RoundRow]) -> dict[str, Any]:
    """Mean bytes per selected device per round down (rounds after the first: devices hold
    a version by then) and per reporting device up, by kind, over committed rounds."""
    done = [r for r in rows if r.status == "committed" and r.traffic]
    later = [r for r in done if r.round > 1]
    kinds: dict[str, list[float]] = {}
    for r in later:
        assert r.traffic is not None
        for kind, n in r.traffic.get("down_per_device", {}).items():
            kinds.setdefault(kind, []).append(float(n))
    down = [sum(r.traffic["down_per_device"].values()) for r in later if r.traffic]
    up = [sum(r.traffic["up_per_device"].values()) for r in done if r.traffic]
    first = [sum(r.traffic["down_per_device"].values()) for r in done if r.traffic][:1]
    mean_down, mean_up = _mean(down), _mean(up)
    return {
        "down_per_device_round1": first[0] if first else None,
        "down_per_device_after_round1": mean_down,
        "down_by_kind_after_round1": {k: _mean(v) for k, v in sorted(kinds.items())},
        "up_per_device": mean_up,
        "down_over_up": round(mean_down / mean_up, 3) if mean_down and mean_up else None,
    }


def traffic_line(summary: dict[str, Any]) -> str:
    """The summary as one line of ``fedrt simulate``'s output."""
    if summary.get("down_over_up") is None:
        return "traffic: not measured"
    kinds = ", ".join(f"{k} {v / 1024:.1f}" for k, v in summary["down_by_kind_after_round1"].items()
                      if v)  # fmt: skip
    return (
        f"traffic per device per round: down {summary['down_per_device_after_round1'] / 1024:.1f}"
        f" KiB after round 1 ({kinds}), up {summary['up_per_device'] / 1024:.1f} KiB; "
        f"down/up {summary['down_over_up']}"
    )
