"""The held-out split: stable across reopenings, disjoint from training, seeded per device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.example_store import ExampleStore, Retention
from fedrt.sdk.holdout import held_out


def _store(path: Path | str, seed: bytes | None = None, keep: int = 1000) -> ExampleStore:
    return ExampleStore(
        path,
        x_shape=(2,),
        x_dtype=np.float32,
        retention=Retention(max_examples=keep),
        holdout_seed=seed,
    )


def _ids(store: ExampleStore, batch: int = 7) -> set[int]:
    """Every example id the store (or view) yields in one epoch."""
    seen: set[int] = set()
    cursor = 0
    for _ in range(1000):
        b = store.batch(batch, cursor)
        seen.update(b.ids)
        cursor = b.next_cursor
        if b.wrapped:
            return seen
    raise AssertionError("no epoch boundary in 1000 batches")


def _fill(store: ExampleStore, n: int) -> None:
    store.extend([np.full(2, i, np.float32) for i in range(n)], list(range(n)))


def test_split_is_disjoint_complete_and_about_the_share(tmp_path: Path) -> None:
    with _store(tmp_path / "a.sqlite3") as store:
        _fill(store, 500)
        held, kept = store.part(0.2, held_out=True), store.part(0.2, held_out=False)
        held_ids, kept_ids = _ids(held), _ids(kept)
        assert held_ids.isdisjoint(kept_ids)
        assert held_ids | kept_ids == set(range(1, 501))
        assert len(held) == len(held_ids)
        assert len(kept) == len(kept_ids)
        assert 70 <= len(held) <= 130  # 100 expected; binomial sd 9
        # Labels follow their examples: the view reads the stored rows, not copies.
        batch = held.batch(5, 0)
        assert all(int(y) == i - 1 for y, i in zip(batch.y, batch.ids, strict=True))
        assert len(store) == 500


def test_split_is_stable_across_reopening_and_new_examples(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    with _store(path) as store:
        _fill(store, 200)
        first = _ids(store.part(0.3, held_out=True))
        seed = store.holdout_seed
    with _store(path) as store:  # the seed was kept: no new one drawn
        assert store.holdout_seed == seed
        assert _ids(store.part(0.3, held_out=True)) == first
        _fill(store, 50)
        after = _ids(store.part(0.3, held_out=True))
        assert after & set(range(1, 201)) == first
        # A larger share holds out a superset.
        assert first <= _ids(store.part(0.5, held_out=True))


def test_devices_draw_different_seeds_and_a_given_seed_is_reproducible() -> None:
    with _store(":memory:") as a, _store(":memory:") as b:
        assert a.holdout_seed != b.holdout_seed
    seed = bytes(range(16))
    with _store(":memory:", seed) as a, _store(":memory:", seed) as b:
        _fill(a, 100)
        _fill(b, 100)
        assert _ids(a.part(0.2, held_out=True)) == _ids(b.part(0.2, held_out=True))
    assert [held_out(seed, i, 0.2) for i in range(1, 101)] != [
        held_out(bytes(16), i, 0.2) for i in range(1, 101)
    ]


def test_share_zero_trains_on_everything_and_bad_shares_are_refused() -> None:
    with _store(":memory:") as store:
        _fill(store, 30)
        assert len(store.part(0.0, held_out=False)) == 30
        assert len(store.part(0.0, held_out=True)) == 0
        for bad in (1.0, -0.1, float("nan")):
            with pytest.raises(SdkConfigError):
                store.part(bad, held_out=True)
        with pytest.raises(SdkConfigError):
            _store(":memory:", b"short")
