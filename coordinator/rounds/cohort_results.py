"""What one SecAgg+ cohort yields (``CohortResult``), kept as JSON, and how a round adds them.

A cohort's result is its SecAgg+ sum as ring elements, how many inputs it holds and whose,
or why the cohort failed. The round machine adds the results of its own cohorts; the same
record, written to the store by the instance owning a cohort (``to_json``) and read back by
the round's owner (``from_json``), is how cohorts run by other instances would be added
(docs/coordinator.md, "Several instances, one fleet"). Each sum is read back on its own: its
ring and, under device DP, its noise are its own.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.errors import StoreError
from fedrt.protocol import round_dp
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_errors import RoundFailed

__all__ = ["CohortResult", "CohortSum", "sum_results"]

# A cohort of at most 100,000 (the largest cohort_size) and a 40M-parameter update.
_MAX_INPUTS = 100_000
_MAX_WORDS = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortResult:
    """One cohort's outcome: its sum (ring elements) over ``included``, or ``failed``."""

    index: int
    key: str
    included: tuple[str, ...] = ()
    total: npt.NDArray[np.uint64] = field(
        default_factory=lambda: np.zeros(0, np.uint64), repr=False, compare=False
    )
    failed: str = ""

    def to_json(self) -> dict[str, Any]:
        words = np.ascontiguousarray(self.total, dtype="<u8").tobytes()
        return {"index": self.index, "key": self.key, "included": list(self.included),
                "failed": self.failed, "sum": base64.b64encode(words).decode()}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CohortResult:
        """The result ``to_json`` wrote; ``StoreError`` for anything else."""
        try:
            raw = base64.b64decode(str(data["sum"]), validate=True)
            included = tuple(str(d) for d in data["included"])
            index, key, failed = int(data["index"]), str(data["key"]), str(data["failed"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"not a cohort result: {exc}") from None
        if len(raw) % 8 or len(raw) // 8 > _MAX_WORDS or len(included) > _MAX_INPUTS:
            raise StoreError("a cohort result's sum or members are out of range")
        if failed and (included or raw):
            raise StoreError("a failed cohort's result carries a sum")
        total = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        return cls(index=index, key=key, included=included, total=total, failed=failed)


@dataclass(frozen=True, slots=True)
class CohortSum:
    """What the cohorts add up to: the mean delta, its weight, the clip-bit count."""

    delta: npt.NDArray[np.float64]
    weight: float
    unclipped: float | None
    included: tuple[str, ...]
    committed: int


def sum_results(results: Sequence[CohortResult], spec: rm.UpdateSpec, failures: str) -> CohortSum:
    """The weighted sum of the results that did not fail; ``RoundFailed`` (naming
    ``failures``) when none is usable."""
    weighted: npt.NDArray[np.float64] | None = None
    weight, unclipped, committed = 0.0, None, 0
    included: list[str] = []
    for result in results:
        if result.failed:
            continue
        mean, w, bits = round_dp.decode_sum(result.total, spec, len(result.included))
        weighted = mean * w if weighted is None else weighted + mean * w
        weight += w
        if bits is not None:
            unclipped = (unclipped or 0.0) + bits
        included.extend(result.included)
        committed += 1
    if weighted is None or weight <= 0:
        raise RoundFailed(f"no cohort's sum is usable: {failures}")
    return CohortSum(
        delta=weighted / weight,
        weight=weight,
        unclipped=unclipped,
        included=tuple(included),
        committed=committed,
    )
