"""Hostile traffic during a live round on a real Mosquitto: refused, logged, counted, harmless."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from fedrt.benchmarks.ingest_driver import register_devices
from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.config import LimitsConfig
from fedrt.coordinator.driver_registry import default_driver_factory
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.rotation import padded_size
from fedrt.protocol.round_codec import decode_from_device
from fedrt.protocol.topics import UpChannel
from tests.coordinator.harness import ServiceThread, make_config
from tests.coordinator.live_round import (
    MODEL_DIR,
    RawDevice,
    live_coordinator,
    model_weights,
    start_task,
    wait_for,
)

HONEST = [f"honest-{i}" for i in range(6)]
FLOOD = 100
# Burst 12 at 0.1 token/s: what the honest devices send fits easily, while a flood of 100
# is refused but for the burst (and a token per 10 s the test takes).
LIMITS = LimitsConfig(device_rate_per_s=0.1, device_burst=12, max_message_bytes=8192)


def _outcomes(service: ServiceThread) -> dict[str, float]:
    """``fedrt_mqtt_messages_total`` summed over channels, by outcome."""
    text = service.request("GET", "/metrics", check=False).body.decode()
    out: dict[str, float] = {}
    for match in re.finditer(r"fedrt_mqtt_messages_total\{([^}]*)\} (\S+)", text):
        outcome = re.search(r'outcome="([^"]+)"', match.group(1))
        assert outcome is not None
        out[outcome.group(1)] = out.get(outcome.group(1), 0.0) + float(match.group(2))
    return out


def test_hostile_traffic_during_a_live_round_is_refused_and_the_round_commits(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedrt")
    rng = np.random.default_rng(3)
    with live_coordinator(tmp_path / "coordinator", mosquitto.url, LIMITS) as service:
        svc = service.service
        task_id = start_task(
            service,
            [*HONEST, "mallory"],
            goal_count=6,
            over_selection=7 / 6,  # all seven are selected; six updates meet the goal
            min_reports=6,
            clip_norm=1.0,
            checkin_deadline_s=30.0,
            training_deadline_s=60.0,
        )
        start_sha = svc.store.get_task(task_id).model_sha256
        start = model_weights(svc, start_sha)
        devices = {d: RawDevice(mosquitto.host, mosquitto.port, d, task_id).connect()
                   for d in [*HONEST, "mallory"]}  # fmt: skip
        try:
            checkins = {d: dev.check_in() for d, dev in devices.items()}
            plans = {d: dev.expect(rm.Plan) for d, dev in devices.items()}
            plan = plans["mallory"]
            mallory = devices["mallory"]

            # --- mallory, selected for the round, sends everything but a valid update ---
            mallory.publish(UpChannel.UPDATE, os.urandom(300))  # garbage
            good = round_update.pack(
                round_update.encode(
                    np.zeros(plan.update.params), 1, plan.update, rng, weighted=False
                ),
                plan.update.bits,
            )
            short = rm.StageResponse(
                msg_id=mallory.msg_id(),
                task_id=task_id,
                round_id=plan.round_id,
                stage=rm.Stage.PLAIN_UPDATE,
                payload=good[:-3],  # wrong size
            )
            mallory.send(UpChannel.UPDATE, short)
            mallory.publish(UpChannel.UPDATE, b"\0" * 9000)  # beyond max_message_bytes
            other_round = rm.StageResponse(
                msg_id=mallory.msg_id(),
                task_id=task_id,
                round_id=plan.round_id + 5,
                stage=rm.Stage.PLAIN_UPDATE,
                payload=good,
            )
            mallory.send(UpChannel.UPDATE, other_round)
            mallory.publish(UpChannel.CHECKIN, checkins["mallory"])  # replayed check-in
            channels = list(UpChannel)
            for i in range(FLOOD):
                mallory.publish(channels[i % len(channels)], os.urandom(64))
            wait_for(lambda: mallory.acks(short.msg_id), "mallory's short update refused")
            wait_for(lambda: mallory.acks(other_round.msg_id), "the other round's answer")
            wait_for(lambda: mallory.acks(1), "the replayed check-in answered")
            wait_for(
                lambda: sum(_outcomes(service).values()) >= len(devices) + 5 + FLOOD,
                "mallory's messages handled",
            )
            assert mallory.acks(short.msg_id) == [rm.AckStatus.REJECTED]
            assert mallory.acks(other_round.msg_id) == [rm.AckStatus.LATE]
            assert mallory.acks(1) == [rm.AckStatus.ACCEPTED, rm.AckStatus.DUPLICATE]

            # --- the honest devices report; one of them replays its update ---
            deltas, examples = {}, {}
            direction = rng.normal(size=plan.update.params)
            for d in HONEST:
                v = direction + rng.normal(size=plan.update.params)
                deltas[d] = v * (rng.uniform(0.3, 0.9) / np.linalg.norm(v))  # within the clip
                examples[d] = int(rng.integers(5, 60))
            sent = {}
            for d in HONEST:
                sent[d] = devices[d].update(plans[d], deltas[d], examples[d])
                if d == HONEST[0]:  # replayed while the round still takes updates
                    devices[d].publish(UpChannel.UPDATE, sent[d])

            def committed() -> dict[str, object] | None:
                rounds = service.request("GET", f"/v1/tasks/{task_id}/rounds").json()
                rows = rounds["rounds"] if isinstance(rounds, dict) else rounds
                return rows[0] if rows and rows[0]["status"] == "committed" else None

            round_row = wait_for(committed, "the round to commit")
            dup_id = decode_from_device(sent[HONEST[0]]).msg_id
            wait_for(lambda: len(devices[HONEST[0]].acks(dup_id)) == 2, "the replay answered")
            assert devices[HONEST[0]].acks(dup_id) == [
                rm.AckStatus.ACCEPTED,
                rm.AckStatus.DUPLICATE,
            ]
            mallory.expect(rm.ReconnectWindow)  # cut when the goal was met

            # --- the model is the FedAvg of the honest updates alone, counted once each ---
            assert round_row["reporting"] == len(HONEST)
            result = model_weights(svc, str(round_row["result_sha256"]))
            weights = np.array([min(examples[d], plan.update.weight_cap) for d in HONEST])
            mean = (weights[:, None] * np.stack([deltas[d] for d in HONEST])).sum(0)
            mean /= weights.sum()
            # Rounding: under one step per rotated coordinate, rotated back orthonormally.
            tol = round_update.step(plan.update) * np.sqrt(padded_size(plan.update.params))
            assert np.linalg.norm(result - (start + mean)) <= tol + 1e-5
            assert np.linalg.norm(mean) > 10 * tol  # the check above can fail
            rounds = service.request("GET", f"/v1/tasks/{task_id}/rounds").json()
            rows = rounds["rounds"] if isinstance(rounds, dict) else rounds
            assert [r["status"] for r in rows] == ["committed"]
            assert svc.store.get_task(task_id).model_sha256 == round_row["result_sha256"]

            # --- every refusal counted and logged with its type ---
            outcomes = _outcomes(service)
            assert outcomes["too_large"] == 1
            assert outcomes["rate_limited"] >= FLOOD - LIMITS.device_burst - 6
            assert outcomes["rejected"] >= 2  # the garbage and the short update at least
            for name in (
                "MalformedMessage",
                "LengthError",
                "StaleMessage",
                "DuplicateMessageId",
                "too_large",
                "rate_limited",
            ):
                assert name in caplog.text, name
        finally:
            for dev in devices.values():
                dev.close()


def test_the_served_driver_paces_devices_as_configured(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """``[pace]`` reaches the driver ``serve`` runs: a device checking in while no round is
    open is sent away for a window starting at ``min_delay``, ``spread`` wide."""
    pace = PaceConfig(min_delay=7.0, spread=2.0, target_rate=4.0)
    config = make_config(tmp_path / "coordinator", mosquitto.url, pace=pace)
    factory = default_driver_factory()
    with ServiceThread(config, factory) as service:
        service.run(register_devices, service.service.store, ["early-0", "early-1"])
        body = {"name": "idle", "model_dir": str(MODEL_DIR), "spec": {"secagg": False}}
        task_id = str(service.request("POST", "/v1/tasks", body=body).json()["task_id"])
        devices = [
            RawDevice(mosquitto.host, mosquitto.port, d, task_id).connect()
            for d in ("early-0", "early-1")
        ]
        try:
            windows = []
            for dev in devices:
                dev.check_in()
                windows.append(dev.expect(rm.ReconnectWindow))
        finally:
            for dev in devices:
                dev.close()
    assert windows[0].reason is rm.ReconnectReason.NO_ROUND
    assert (windows[0].earliest, windows[0].latest) == pytest.approx((7.0, 9.0), abs=1e-6)
    assert 7.0 - 1e-6 <= windows[1].earliest <= 7.25 + 1e-6  # the next slot or later


def test_a_device_enrolled_while_a_secagg_round_checks_in_takes_part(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The round's identity keys are read when it opens; a device enrolled after that is
    looked up when it checks in instead of being refused (and sent away for minutes)."""
    with live_coordinator(tmp_path / "coordinator", mosquitto.url) as service:
        task_id = start_task(
            service, ["first-0", "first-1"], secagg=True, goal_count=3, min_reports=3,
            over_selection=1.0, checkin_deadline_s=30.0,
        )  # fmt: skip
        early = RawDevice(mosquitto.host, mosquitto.port, "first-0", task_id).connect()
        late = RawDevice(mosquitto.host, mosquitto.port, "late-2", task_id).connect()
        try:
            for _ in range(100):  # until round 1 is open (before that: "no round" acks)
                sent = decode_from_device(early.check_in()).msg_id
                ack = early.expect(rm.Ack, lambda a, sent=sent: a.acked == sent)  # type: ignore[misc]
                if ack.round_id == 1:
                    break
                time.sleep(0.1)
            assert ack.round_id == 1
            service.run(register_devices, service.service.store, ["late-2"])
            data = late.check_in()
            msg_id = decode_from_device(data).msg_id
            wait_for(lambda: late.acks(msg_id), "the late device's ack")
            assert late.acks(msg_id) == [rm.AckStatus.ACCEPTED]
            assert not [m for m in late.seen if isinstance(m, rm.ReconnectWindow)]
        finally:
            early.close()
            late.close()
