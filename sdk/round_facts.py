"""The non-secret facts a device keeps about the round it is in, so a restart can leave it.

A device's SecAgg+ secrets (its masking seeds and keys, the shares it holds) are never
written to disk: a device that dies mid-round cannot go on with that round. What it keeps,
in ``device-state.json`` next to its message counter, is enough to tell the coordinator it
is gone (an ``Abandon`` with reason ``RESTARTED``) and to stop its outbox from resending that
round's stale answers. It also keeps the incarnation of the coordinator it last heard, so
that a device restarted while the coordinator restarted too sees that its round is gone.
``Participant.round_facts`` writes them; ``Participant.restart`` reads them;
``save_state`` / ``load_state`` keep the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.topics import check_incarnation
from fedrt.sdk.errors import SdkConfigError

__all__ = ["STATE_FILE", "RoundFacts", "load_state", "save_state"]

STATE_FILE = "device-state.json"

_STATES = frozenset({"idle", "checked_in", "training", "reporting"})
_MAX_UNACKED = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundFacts:
    """Where the participant stood: its state, round, last answer and unacknowledged ids."""

    state: str  # a ParticipantState value
    round_id: int | None = None
    # The stage of the last answer sent in this round (None: none yet).
    answered: rm.Stage | None = None
    # Whether the round runs SecAgg+ (its answers depend on secrets lost in a restart).
    secagg: bool = False
    # Ids of the device's messages the coordinator has not acknowledged yet.
    unacked: tuple[int, ...] = ()
    # The coordinator incarnation last heard (``topics.coordinator_presence``); None: none.
    coordinator: str | None = None
    # (id, round) of the unacknowledged ids sent on a cohort topic: forgotten once that
    # round is over, since nobody reads its topic then (a file from an older SDK: none).
    cohort: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.state not in _STATES:
            raise SdkConfigError(f"round facts: unknown participant state {self.state!r}")
        if self.round_id is not None and not _uint(self.round_id):
            raise SdkConfigError(f"round facts: bad round id {self.round_id!r}")
        if self.answered is not None and not isinstance(self.answered, rm.Stage):
            raise SdkConfigError(f"round facts: bad stage {self.answered!r}")
        if not isinstance(self.secagg, bool):
            raise SdkConfigError("round facts: secagg must be a bool")
        if len(self.unacked) > _MAX_UNACKED or not all(_uint(i) for i in self.unacked):
            raise SdkConfigError("round facts: unacked must be message ids")
        if len(self.cohort) > _MAX_UNACKED or not all(
            isinstance(p, tuple) and len(p) == 2 and _uint(p[0]) and _uint(p[1])
            for p in self.cohort
        ):
            raise SdkConfigError("round facts: cohort must be (message id, round id) pairs")
        if self.coordinator is not None:
            try:
                check_incarnation(self.coordinator)
            except InvalidTopic as exc:
                raise SdkConfigError(f"round facts: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "state": self.state,
            "round_id": self.round_id,
            "answered": self.answered.name if self.answered is not None else None,
            "secagg": self.secagg,
            "unacked": sorted(self.unacked),
            "coordinator": self.coordinator,
        }
        if self.cohort:  # absent when empty: a file an older SDK still reads
            data["cohort"] = [list(p) for p in sorted(self.cohort)]
        return data

    @classmethod
    def from_json(cls, data: object) -> RoundFacts:
        """Facts read back from ``to_json``; ``SdkConfigError`` when they are not."""
        if not isinstance(data, dict):
            raise SdkConfigError("round facts must be a JSON object")
        known = {"state", "round_id", "answered", "secagg", "unacked", "coordinator", "cohort"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SdkConfigError(f"round facts: unknown key(s) {', '.join(unknown)}")
        answered = data.get("answered")
        try:
            stage = rm.Stage[answered] if answered is not None else None
        except (KeyError, TypeError):
            raise SdkConfigError(f"round facts: unknown stage {answered!r}") from None
        unacked = data.get("unacked", [])
        if not isinstance(unacked, list):
            raise SdkConfigError("round facts: unacked must be a list")
        cohort = data.get("cohort", [])
        if not isinstance(cohort, list) or not all(isinstance(p, list) for p in cohort):
            raise SdkConfigError("round facts: cohort must be a list of pairs")
        return cls(
            state=data.get("state"),  # type: ignore[arg-type]  # checked in __post_init__
            round_id=data.get("round_id"),
            answered=stage,
            secagg=data.get("secagg", False),
            unacked=tuple(unacked),
            coordinator=data.get("coordinator"),
            cohort=tuple(tuple(p) for p in cohort),
        )


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= rm.U64_MAX


def load_state(data_dir: Path) -> dict[str, Any]:
    """What ``save_state`` last wrote in ``data_dir`` ({} when nothing readable was)."""
    try:
        data = json.loads((data_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(
    data_dir: Path,
    *,
    next_msg_id: int,
    task_id: str | None,
    facts: RoundFacts,
    written: str | None = None,
) -> str:
    """Replace ``data_dir``'s state file at once: the message counter, task and round facts.

    Returns the text the file now holds. A device saves before every batch of commands, most
    of which change nothing here (a tick, a resend), so with ``written`` (what this call
    returned last time) an unchanged state is not written again: at a thousand devices
    sharing two cores those rewrites (a file and a rename each) were ~40 a device a round.
    """
    text = json.dumps({"next_msg_id": next_msg_id, "task_id": task_id, "round": facts.to_json()})
    if text == written:
        return text
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text
