"""Exceptions of the protocol core, rooted at ``ProtocolError``.

    FedrtError                      (fedrt.errors)
     └── ProtocolError              anything fedrt.protocol raises on purpose
          ├── ParameterError        a local argument or configuration is invalid (also ValueError)
          ├── DecodeError           bytes that are not a well-formed message of this version
          │    └── LengthError      a length, count or vector size that does not match
          ├── StageError            a message or call that the current stage does not allow
          ├── ReplayError           a message of another round (the round id differs)
          │    └── DuplicateMessage a second message of one device in the same stage
          ├── UnknownDevice         a device that is not in the cohort, or not a neighbour
          ├── DuplicateDevice       one device id or public key appearing twice
          ├── DuplicateShare        two shares for the same secret in one message
          ├── ConsistencyError      content contradicting what this party already knows
          ├── BadSignature          an Ed25519 signature that does not verify
          ├── DecryptionFailed      an AES-GCM ciphertext that does not authenticate
          └── RoundAborted          too few devices survive to finish the round
               └── ConsistencyCheckFailed  the server showed this device an uncertified set

Errors about a *received* message (decode, replay, signature, ...) leave the receiver's
state untouched; ``RoundAborted`` is a transition: the machine that raised it is finished.
"""

from __future__ import annotations

from fedrt.errors import FedrtError

__all__ = [
    "BadSignature",
    "ConsistencyCheckFailed",
    "ConsistencyError",
    "DecodeError",
    "DecryptionFailed",
    "DuplicateDevice",
    "DuplicateMessage",
    "DuplicateShare",
    "LengthError",
    "ParameterError",
    "ProtocolError",
    "ReplayError",
    "RoundAborted",
    "StageError",
    "UnknownDevice",
]


class ProtocolError(FedrtError):
    """Root of the errors raised by ``fedrt.protocol``."""


class ParameterError(ProtocolError, ValueError):
    """A local argument or configuration value is out of range or inconsistent."""


class DecodeError(ProtocolError):
    """Bytes that do not decode to a message of a supported version."""


class LengthError(DecodeError):
    """A length, count or vector size differs from the one the protocol requires."""


class StageError(ProtocolError):
    """A message or call arrived in a stage that does not accept it."""


class ReplayError(ProtocolError):
    """A message belongs to another round than the one in progress."""


class DuplicateMessage(ReplayError):
    """A device sent a second message in the same stage."""


class UnknownDevice(ProtocolError):
    """A device index that is not in the cohort or not a neighbour of the receiver."""


class DuplicateDevice(ProtocolError):
    """A device id or public key occurs twice where each must be unique."""


class DuplicateShare(ProtocolError):
    """One message carries two shares (or ciphertexts) for the same device."""


class ConsistencyError(ProtocolError):
    """A message contradicts earlier stages (wrong peers, wrong share kind, bad secret)."""


class BadSignature(ProtocolError):
    """An Ed25519 signature does not verify under the sender's registered key."""


class DecryptionFailed(ProtocolError):
    """A ciphertext failed authentication; no detail is given on purpose."""


class RoundAborted(ProtocolError):
    """Fewer devices than the threshold survive, so the round cannot finish."""

    def __init__(self, message: str, *, stage: str, survivors: int, threshold: int) -> None:
        super().__init__(message)
        self.stage = stage
        self.survivors = survivors
        self.threshold = threshold


class ConsistencyCheckFailed(RoundAborted):
    """The survivor set a device is asked to unmask for lacks t signatures from its holders.

    Raised by a device (which then stops for this round) when the unmask request names
    another set than the one it signed, or carries fewer than t valid signatures on that
    set: evidence that the server showed different neighbourhoods different survivors.
    """
