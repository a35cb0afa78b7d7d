"""Device enrollment: one-time tokens, device credentials, broker password/ACL sync, revocation.

A device proves it holds the Ed25519 key it registers by signing
``enrollment_proof_payload(token)``; the coordinator then issues a device id (also its MQTT
username) and a random MQTT password that is shown once and stored only as a Mosquitto
``$7$`` hash. After every change the allowed devices are pushed to the broker through the
``BrokerAuth`` port (for Mosquitto, ``broker.mosquitto_auth`` rewrites its password and ACL
files from the store and the broker reloads them), so a revoked device cannot connect for
the next round.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrt.coordinator.errors import (
    AuthError,
    BadRequestError,
    CoordinatorError,
    NotFoundError,
    retry_races,
)
from fedrt.coordinator.records import AuditEntry, DeviceRecord, EnrollmentTokenRecord
from fedrt.coordinator.security.credentials import hash_password
from fedrt.coordinator.store.base import Store
from fedrt.protocol.signed_payloads import enrollment_proof_payload

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# A day: long enough to provision a batch of devices, short enough that a leaked token dies.
DEFAULT_TOKEN_TTL_S = 24 * 3600.0
MAX_TOKEN_TTL_S = 30 * 24 * 3600.0
_MAX_LABELS = 16
MAX_TOKENS_AT_ONCE = 100_000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorEndpoint:
    """Where devices reach the coordinator's HTTP API, and the CA that signs its certificate."""

    url: str
    # PEM; None: plain HTTP, or a certificate the devices' own trust roots verify.
    ca_pem: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentGrant:
    """What an enrolled device receives, once. The password is not kept anywhere."""

    device_id: str
    mqtt_username: str
    mqtt_password: str = field(repr=False)
    coordinator_public_key: bytes
    # Known once HTTP listens (``Enrollment.endpoint``); the device keeps both.
    coordinator_url: str | None = None
    ca_pem: str | None = None


@dataclass(frozen=True, slots=True)
class EnrollmentRequest:
    """One device's enrollment: its one-time token, raw Ed25519 key and proof (a signature
    of ``enrollment_proof_payload(token)``), and its labels."""

    token: str
    public_key: bytes
    proof: bytes = field(repr=False)
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Staged:
    token: str = field(repr=False)
    device: DeviceRecord
    password: str = field(repr=False)
    at: float


class BrokerAuth(ABC):
    """Pushes the set of allowed devices to the broker."""

    @abstractmethod
    def sync(self, devices: Sequence[DeviceRecord]) -> None:
        """Make exactly the non-revoked ``devices`` able to connect; raise ``BrokerError``."""

    def hash_password(self, password: str) -> str:
        """The stored form of a device password, one the broker reads (Mosquitto: ``$7$``)."""
        return hash_password(password)


class OpenBrokerAuth(BrokerAuth):
    """For a broker without authentication (the embedded loopback broker): nothing to push."""

    def sync(self, devices: Sequence[DeviceRecord]) -> None:
        return None


