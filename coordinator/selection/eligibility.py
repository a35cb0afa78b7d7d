"""Which devices a task may select: its label and example-count filters (pure predicates).

A task names labels a device must have been enrolled with (``select_labels``) and a least
number of examples (``min_examples``) the device must say it holds when it checks in. The
filters apply BEFORE sampling, so the cohort is uniform over the devices that pass them;
the DP population is counted over them too. Both are what devices say about themselves
(labels at enrollment, the count at check-in): filters for utility, not for security.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def has_labels(labels: Mapping[str, object], required: Mapping[str, str]) -> bool:
    """Whether ``labels`` carries every ``key = value`` of ``required`` (none: all do)."""
    return all(labels.get(key) == value for key, value in required.items())


def labelled(
    devices: Iterable[tuple[str, Mapping[str, object]]], required: Mapping[str, str]
) -> list[str]:
    """The ids of the (id, labels) ``devices`` that carry ``required``."""
    return [device_id for device_id, labels in devices if has_labels(labels, required)]


def admits(
    eligible: frozenset[str] | None, min_examples: int, device_id: str, n_examples: int
) -> bool:
    """Whether a check-in may join the pool: a device of ``eligible`` (None: any) that
    holds at least ``min_examples`` (a device that does not say holds 0)."""
    return (eligible is None or device_id in eligible) and n_examples >= min_examples


__all__ = ["admits", "has_labels", "labelled"]
