"""run_in_memory end to end: exact sums under any dropout pattern, aborts, uniform masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrt.protocol import codec
from fedrt.protocol.bitpack import unpack
from fedrt.protocol.errors import LengthError, ParameterError, RoundAborted
from fedrt.protocol.messages import MaskedInput, Stage
from fedrt.protocol.secagg import (
    STAGE_NAMES,
    Observer,
    SecAggServer,
    drive,
    make_cohort,
    run_in_memory,
)
from tests.protocol.secagg_support import ABORT, oracle

SETTINGS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def _inputs(draw: st.DrawFn, n: int, bits: int) -> list[np.ndarray]:
    length = draw(st.integers(1, 6))
    values = st.integers(0, 2**bits - 1)
    return [
        np.array(draw(st.lists(values, min_size=length, max_size=length)), dtype=np.uint64)
        for _ in range(n)
    ]


def _plain_sum(
    inputs: list[np.ndarray], included: set[int] | frozenset[int], bits: int
) -> list[int]:
    return [sum(int(inputs[i][j]) for i in included) % 2**bits for j in range(len(inputs[0]))]


@st.composite
def classic_rounds(draw: st.DrawFn) -> tuple[list[np.ndarray], int, int, dict[int, str]]:
    n = draw(st.integers(3, 40))
    bits = draw(st.integers(1, 64))
    threshold = draw(st.integers(n // 2 + 1, n))  # classic SecAgg: (k + 1) / 2 < t <= k + 1
    drop = draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from(STAGE_NAMES)))
    return _inputs(draw, n, bits), bits, threshold, drop


@SETTINGS
@given(classic_rounds())
def test_classic_secagg_sums_survivors_or_aborts_below_threshold(
    case: tuple[list[np.ndarray], int, int, dict[int, str]],
) -> None:
    inputs, bits, t, drop = case
    n = len(inputs)
    alive = set(range(n))
    counts = []
    for stage in STAGE_NAMES:
        alive -= {i for i, s in drop.items() if s == stage}
        counts.append(len(alive))
    late = ("consistency_check", "unmask")  # their masked inputs are in the sum already
    included = set(range(n)) - {i for i, s in drop.items() if s not in late}
    if min(counts) < t:
        with pytest.raises(RoundAborted):
            run_in_memory(inputs, bits=bits, threshold=t, neighbors=n - 1, drop=drop, seed=n)
    else:
        result = run_in_memory(inputs, bits=bits, threshold=t, neighbors=n - 1, drop=drop, seed=n)
        assert [int(v) for v in result] == _plain_sum(inputs, included, bits)


@st.composite
def sparse_rounds(draw: st.DrawFn) -> tuple[list[np.ndarray], int, int, int, dict[int, str], int]:
    n = draw(st.integers(3, 40))
    k = draw(st.sampled_from([k for k in range(2, n) if not (k % 2 and n % 2)]))
    t = draw(st.integers((k + 1) // 2 + 1, k + 1))
    bits = draw(st.integers(1, 64))
    drop = draw(
        st.dictionaries(st.integers(0, n - 1), st.sampled_from(STAGE_NAMES), max_size=n // 3)
    )
    return _inputs(draw, n, bits), bits, k, t, drop, draw(st.integers(0, 3))


@SETTINGS
@given(sparse_rounds())
def test_secagg_plus_matches_the_oracle_for_any_dropout_pattern(
    case: tuple[list[np.ndarray], int, int, int, dict[int, str], int],
) -> None:
    inputs, bits, k, t, drop, seed = case
    n = len(inputs)
    config, _ = make_cohort(
        n, length=len(inputs[0]), bits=bits, threshold=t, neighbors=k, seed=seed
    )
    expected = oracle(n, k, t, config.round_id, drop)
    if expected == ABORT:
        with pytest.raises(RoundAborted):
            run_in_memory(inputs, bits=bits, threshold=t, neighbors=k, drop=drop, seed=seed)
    else:
        assert not isinstance(expected, str)
        result = run_in_memory(inputs, bits=bits, threshold=t, neighbors=k, drop=drop, seed=seed)
        assert [int(v) for v in result] == _plain_sum(inputs, expected, bits)


def test_exactly_t_survivors_finish_and_one_fewer_aborts() -> None:
    inputs = [np.full(4, i, dtype=np.uint64) for i in range(9)]
    drop = {0: "advertise_keys", 1: "share_keys", 2: "masked_input", 3: "unmask"}
    result = run_in_memory(inputs, bits=10, threshold=5, neighbors=8, drop=drop, seed=3)
    assert result.tolist() == [sum(range(3, 9))] * 4  # 3 dropped at unmask: still included
    with pytest.raises(RoundAborted) as info:
        run_in_memory(inputs, bits=10, threshold=5, neighbors=8, drop={**drop, 4: "unmask"}, seed=3)
    assert info.value.stage == "unmask"
    assert info.value.threshold == 5


def test_dropout_before_share_keys_removes_the_device_from_its_neighbours() -> None:
    inputs = [np.array([2**12 - 1, i], dtype=np.uint64) for i in range(30)]
    drop = {i: "share_keys" for i in range(0, 30, 7)} | {5: "advertise_keys", 6: "masked_input"}
    result = run_in_memory(inputs, bits=13, threshold=7, neighbors=10, drop=drop, seed=5)
    included = [i for i in range(30) if i not in drop]
    assert result.tolist() == [
        len(included) * (2**12 - 1) % 2**13,
        sum(included) % 2**13,
    ]


@pytest.mark.parametrize(
    ("inputs", "kwargs", "error"),
    [
        ([np.zeros(3, np.uint64)], {}, ParameterError),
        ([np.zeros(3, np.uint64), np.zeros(4, np.uint64), np.zeros(3, np.uint64)], {}, LengthError),
        ([np.zeros(3, np.uint64)] * 3, {"drop": {0: "training"}}, ParameterError),
        ([np.zeros(3, np.uint64)] * 3, {"drop": {7: "unmask"}}, ParameterError),
        ([np.full(3, 16, np.uint64)] * 3, {}, ParameterError),  # 16 does not fit in 4 bits
        ([np.zeros(3, np.float32)] * 3, {}, ParameterError),
    ],
)
def test_run_in_memory_rejects_bad_arguments(
    inputs: list[np.ndarray], kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        run_in_memory(inputs, bits=4, threshold=2, neighbors=2, **kwargs)  # type: ignore[arg-type]


class _Capture(Observer):
    def __init__(self) -> None:
        self.masked: dict[int, bytes] = {}

    def client(self, index, stage, call, incoming):  # type: ignore[no-untyped-def]
        reply = call()
        if stage is Stage.MASKED_INPUT and reply is not None:
            self.masked[index] = reply
        return reply


def _chi_square_threshold(df: int, z: float = 4.75) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df) at normal score z (p ~ 1e-6)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_a_masked_vector_alone_is_uniform() -> None:
    bits, length = 8, 40_000
    config, clients = make_cohort(5, length=length, bits=bits, threshold=3, neighbors=4, seed=9)
    for i, client in enumerate(clients):
        client.set_input(np.full(length, i * 37 % 256, dtype=np.uint64))  # constant input
    capture = _Capture()
    drive(SecAggServer(config), dict(enumerate(clients)), observer=capture)
    message = codec.decode(capture.masked[0])
    assert isinstance(message, MaskedInput)
    masked = unpack(message.payload, bits, length)
    expected = length / 2**bits
    counts = np.bincount(masked, minlength=2**bits)
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < _chi_square_threshold(2**bits - 1)
    # The same statistic on the unmasked (constant) input is enormous: the test has power.
    raw = np.bincount(np.zeros(length, dtype=np.int64), minlength=2**bits)
    assert float(((raw - expected) ** 2 / expected).sum()) > 100 * statistic
