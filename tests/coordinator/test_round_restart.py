"""A device restarted mid-round says so (Abandon RESTARTED): the round goes on without waiting
for a deadline, or is abandoned at once below ``min_reports``; the device counts once."""

from __future__ import annotations

import numpy as np

from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.states import RoundState
from fedrt.protocol import round_messages as rm
from fedrt.protocol.crypto import identity_from_seed
from fedrt.protocol.round_codec import encode_message
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import Participant
from tests.coordinator.round_harness import Network, config


def _restart(net: Network, device_id: str) -> tuple[Participant, rm.Abandon]:
    """The device's process died; a new one starts from what the old one left on disk."""
    old = net.devices[device_id]
    key = identity_from_seed(bytes([net.ids.index(device_id) + 1]) * 32)  # as the harness's
    new = Participant(old.config, identity=key, rng=np.random.default_rng(9),
                      first_msg_id=old.next_msg_id)  # fmt: skip
    (pub,) = [c for c in new.restart(old.round_facts(), net.now) if isinstance(c, pc.Publish)]
    assert isinstance(pub.message, rm.Abandon)
    assert pub.message.reason is rm.AbandonReason.RESTARTED
    return new, pub.message


def test_a_restart_after_the_masked_input_is_survived_without_waiting_for_the_deadline() -> None:
    net = Network(config(), 6, np.zeros(12, np.float32), drop={"dev-02": "consistency_check"})
    net.deltas = {d: np.full(12, 0.01 * (i + 1)) for i, d in enumerate(net.ids)}
    net.start()
    net.deliver()  # everyone else has signed; the round waits for dev-02
    assert net.machine.state is RoundState.CONSISTENCY_CHECK
    stage_deadline = net.machine.next_deadline()
    new, abandon = _restart(net, "dev-02")
    out = net.machine.receive_data("dev-02", encode_message(abandon), net.now)
    acks = [c.message for c in out if isinstance(c, rc.Send) and isinstance(c.message, rm.Ack)]
    assert [(a.acked, a.status) for a in acks] == [(abandon.msg_id, rm.AckStatus.ACCEPTED)]
    net.server_out.extend(out)
    net.to_device.extend((c.device_id, encode_message(c.message)) for c in out
                         if isinstance(c, rc.Send))  # fmt: skip
    net.deliver()
    commit = net.outcome()
    assert isinstance(commit, rc.Commit)
    assert stage_deadline is not None
    assert net.now < stage_deadline  # the Abandon closed the stage, not the clock
    assert commit.metrics.dropped == (("consistency_check", 1),)
    assert commit.metrics.included == 6  # its masked input was in before it died
    # Acknowledged, the restarted device checks in again at once; it is not counted twice.
    assert pc.ScheduleCheckIn(at=net.now) in new.receive(acks[0], net.now)
    (checkin,) = [c for c in new.check_in(net.now) if isinstance(c, pc.Publish)]
    again = net.machine.receive_data("dev-02", encode_message(checkin.message), net.now)
    windows = [c.message for c in again if isinstance(c.message, rm.ReconnectWindow)]  # type: ignore[union-attr]
    assert [w.reason for w in windows] == [rm.ReconnectReason.DROPPED]
    assert net.machine.status().dropped == 1


def test_a_restart_below_min_reports_abandons_the_round_at_once() -> None:
    cfg = config(goal_count=3, min_reports=3, secagg_neighbors=2, secagg_threshold=2)
    net = Network(cfg, 3, np.zeros(12, np.float32), drop={"dev-01": "training"})
    net.deltas = {d: np.full(12, 0.01) for d in net.ids}
    net.start()
    net.deliver()
    assert net.machine.state is RoundState.TRAINING
    _, abandon = _restart(net, "dev-01")
    out = net.machine.receive_data("dev-01", encode_message(abandon), net.now)
    (gone,) = [c for c in out if isinstance(c, rc.AbandonRound)]
    assert "2 devices left, 3 needed" in gone.reason
    assert gone.metrics.dropped == (("training", 1),)
    told = {c.device_id: c.message.reason for c in out if isinstance(c, rc.Send)  # type: ignore[union-attr]
            and isinstance(c.message, rm.ReconnectWindow)}  # fmt: skip
    assert told == {d: rm.ReconnectReason.ROUND_ABANDONED for d in ("dev-00", "dev-02")}
