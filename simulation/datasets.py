"""Data sets for simulations and how they are split across devices (iid, Dirichlet, shards)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.errors import UsageError

# A quarter of the data is held out for the coordinator's evaluation, as the issue fixes.
HOLDOUT_FRACTION = 0.25


@dataclass(frozen=True, slots=True)
class Dataset:
    """Features shaped for the model (N, *input_shape) float32 and int32 labels."""

    name: str
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int32]
    classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: npt.NDArray[np.int64]) -> Dataset:
        return Dataset(self.name, self.x[idx], self.y[idx], self.classes)


def load_digits(*, flat: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UsageError(
            "the digits data set needs scikit-learn (pip install scikit-learn)"
        ) from exc
    bunch = sk_load()
    x: npt.NDArray[np.float32] = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(
        -1, 8, 8, 1
    )
    if flat:
        x = x.reshape(len(x), 64)
    return Dataset("digits", x, np.asarray(bunch.target, dtype=np.int32), 10)


def load(name: str, *, flat: bool = False) -> Dataset:
    if name == "digits":
        return load_digits(flat=flat)
    raise UsageError(f"unknown dataset {name!r}; available: digits")


def holdout_split(
    data: Dataset, rng: np.random.Generator, fraction: float = HOLDOUT_FRACTION
) -> tuple[Dataset, Dataset]:
    """(train, held-out test), stratified so every class is in both."""
    test_idx: list[npt.NDArray[np.int64]] = []
    train_idx: list[npt.NDArray[np.int64]] = []
    for label in range(data.classes):
        idx = rng.permutation(np.flatnonzero(data.y == label)).astype(np.int64)
        cut = round(len(idx) * fraction)
        test_idx.append(idx[:cut])
        train_idx.append(idx[cut:])
    return data.subset(rng.permutation(np.concatenate(train_idx))), data.subset(
        rng.permutation(np.concatenate(test_idx))
    )


@dataclass(frozen=True, slots=True)
class Partition:
    """How to split training data over devices: ``iid``, ``dirichlet:ALPHA`` or ``shards:S``."""

    kind: str
    param: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Partition:
        if text == "iid":
            return cls("iid")
        m = re.fullmatch(r"(dirichlet|shards):([0-9.]+)", text)
        if m is None:
            raise UsageError(f"bad partition {text!r}; use iid, dirichlet:ALPHA or shards:S")
        value = float(m.group(2))
        if value <= 0 or (m.group(1) == "shards" and not value.is_integer()):
            raise UsageError(f"bad partition parameter in {text!r}")
        return cls(m.group(1), value)

    def __str__(self) -> str:
        if self.kind == "iid":
            return "iid"
        return f"{self.kind}:{int(self.param) if self.kind == 'shards' else self.param}"


def partition(
    data: Dataset, devices: int, how: Partition, rng: np.random.Generator, *, min_size: int = 1
) -> list[npt.NDArray[np.int64]]:
    """Index arrays, one per device, covering ``data`` without overlap (but see below).

    Every device gets at least ``min_size`` examples (a device with nothing to train on
    would only ever drop out); Dirichlet draws are repeated until that holds, a bounded
    number of times. An iid split over more devices than examples (a 10,000-device fleet
    on the digits) deals out the data set several times over, each pass in a new order,
    so each example is held by a few devices.
    """
    n = len(data)
    if how.kind == "iid" and devices >= 1 and devices * min_size > n > 0:
        passes = -(-devices * min_size // n)
        order = np.concatenate([rng.permutation(n) for _ in range(passes)])
        return [a.astype(np.int64) for a in np.array_split(order, devices)]
    if devices < 1 or devices * min_size > n:
        raise UsageError(f"cannot give {devices} devices {min_size}+ examples from {n}")
    if how.kind == "iid":
        return [a.astype(np.int64) for a in np.array_split(rng.permutation(n), devices)]
    if how.kind == "shards":
        shards_per_device = int(how.param)
        order = np.argsort(data.y, kind="stable").astype(np.int64)
        shards = np.array_split(order, devices * shards_per_device)
        pick = rng.permutation(len(shards))
        return [
            np.concatenate([shards[j] for j in pick[d::devices]]).astype(np.int64)
            for d in range(devices)
        ]
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(devices)]
        for label in range(data.classes):
            idx = rng.permutation(np.flatnonzero(data.y == label))
            share = rng.dirichlet(np.full(devices, how.param))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for d, chunk in enumerate(np.split(idx, cuts)):
                parts[d].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [rng.permutation(np.array(p, dtype=np.int64)) for p in parts]
    raise UsageError(f"dirichlet:{how.param} left a device with < {min_size} examples; raise alpha")
