"""An async commit's record detail as report fields, and staleness histograms added up."""

from __future__ import annotations

from fedrt.simulation.async_rows import async_fields, staleness_total


def test_an_async_commit_gives_its_staleness_and_buffer_size() -> None:
    lobby = {"training": 7, "ready": 3, "commits": 4, "refused_stale": 1}
    detail = {"mode": "async", "staleness": {"2": 1, "0": 6, "10": 1}, "buffer_size": 8,
              "lobby": {**lobby, "note": "x"}}  # fmt: skip
    fields = async_fields(detail)
    assert fields == {"staleness": {"0": 6, "2": 1, "10": 1}, "buffer_size": 8, "lobby": lobby}
    assert list(fields["staleness"]) == ["0", "2", "10"]  # by versions behind, not as text


def test_a_sync_round_adds_nothing() -> None:
    assert async_fields({"traffic": {}}) == {}
    assert async_fields({"mode": "sync", "staleness": {"0": 3}}) == {}
    assert async_fields(None) == {}


def test_malformed_fields_are_left_out() -> None:
    fields = async_fields({"mode": "async", "staleness": [1, 2], "buffer_size": "8"})
    assert fields == {"staleness": None, "buffer_size": None, "lobby": None}


def test_histograms_add_up_by_staleness() -> None:
    total = staleness_total([{"0": 3, "1": 2}, None, {"1": 1, "12": 4}, {}])
    assert total == {"0": 3, "1": 3, "12": 4}
    assert staleness_total([]) == {}
