"""Errors of the round protocol (topics, round messages, both round state machines).

    ProtocolError                       (fedrt.protocol.errors: the package root)
     └── RoundError                     anything the round protocol rejects
          ├── InvalidTopic              a topic or id outside the layout of ``topics.py``
          ├── MalformedMessage          bytes that do not decode, or fields out of range
          │    └── UnsupportedVersion   a well-formed frame of a wire version we do not speak
          ├── StaleMessage              for another task or round (replayed or late)
          ├── DuplicateMessageId        a message id already processed (QoS 1 redelivery)
          ├── UnknownParticipant        a device that is not part of this round
          ├── UnexpectedMessage         valid, but not acceptable in the current stage
          │    ├── LateMessage          for a stage that has closed (a straggler)
          │    └── WrongCohort          under a cohort topic that is not the sender's
          ├── IllegalTransition         a local call the state machine cannot take now
          └── RoundFailed               the round cannot complete (too few devices left)

Each also derives from the matching class of ``fedrt.protocol.errors`` (``DecodeError``,
``ReplayError``, ``DuplicateMessage``, ``UnknownDevice``, ``StageError``), so code that
handles the SecAgg+ errors handles these alike. Every one of them is raised BEFORE any
state changes: the caller may log and drop the input and carry on with the same machine.
"""

from __future__ import annotations

from fedrt.protocol.errors import (
    DecodeError,
    DuplicateMessage,
    ProtocolError,
    ReplayError,
    StageError,
    UnknownDevice,
)


class RoundError(ProtocolError):
    """Base class of round-protocol errors."""


class InvalidTopic(RoundError):
    """A topic, device id or task id that does not fit the fedrt topic layout."""


class MalformedMessage(RoundError, DecodeError):
    """Bytes that do not decode to a round message, or a message with fields out of range."""


class UnsupportedVersion(MalformedMessage):
    """A frame of a wire version (or message type) this side does not implement."""


class StaleMessage(RoundError, ReplayError):
    """A message for another task or another (earlier or later) round."""


class DuplicateMessageId(RoundError, DuplicateMessage):
    """A message id this side already processed; ``msg_id`` lets the edge re-acknowledge it."""

    def __init__(self, message: str, *, msg_id: int) -> None:
        super().__init__(message)
        self.msg_id = msg_id


class UnknownParticipant(RoundError, UnknownDevice):
    """A device that has not checked in or was not selected for this round."""


class UnexpectedMessage(RoundError, StageError):
    """A well-formed message that the current stage does not accept (wrong stage, answered
    already)."""


class LateMessage(UnexpectedMessage):
    """An answer for a stage that has already closed: the sender was cut as a straggler."""


class WrongCohort(UnexpectedMessage):
    """A round's reply arrived under a cohort topic that is not its sender's cohort's
    (a forged or stale key, or a check-in on a cohort topic): refused, nothing changed."""


class IllegalTransition(RoundError, StageError):
    """A local call (event) that the state machine cannot take in its current state."""


class RoundFailed(RoundError):
    """The round cannot complete, e.g. fewer devices remain than the protocol needs."""


__all__ = [
    "DuplicateMessageId",
    "IllegalTransition",
    "InvalidTopic",
    "LateMessage",
    "MalformedMessage",
    "RoundError",
    "RoundFailed",
    "StaleMessage",
    "UnexpectedMessage",
    "UnknownParticipant",
    "UnsupportedVersion",
    "WrongCohort",
]
