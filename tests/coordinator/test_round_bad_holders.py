"""Devices that reveal wrong SecAgg+ shares are named in the round's metrics and on /metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.records import RoundRecord, RoundStatus
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.journal import metrics_json
from fedrt.protocol import codec
from fedrt.protocol import round_messages as rm
from fedrt.protocol.crypto import identity_from_seed, sign_digest
from fedrt.protocol.messages import UnmaskShares
from fedrt.protocol.round_codec import decode_from_device, encode_message
from fedrt.protocol.shamir import PRIME
from fedrt.sdk import participant_commands as pc
from tests.coordinator.harness import ServiceThread, make_config
from tests.coordinator.round_harness import Network, config
from tests.coordinator.test_http_api import _model

LIARS = ("dev-03", "dev-07")


class LyingNetwork(Network):
    """Devices in ``LIARS`` reveal every share they hold off by one (signed properly)."""

    def _device(self, device_id: str, commands: list[pc.Command]) -> None:
        queued = len(self.to_server)
        super()._device(device_id, commands)
        if device_id not in LIARS:
            return
        for k in range(queued, len(self.to_server)):
            sender, data = self.to_server[k]
            msg = decode_from_device(data)
            if isinstance(msg, rm.StageResponse) and msg.stage is rm.Stage.UNMASK:
                lie = dataclasses.replace(msg, payload=self._lie(device_id, msg.payload))
                self.to_server[k] = (sender, encode_message(lie))

    def _lie(self, device_id: str, payload: bytes) -> bytes:
        message = codec.decode(payload)
        assert isinstance(message, UnmaskShares)
        shares = tuple(
            dataclasses.replace(
                s,
                share=((int.from_bytes(s.share[:4], "little") + 1) % PRIME).to_bytes(4, "little")
                + s.share[4:],
            )
            for s in message.shares
        )
        wrong = dataclasses.replace(message, shares=shares)
        key = identity_from_seed(bytes([self.ids.index(device_id) + 1]) * 32)
        return codec.encode(
            dataclasses.replace(wrong, signature=sign_digest(key, codec.signing_digest(wrong)))
        )


def test_wrong_shares_are_decoded_around_and_their_holders_named() -> None:
    # Classic SecAgg over 10 devices, t = 6: two wrong shares per secret are corrected.
    cfg = config(goal_count=10, secagg_neighbors=9, secagg_threshold=6)
    net = LyingNetwork(cfg, 10, np.zeros(12, np.float32))
    rng = np.random.default_rng(3)
    net.deltas = {d: rng.normal(0, 0.05, 12) for d in net.ids}
    net.start()
    net.run()
    commit = net.outcome()
    assert isinstance(commit, rc.Commit)
    assert commit.metrics.included == 10
    assert commit.metrics.bad_holders == LIARS
    assert metrics_json(commit.metrics)["bad_holders"] == list(LIARS)


def test_an_honest_round_names_nobody() -> None:
    net = Network(config(), 6, np.zeros(12, np.float32))
    net.deltas = {d: np.full(12, 0.01) for d in net.ids}
    net.start()
    net.run()
    commit = net.outcome()
    assert isinstance(commit, rc.Commit)
    assert commit.metrics.bad_holders == ()


@pytest.fixture
def svc(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[ServiceThread]:
    with ServiceThread(make_config(tmp_path / "data", mosquitto.url)) as running:
        yield running


def test_metrics_endpoint_counts_the_bad_holders_of_the_latest_ended_round(
    svc: ServiceThread,
) -> None:
    base = _model(svc)
    body = {"name": "t", "model_sha256": base}
    tid = svc.request("POST", "/v1/tasks", body=body).json()["task_id"]
    store = svc.service.store
    for no, detail in ((1, {"metrics": metrics_json(rc.RoundMetrics(bad_holders=LIARS))}),
                       (2, {"kind": "train"})):  # fmt: skip
        store.create_round(
            RoundRecord(task_id=tid, round_no=no, stage="unmask", status=RoundStatus.RUNNING,
                        model_sha256=base, started_at=1.0, deadline=100.0, detail=detail)
        )  # fmt: skip
    # Round 2 is still running (no metrics yet): the gauge shows round 1's two liars.
    text = svc.request("GET", "/metrics", token=None).body.decode()
    samples = {
        s.labels.get("task"): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "fedrt_round_secagg_bad_holders"
    }
    assert samples == {tid: 2.0}, text
