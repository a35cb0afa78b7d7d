"""ExampleStore: validation, retention, persistence, and the batch/wrap rule."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import fedrt.sdk.example_store as example_store_module
from fedrt.sdk.errors import ExampleStoreError, NotEnoughExamples, SdkConfigError
from fedrt.sdk.example_store import ExampleStore, Retention


def store(path: str | Path = ":memory:", **kwargs: object) -> ExampleStore:
    return ExampleStore(path, x_shape=(2,), x_dtype=np.float32, y_dtype=np.int32, **kwargs)  # type: ignore[arg-type]


def fill(s: ExampleStore, n: int, start: int = 0) -> None:
    s.extend(
        [[float(i), -float(i)] for i in range(start, start + n)], list(range(start, start + n))
    )


def test_batches_follow_insertion_order_and_the_cursor() -> None:
    s = store()
    fill(s, 10)
    b1 = s.batch(4)
    assert list(b1.y) == [0, 1, 2, 3]
    assert b1.x.shape == (4, 2)
    assert b1.x.dtype == np.float32
    assert not b1.wrapped
    b2 = s.batch(4, b1.next_cursor)
    assert list(b2.y) == [4, 5, 6, 7]


def test_a_batch_crossing_the_end_wraps_to_the_oldest() -> None:
    s = store()
    fill(s, 6)
    b = s.batch(4, s.batch(4).next_cursor)
    assert list(b.y) == [4, 5, 0, 1]
    assert b.wrapped
    assert b.unique == 4
    assert list(s.batch(4, b.next_cursor).y) == [2, 3, 4, 5]


def test_fewer_examples_than_a_batch_repeat_cyclically() -> None:
    s = store()
    fill(s, 3)
    b = s.batch(8)
    assert list(b.y) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert b.unique == 3
    assert b.wrapped


def test_an_empty_store_has_no_batch() -> None:
    with pytest.raises(NotEnoughExamples):
        store().batch(4)


def test_retention_drops_the_oldest_and_cursors_stay_valid() -> None:
    s = store(retention=Retention(max_examples=5))
    fill(s, 4)
    cursor = s.batch(2).next_cursor  # consumed 0, 1
    fill(s, 4, start=4)  # 8 total, 0..2 dropped
    assert len(s) == 5
    assert list(s.batch(3, cursor).y) == [3, 4, 5]
    assert list(s.batch(5).y) == [3, 4, 5, 6, 7]


def test_retention_by_age() -> None:
    now = [1000.0]
    s = store(retention=Retention(max_age_s=60), clock=lambda: now[0])
    fill(s, 2)
    now[0] += 30
    fill(s, 2, start=2)
    now[0] += 40  # the first two are 70 s old
    assert len(s) == 2
    assert list(s.batch(2).y) == [2, 3]


def test_examples_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "examples.sqlite"
    with store(path) as s:
        fill(s, 5)
    with store(path) as again:
        assert len(again) == 5
        np.testing.assert_array_equal(again.batch(5).x[:, 0], np.arange(5, dtype=np.float32))


def test_reopening_with_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "examples.sqlite"
    with store(path) as s:
        fill(s, 1)
    with pytest.raises(ExampleStoreError, match="another schema"):
        ExampleStore(path, x_shape=(3,), x_dtype=np.float32)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1.0, 2.0, 3.0], 0),  # wrong shape
        ([1.0, float("nan")], 0),  # not finite
        ([1.0, 2.0], 2**40),  # label does not fit int32
        ([1.0, 2.0], 1.5),  # float label
        (["a", "b"], 0),  # not numbers
    ],
)
def test_bad_examples_are_refused_and_change_nothing(x: object, y: object) -> None:
    s = store()
    fill(s, 2)
    with pytest.raises(ExampleStoreError):
        s.extend([[9.0, 9.0], x], [9, y])
    assert len(s) == 2


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ExampleStoreError):
        store().extend([[1.0, 2.0]], [])


def test_clear_forgets_everything() -> None:
    s = store()
    fill(s, 3)
    s.clear()
    assert len(s) == 0


def test_for_model_drops_the_batch_axis() -> None:
    s = ExampleStore.for_model(
        ":memory:",
        x_spec_shape=(32, 8, 8, 1),
        x_dtype=np.float32,
        y_spec_shape=(32,),
        y_dtype=np.int32,
    )
    assert s.x_shape == (8, 8, 1)
    assert s.y_shape == ()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(SdkConfigError):
        Retention(max_examples=0)
    with pytest.raises(SdkConfigError):
        ExampleStore(":memory:", x_shape=(0,), x_dtype=np.float32)


def test_concurrent_appends_and_reads() -> None:
    s = store(retention=Retention(max_examples=50))
    fill(s, 4)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(200):
                s.append([float(i), 0.0], i)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    cursor = 0
    for _ in range(100):
        cursor = s.batch(4, cursor).next_cursor
    t.join(30)
    assert not errors
    assert len(s) == 50


def test_the_store_has_no_way_to_send_data() -> None:
    # The module imports nothing that talks to a network.
    source = Path(example_store_module.__file__).read_text()
    for module in ("socket", "urllib", "http", "paho", "ssl"):
        assert f"import {module}" not in source
        assert f"from {module}" not in source
    public = {n for n in dir(ExampleStore) if not n.startswith("_")}
    assert public == {
        "append", "batch", "clear", "close", "extend", "for_model", "holdout_seed", "part"
    }  # fmt: skip
