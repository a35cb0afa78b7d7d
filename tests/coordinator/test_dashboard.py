"""The dashboard rendered by headless Chromium against a live coordinator with real data."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.records import MetricRecord, RoundRecord, RoundStatus
from tests.coordinator.exported import write_export
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, make_config
from tests.coordinator.png import decode_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)"
)
WIDTH, HEIGHT = 1200, 1000
ACCENT = (0x2F, 0x6F, 0xED)  # the first chart series colour in dashboard.js


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[ServiceThread, str]]:
    """A coordinator (embedded broker) with a running task, 6 rounds of metrics, 3 devices."""
    with ServiceThread(make_config(tmp_path / "data")) as svc:
        store = svc.service.store
        write_export(tmp_path / "export")
        model = svc.service.catalog.add_export_dir(
            tmp_path / "export", actor="admin", max_bytes=1 << 20
        )
        task = svc.service.tasks.create(
            name="digits", model_sha256=model.sha256, spec=_spec(), actor="admin"
        )
        svc.service.tasks.act(task.task_id, "start", actor="admin")
        now = svc.service.clock()
        for no in range(1, 7):
            running = no == 6
            store.create_round(
                RoundRecord(
                    task_id=task.task_id, round_no=no, model_sha256=model.sha256,
                    stage="masked_input" if running else "committed",
                    status=RoundStatus.RUNNING if running else RoundStatus.COMMITTED,
                    started_at=now - 100 + no, deadline=now + 45 if running else None,
                    checked_in=13, selected=13, reporting=11 if running else 10,
                    dropped=2 if running else 3, bytes_in=1000 * no * no,
                    epsilon=None if running else 0.5 * no,
                )
            )  # fmt: skip
            if not running:
                for name, value in [("accuracy", 0.5 + 0.08 * no), ("loss", 2.0 / no)]:
                    store.add_metric(
                        MetricRecord(
                            task_id=task.task_id, round_no=no, name=name, value=value, at=now
                        )
                    )
        for i in range(3):
            token = svc.service.enrollment.create_token(actor="admin")
            _enroll_direct(svc, token, i)
        yield svc, task.task_id


def _spec():  # type: ignore[no-untyped-def]
    from fedrt.coordinator.tasks import TaskSpec

    return TaskSpec(goal_count=10, min_reports=8)


def _enroll_direct(svc: ServiceThread, token: str, i: int) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedrt.coordinator.enrollment import enrollment_proof_payload

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    svc.service.enrollment.enroll(
        token, raw, key.sign(enrollment_proof_payload(token)), labels={"n": str(i)}
    )


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--virtual-time-budget=4000", *args, url,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )  # fmt: skip


def test_dashboard_shows_tasks_live_round_charts_and_devices(
    seeded: tuple[ServiceThread, str],
) -> None:
    svc, task_id = seeded
    url = f"http://127.0.0.1:{svc.port}/#token={ADMIN_TOKEN}"
    dom = _chromium(url, "--dump-dom").stdout.decode()
    assert 'data-ready="1"' in dom
    assert task_id in dom
    assert "masked_input" in dom  # the live round's stage
    assert '<b data-count="checked_in">13</b>' in dom
    assert '<b data-count="dropped">2</b>' in dom
    for device in svc.service.store.list_devices():
        assert device.device_id in dom
    # Four charts, each with a drawn series: accuracy, loss, bytes, privacy spent per round.
    assert dom.count('class="series"') == 4
    assert f'<td data-epsilon="{task_id}">–</td>' in dom  # the live round has spent nothing yet
    assert "no data yet" not in dom


def test_dashboard_screenshot_is_a_rendered_page(
    seeded: tuple[ServiceThread, str], tmp_path: Path
) -> None:
    svc, _ = seeded
    shot = tmp_path / "dashboard.png"
    url = f"http://127.0.0.1:{svc.port}/#token={ADMIN_TOKEN}"
    _chromium(url, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}")
    pixels = decode_png(shot.read_bytes())[:, :, :3].astype(np.int32)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)

    def near(colour: tuple[int, int, int], tolerance: int) -> np.ndarray:  # type: ignore[type-arg]
        return np.all(np.abs(pixels - np.array(colour)) <= tolerance, axis=2)

    page, card = near((0xF6, 0xF7, 0xFB), 2), near((0xFF, 0xFF, 0xFF), 2)
    assert card.mean() > 0.3, "the white section cards are missing"
    ink = ~(page | card)
    assert ink.mean() > 0.01, "no text or lines drawn"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 50, "too few colours for text, tables and charts"
    assert near(ACCENT, 12).sum() > 200, "no chart line drawn in the series colour"


def test_dashboard_without_token_asks_for_one(seeded: tuple[ServiceThread, str]) -> None:
    svc, task_id = seeded
    dom = _chromium(f"http://127.0.0.1:{svc.port}/", "--dump-dom").stdout.decode()
    assert "signed out" in dom
    assert task_id not in dom
