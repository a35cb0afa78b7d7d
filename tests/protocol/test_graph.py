"""The neighbour graph and the choice of (k, t)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol.errors import ParameterError
from fedrt.protocol.graph import (
    choose_parameters,
    neighbor_graph,
    neighbors_of,
    round_failure_log2,
    validate_parameters,
)


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(2, 120))
    k = draw(st.sampled_from([k for k in range(1, n) if not (k % 2 and n % 2)]))
    return n, k


@settings(deadline=None, max_examples=100)
@given(shapes(), st.binary(min_size=16, max_size=16))
def test_graphs_are_k_regular_symmetric_and_seeded(shape: tuple[int, int], seed: bytes) -> None:
    n, k = shape
    graph = neighbor_graph(n, k, seed)
    assert len(graph) == n
    for i, row in enumerate(graph):
        assert len(row) == k
        assert len(set(row)) == k
        assert i not in row
        assert all(i in graph[j] for j in row)
        assert row == neighbors_of(n, k, seed, i)
    assert graph == neighbor_graph(n, k, seed)


def test_k_n_minus_1_is_the_complete_graph_and_the_seed_matters() -> None:
    assert neighbor_graph(6, 5, b"s") == tuple(
        tuple(j for j in range(6) if j != i) for i in range(6)
    )
    assert neighbor_graph(50, 4, b"a") != neighbor_graph(50, 4, b"b")


def test_invalid_shapes_are_rejected() -> None:
    for n, k in [(1, 1), (5, 5), (5, 3), (5, 0)]:
        with pytest.raises(ParameterError):
            neighbor_graph(n, k, b"")
    for n, k, t in [(10, 4, 2), (10, 4, 6), (10, 9, 5), (4, 3, 2)]:
        with pytest.raises(ParameterError):
            validate_parameters(n, k, t)
    validate_parameters(10, 9, 6)
    with pytest.raises(ParameterError):
        neighbors_of(5, 2, b"", 5)


@pytest.mark.parametrize(("n", "dropout"), [(100, 0.1), (1000, 0.1), (100, 0.05), (300, 0.15)])
def test_chosen_parameters_meet_the_failure_target(n: int, dropout: float) -> None:
    k, t = choose_parameters(n, dropout=dropout)
    validate_parameters(n, k, t)
    assert round_failure_log2(n, k, t, dropout) <= -20
    if k > 2:  # and k is minimal: the next smaller admissible k misses the target
        smaller = k - 1 if not ((k - 1) % 2 and n % 2) else k - 2
        assert round_failure_log2(n, smaller, (smaller + 1) // 2 + 1, dropout) > -20


def test_choice_for_the_benchmark_cohort_and_corner_cases() -> None:
    assert choose_parameters(100, dropout=0.1) == (34, 18)
    assert choose_parameters(5, dropout=0.5) == (4, 3)  # falls back to classic SecAgg
    k, t = choose_parameters(100, dropout=0.1, corrupt=0.05)
    assert k >= 34
    assert 2 * t > k + 1
    with pytest.raises(ParameterError):
        choose_parameters(1)
    with pytest.raises(ParameterError):
        choose_parameters(10, dropout=1.0)
