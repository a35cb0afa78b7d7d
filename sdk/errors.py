"""Exceptions raised by the on-device runtime, local failures apart from the coordinator's refusals.

    FedrtError                              (fedrt.errors)
     └── SdkError                           every error fedrt.sdk raises on purpose
          ├── SdkConfigError                a configuration value that cannot be used
          │    └── InsecureUrl              credentials would go over plain http off this host
          ├── InterpreterUnavailable        no usable LiteRT interpreter (why, and what to install)
          ├── ModelError                    the model file lacks what training needs
          │    └── TrainStepFailed          a train call failed; the caller restores weights
          ├── DeviceStateError              the device's state could not be read
          ├── ExampleStoreError             bad example, wrong shape/dtype, corrupt store
          │    ├── NotEnoughExamples        fewer examples than a batch needs
          │    └── SchemaMismatch           the store file holds examples of another schema
          ├── SchedulerError                a training job used wrongly (started twice, ...)
          ├── TransportError                local link failures (connect, publish, TLS, auth)
          │    ├── NotConnected             the link is down right now; retry later
          │    └── OutboxError              the on-disk outbox cannot store or find a message
          ├── DownloadError                 a model download failed locally (I/O, truncated)
          │    ├── TlsError                 the coordinator's HTTPS certificate did not verify
          │    └── ModelRejected            the file arrived but failed verification
          │         ├── ChecksumMismatch    sha256 differs from the plan's
          │         ├── RebuildMismatch     a version rebuilt from graph + weights/deltas does
          │         │                       not hash to its signed sha256 (the file is fetched)
          │         └── BadSignature        the coordinator's Ed25519 signature does not verify
          └── RemoteError                   the coordinator (or its HTTP server) said no
               ├── DownloadRefused          the model server answered with an HTTP error
               └── BrokerRefused            a broker (node) refused the MQTT connection

Local errors describe this device's situation and are usually retried; ``RemoteError`` carries
what the other side reported, so callers can tell "my link is down" from "the server refused".
"""

from __future__ import annotations

from fedrt.errors import FedrtError


class SdkError(FedrtError):
    """Root of the errors raised by ``fedrt.sdk``."""


class SdkConfigError(SdkError):
    """A configuration value that cannot be used (raised on construction)."""


class InsecureUrl(SdkConfigError):
    """A plain ``http://`` URL to a host other than loopback, where credentials would go.

    Raised before any connection is opened: an enrollment token or a device password never
    crosses a network in clear text.
    """


class InterpreterUnavailable(SdkError):
    """Neither ``ai_edge_litert`` nor a compatible ``tflite_runtime`` can be imported."""


class ModelError(SdkError):
    """The model lacks a signature, input or weight tensor that training needs."""


class TrainStepFailed(ModelError):
    """A ``train`` invocation raised; weights may be partially updated and must be restored."""


class DeviceStateError(SdkError):
    """The device state provider could not read the state it is responsible for."""


class ExampleStoreError(SdkError):
    """An example does not fit the store's schema, or the store itself is unusable."""


class NotEnoughExamples(ExampleStoreError):
    """The store holds fewer examples than the requested batch needs."""


class SchemaMismatch(ExampleStoreError):
    """The store file was created for examples of other dtypes or shapes than asked for."""


class SchedulerError(SdkError):
    """A training job was used in a way its lifecycle does not allow."""


class TransportError(SdkError):
    """A local failure of the MQTT link: connect, TLS, authentication or publish."""


class NotConnected(TransportError):
    """The link is down at the moment; the message stays in the outbox for a resend."""


class OutboxError(TransportError):
    """The on-disk outbox could not store, find or update a message."""


class DownloadError(SdkError):
    """A model download failed on this side: I/O, timeout, short read, size limit."""


class TlsError(DownloadError):
    """An HTTPS call to the coordinator (enrollment, model download) failed its TLS handshake:
    most often its certificate does not verify against the CA this device trusts."""


class ModelRejected(DownloadError):
    """The downloaded file failed verification; the previous model was kept."""


class ChecksumMismatch(ModelRejected):
    """The file's sha256 differs from the one in the round plan."""


class RebuildMismatch(ModelRejected):
    """A version rebuilt from its graph and weights (or a held version and deltas) does not
    hash to the sha256 the coordinator signed; the device fetches the whole file instead."""


class BadSignature(ModelRejected):
    """The coordinator's Ed25519 signature over the model does not verify."""


class RemoteError(SdkError):
    """The remote side reported a failure (an HTTP status, a negative acknowledgement)."""


class DownloadRefused(RemoteError):
    """The model server answered the download with an HTTP error status."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class BrokerRefused(RemoteError):
    """A broker or cluster node answered the MQTT CONNECT with a refusal (wrong or revoked
    credentials, an MQTT version it does not speak); the transport keeps trying, but only
    new credentials or configuration will help."""
