"""The coordinator round's states and legal moves (``TRANSITIONS``); ``machine`` makes them.

Theory of operation
-------------------
A ``RoundMachine`` runs exactly one round of one task. It never touches a socket, a clock
or a global random generator: the driver feeds it events -- ``start(now)``,
``receive(device_id, message, now)`` for every decoded device message (the device id is the
one in the topic, which the broker authenticated), ``tick(now)`` at ``next_deadline()`` --
and carries out the commands each call returns (see ``commands``), in order.

States and moves (all of them are in ``TRANSITIONS``; anything else is a bug)::

    CREATED -> CHECK_IN -> TRAINING -+-> SHARE_KEYS -> MASKED_INPUT -> CONSISTENCY_CHECK
                  |           |      |  (SecAgg+)                                 |
                  |           |      |                                  UNMASK <--+
                  |           |      |                                    |
                  |           |      +-- (plain update / evaluation) -----+---> COMMITTED
                  +-----------+---------------+--------------+----------+------> ABANDONED

* CHECK_IN: devices that pass the task's filters check in until the deadline or until the
  pool is full (every eligible device, or ``pool_factor`` cohorts); then ``select_count``
  (goal x over-selection) are sampled uniformly from the pool (``selection.sampling``) and
  the rest are sent away; at least ``min_reports`` must have checked in. Later check-ins
  get a reconnect window from pace steering.
* TRAINING: every selected device gets its ``Plan``. A device reports by answering its first
  stage: SecAgg+ keys (``ADVERTISE_KEYS``), its plain quantized update, or its evaluation.
  The stage closes as soon as ``goal_count`` have reported (the over-selected rest are sent
  away), or when everyone still in has answered, or at the deadline.
* SHARE_KEYS, MASKED_INPUT, CONSISTENCY_CHECK, UNMASK: each closes when every device asked
  has answered, or at the stage deadline; whoever has not answered is cut. ``SecAggServer``
  decides whether enough survive (dropouts at any stage are survived down to its
  threshold). In CONSISTENCY_CHECK every included device signs the included set; a device
  reveals shares in UNMASK only with t signatures on the set it signed.
* COMMITTED: the weighted mean delta (or a robust aggregate when SecAgg is off) went
  through the server optimizer: ``Commit``. ABANDONED: ``AbandonRound``; the model is
  untouched.

The machine abandons as soon as the round can no longer reach ``min_reports``, without
waiting for the deadline. Every input that cannot be taken raises a ``RoundError`` (or a
SecAgg+ ``ProtocolError``) before anything changes, so the driver logs it, optionally sends
``rejection(...)``, and carries on.
"""

from __future__ import annotations

import enum

from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_errors import IllegalTransition


class RoundState(enum.Enum):
    CREATED = "created"
    CHECK_IN = "check_in"
    TRAINING = "training"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASK = "unmask"
    COMMITTED = "committed"
    ABANDONED = "abandoned"


S = RoundState
TRANSITIONS: dict[RoundState, frozenset[RoundState]] = {
    S.CREATED: frozenset({S.CHECK_IN}),
    S.CHECK_IN: frozenset({S.TRAINING, S.ABANDONED}),
    S.TRAINING: frozenset({S.SHARE_KEYS, S.COMMITTED, S.ABANDONED}),
    S.SHARE_KEYS: frozenset({S.MASKED_INPUT, S.ABANDONED}),
    S.MASKED_INPUT: frozenset({S.CONSISTENCY_CHECK, S.ABANDONED}),
    S.CONSISTENCY_CHECK: frozenset({S.UNMASK, S.ABANDONED}),
    S.UNMASK: frozenset({S.COMMITTED, S.ABANDONED}),
    S.COMMITTED: frozenset(),
    S.ABANDONED: frozenset(),
}
FINAL = frozenset({S.COMMITTED, S.ABANDONED})
INPUTS_FIXED = frozenset({S.CONSISTENCY_CHECK, S.UNMASK})  # the masked inputs are all in
# The SecAgg+ stage devices answer in each state after TRAINING, and the state that follows.
SECAGG_NEXT: dict[RoundState, tuple[rm.Stage, RoundState]] = {
    S.SHARE_KEYS: (rm.Stage.SHARE_KEYS, S.MASKED_INPUT),
    S.MASKED_INPUT: (rm.Stage.MASKED_INPUT, S.CONSISTENCY_CHECK),
    S.CONSISTENCY_CHECK: (rm.Stage.CONSISTENCY_CHECK, S.UNMASK),
    S.UNMASK: (rm.Stage.UNMASK, S.COMMITTED),
}


def check_move(current: RoundState, new: RoundState) -> None:
    """Refuse a move ``TRANSITIONS`` does not list (``IllegalTransition``: a bug)."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"round cannot go from {current.value} to {new.value}")


def secagg_after(state: RoundState) -> tuple[RoundState, rm.Stage]:
    """The SecAgg+ state that follows ``state`` (TRAINING or a SecAgg+ state) and its stage."""
    nxt = S.SHARE_KEYS if state is S.TRAINING else SECAGG_NEXT[state][1]
    return nxt, SECAGG_NEXT[nxt][0]


def first_stage(kind: rm.RoundKind, *, secagg: bool) -> rm.Stage:
    """The stage a selected device answers first: its evaluation, SecAgg+ keys or update."""
    if kind is rm.RoundKind.EVALUATE:
        return rm.Stage.EVALUATION
    return rm.Stage.ADVERTISE_KEYS if secagg else rm.Stage.PLAIN_UPDATE


def expected_stage(state: RoundState, kind: rm.RoundKind, *, secagg: bool) -> rm.Stage | None:
    """The stage devices answer in ``state``; None where no answer is expected."""
    if state is S.TRAINING:
        return first_stage(kind, secagg=secagg)
    entry = SECAGG_NEXT.get(state)
    return entry[0] if entry else None


__all__ = [
    "FINAL", "INPUTS_FIXED", "SECAGG_NEXT", "TRANSITIONS", "RoundState", "check_move",
    "expected_stage", "first_stage", "secagg_after",
]  # fmt: skip
