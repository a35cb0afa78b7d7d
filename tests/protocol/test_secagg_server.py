"""SecAggServer: every bad client message is rejected with its own error and changes nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedrt.protocol import codec
from fedrt.protocol.errors import (
    BadSignature,
    ConsistencyError,
    DecodeError,
    DuplicateMessage,
    LengthError,
    ParameterError,
    ProtocolError,
    ReplayError,
    RoundAborted,
    StageError,
    UnknownDevice,
)
from fedrt.protocol.messages import (
    AdvertiseKeys,
    ConsistencyCheck,
    MaskedInput,
    RevealedShare,
    ShareKeys,
    ShareKind,
    Stage,
    UnmaskRequest,
    UnmaskShares,
)
from fedrt.protocol.shamir import PRIME
from tests.protocol.secagg_support import Round


def _finish(r: Round, outgoing: dict[int, bytes], *, skip: tuple[int, ...] = ()) -> None:
    while r.server.stage is not Stage.DONE:
        outgoing = r.step(outgoing, skip=skip)


def test_a_clean_round_sums_everything_and_reports_progress() -> None:
    r = Round.new()
    assert r.server.waiting_for == frozenset(range(5))
    r.server.receive(r.clients[0].start())
    assert r.server.waiting_for == frozenset(range(1, 5))
    for client in r.clients[1:]:
        r.server.receive(client.start())
    _finish(r, r.server.close_stage())
    assert r.server.included == frozenset(range(5))
    assert r.server.result.tolist() == r.expected(range(5)).tolist()
    with pytest.raises(StageError):
        r.server.close_stage()


def test_every_flipped_bit_of_a_signed_message_is_rejected_and_changes_nothing() -> None:
    r = Round.new()
    outgoing = r.step(r.advertise())
    replies = r.replies(outgoing)
    data = replies[2]
    for position in range(0, len(data), 7):
        tampered = bytearray(data)
        tampered[position] ^= 0x10
        with pytest.raises(ProtocolError):
            r.server.receive(bytes(tampered))
    assert 2 in r.server.waiting_for
    for reply in replies.values():
        r.server.receive(reply)
    _finish(r, r.server.close_stage())
    assert r.server.result.tolist() == r.expected(range(5)).tolist()


def test_a_flipped_bit_in_a_ciphertext_is_a_bad_signature_at_the_server() -> None:
    r = Round.new()
    replies = r.replies(r.advertise())
    message = codec.decode(replies[1])
    assert isinstance(message, ShareKeys)
    assert len(message.ciphertexts) == 2  # k - t + 1: the two others derive theirs
    first = message.ciphertexts[0]
    flipped = bytes([first[0] ^ 1]) + first[1:]
    forged = dataclasses.replace(message, ciphertexts=(flipped, *message.ciphertexts[1:]))
    with pytest.raises(BadSignature):
        r.server.receive(codec.encode(forged))
    with pytest.raises(ConsistencyError):  # one sealed share short
        r.server.receive(r.resign(dataclasses.replace(message, ciphertexts=(first,))))
    r.server.receive(replies[1])


def test_a_message_signed_by_another_device_is_rejected() -> None:
    r = Round.new()
    advert = codec.decode(r.clients[0].start())
    assert isinstance(advert, AdvertiseKeys)
    impostor = dataclasses.replace(advert, sender=1)  # signed by device 0's key
    with pytest.raises(BadSignature):
        r.server.receive(codec.encode(impostor))
    assert r.server.waiting_for == frozenset(range(5))


def test_a_message_of_a_previous_round_is_a_replay() -> None:
    old = Round.new(round_id=b"A" * 16)
    new = Round.new(round_id=b"B" * 16)  # same devices, same identity keys
    with pytest.raises(ReplayError):
        new.server.receive(old.clients[0].start())
    # Rewriting the round id breaks the signature instead.
    advert = codec.decode(old.clients[1].start())
    with pytest.raises(BadSignature):
        new.server.receive(codec.encode(dataclasses.replace(advert, round_id=b"B" * 16)))


def test_a_second_message_from_a_device_in_one_stage_is_a_duplicate() -> None:
    r = Round.new()
    advert = r.clients[0].start()
    r.server.receive(advert)
    with pytest.raises(DuplicateMessage):
        r.server.receive(advert)


def test_wrong_stage_unknown_device_and_garbage() -> None:
    r = Round.new()
    outgoing = r.advertise(skip=(4,))
    replies = r.replies({i: d for i, d in outgoing.items() if i != 0})
    with pytest.raises(StageError):  # server messages are not accepted
        r.server.receive(outgoing[0])
    r.server.receive(replies[1])
    early = r.clients[0].receive(outgoing[0])
    assert early is not None
    with pytest.raises(StageError):  # device 4 did not advertise: not part of share keys
        r.server.receive(r.resign(dataclasses.replace(codec.decode(early), sender=4)))  # type: ignore[arg-type]
    stranger = dataclasses.replace(codec.decode(early), sender=9)
    with pytest.raises(UnknownDevice):
        r.server.receive(codec.encode(stranger))  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        r.server.receive(b"\x01\x02garbage")
    r.server.receive(early)
    assert r.server.waiting_for == frozenset({2, 3})


def test_a_masked_input_of_the_wrong_length_is_rejected() -> None:
    r = Round.new()
    replies = r.replies(r.step(r.advertise()))
    message = codec.decode(replies[0])
    assert isinstance(message, MaskedInput)
    short = dataclasses.replace(message, length=message.length - 1, payload=message.payload[:-2])
    with pytest.raises(LengthError):
        r.server.receive(r.resign(short))
    with pytest.raises(LengthError):  # truncated on the wire
        r.server.receive(replies[0][:-3])
    for reply in replies.values():
        r.server.receive(reply)
    _finish(r, r.server.close_stage())
    assert r.server.result.tolist() == r.expected(range(5)).tolist()


def _unmask_replies(r: Round) -> dict[int, bytes]:
    return r.replies(r.step(r.step(r.step(r.advertise()))))


def test_duplicate_and_misdirected_shares_are_rejected() -> None:
    r = Round.new()
    replies = _unmask_replies(r)
    message = codec.decode(replies[0])
    assert isinstance(message, UnmaskShares)
    doubled = dataclasses.replace(message, shares=(*message.shares, message.shares[0]))
    with pytest.raises(ParameterError):  # owners travel as a set: no encoding has two
        r.resign(doubled)
    wrong_kind = dataclasses.replace(
        message,
        shares=(dataclasses.replace(message.shares[0], kind=ShareKind.KEY), *message.shares[1:]),
    )
    with pytest.raises(ConsistencyError):
        r.server.receive(r.resign(wrong_kind))
    with pytest.raises(ConsistencyError):
        r.server.receive(r.resign(dataclasses.replace(message, shares=message.shares[1:])))
    unreduced = RevealedShare(
        owner=message.shares[0].owner, kind=ShareKind.SEED, share=b"\xff" * 16
    )
    with pytest.raises(DecodeError):
        r.server.receive(
            r.resign(dataclasses.replace(message, shares=(unreduced, *message.shares[1:])))
        )
    for reply in replies.values():
        r.server.receive(reply)
    r.server.close_stage()
    assert r.server.result.tolist() == r.expected(range(5)).tolist()


def _corrupt(r: Round, reply: bytes, owners: int) -> bytes:
    """The holder's UnmaskShares with its shares of the first ``owners`` owners off by
    sender + 1 (different offsets, so that two errors cannot cancel out)."""
    message = codec.decode(reply)
    assert isinstance(message, UnmaskShares)
    shares = list(message.shares)
    for n in range(owners):
        value = (int.from_bytes(shares[n].share[:4], "little") + message.sender + 1) % PRIME
        shares[n] = dataclasses.replace(
            shares[n], share=value.to_bytes(4, "little") + shares[n].share[4:]
        )
    return r.resign(dataclasses.replace(message, shares=tuple(shares)))


def test_wrong_shares_are_found_and_decoded_around() -> None:
    # n = 10, t = 6: each secret has 10 holders, so up to 2 wrong shares per secret are
    # corrected. Devices 0 and 1 lie about everything they hold; the sum is still right.
    r = Round.new(10, threshold=6)
    replies = _unmask_replies(r)
    for i, reply in replies.items():
        r.server.receive(_corrupt(r, reply, 10) if i in (0, 1) else reply)
    r.server.close_stage()
    assert r.server.result.tolist() == r.expected(range(10)).tolist()
    assert r.server.bad_holders == frozenset({0, 1})


def test_too_many_wrong_shares_abort_instead_of_returning_a_wrong_sum() -> None:
    r = Round.new()  # n = 5, t = 3: one wrong share per secret can be corrected, not two
    replies = _unmask_replies(r)
    for i, reply in replies.items():
        r.server.receive(_corrupt(r, reply, 2) if i in (0, 1) else reply)
    with pytest.raises(RoundAborted):
        r.server.close_stage()
    assert r.server.stage is Stage.ABORTED
    with pytest.raises(StageError):
        _ = r.server.result


def test_too_few_devices_abort_at_the_stage_where_it_happens() -> None:
    r = Round.new(threshold=3)
    for client in r.clients[:2]:
        r.server.receive(client.start())
    with pytest.raises(RoundAborted) as info:
        r.server.close_stage()
    assert (info.value.stage, info.value.survivors, info.value.threshold) == (
        "advertise_keys",
        2,
        3,
    )
    assert r.server.stage is Stage.ABORTED
    with pytest.raises(StageError):
        r.server.receive(r.clients[2].start())


def test_dropouts_at_every_stage_are_survived() -> None:
    r = Round.new(11, threshold=6)
    outgoing = r.advertise(skip=(0,))
    outgoing = r.step(outgoing, skip=(1,))
    outgoing = r.step(outgoing, skip=(2,))
    outgoing = r.step(outgoing, skip=(3,))  # consistency check
    r.step(outgoing, skip=(4,))
    assert r.server.included == frozenset(range(3, 11))
    assert r.server.result.dtype == np.uint16
    assert r.server.result.tolist() == r.expected(range(3, 11)).tolist()


def test_a_signature_on_another_survivor_set_is_refused() -> None:
    r = Round.new()
    replies = r.replies(r.step(r.step(r.advertise())))
    check = codec.decode(replies[0])
    assert isinstance(check, ConsistencyCheck)
    with pytest.raises(ConsistencyError):
        r.server.receive(r.resign(dataclasses.replace(check, survivors=(0, 1, 2))))
    assert 0 in r.server.waiting_for
    for reply in replies.values():
        r.server.receive(reply)
    requests = r.server.close_stage()
    request = codec.decode(requests[0])
    assert isinstance(request, UnmaskRequest)
    assert request.survivors == (0, 1, 2, 3, 4)
    # t = 3 signatures in all: device 0 is a committee member, so two more.
    assert [s.signer for s in request.signatures] == [1, 2]


def test_too_few_committee_signatures_abort_before_anyone_is_asked_to_unmask() -> None:
    r = Round.new(8, threshold=3, neighbors=3)  # committee: devices 0..3
    outgoing = r.step(r.step(r.advertise()))
    with pytest.raises(RoundAborted) as info:
        r.step(outgoing, skip=(0, 1))  # two of the four committee members never sign
    assert info.value.stage == "consistency_check"
