"""Round messages and their codec: round trips, canonical bytes, garbage and bad fields."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import (
    MAGIC,
    TAGS,
    WIRE_VERSION,
    decode_from_coordinator,
    decode_from_device,
    decode_message,
    encode_message,
)
from fedrt.protocol.round_errors import MalformedMessage, UnexpectedMessage, UnsupportedVersion

SHA = "0123456789abcdef" * 4
COHORT = tuple(
    rm.CohortMember(device_id=f"dev-{i}", identity_key=bytes([i]) * 32) for i in range(10)
)
MODEL = rm.ModelRef(version=7, sha256=SHA, url=f"/v1/models/{SHA}", signature=b"\x01" * 64)


def samples() -> list[rm.RoundMessage]:
    return [
        rm.TaskAnnouncement(msg_id=1, task_id="mnist", accepting=True, round_id=4, model=MODEL),
        rm.TaskAnnouncement(msg_id=2, task_id="mnist", accepting=False, round_id=0),
        rm.Plan(
            msg_id=3,
            task_id="mnist",
            round_id=4,
            kind=rm.RoundKind.TRAIN,
            model=MODEL,
            training=rm.TrainingConfig(epochs=2, batch_size=16, learning_rate=0.05, max_steps=9),
            update=rm.UpdateSpec(params=1234, clip_norm=2.5, bits=12, weight_cap=500),
            secagg=rm.SecAggSpec(client_id=3, threshold=5, neighbors=8, members=COHORT),
            report_within=120.0,
            momentum=0.9,
        ),
        rm.Plan(
            msg_id=4,
            task_id="mnist",
            round_id=4,
            kind=rm.RoundKind.EVALUATE,
            model=MODEL,
            training=rm.TrainingConfig(),
            update=rm.UpdateSpec(params=1, clip_norm=1, bits=1, weight_cap=1),
            secagg=None,
            report_within=0.5,
        ),
        rm.StageRequest(
            msg_id=5,
            task_id="mnist",
            round_id=4,
            stage=rm.Stage.SHARE_KEYS,
            respond_within=30.0,
            payload=bytes(range(256)),
        ),
        rm.Ack(msg_id=6, task_id="mnist", round_id=4, acked=2**64 - 1, status=rm.AckStatus.LATE),
        rm.ReconnectWindow(
            msg_id=7,
            task_id="mnist",
            round_id=4,
            reason=rm.ReconnectReason.ROUND_FULL,
            earliest=60.0,
            latest=90.0,
        ),
        rm.CheckIn(msg_id=8, task_id="mnist", sdk_version="0.1.0", model_version=6),
        rm.CheckIn(msg_id=8, task_id="mnist", sdk_version="0.1", model_version=6, n_examples=300),
        rm.StageResponse(
            msg_id=9, task_id="mnist", round_id=4, stage=rm.Stage.MASKED_INPUT, payload=b""
        ),
        rm.EvalReport(
            msg_id=10,
            task_id="mnist",
            round_id=4,
            n_examples=64,
            metrics=(rm.Metric(name="loss_sum", value=12.5), rm.Metric(name="correct", value=60)),
        ),
        rm.Abandon(
            msg_id=11,
            task_id="mnist",
            round_id=4,
            reason=rm.AbandonReason.INELIGIBLE,
            detail="unplugged ✓",
        ),
    ]


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_round_trip_is_exact_and_canonical(msg: rm.RoundMessage) -> None:
    data = encode_message(msg)
    assert data[:3] == bytes((MAGIC, WIRE_VERSION, TAGS[type(msg)]))
    back = decode_message(data)
    assert back == msg
    assert type(back) is type(msg)
    assert encode_message(back) == data


def test_plans_sharing_a_cohort_tuple_encode_as_if_each_were_encoded_alone() -> None:
    """The encoder keeps a large tuple's bytes by identity: every plan sharing the tuple, and
    a plan with an equal but distinct tuple, encodes exactly as a fresh encoding does."""
    members = tuple(
        rm.CohortMember(device_id=f"dev-{i}", identity_key=bytes([i]) * 32) for i in range(40)
    )
    first = samples()[2]
    assert isinstance(first, rm.Plan)
    assert first.secagg is not None
    base: rm.SecAggSpec = first.secagg

    def plan(client_id: int, cohort: tuple[rm.CohortMember, ...]) -> rm.Plan:
        spec = dataclasses.replace(base, client_id=client_id, members=cohort)
        return dataclasses.replace(first, secagg=spec)

    encoded = [encode_message(plan(i, members)) for i in range(3)]
    rebuilt = tuple(dataclasses.replace(m) for m in members)  # equal, not the same object
    assert rebuilt is not members
    for i, data in enumerate(encoded):
        back = decode_message(data)
        assert isinstance(back, rm.Plan)
        assert back.secagg is not None
        assert back.secagg.client_id == i
        assert back.secagg.members == members
        assert encode_message(plan(i, rebuilt)) == data
    assert encoded[0] != encoded[1]  # the client ids differ


def test_every_message_class_has_a_sample_and_a_unique_tag() -> None:
    assert {type(m) for m in samples()} == set(TAGS)
    assert len(set(TAGS.values())) == len(TAGS)


def test_small_messages_are_compact() -> None:
    ack = rm.Ack(msg_id=300, task_id="mnist", round_id=12, acked=299, status=rm.AckStatus.ACCEPTED)
    assert len(encode_message(ack)) <= 16


def test_direction_is_enforced() -> None:
    checkin = encode_message(rm.CheckIn(msg_id=1, task_id="t", sdk_version="x"))
    ack = encode_message(
        rm.Ack(msg_id=1, task_id="t", round_id=1, acked=1, status=rm.AckStatus.ACCEPTED)
    )
    assert isinstance(decode_from_device(checkin), rm.CheckIn)
    assert isinstance(decode_from_coordinator(ack), rm.Ack)
    with pytest.raises(UnexpectedMessage):
        decode_from_device(ack)
    with pytest.raises(UnexpectedMessage):
        decode_from_coordinator(checkin)


def test_version_and_tag_are_checked() -> None:
    data = bytearray(encode_message(samples()[0]))
    data[1] = WIRE_VERSION + 1
    with pytest.raises(UnsupportedVersion):
        decode_message(bytes(data))
    data[1], data[2] = WIRE_VERSION, 250
    with pytest.raises(UnsupportedVersion):
        decode_message(bytes(data))
    with pytest.raises(MalformedMessage, match="magic"):
        decode_message(b"\x00" + bytes(data[1:]))


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_every_truncation_and_any_trailing_byte_is_refused(msg: rm.RoundMessage) -> None:
    data = encode_message(msg)
    # Cut just before its appended fields, a message reads as an older peer wrote it.
    appended: dict[str, Any] = {
        f.name: f.default for f in dataclasses.fields(msg) if f.metadata == rm.APPENDED
    }
    as_older = dataclasses.replace(msg, **appended)
    older = len(encode_message(as_older))
    for cut in range(len(data)):
        if cut == older < len(data):
            assert decode_message(data[:cut]) == as_older
            continue
        with pytest.raises(MalformedMessage):
            decode_message(data[:cut])
    # A byte past the end is trailing, or the start of an appended field cut short.
    with pytest.raises(MalformedMessage, match=r"trailing|truncated"):
        decode_message(data + b"\x00")


def test_an_appended_field_is_left_off_at_its_default_and_read_when_present() -> None:
    # A check-in as devices sent it before n_examples existed (pinned bytes): still read.
    old = bytes.fromhex("fe01010805746173696405302e312e3006")
    assert decode_message(old) == rm.CheckIn(
        msg_id=8, task_id="tasid", sdk_version="0.1.0", model_version=6
    )
    assert encode_message(decode_message(old)) == old
    new = encode_message(
        rm.CheckIn(msg_id=8, task_id="tasid", sdk_version="0.1.0", model_version=6, n_examples=5)
    )
    # Every appended field goes out once one differs (features and async_ticket: 0 here).
    assert new == old + b"\x05\x00\x00"
    # Written out at its default it is not canonical: refused.
    with pytest.raises(MalformedMessage, match="appended"):
        decode_message(old + b"\x00\x00\x00")


def test_lengths_are_checked_before_allocation() -> None:
    # A StageResponse whose payload claims 2^63 bytes.
    head = bytes((MAGIC, WIRE_VERSION, TAGS[rm.StageResponse], 1, 1)) + b"t" + b"\x01\x03"
    huge = bytes([0xFF] * 8 + [0x7F])
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode_message(head + huge + b"xx")


def test_overlong_varints_are_refused() -> None:
    good = encode_message(rm.CheckIn(msg_id=1, task_id="t", sdk_version=""))
    # msg_id 1 spelled with a redundant continuation byte.
    bad = good[:3] + b"\x81\x00" + good[4:]
    with pytest.raises(MalformedMessage, match="overlong"):
        decode_message(bad)


def test_decoded_fields_are_validated() -> None:
    ok = rm.ReconnectWindow(
        msg_id=1,
        task_id="t",
        round_id=1,
        reason=rm.ReconnectReason.NO_ROUND,
        earliest=1.0,
        latest=2.0,
    )
    data = bytearray(encode_message(ok))
    # earliest is the first double: make it NaN, then make latest < earliest.
    at = len(data) - 16
    data[at : at + 8] = struct.pack(">d", float("nan"))
    with pytest.raises(MalformedMessage, match="earliest"):
        decode_message(bytes(data))
    data[at : at + 8] = struct.pack(">d", 3.0)
    with pytest.raises(MalformedMessage, match="precede"):
        decode_message(bytes(data))
    # An unknown enum value.
    data = bytearray(encode_message(ok))
    data[7] = 99
    with pytest.raises(MalformedMessage, match="ReconnectReason"):
        decode_message(bytes(data))


@pytest.mark.parametrize(
    "build",
    [
        lambda: rm.CheckIn(msg_id=-1, task_id="t", sdk_version=""),
        lambda: rm.CheckIn(msg_id=2**64, task_id="t", sdk_version=""),
        lambda: rm.CheckIn(msg_id=True, task_id="t", sdk_version=""),
        lambda: rm.CheckIn(msg_id=1, task_id="a/b", sdk_version=""),
        lambda: rm.CheckIn(msg_id=1, task_id="+", sdk_version=""),
        lambda: rm.ModelRef(version=1, sha256="ABC", url=""),
        lambda: rm.UpdateSpec(params=1, clip_norm=0.0, bits=8, weight_cap=1),
        lambda: rm.UpdateSpec(params=1, clip_norm=1.0, bits=33, weight_cap=1),
        lambda: rm.SecAggSpec(client_id=-1, threshold=2, neighbors=2, members=COHORT[:3]),
        lambda: rm.SecAggSpec(client_id=3, threshold=2, neighbors=2, members=COHORT[:3]),
        lambda: rm.SecAggSpec(client_id=0, threshold=2, neighbors=3, members=COHORT[:3]),
        lambda: rm.SecAggSpec(client_id=0, threshold=4, neighbors=2, members=COHORT[:3]),
        lambda: rm.SecAggSpec(client_id=0, threshold=1, neighbors=1, members=COHORT[:1] * 2),
        lambda: rm.CohortMember(device_id="x", identity_key=b"short"),
        lambda: rm.TrainingConfig(learning_rate=float("inf")),
        lambda: rm.TrainingConfig(batch_size=0),
        lambda: rm.Metric(name="x", value=float("nan")),
        lambda: rm.EvalReport(
            msg_id=1,
            task_id="t",
            round_id=1,
            n_examples=1,
            metrics=(rm.Metric(name="a", value=1), rm.Metric(name="a", value=2)),
        ),
        lambda: rm.Abandon(
            msg_id=1, task_id="t", round_id=1, reason=rm.AbandonReason.ERROR, detail="x" * 300
        ),
        lambda: rm.StageRequest(
            msg_id=1, task_id="t", round_id=1, stage=3, respond_within=1.0, payload=b""
        ),
    ],
)
def test_out_of_range_fields_raise_malformed(build: object) -> None:
    with pytest.raises(MalformedMessage):
        build()  # type: ignore[operator]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_message(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(samples()), st.data())
def test_mutated_messages_raise_only_protocol_errors(
    msg: rm.RoundMessage, data: st.DataObject
) -> None:
    raw = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        back = decode_message(bytes(raw))
    except ProtocolError:
        return
    assert encode_message(back) == bytes(raw)
