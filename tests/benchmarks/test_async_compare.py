"""``fedrt bench async``: both modes tuned alike, the table and the verdict from the reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from fedrt.benchmarks import async_compare
from fedrt.cli import build_parser


def _args(*extra: str) -> argparse.Namespace:
    return build_parser("bench").parse_args(["bench", "async", "--out", "/tmp/x", *extra])


def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_both_modes_share_the_fleet_and_the_issues_defaults() -> None:
    args = _args()
    sync = async_compare.command(args, "sync", Path("s.json"))
    fedbuff = async_compare.command(args, "async", Path("a.json"))
    for name in ("--devices", "--model", "--partition", "--speed-spread", "--train-seconds",
                 "--dropout", "--seed", "--lr", "--local-epochs", "--target-accuracy"):  # fmt: skip
        assert _option(sync, name) == _option(fedbuff, name)
    assert _option(sync, "--devices") == "100"
    assert _option(sync, "--model") == "zoo:cnn"
    assert _option(sync, "--partition") == "dirichlet:0.5"
    assert float(_option(sync, "--speed-spread")) == 10.0
    assert float(_option(sync, "--dropout")) == 0.1
    # A phone-like training time (a simulation assumption), 2 to 20 s across the spread.
    assert float(_option(sync, "--train-seconds")) == 2.0
    assert float(_option(sync, "--target-accuracy")) == 0.9
    assert "--secagg" in sync
    assert "--secagg" in fedbuff
    assert "--mode" not in sync
    assert _option(fedbuff, "--mode") == "async"
    # Tuned alike (docs/async.md): FedAvg's server lr in both, the TaskSpec's staleness cap.
    assert (_option(fedbuff, "--max-staleness"), _option(fedbuff, "--server-lr")) == ("10", "1.0")
    assert _option(sync, "--server-lr") == "1.0"


def test_fedbuff_gets_the_sync_concurrency_and_update_count() -> None:
    args = _args("--per-round", "20", "--rounds", "30", "--buffer-size", "10")
    fedbuff = async_compare.command(args, "async", Path("a.json"))
    # 20 a round, over-selected by 1.15 for 10 % dropout: 23 devices train at once in both.
    assert _option(fedbuff, "--max-concurrent") == "23"
    # 30 rounds of 20 updates = 60 commits of 10.
    assert _option(fedbuff, "--rounds") == "60"
    tuned = _args("--max-concurrent", "40", "--commits", "7", "--server-lr-async", "0.25")
    cmd = async_compare.command(tuned, "async", Path("a.json"))
    assert (_option(cmd, "--max-concurrent"), _option(cmd, "--rounds")) == ("40", "7")
    assert _option(cmd, "--server-lr") == "0.25"


def _report(mode: str, seconds: float | None, final: float) -> dict[str, Any]:
    rows = [
        {"status": "committed", "reported": 10, "elapsed_s": 5.0, "accuracy": 0.5,
         "staleness": {"0": 8, "1": 2} if mode == "async" else None},
        {"status": "failed", "reported": 0, "elapsed_s": 9.0,
         "lobby": {"ready": 14} if mode == "async" else None},
        {"status": "committed", "reported": 9, "elapsed_s": 14.5, "accuracy": final,
         "staleness": {"1": 5, "3": 4} if mode == "async" else None},
    ]  # fmt: skip
    config = {"per_round": 20, "buffer_size": 10, "max_concurrent": 23, "max_staleness": 10,
              "learning_rate": 0.1, "local_epochs": 5, "server_lr": 1.0,
              "train_seconds": 2.0}  # fmt: skip
    return {
        "rounds": rows,
        "config": config,
        "seconds_to_target": seconds,
        "rounds_to_target": 2 if seconds is not None else None,
        "final_accuracy": final,
        "initial_accuracy": 0.1,
    }


def test_rows_table_and_verdict() -> None:
    sync = async_compare.row("sync", _report("sync", 100.0, 0.93), 130.0)
    fedbuff = async_compare.row("async", _report("async", 40.0, 0.925), 70.0)
    assert (sync["committed"], sync["rounds"], sync["updates"]) == (2, 3, 19)
    assert sync["training_seconds"] == 14.5
    assert sync["staleness"] is None
    assert fedbuff["staleness"] == {"0": 8, "1": 7, "3": 4}
    assert fedbuff["peak_ready"] == 14
    assert sync["peak_ready"] is None
    assert "20 a round" in sync["tuning"]
    assert "K=10, 23 at once" in fedbuff["tuning"]
    text = async_compare.table([sync, fedbuff])
    assert len(text.splitlines()) == 4
    assert "| async | 40.0 | 2 | 0.925 | 2/3 | 19 | 14.5 | 2.0 | 1.0 | 14 |" in text
    verdict = async_compare.verdict([sync, fedbuff])
    assert "0.40 (target <= 0.5)" in verdict
    assert "0.925 vs 0.930" in verdict


def test_no_ratio_without_both_times() -> None:
    sync = async_compare.row("sync", _report("sync", None, 0.8), 130.0)
    fedbuff = async_compare.row("async", _report("async", 40.0, 0.92), 70.0)
    assert "not reached by sync" in async_compare.verdict([sync, fedbuff])
    assert "both modes" in async_compare.verdict([fedbuff])


def test_unknown_modes_are_refused() -> None:
    from fedrt.errors import UsageError

    with pytest.raises(UsageError):
        async_compare.run(_args("--modes", "sync,fast"))