class Enrollment:
    """Tokens, enrollment and revocation; each decision is audited in the same transaction."""

    def __init__(
        self,
        store: Store,
        broker_auth: BrokerAuth,
        *,
        coordinator_public_key: bytes,
        clock: Clock,
        token_bytes: Callable[[int], str] = secrets.token_urlsafe,
    ) -> None:
        self.store = store
        self.broker_auth = broker_auth
        self._public_key = coordinator_public_key
        self._clock = clock
        self._token = token_bytes
        # Devices seen active: every device message asks, and a store lookup per message is
        # a measurable part of ingesting one. Only revocation makes one inactive again.
        self._active: set[str] = set()
        # (device, revoked) of the devices the broker's files were last written from.
        self._written: frozenset[tuple[str, bool]] | None = None
        # Set by the service once its HTTP server is bound (the port may be chosen then).
        self.endpoint: CoordinatorEndpoint | None = None

    def create_token(
        self, *, actor: str, ttl_s: float = DEFAULT_TOKEN_TTL_S, note: str = ""
    ) -> str:
        """A new one-time enrollment token (returned once; only its hash is stored)."""
        return self.create_tokens(1, actor=actor, ttl_s=ttl_s, note=note)[0]

    def create_tokens(
        self, count: int, *, actor: str, ttl_s: float = DEFAULT_TOKEN_TTL_S, note: str = ""
    ) -> list[str]:
        """``count`` new one-time tokens in one transaction (a fleet provisioned at once)."""
        if not (0 < ttl_s <= MAX_TOKEN_TTL_S):
            raise BadRequestError(f"ttl_s must be in (0, {MAX_TOKEN_TTL_S:.0f}]")
        if not isinstance(note, str) or len(note) > 200:
            raise BadRequestError("note must be a string of at most 200 characters")
        if not (0 < count <= MAX_TOKENS_AT_ONCE):
            raise BadRequestError(f"count must be in 1..{MAX_TOKENS_AT_ONCE}")
        tokens = ["fet_" + self._token(24) for _ in range(count)]
        now = self._clock()
        with self.store.transaction():
            for token in tokens:
                hashed = token_hash(token)
                self.store.add_enrollment_token(
                    EnrollmentTokenRecord(
                        token_hash=hashed, created_at=now, expires_at=now + ttl_s, note=note
                    )
                )
                self._audit(actor, "enrollment_token.create", hashed[:12], {"note": note})
        return tokens

    def enroll(
        self,
        token: str,
        public_key: bytes,
        proof: bytes,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> EnrollmentGrant:
        """Turn a valid token + key (with proof of possession) into device credentials."""
        result = self.enroll_many([EnrollmentRequest(token, public_key, proof, labels)])[0]
        if isinstance(result, CoordinatorError):
            raise result
        return result

    def enroll_many(
        self, requests: Sequence[EnrollmentRequest]
    ) -> list[EnrollmentGrant | CoordinatorError]:
        """Several enrollments at once: one result each, a grant or the error that refused it.

        The broker's files list every device, so each sync costs time in proportion to the
        fleet: synced once per enrollment, enrolling N devices took time in N^2 (a 10,000
        device fleet: tens of minutes). Here the requests share ONE transaction and ONE sync
        (the HTTP route batches the enrollments that arrive together). A request refused on
        its own (bad key or proof, token unknown, used or expired) is refused alone; when
        the broker or the store fails, every token of the batch stays unused.
        """
        results: list[EnrollmentGrant | CoordinatorError | None] = []
        staged: list[tuple[int, _Staged]] = []
        for i, request in enumerate(requests):
            try:
                staged.append((i, self._stage(request)))
            except CoordinatorError as exc:
                results.append(exc)
                continue
            results.append(None)
        if staged:
            self._record(staged, results)
        return [r for r in results if r is not None]

    def _record(
        self,
        staged: Sequence[tuple[int, _Staged]],
        results: list[EnrollmentGrant | CoordinatorError | None],
    ) -> None:
        """Store the staged enrollments and sync the broker once; fill in their results."""

        def record() -> dict[int, CoordinatorError]:
            refused: dict[int, CoordinatorError] = {}
            with self.store.transaction():
                for i, item in staged:
                    try:
                        # Writes nothing when it refuses: the others' writes stand.
                        self.store.consume_enrollment_token(
                            token_hash(item.token), device_id=item.device.device_id, at=item.at
                        )
                    except AuthError as exc:
                        refused[i] = exc
                        continue
                    self.store.add_device(item.device)
                    labels = dict(item.device.labels)
                    self._audit(
                        "device:" + item.device.device_id,
                        "device.enroll",
                        item.device.device_id,
                        {"labels": labels},
                    )
                # Inside the transaction: if the broker cannot be updated, no token is used.
                if len(refused) < len(staged):
                    self.broker_auth.sync(self.store.list_devices())
            return refused

        try:
            # Enrollments read every device (the broker's files), so on PostgreSQL they race
            # other instances' writes; a lost race wrote nothing and is run again.
            refused = retry_races(record)
        except CoordinatorError as exc:
            for i, _ in staged:
                results[i] = exc
            return
        endpoint = self.endpoint
        for i, item in staged:
            if i in refused:
                results[i] = refused[i]
                continue
            log.info("enrolled device %s", item.device.device_id)
            results[i] = EnrollmentGrant(
                device_id=item.device.device_id,
                mqtt_username=item.device.device_id,
                mqtt_password=item.password,
                coordinator_public_key=self._public_key,
                coordinator_url=endpoint.url if endpoint is not None else None,
                ca_pem=endpoint.ca_pem if endpoint is not None else None,
            )

    def _stage(self, request: EnrollmentRequest) -> _Staged:
        """Check one request and draw its device id and password (nothing stored yet)."""
        token = request.token
        if not isinstance(token, str) or not (8 <= len(token) <= 256):
            raise AuthError("enrollment token is unknown, used or expired")
        key = _public_key(request.public_key)
        try:
            key.verify(request.proof, enrollment_proof_payload(token))
        except InvalidSignature:
            raise AuthError("proof of key possession does not verify") from None
        labels = _labels(request.labels or {})
        device_id = "dev-" + secrets.token_hex(8)
        password = self._token(24)
        now = self._clock()
        device = DeviceRecord(
            device_id=device_id,
            credential_hash=self.broker_auth.hash_password(password),
            public_key=bytes(request.public_key),
            enrolled_at=now,
            labels=labels,
        )
        return _Staged(token=token, device=device, password=password, at=now)

    def revoke(self, device_id: str, *, actor: str) -> DeviceRecord:
        self._active.discard(device_id)
        with self.store.transaction():
            device = self.store.revoke_device(device_id, at=self._clock())
            self._audit(actor, "device.revoke", device_id, {})
            self.broker_auth.sync(self.store.list_devices())
        log.info("revoked device %s", device_id)
        return device

    def sync_broker(self) -> None:
        """Rewrite the broker's files from the store (at start, after a crash)."""
        devices = self.store.list_devices()
        self.broker_auth.sync(devices)
        self._written = frozenset((d.device_id, d.revoked) for d in devices)

    def refresh(self) -> bool:
        """Follow enrollments and revocations made through other coordinator instances (on
        one store): rewrite the broker's files if the store's devices changed since this
        instance last wrote them (files written by several instances converge on the store),
        and forget cached verdicts of devices revoked meanwhile. Whether it rewrote."""
        devices = self.store.list_devices()
        self._active &= {d.device_id for d in devices if not d.revoked}
        state = frozenset((d.device_id, d.revoked) for d in devices)
        if state == self._written:
            return False
        self.broker_auth.sync(devices)
        self._written = state
        return True

    def is_active(self, device_id: str) -> bool:
        """Enrolled and not revoked: the only devices whose messages reach the round."""
        if device_id in self._active:
            return True
        try:
            active = not self.store.get_device(device_id).revoked
        except NotFoundError:
            return False
        if active:
            self._active.add(device_id)
        return active

    def _audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        self.store.append_audit(
            AuditEntry(at=self._clock(), actor=actor, action=action, subject=subject, detail=detail)
        )


def _public_key(raw: bytes) -> Ed25519PublicKey:
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise BadRequestError("public_key must be 32 bytes (raw Ed25519)")
    try:
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise BadRequestError("public_key is not a valid Ed25519 key") from None
    if _small_order(raw):
        # Under such a key OpenSSL accepts a trivial signature on any message: anyone could
        # sign as this device (its enrollment proof included).
        raise BadRequestError("public_key is a small-order point, not an identity key")
    return key


def _small_order(raw: bytes) -> bool:
    """Whether ``raw`` is not a point of the prime-order group libsodium accepts (the
    coordinator extra installs PyNaCl; without it, no check)."""
    try:
        from nacl.bindings import crypto_core_ed25519_is_valid_point
    except ImportError:  # pragma: no cover - the coordinator extra has it
        return False
    return not crypto_core_ed25519_is_valid_point(raw)


def _labels(labels: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(labels, Mapping) or len(labels) > _MAX_LABELS:
        raise BadRequestError(f"labels must be an object of at most {_MAX_LABELS} entries")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise BadRequestError("labels must map strings to strings")
        if not (0 < len(key) <= 64 and len(value) <= 256):
            raise BadRequestError("label keys are 1..64 characters, values at most 256")
        out[key] = value
    return out


__all__ = [
    "DEFAULT_TOKEN_TTL_S",
    "BrokerAuth",
    "CoordinatorEndpoint",
    "Enrollment",
    "EnrollmentGrant",
    "EnrollmentRequest",
    "OpenBrokerAuth",
    "enrollment_proof_payload",
    "token_hash",
]
