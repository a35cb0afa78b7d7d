"""SCAFFOLD on the device: c_i kept across rounds, reset with the model, c read from the
coordinator's optimizer state, and option II's variate update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.models import BlobStore
from fedrt.coordinator.models.control_variate import variate_form
from fedrt.coordinator.models.optimizer_state import encode_state
from fedrt.coordinator.strategies import OptimizerState
from fedrt.model_export.manifest import TensorSpec
from fedrt.sdk.control_variate import ScaffoldRound, VariateStore, parse_server_variate
from fedrt.sdk.errors import DownloadError, ModelError

SPECS = (
    TensorSpec(name="dense_kernel", shape=(3, 2), dtype="float32"),
    TensorSpec(name="dense_bias", shape=(2,), dtype="float32"),
)
P = 8


def test_a_variate_starts_at_zero_and_persists_once_its_round_committed(tmp_path: Path) -> None:
    store = VariateStore(tmp_path / "scaffold", "task-a")
    np.testing.assert_array_equal(store.load(SPECS), np.zeros(P, np.float32))
    first = np.arange(P, dtype=np.float32)
    store.stage(4, SPECS, first)
    # Nothing changes before the round's end, nor for the end of another round.
    np.testing.assert_array_equal(store.load(SPECS), np.zeros(P, np.float32))
    assert not store.settle(3, committed=True)
    assert store.settle(4, committed=True)
    # A new process (a reboot) reads the same c_i.
    again = VariateStore(tmp_path / "scaffold", "task-a")
    np.testing.assert_array_equal(again.load(SPECS), first)
    # Other tasks keep their own.
    np.testing.assert_array_equal(
        VariateStore(tmp_path / "scaffold", "task-b").load(SPECS), np.zeros(P)
    )


def test_an_update_of_a_round_that_did_not_commit_is_dropped(tmp_path: Path) -> None:
    store = VariateStore(tmp_path, "t")
    store.stage(1, SPECS, np.ones(P, np.float32))
    store.settle(1, committed=True)
    store.stage(2, SPECS, np.full(P, 5.0, np.float32))
    assert not store.settle(2, committed=False)
    assert not store.pending.exists()
    np.testing.assert_array_equal(store.load(SPECS), np.ones(P, np.float32))


def test_a_model_of_another_shape_starts_from_zero(tmp_path: Path) -> None:
    store = VariateStore(tmp_path, "t")
    store.stage(1, SPECS, np.ones(P, np.float32))
    store.settle(1, committed=True)
    renamed = (TensorSpec(name="other", shape=(3, 2), dtype="float32"), SPECS[1])
    np.testing.assert_array_equal(store.load(renamed), np.zeros(P, np.float32))
    wider = (SPECS[0], TensorSpec(name="dense_bias", shape=(3,), dtype="float32"))
    np.testing.assert_array_equal(store.load(wider), np.zeros(P + 1, np.float32))
    # A damaged file is no variate either.
    store.current.write_bytes(b"not a variate")
    np.testing.assert_array_equal(store.load(SPECS), np.zeros(P, np.float32))


def test_c_is_read_from_the_form_the_coordinator_derives(tmp_path: Path) -> None:
    c = np.linspace(-2.0, 2.0, P)
    blobs = BlobStore(tmp_path / "blobs")
    state = blobs.put_bytes(encode_state("scaffold", OptimizerState(rounds=2, control_variate=c)))
    form = variate_form(blobs, state)
    assert form is not None
    assert variate_form(blobs, state) == form  # derived once, the same name every time
    data = blobs.read(form)
    np.testing.assert_array_equal(parse_server_variate(data, P), c.astype(np.float32))
    # Another optimizer's state holds no c: the plan names none (c = 0).
    other = encode_state("fedadam", OptimizerState(momentum=c, second_moment=c * c))
    assert variate_form(blobs, blobs.put_bytes(other)) is None
    with pytest.raises(ModelError, match="32 bytes, not 36"):
        parse_server_variate(data, P + 1)
    with pytest.raises(DownloadError, match="NaN"):
        parse_server_variate(np.full(P, np.nan, "<f4").tobytes(), P)


def test_option_two_variate_update(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    c = rng.normal(size=P).astype(np.float32)
    c_i = rng.normal(size=P).astype(np.float32)
    delta = rng.normal(scale=0.1, size=P).astype(np.float32)  # y_i - x
    store = VariateStore(tmp_path, "t")
    work = ScaffoldRound(round_id=9, specs=SPECS, server=c, local=c_i, store=store)
    np.testing.assert_allclose(work.correction, c - c_i)
    lr, steps = 0.05, 7
    scale = 3 * lr
    vector = work.finish(delta, steps=steps, lr=lr, scale=scale, clip_norm=1e6)
    # c_i+ = c_i - c + (x - y_i) / (K lr)
    c_new = c_i - c + (-delta) / (steps * lr)
    assert vector.shape == (2 * P,)
    np.testing.assert_array_equal(vector[:P], delta)
    np.testing.assert_allclose(vector[P:], scale * c_new, rtol=1e-5, atol=1e-6)
    assert store.settle(9, committed=True)
    np.testing.assert_allclose(store.load(SPECS), c_new, rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError):
        work.finish(delta, steps=0, lr=lr, scale=lr, clip_norm=1.0)


def test_a_clipped_update_keeps_c_i_plus_as_sent(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    c_i = rng.normal(size=P).astype(np.float32)
    c = np.zeros(P, np.float32)
    delta = rng.normal(scale=3.0, size=P).astype(np.float32)
    store = VariateStore(tmp_path, "t")
    work = ScaffoldRound(round_id=2, specs=SPECS, server=c, local=c_i, store=store)
    lr = 0.1
    vector = work.finish(delta, steps=2, lr=lr, scale=lr, clip_norm=1.0)
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, rel=1e-5)
    c_new = c_i - c - delta / (2 * lr)
    full = np.concatenate([delta, lr * c_new])
    np.testing.assert_allclose(vector, full / np.linalg.norm(full), rtol=1e-5, atol=1e-7)
    store.settle(2, committed=True)
    # c_i+ as it reaches c: the clip bounds it.
    np.testing.assert_allclose(store.load(SPECS), vector[P:] / lr, rtol=1e-5, atol=1e-6)
