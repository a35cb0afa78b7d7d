"""``fedrt bench fleet`` (issue 17, benchmark 3) end to end on a small fleet: devices in two
processes of their own, a round committed, check-ins counted, every process's RSS reported.
Nothing here is timed; the figures are in the report for people to read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedrt.benchmarks.fleet import rates
from fedrt.errors import UsageError
from fedrt.simulation import datasets
from fedrt.simulation.fleet_procs import shards


def test_shards_cover_the_fleet_in_contiguous_near_equal_parts() -> None:
    parts = shards(10, 4)
    assert [len(p) for p in parts] == [3, 3, 2, 2]
    assert [i for p in parts for i in p] == list(range(10))
    assert len(shards(3, 8)) == 3
    with pytest.raises(UsageError):
        shards(0, 2)


def test_an_iid_split_over_more_devices_than_examples_deals_the_data_out_again() -> None:
    data = datasets.Dataset("t", np.zeros((10, 2), np.float32), np.arange(10, dtype=np.int32), 10)
    parts = datasets.partition(data, 25, datasets.Partition.parse("iid"), np.random.default_rng(0))
    assert len(parts) == 25
    assert all(len(p) >= 1 for p in parts)
    held = np.concatenate(parts)
    assert set(held.tolist()) == set(range(10))
    with pytest.raises(UsageError):  # non-iid splits still refuse
        datasets.partition(
            data, 25, datasets.Partition.parse("dirichlet:0.5"), np.random.default_rng(0)
        )


def test_rates_from_counter_samples() -> None:
    samples = [{"t": float(t), "checkins": float(10 * t + (50 if t >= 5 else 0))}
               for t in range(0, 21)]  # fmt: skip
    mean, peak1, peak10 = rates(samples, 0.0, 20.0)
    assert mean == pytest.approx(12.5)
    assert peak1 == pytest.approx(60.0)
    assert peak10 == pytest.approx(15.0)


def test_bench_fleet_runs_a_small_fleet_in_two_device_processes(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    report = tmp_path / "fleet.json"
    cmd = [sys.executable, "-m", "fedrt", "bench", "fleet", "--devices", "30", "--per-round",
           "10", "--rounds", "1", "--device-processes", "2", "--out", str(out), "--data-dir",
           str(tmp_path / "data"), "--json", str(report), "--time-limit", "240"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd="/")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "check-ins answered/s" in done.stdout
    result = json.loads(report.read_text())
    assert result["committed"] == 1
    assert result["connected"] == 30
    assert result["checkins_answered"] >= 10
    procs = result["device_processes"]
    assert [p["devices"] for p in procs] == [15, 15]
    assert all(p["peak_rss_mib"] > 0 for p in procs)
    assert result["coordinator_peak_rss_mib"] > 0
    assert result["broker_peak_rss_mib"] > 0
    assert result["idle_rss_per_device_kib"] is not None
