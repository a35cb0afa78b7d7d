"""The dashboard in headless Chromium against a live coordinator holding finished rounds."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.privacy.config import DpConfig, DpMode
from fedrt.coordinator.records import MetricRecord, RoundRecord, RoundStatus
from fedrt.coordinator.rounds.commands import RoundMetrics
from fedrt.coordinator.rounds.journal import metrics_json
from fedrt.coordinator.tasks import TaskSpec
from tests.coordinator.chromium import CHROMIUM, Page, browser, sign_in, text_of
from tests.coordinator.exported import manifest_for, tflite_bytes, write_export
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, make_config
from tests.coordinator.png import decode_png

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)"
)
WIDTH, HEIGHT = 1280, 1000
ACCENT = (0x2F, 0x6F, 0xED)  # the first chart series colour in charts.js
MODEL_BYTES = 4096  # tflite_bytes' default size: what a device downloads per version
# Opt-in: FEDRT_DASHBOARD_PNG=PATH keeps the full-page screenshot there, to look at.
DOCS_PNG = os.environ.get("FEDRT_DASHBOARD_PNG")


@dataclass(slots=True)
class Seeded:
    svc: ServiceThread
    secure: str  # SecAgg+ and central DP: 5 finished rounds (one evaluation), one running
    plain: str  # neither: 2 finished rounds
    versions: list[str] = field(default_factory=list)  # the secure task's, oldest first
    liars: tuple[str, ...] = ()


def _round(
    task_id: str,
    no: int,
    model: str,
    at: float,
    *,
    kind: str = "train",
    epsilon: float | None = None,
    result: str | None = None,
    **metrics: object,
) -> RoundRecord:
    """A finished round as the driver stores it: 13 selected, 2 KiB of messages to each,
    ``40 + no`` seconds long, its detail built by ``metrics_json``."""
    m = RoundMetrics(checked_in=13, selected=13, started_at=at, ended_at=at + 40 + no, **metrics)  # type: ignore[arg-type]
    detail = {"kind": kind, "metrics": metrics_json(m), "evaluation": {}, "promoted": True,
              "reason": "", "bytes_out": 13 * 2048}  # fmt: skip
    return RoundRecord(
        task_id=task_id, round_no=no, stage="committed", status=RoundStatus.COMMITTED,
        model_sha256=model, started_at=at, ended_at=m.ended_at, checked_in=13, selected=13,
        reporting=m.included, dropped=sum(n for _, n in m.dropped), bytes_in=m.bytes_received,
        result_sha256=result, detail=detail, epsilon=epsilon,
    )  # fmt: skip


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    with ServiceThread(make_config(tmp_path / "data")) as svc:
        s, catalog = svc.service, svc.service.catalog
        write_export(tmp_path / "export")
        base = catalog.add_export_dir(tmp_path / "export", actor="admin", max_bytes=1 << 20)
        dp = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0, budget_epsilon=10.0)
        specs = {"digits": TaskSpec(goal_count=10, min_reports=8, eval_every=3, dp=dp),
                 "plain": TaskSpec(goal_count=10, min_reports=8, secagg=False)}  # fmt: skip
        secure, plain = (s.tasks.create(name=name, model_sha256=base.sha256, spec=spec,
                                        actor="admin") for name, spec in specs.items())  # fmt: skip
        for t in (secure, plain):
            s.tasks.act(t.task_id, "start", actor="admin")
        devices = [_enroll(svc, i) for i in range(3)]
        out = Seeded(svc, secure.task_id, plain.task_id, liars=(devices[1],))
        now, current, epsilon = s.clock(), base.sha256, 0.0
        # Rounds 1-5 (4 evaluates, 5 names a liar and refused 2 updates), each training
        # round promoting its version; epsilon 0.5 per training round.
        for no in range(1, 6):
            train = no != 4
            result = None
            if train:
                data = tflite_bytes(seed=no)
                result = catalog.add_version(data, manifest_for(data).to_dict(),
                                             task_id=secure.task_id, parent_sha256=current,
                                             round_no=no, metrics={"accuracy": 0.5 + 0.08 * no},
                                             ).sha256  # fmt: skip
                epsilon += 0.5
            s.store.create_round(_with_evaluation(no, _round(
                secure.task_id, no, current, now - 600 + 100 * no,
                kind="train" if train else "evaluate", epsilon=epsilon, result=result,
                reported=12, included=10,
                dropped=(("training", 1), ("masked_input", 2)), bytes_received=60_000,
                secagg=train, bad_holders=out.liars if no == 5 else (),
                discarded=2 if no == 5 else 0,
            )))  # fmt: skip
            for name, value in (("accuracy", 0.5 + 0.08 * no), ("loss", 2.0 / no)):
                s.store.add_metric(MetricRecord(task_id=secure.task_id, round_no=no, name=name,
                                                value=value, at=now))  # fmt: skip
            if result is not None:
                catalog.promote(result, task_id=secure.task_id, actor="coordinator")
                current = result
                out.versions.append(result)
        s.store.create_round(RoundRecord(task_id=secure.task_id, round_no=6, stage="masked_input",
                                         status=RoundStatus.RUNNING, model_sha256=current,
                                         started_at=now - 5, deadline=now + 45, checked_in=13,
                                         selected=13, reporting=11, dropped=2,
                                         detail={"kind": "train"}, epsilon=epsilon))  # fmt: skip
        for no in (1, 2):
            # The plain task's round 1 ran Krum: it left 3 out, one update's norm stood out.
            robust = dict(aggregator="krum", robust_discarded=3, norm_outliers=1) if no == 1 else {}
            record = _round(plain.task_id, no, base.sha256, now - 300 + 100 * no,
                            reported=8, included=8, bytes_received=16_000, **robust)  # fmt: skip
            if no == 2:  # counted by kind (model-forms): rounds.versions.round_traffic
                traffic = {"down_per_device": DOWN_BY_KIND, "up_per_device": {"protocol": 2000}}
                record = dataclasses.replace(record, detail={**record.detail, "traffic": traffic})
            s.store.create_round(record)
        yield out


# Round 4's evaluation figures (rounds.eval_figures), overall and per device label.
EVALUATION = {"federated_accuracy": 0.8125, "worst_decile_accuracy": 0.5, "accuracy_std": 0.123,
              "eval_devices": 10.0}  # fmt: skip
BY_LABEL = {"region=eu": {"federated_accuracy": 0.9, "worst_decile_accuracy": 0.75,
                          "accuracy_std": 0.05, "eval_devices": 4.0}}  # fmt: skip


def _with_evaluation(no: int, record: RoundRecord) -> RoundRecord:
    if no != 4:
        return record
    detail = {**record.detail, "evaluation": EVALUATION, "evaluation_by_label": BY_LABEL}
    return dataclasses.replace(record, detail=detail)


def _enroll(svc: ServiceThread, i: int) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedrt.coordinator.devices.enrollment import enrollment_proof_payload

    token = svc.service.enrollment.create_token(actor="admin")
    key = Ed25519PrivateKey.generate()
    grant = svc.service.enrollment.enroll(
        token, key.public_key().public_bytes_raw(), key.sign(enrollment_proof_payload(token)),
        labels={"n": str(i)},
    )  # fmt: skip
    return grant.device_id


# A round's bytes down per device by kind (model-forms): 46.0 KiB in all.
DOWN_BY_KIND = {"delta": 40_960, "meta": 4096, "protocol": 2048, "graph": 0, "weights": 0}

# What the page shows of each round: {"task:no": {figure: text}}.
ROWS_JS = """Object.fromEntries([...document.querySelectorAll('#rounds tr[data-round]')].map(
  (tr) => [tr.dataset.round, Object.fromEntries([...tr.querySelectorAll('[data-fig]')].map(
    (td) => [td.dataset.fig, td.textContent]))]))"""


async def _sign_in(page: Page, port: int) -> None:
    await sign_in(page, port, ADMIN_TOKEN)
    await page.wait_for("document.querySelectorAll('#versions tr[data-version]').length === 6")


async def _figures(page: Page, seeded: Seeded, shot: Path) -> None:
    a, b = seeded.secure, seeded.plain
    rows = await page.eval(ROWS_JS)
    # 13 selected, 10 in the aggregate, 3 dropped; 41 s; a 4 KiB model plus 2 KiB of
    # messages down per device; 60,000 bytes from 12 reporting devices up.
    assert rows[f"{a}:1"] == {
        "selected": "13", "participation": "77%", "dropout": "23%", "duration": "41 s",
        "down": "6.0 KiB", "up": "4.9 KiB", "epsilon": "0.50 (+0.50)", "secagg": "yes",
        "flags": "–",
    }  # fmt: skip
    assert rows[f"{a}:4"]["epsilon"] == "1.50 (+0.00)"  # an evaluation round spends nothing
    assert rows[f"{a}:4"]["secagg"] == "no"
    liar = seeded.liars[0]
    flags = f"wrong SecAgg+ shares: {liar} · 2 updates discarded"
    assert rows[f"{a}:5"]["flags"] == flags
    assert rows[f"{a}:6"]["duration"].endswith("s so far")
    assert rows[f"{a}:6"]["participation"] == "–"  # counted when the round ends
    assert rows[f"{b}:2"] == {
        "selected": "13", "participation": "62%", "dropout": "0%", "duration": "42 s",
        "down": "46.0 KiB", "up": "2.0 KiB", "epsilon": "–", "secagg": "no", "flags": "–",
    }  # fmt: skip
    # Bytes down by kind (model-forms): in the cell's title, and charted once counted.
    title = await page.eval(
        f"document.querySelector('tr[data-round=\"{b}:2\"] [data-fig=down]').title"
    )
    assert title == "delta 40.0 KiB · meta 4.0 KiB · protocol 2.0 KiB"
    assert rows[f"{b}:1"]["down"] == "6.0 KiB"  # not counted by kind: the file + messages
    assert rows[f"{b}:1"]["flags"] == "1 norm outlier · krum left out 3"
    assert await page.eval("document.getElementById('downlink').hidden") is False
    flagged = await page.eval(
        "[...document.querySelectorAll('#flags li')].map(li => li.dataset.flag)"
    )
    assert flagged == [f"{b}:1", f"{a}:5"]  # newest first
    assert await page.eval(text_of(f"[data-secagg-share='{a}']")) == "100%"  # eval round aside
    assert await page.eval(text_of(f"[data-secagg-share='{b}']")) == "0%"
    assert await page.eval(text_of(f"[data-epsilon='{a}']")) == "2.00"
    assert await page.eval(text_of('#live b[data-count="checked_in"]')) == "13"
    devices = await page.eval(
        "[...document.querySelectorAll('#devices tr')].map(r => r.dataset.device)"
    )
    assert set(devices) >= {d.device_id for d in seeded.svc.service.store.list_devices()}
    # The latest evaluation round's figures, over all devices and per label (eval_figures).
    evaluation = await page.eval(
        "Object.fromEntries([...document.querySelectorAll('#evaluation tr[data-eval]')].map("
        "(tr) => [tr.dataset.eval, [...tr.querySelectorAll('td')].slice(3).map("
        "(td) => td.textContent)]))"
    )
    assert evaluation == {
        f"{a}:all devices": ["10", "81%", "50%", "±12.3", "–"],
        f"{a}:region=eu": ["4", "90%", "75%", "±5.0", "–"],
    }
    assert await page.eval("document.getElementById('evaluation').hidden") is False
    # Seven charts drawn (accuracy, loss, rates, duration, bytes per device, bytes, privacy).
    assert await page.eval("document.querySelectorAll('.chart path.series').length") >= 7
    assert await page.eval("document.querySelectorAll('.chart .empty').length") == 0
    await page.screenshot(shot, WIDTH)


async def _confirm(page: Page, row: str, action: str, answer: str) -> None:
    await page.click(f"#versions tr[data-version='{row}'] button[data-action='{action}']")
    await page.wait_for("document.getElementById('confirm').open")
    await page.click(f"#confirm-{answer}")
    await page.wait_for("!document.getElementById('confirm').open")


async def _actions(page: Page, seeded: Seeded) -> None:
    svc, task = seeded.svc, seeded.secure
    v1, v2, v3, v5 = seeded.versions

    def current() -> str:
        return str(svc.request("GET", f"/v1/tasks/{task}").json()["model_sha256"])

    result = "document.getElementById('action-result').textContent"
    await _confirm(page, v2, "promote", "cancel")
    assert current() == v5
    await _confirm(page, v2, "promote", "ok")
    await page.wait_for(f"{result}.includes('now on version {v2[:12]}')")
    assert current() == v2
    await page.wait_for(f"!!document.querySelector(\"tr[data-version='{v2}'] .badge\")")
    await _confirm(page, v2, "rollback", "ok")
    await page.wait_for(f"{result}.includes('now on version {v1[:12]}')")
    assert current() == v1
    assert svc.request("GET", f"/v1/models/{v2}/meta").json()["status"] == "rolled_back"
    # A token the coordinator no longer takes (rotated meanwhile): the API's refusal shows.
    await page.eval("sessionStorage.setItem('fedrt-token', 'rotated-' + 'x'.repeat(20))")
    await _confirm(page, v3, "promote", "ok")
    await page.wait_for(f"{result}.includes('401 AuthError')")
    assert current() == v1


def test_dashboard_shows_round_figures_flags_and_versions_and_acts_on_them(
    seeded: Seeded, tmp_path: Path
) -> None:
    shot = tmp_path / "dashboard.png"

    async def scenario() -> None:
        async with browser(tmp_path / "profile", WIDTH, HEIGHT) as page:
            await _sign_in(page, seeded.svc.port)
            assert ADMIN_TOKEN not in await page.eval("location.href")
            await _figures(page, seeded, shot)
            await _actions(page, seeded)

    asyncio.run(asyncio.wait_for(scenario(), 90))
    _check_screenshot(shot)
    if DOCS_PNG:
        shutil.copyfile(shot, DOCS_PNG)


def _check_screenshot(shot: Path) -> None:
    pixels = decode_png(shot.read_bytes())[:, :, :3].astype(np.int32)
    assert pixels.shape[1] == WIDTH
    assert pixels.shape[0] > HEIGHT  # the whole page: rounds, charts, versions, devices

    def near(colour: tuple[int, int, int], tolerance: int) -> np.ndarray:  # type: ignore[type-arg]
        return np.all(np.abs(pixels - np.array(colour)) <= tolerance, axis=2)

    page, card = near((0xF6, 0xF7, 0xFB), 2), near((0xFF, 0xFF, 0xFF), 2)
    assert card.mean() > 0.3, "the white section cards are missing"
    ink = ~(page | card)
    assert ink.mean() > 0.01, "no text or lines drawn"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 50, "too few colours for text, tables and charts"
    assert near(ACCENT, 12).sum() > 200, "no chart line drawn in the series colour"


def _dump_dom(url: str) -> str:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--virtual-time-budget=4000", "--dump-dom", url,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()  # fmt: skip


def test_dashboard_without_token_asks_for_one_and_takes_none_from_the_url(
    seeded: Seeded,
) -> None:
    for url in (f"http://127.0.0.1:{seeded.svc.port}/",
                f"http://127.0.0.1:{seeded.svc.port}/#token={ADMIN_TOKEN}"):  # fmt: skip
        dom = _dump_dom(url)
        assert "signed out" in dom
        assert seeded.secure not in dom
