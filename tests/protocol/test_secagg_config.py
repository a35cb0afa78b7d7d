"""SecAggConfig validation and the pairwise key derivations."""

from __future__ import annotations

import dataclasses

import pytest

from fedrt.protocol.errors import DuplicateDevice, ParameterError
from fedrt.protocol.secagg_config import Member, mask_key, mask_sign, share_aad, share_key
from tests.protocol.secagg_support import config_for, identities


def test_a_valid_config_and_its_graph() -> None:
    config = config_for(identities(6), threshold=4)
    assert config.clients == 6
    assert config.graph()[2] == config.neighbors_of(2) == (0, 1, 3, 4, 5)


def test_duplicated_device_ids_and_keys_are_rejected() -> None:
    config = config_for(identities(4))
    first = config.members[0]
    with pytest.raises(DuplicateDevice):
        dataclasses.replace(
            config,
            members=(
                first,
                dataclasses.replace(config.members[1], device_id=first.device_id),
                *config.members[2:],
            ),
        )
    with pytest.raises(DuplicateDevice):
        dataclasses.replace(
            config,
            members=(
                first,
                dataclasses.replace(config.members[1], identity_key=first.identity_key),
                *config.members[2:],
            ),
        )


@pytest.mark.parametrize(
    "change",
    [
        {"round_id": b"short"},
        {"threshold": 2},
        {"threshold": 5},
        {"neighbors": 4},
        {"bits": 0},
        {"bits": 65},
        {"length": 0},
    ],
)
def test_bad_parameters_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ParameterError):
        dataclasses.replace(config_for(identities(4)), **change)  # type: ignore[arg-type]


def test_members_need_an_id_and_a_raw_key() -> None:
    with pytest.raises(ParameterError):
        Member(device_id="", identity_key=bytes(32))
    with pytest.raises(ParameterError):
        Member(device_id="d", identity_key=bytes(31))


def test_pair_keys_are_symmetric_for_masks_and_directional_for_shares() -> None:
    shared, rid = b"z" * 32, b"r" * 16
    assert mask_key(shared, rid, 3, 8) == mask_key(shared, rid, 8, 3)
    assert share_key(shared, rid, 3, 8) != share_key(shared, rid, 8, 3)
    assert mask_key(shared, rid, 3, 8) != mask_key(shared, b"s" * 16, 3, 8)
    assert (mask_sign(3, 8), mask_sign(8, 3)) == (1, -1)
    assert share_aad(rid, 3, 8) != share_aad(rid, 8, 3)
