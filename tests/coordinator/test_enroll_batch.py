"""Enrollments in batches (issue 17, a 10,000-device fleet): one transaction and one broker
sync for many requests, each with its own grant or error; every batched device connects."""

from __future__ import annotations

import asyncio

import pytest

from fedrt.coordinator.api.enroll_batch import EnrollBatcher
from fedrt.coordinator.devices.enrollment import (
    EnrollmentGrant,
    EnrollmentRequest,
    enrollment_proof_payload,
)
from fedrt.coordinator.errors import AuthError, BadRequestError, BrokerError
from tests.coordinator.enrolled_broker import EnrolledBroker, device_key
from tests.coordinator.harness import mqtt_connect_code


def _request(token: str, *, forge: bool = False) -> EnrollmentRequest:
    key, raw = device_key()
    signed = b"another token" if forge else enrollment_proof_payload(token)
    return EnrollmentRequest(token, raw, key.sign(signed), {"site": "lab"})


def test_a_batch_is_one_sync_and_each_request_gets_its_own_answer(
    enrolled_broker: EnrolledBroker,
) -> None:
    enrollment, auth = enrolled_broker.enrollment, enrolled_broker.auth
    broker = enrolled_broker.broker
    tokens = enrollment.create_tokens(4, actor="admin")
    assert len(set(tokens)) == 4
    used = tokens[3]
    enrollment.enroll_many([_request(used)])
    before = auth.syncs
    results = enrollment.enroll_many(
        [_request(tokens[0]), _request(used), _request(tokens[1], forge=True),
         _request(tokens[2]), _request(tokens[0])]
    )  # fmt: skip
    assert auth.syncs == before + 1
    ok = [r for r in results if isinstance(r, EnrollmentGrant)]
    assert [type(r) for r in results] == [EnrollmentGrant, AuthError, AuthError,
                                          EnrollmentGrant, AuthError]  # fmt: skip
    # The grants connect (the one sync wrote them); the forged proof used no token.
    for grant in ok:
        assert mqtt_connect_code(broker.port, grant.mqtt_username, grant.mqtt_password,
                                 host=broker.host) == 0  # fmt: skip
    assert isinstance(enrollment.enroll_many([_request(tokens[1])])[0], EnrollmentGrant)
    assert {d.labels["site"] for d in enrollment.store.list_devices()} == {"lab"}
    assert len(enrollment.store.list_devices()) == 4


def test_a_broker_failure_refuses_the_whole_batch_and_uses_no_token(
    enrolled_broker: EnrolledBroker,
) -> None:
    enrollment, auth = enrolled_broker.enrollment, enrolled_broker.auth
    tokens = enrollment.create_tokens(2, actor="admin")
    auth.fail = True
    results = enrollment.enroll_many([_request(t) for t in tokens])
    assert all(isinstance(r, BrokerError) for r in results)
    assert enrollment.store.list_devices() == []
    auth.fail = False
    assert all(isinstance(r, EnrollmentGrant) for r in enrollment.enroll_many(
        [_request(t) for t in tokens]))  # fmt: skip


def test_create_tokens_checks_its_count(
    enrolled_broker: EnrolledBroker,
) -> None:
    enrollment = enrolled_broker.enrollment
    with pytest.raises(BadRequestError):
        enrollment.create_tokens(0, actor="admin")


def test_the_batcher_gathers_concurrent_requests_into_one_call(
    enrolled_broker: EnrolledBroker,
) -> None:
    enrollment, auth = enrolled_broker.enrollment, enrolled_broker.auth
    tokens = enrollment.create_tokens(6, actor="admin")
    settled: list[int] = []
    batcher = EnrollBatcher(
        enrollment.enroll_many, settle=lambda: settled.append(auth.syncs), window_s=0.05,
        max_batch=4, settle_s=(0.2, 0.3),
    )  # fmt: skip

    async def run() -> list[EnrollmentGrant | BaseException]:
        requests = [_request(t) for t in tokens] + [_request(tokens[0])]
        out = await asyncio.gather(*(batcher.submit(r) for r in requests),
                                   return_exceptions=True)  # fmt: skip
        await asyncio.sleep(0.5)
        return out

    before = auth.syncs
    results = asyncio.run(run())
    # 7 requests, at most 4 a batch: two calls, two syncs; the repeated token refused alone.
    assert batcher.batches == 2
    assert auth.syncs == before + 2
    assert sum(isinstance(r, EnrollmentGrant) for r in results) == 6
    assert isinstance(results[-1], AuthError)
    # Twice, quiet moments after the burst (Mosquitto may have lost a SIGHUP meanwhile).
    assert settled == [before + 2, before + 2]
