"""What an async commit's round record adds to a simulation's report row (issue 19)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["async_fields", "staleness_total"]


def async_fields(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """``staleness`` (versions behind -> updates), ``buffer_size`` and ``lobby`` (devices
    training and ready, commits, refused as stale, as the cohort ended) of an async
    commit's record detail, as RoundRow fields; nothing for a sync round."""
    if not detail or detail.get("mode") != "async":
        return {}
    raw = detail.get("staleness")
    staleness = (
        {str(k): int(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}
        if isinstance(raw, Mapping)
        else None
    )
    size = detail.get("buffer_size")
    raw_lobby = detail.get("lobby")
    lobby = (
        {str(k): v for k, v in raw_lobby.items() if isinstance(v, int)}
        if isinstance(raw_lobby, Mapping)
        else None
    )
    return {
        "staleness": staleness,
        "buffer_size": size if isinstance(size, int) else None,
        "lobby": lobby,
    }


def staleness_total(rows: list[Mapping[str, Any] | None]) -> dict[str, int]:
    """The staleness histograms of many commits added up (versions behind -> updates)."""
    total: dict[int, int] = {}
    for histogram in rows:
        for k, v in (histogram or {}).items():
            total[int(k)] = total.get(int(k), 0) + int(v)
    return {str(k): total[k] for k in sorted(total)}
