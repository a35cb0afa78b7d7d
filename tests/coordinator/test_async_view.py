"""An async (FedBuff) task on the API and the dashboard: commits, staleness, buffer fill."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedrt.coordinator.records import RoundRecord, RoundStatus
from fedrt.coordinator.tasks import TaskSpec
from tests.coordinator.chromium import CHROMIUM, browser, sign_in
from tests.coordinator.exported import write_export
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, make_config

# Three commits of a buffer of 4 (staleness 0/1/2/3 among them), one abandoned cohort, and
# the lobby as the last ended cohort left it: 3 of 4 ready, 7 training, 2 refused.
STALENESS = ({"0": 3, "1": 1}, {"0": 1, "1": 2, "3": 1}, {"1": 2, "2": 2})
LOBBY = {"training": 7, "ready": 3, "commits": 3, "refused_stale": 2}


@dataclass(slots=True)
class Seeded:
    svc: ServiceThread
    fedbuff: str
    sync: str
    start: float


def _cohort(task_id: str, no: int, model: str, at: float, staleness: dict[str, int] | None,
            lobby: dict[str, int]) -> RoundRecord:  # fmt: skip
    committed = staleness is not None
    detail = {"kind": "train", "mode": "async", "buffer_size": 4, "staleness": staleness or {},
              "lobby": lobby}  # fmt: skip
    return RoundRecord(
        task_id=task_id, round_no=no, stage="committed" if committed else "abandoned",
        status=RoundStatus.COMMITTED if committed else RoundStatus.ABANDONED,
        model_sha256=model, started_at=at, ended_at=at + 8, checked_in=4, selected=4,
        reporting=4 if committed else 1, dropped=0 if committed else 3, bytes_in=4000,
        detail=detail,
    )  # fmt: skip


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    with ServiceThread(make_config(tmp_path / "data")) as svc:
        s = svc.service
        write_export(tmp_path / "export")
        base = s.catalog.add_export_dir(tmp_path / "export", actor="admin", max_bytes=1 << 20)
        specs = {
            "fedbuff": TaskSpec(goal_count=4, min_reports=2, mode="async", buffer_size=4,
                                max_staleness=3, max_concurrent=8),
            "sync": TaskSpec(goal_count=4, min_reports=2),
        }  # fmt: skip
        fedbuff, sync = (s.tasks.create(name=n, model_sha256=base.sha256, spec=spec,
                                        actor="admin") for n, spec in specs.items())  # fmt: skip
        start = s.clock() - 300
        # Commits 10 s apart from the first cohort's start; cohort 3 is abandoned between.
        plan = [STALENESS[0], STALENESS[1], None, STALENESS[2]]
        for no, staleness in enumerate(plan, start=1):
            lobby = LOBBY if no == len(plan) else {**LOBBY, "ready": 0}
            record = _cohort(fedbuff.task_id, no, base.sha256, start + 10 * (no - 1), staleness,
                             lobby)  # fmt: skip
            s.store.create_round(record)
        yield Seeded(svc, fedbuff.task_id, sync.task_id, start)


def test_the_api_gives_commits_staleness_and_buffer_fill(seeded: Seeded) -> None:
    view = seeded.svc.request("GET", f"/v1/tasks/{seeded.fedbuff}/async").json()
    assert (view["buffer_size"], view["max_staleness"], view["max_concurrent"]) == (4, 3, 8)
    assert [c["round_no"] for c in view["commits"]] == [1, 2, 4]
    assert [c["since_start_s"] for c in view["commits"]] == [8.0, 18.0, 38.0]
    assert view["commits"][1]["staleness"] == {"0": 1, "1": 2, "3": 1}
    assert view["cohorts_abandoned"] == 1
    # 12 committed updates: 4 fresh, 5 one version behind, 2 two, 1 three.
    assert view["staleness"] == {"0": 4, "1": 5, "2": 2, "3": 1}
    assert view["mean_staleness"] == pytest.approx((5 + 4 + 3) / 12)
    assert view["lobby"] == LOBBY
    assert view["buffer_fill"] == 0.75
    assert view["lobby_at"] == seeded.start + 38


def test_a_sync_task_has_no_async_view_and_an_unknown_one_is_not_found(seeded: Seeded) -> None:
    reply = seeded.svc.request("GET", f"/v1/tasks/{seeded.sync}/async", check=True)
    assert reply.status == 409
    assert "synchronous" in reply.json()["error"]["message"]
    assert seeded.svc.request("GET", "/v1/tasks/nope/async").status == 404
    assert seeded.svc.request("GET", f"/v1/tasks/{seeded.fedbuff}/async", token=None).status == 401


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_the_dashboard_shows_async_tasks(seeded: Seeded, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with browser(tmp_path / "profile", 1280, 1000) as page:
            await sign_in(page, seeded.svc.port, ADMIN_TOKEN)
            await page.wait_for("!document.getElementById('async').hidden")
            card = f"[data-async='{seeded.fedbuff}']"
            await page.wait_for(f'!!document.querySelector("{card}")')
            figures = await page.eval(
                f'Object.fromEntries([...document.querySelectorAll("{card} [data-async-fig]")]'
                ".map((b) => [b.dataset.asyncFig, b.textContent]))"
            )
            assert figures == {"commits": "3", "buffer": "3/4", "training": "7/8",
                               "staleness": "1.0", "refused": "2"}  # fmt: skip
            other = f"!!document.querySelector(\"[data-async='{seeded.sync}']\")"
            assert await page.eval(other) is False
            for chart in ("chart-commits", "chart-staleness"):
                paths = f"document.querySelectorAll('#{chart} path.series').length"
                assert await page.eval(paths) == 1
                dots = f"document.querySelectorAll('#{chart} circle').length"
                assert await page.eval(dots) == (3 if chart == "chart-commits" else 4)
            labels = await page.eval(
                "[...document.querySelectorAll('#chart-staleness text')].map((t) => t.textContent)"
            )
            assert "staleness 0" in labels
            assert "staleness 3" in labels

    asyncio.run(asyncio.wait_for(scenario(), 60))
