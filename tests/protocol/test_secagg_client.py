"""SecAggClient: checks on what a (possibly lying) server sends, and the one-share-per-peer rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedrt.protocol import codec
from fedrt.protocol.crypto import sign_digest
from fedrt.protocol.errors import (
    BadSignature,
    ConsistencyCheckFailed,
    ConsistencyError,
    DecryptionFailed,
    DuplicateDevice,
    DuplicateMessage,
    DuplicateShare,
    LengthError,
    ParameterError,
    ReplayError,
    RoundAborted,
    StageError,
    UnknownDevice,
)
from fedrt.protocol.messages import (
    ConsistencyRequest,
    KeysBroadcast,
    PeerSignature,
    ShareKind,
    SharesRelay,
    Stage,
    UnmaskShares,
)
from fedrt.protocol.prg import SeededRandom
from fedrt.protocol.secagg import SecAggClient
from tests.protocol.secagg_support import Round, identities


def _broadcast(r: Round, index: int = 0) -> tuple[bytes, KeysBroadcast]:
    data = r.advertise()[index]
    message = codec.decode(data)
    assert isinstance(message, KeysBroadcast)
    return data, message


def test_construction_checks_identity_and_index() -> None:
    r = Round.new()
    with pytest.raises(ParameterError):
        SecAggClient(r.config, index=0, identity=r.keys[1])
    with pytest.raises(UnknownDevice):
        SecAggClient(r.config, index=5, identity=r.keys[0])


def test_a_peer_key_substituted_by_the_server_fails_its_signature() -> None:
    r = Round.new()
    data, message = _broadcast(r)
    attacker = identities(1, b"attacker")[0]  # any key the server could use
    fake = dataclasses.replace(message.keys[0], masking_key=bytes(32 * [9]))
    fake = dataclasses.replace(fake, signature=sign_digest(attacker, codec.signing_digest(fake)))
    with pytest.raises(BadSignature):
        r.clients[0].receive(
            codec.encode(dataclasses.replace(message, keys=(fake, *message.keys[1:])))
        )
    assert r.clients[0].stage is Stage.SHARE_KEYS
    assert r.clients[0].receive(data) is not None  # the genuine message still works


def test_keys_broadcast_checks_round_recipient_neighbours_and_duplicates() -> None:
    r = Round.new(7, neighbors=2, threshold=2)  # sparse: device 0 has two neighbours
    outgoing = r.advertise()
    data, message = outgoing[0], codec.decode(outgoing[0])
    assert isinstance(message, KeysBroadcast)
    client = r.clients[0]
    with pytest.raises(ReplayError):
        client.receive(codec.encode(dataclasses.replace(message, round_id=b"X" * 16)))
    with pytest.raises(UnknownDevice):
        client.receive(codec.encode(dataclasses.replace(message, recipient=1)))
    with pytest.raises(DuplicateDevice):
        client.receive(
            codec.encode(dataclasses.replace(message, keys=(*message.keys, message.keys[0])))
        )
    adverts = [k for d in outgoing.values() for k in codec.decode(d).keys]  # type: ignore[union-attr]
    not_mine = next(k for k in adverts if k.sender not in (0, *r.config.neighbors_of(0)))
    with pytest.raises(UnknownDevice):
        client.receive(codec.encode(dataclasses.replace(message, keys=(*message.keys, not_mine))))
    assert client.stage is Stage.SHARE_KEYS
    assert client.receive(data) is not None


def test_two_peers_with_the_same_public_key_are_rejected() -> None:
    r = Round.new()
    _, message = _broadcast(r)
    first, second = message.keys[0], message.keys[1]
    clone = dataclasses.replace(second, masking_key=first.masking_key)
    clone = dataclasses.replace(
        clone, signature=sign_digest(r.keys[clone.sender], codec.signing_digest(clone))
    )
    with pytest.raises(DuplicateDevice):
        r.clients[0].receive(
            codec.encode(dataclasses.replace(message, keys=(first, clone, *message.keys[2:])))
        )


def test_too_few_peers_abort_the_round_for_this_device() -> None:
    r = Round.new(threshold=4)
    _, message = _broadcast(r)
    with pytest.raises(RoundAborted):
        r.clients[0].receive(codec.encode(dataclasses.replace(message, keys=message.keys[:2])))
    assert r.clients[0].stage is Stage.ABORTED
    with pytest.raises(StageError):
        r.clients[0].set_input(np.zeros(6, np.uint64))


def _relay(r: Round, index: int = 0) -> tuple[bytes, SharesRelay]:
    data = r.step(r.advertise())[index]
    message = codec.decode(data)
    assert isinstance(message, SharesRelay)
    return data, message


def test_the_first_t_minus_1_holders_derive_their_shares_the_rest_get_them_sealed() -> None:
    r = Round.new()  # n = 5, k = 4, t = 3: each dealer seals to its 2 highest neighbours
    outgoing = r.step(r.advertise())
    for i, data in outgoing.items():
        relay = codec.decode(data)
        assert isinstance(relay, SharesRelay)
        for item in relay.shares:
            first = sorted(set(range(5)) - {item.peer})[:2]
            assert (item.ciphertext == b"") == (i in first)
            assert len(item.ciphertext) in (0, codec.CIPHERTEXT_BYTES)


def test_a_flipped_bit_in_a_relayed_ciphertext_fails_decryption_and_changes_nothing() -> None:
    r = Round.new()
    data, message = _relay(r, 4)  # device 4 is a sealed holder of every dealer
    for position in (0, 20, codec.CIPHERTEXT_BYTES - 1):
        item = message.shares[1]
        flipped = bytearray(item.ciphertext)
        flipped[position] ^= 0x01
        forged = dataclasses.replace(item, ciphertext=bytes(flipped))
        shares = (message.shares[0], forged, *message.shares[2:])
        with pytest.raises(DecryptionFailed):
            r.clients[4].receive(codec.encode(dataclasses.replace(message, shares=shares)))
    # A ciphertext moved to another sender does not authenticate either.
    swapped = dataclasses.replace(message.shares[1], peer=message.shares[2].peer)
    with pytest.raises((DecryptionFailed, DuplicateShare)):
        r.clients[4].receive(
            codec.encode(dataclasses.replace(message, shares=(swapped, *message.shares[2:])))
        )
    assert r.clients[4].stage is Stage.MASKED_INPUT
    assert r.clients[4].receive(data) is not None


def test_relay_rejects_duplicates_strangers_and_repeats() -> None:
    r = Round.new()
    data, message = _relay(r)
    client = r.clients[0]
    with pytest.raises(DuplicateShare):
        client.receive(
            codec.encode(dataclasses.replace(message, shares=(*message.shares, message.shares[0])))
        )
    stranger = dataclasses.replace(message.shares[0], peer=0)  # itself: never a sender
    with pytest.raises(UnknownDevice):
        client.receive(codec.encode(dataclasses.replace(message, shares=(stranger,))))
    assert client.receive(data) is not None
    with pytest.raises(DuplicateMessage):
        client.receive(data)


def test_the_masked_input_waits_for_the_input() -> None:
    r = Round.new()
    late = SecAggClient(r.config, index=0, identity=r.keys[0], random=SeededRandom(b"late"))
    r.clients[0] = late
    outgoing = r.advertise()
    relays = r.step(outgoing)
    assert late.receive(relays[0]) is None
    with pytest.raises(LengthError):
        late.set_input(np.zeros(5, np.uint64))
    with pytest.raises(ParameterError):
        late.set_input(np.full(6, 2**12, np.uint64))
    masked = late.set_input(r.inputs[0])
    assert masked is not None
    with pytest.raises(StageError):
        late.set_input(r.inputs[0])


def _request(r: Round) -> ConsistencyRequest:
    message = codec.decode(r.step(r.step(r.advertise()))[0])
    assert isinstance(message, ConsistencyRequest)
    return message


def test_a_device_reveals_one_share_per_peer_and_answers_once() -> None:
    r = Round.new(6, threshold=4)
    survivors = _request(r).survivors
    dropped, partial = survivors[-1], survivors[:-1]
    checks = r.show(partial, partial)  # every device shown the same partial set
    data = r.unmask_request(0, partial, checks)
    reply = codec.decode(r.clients[0].receive(data) or b"")
    assert isinstance(reply, UnmaskShares)
    kinds = {s.owner: s.kind for s in reply.shares}
    assert len(kinds) == len(reply.shares) == 6  # one share per holder's peer, itself included
    assert kinds[dropped] is ShareKind.KEY
    assert kinds[0] is ShareKind.SEED
    assert all(kinds[p] is ShareKind.SEED for p in partial)
    # Asked again, the device refuses: it never reveals both shares.
    with pytest.raises(StageError):
        r.clients[0].receive(data)


def test_consistency_request_view_checks() -> None:
    r = Round.new(6, threshold=4)
    message = _request(r)
    client = r.clients[0]
    without_self = tuple(s for s in message.survivors if s != 0)
    with pytest.raises(ConsistencyError):
        client.receive(codec.encode(dataclasses.replace(message, survivors=without_self)))
    assert client.stage is Stage.CONSISTENCY_CHECK
    with pytest.raises(RoundAborted):
        client.receive(codec.encode(dataclasses.replace(message, survivors=(0, 1, 2))))
    assert client.stage is Stage.ABORTED


def test_a_neighbour_that_never_shared_with_this_device_cannot_be_listed() -> None:
    r = Round.new(6, threshold=4)
    relay = codec.decode(r.step(r.advertise())[0])
    assert isinstance(relay, SharesRelay)
    short = dataclasses.replace(relay, shares=relay.shares[:-1])
    assert r.clients[0].receive(codec.encode(short)) is not None
    request = ConsistencyRequest(round_id=r.config.round_id, recipient=0, survivors=tuple(range(6)))
    with pytest.raises(ConsistencyError, match=str(relay.shares[-1].peer)):
        r.clients[0].receive(codec.encode(request))
    assert r.clients[0].stage is Stage.CONSISTENCY_CHECK


def test_unmasking_needs_t_valid_signatures_on_the_set_this_device_signed() -> None:
    r = Round.new(6, threshold=4)
    survivors = _request(r).survivors
    checks = r.show(survivors, survivors)
    client = r.clients[0]
    few = {j: checks[j] for j in (0, 1, 2)}
    forged = dict(checks)
    forged[1] = dataclasses.replace(checks[1], signature=checks[2].signature)
    with pytest.raises(BadSignature):  # a signature that is not device 1's: nothing changes
        client.receive(r.unmask_request(0, survivors, forged))
    with pytest.raises(UnknownDevice):  # a signer that is not an included holder
        client.receive(
            codec.encode(
                dataclasses.replace(
                    codec.decode(r.unmask_request(0, survivors, checks)),
                    signatures=(PeerSignature(signer=9, signature=b"s" * 64),),
                )
            )
        )
    assert client.stage is Stage.UNMASK
    with pytest.raises(ConsistencyCheckFailed) as info:
        client.receive(r.unmask_request(0, survivors, few))
    assert (info.value.survivors, info.value.threshold) == (3, 4)
    assert client.stage is Stage.ABORTED
    # Another device asked about a set it did not sign refuses as well, for good.
    other = r.clients[1]
    with pytest.raises(ConsistencyCheckFailed):
        other.receive(r.unmask_request(1, survivors[:-1], checks))
    assert other.stage is Stage.ABORTED
    with pytest.raises(StageError):
        other.receive(r.unmask_request(1, survivors, checks))


def test_a_server_showing_two_survivor_sets_gets_no_share_from_honest_devices() -> None:
    # Classic SecAgg, n = 10, t = 6: device 9 is "included" for one half of the cohort and
    # "dropped" for the other, so that the first half would reveal its seed and the second
    # its masking key. Neither half can gather t signatures, so nobody reveals anything.
    r = Round.new(10, threshold=6)
    everyone = _request(r).survivors
    assert everyone == tuple(range(10))
    without_9 = everyone[:-1]
    halves = {(0, 1, 2, 3, 9): everyone, (4, 5, 6, 7, 8): without_9}
    checks = {group: r.show(view, group) for group, view in halves.items()}
    every_signature = {**checks[(0, 1, 2, 3, 9)], **checks[(4, 5, 6, 7, 8)]}
    for group, view in halves.items():
        for i in group:
            # The other half's signatures are on another set (or by a device not in this one).
            with pytest.raises((BadSignature, UnknownDevice)):
                r.clients[i].receive(r.unmask_request(i, view, every_signature))
            with pytest.raises(ConsistencyCheckFailed):
                r.clients[i].receive(r.unmask_request(i, view, checks[group]))
            assert r.clients[i].stage is Stage.ABORTED


def test_wrong_stage_messages_are_refused() -> None:
    r = Round.new()
    client = r.clients[0]
    with pytest.raises(StageError):
        client.receive(client.start())  # a client message
    with pytest.raises(StageError):
        client.start()
    data, _ = _relay(Round.new())
    with pytest.raises(StageError):
        client.receive(data)


def test_a_split_of_a_sparse_cohort_certifies_at_most_one_set() -> None:
    # SecAgg+, n = 12, k = 5, t = 4: the committee is devices 0..5. Whatever the server shows
    # to whom, two sets would need 2t = 8 > 6 committee signatures: one set at most passes.
    r = Round.new(12, threshold=4, neighbors=5)
    everyone = _request(r).survivors
    assert everyone == tuple(range(12))
    other = everyone[:-1]  # device 11 "dropped" for the second group
    groups = {(0, 1, 2, 6, 7, 8, 11): everyone, (3, 4, 5, 9, 10): other}
    checks = {group: r.show(view, group) for group, view in groups.items()}
    for group, view in groups.items():
        for i in group:
            with pytest.raises(ConsistencyCheckFailed):
                r.clients[i].receive(r.unmask_request(i, view, checks[group]))
