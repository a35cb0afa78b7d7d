"""SecAgg+ in cohorts: a round's selected devices split at random into cohorts of at most
``cohort_size``, each one SecAgg+ instance of its own, all advancing in lockstep.

Why (Bonawitz et al. 2019, section 6): one SecAgg+ instance costs the server and each device
more as it grows (the consistency check shows every device the whole included set, O(n^2)
in all), and one dropout-heavy corner of the fleet can abort it. Cohorts of a few hundred
keep every instance small, and a failed cohort loses only its own devices: the round adds
the sums of the cohorts that finish. The coordinator sees each cohort's sum, so the cohort
is the privacy unit (``docs/secagg.md``).

The machine still runs one stage at a time for the whole round (one stage deadline): it
routes each SecAgg+ answer to its device's cohort, and when the stage closes, every live
cohort's server closes it too. A cohort whose server raises ``RoundAborted`` (too few live
devices, too few holders of a needed secret) is left out from then on, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.rounds.cohort_results import CohortResult, CohortSum, sum_results
from fedrt.coordinator.rounds.commands import RoundConfig
from fedrt.coordinator.selection.cohort_split import split
from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import RoundAborted, StageError
from fedrt.protocol.graph import choose_parameters, validate_parameters
from fedrt.protocol.round_errors import UnexpectedMessage, WrongCohort
from fedrt.protocol.round_secagg import secagg_config, sender_of
from fedrt.protocol.secagg_server import SecAggServer
from fedrt.protocol.topics import cohort_key

__all__ = ["Cohort", "CohortSum", "Cohorts", "check_cohort_topic", "secagg_parameters"]


def secagg_parameters(config: RoundConfig, n: int) -> tuple[int, int]:
    """(neighbours k, threshold t) for a cohort of ``n``; ``ParameterError`` if invalid."""
    if config.secagg_neighbors is not None and config.secagg_threshold is not None:
        k, t = min(config.secagg_neighbors, n - 1), config.secagg_threshold
        if k % 2 and n % 2:  # no k-regular graph: one fewer neighbour
            k -= 1
        t = min(t, k + 1)
        validate_parameters(n, k, t)
        return k, t
    return choose_parameters(n, dropout=config.expected_dropout)


@dataclass(slots=True)
class Cohort:
    """One SecAgg+ instance: its members (device id of each SecAgg+ index) and server, and
    its stage logic, the same wherever the cohort runs (see ``cohort_results``)."""

    index: int
    members: tuple[str, ...]
    server: SecAggServer
    # Its topic key (``topics.cohort_key``): members' replies arrive under it.
    key: str = ""
    # Why it was left out ("" while live): the server's abort, or too few in its sum.
    failed: str = ""

    def receive(self, index: int, payload: bytes) -> None:
        """Member ``index``'s SecAgg+ answer, checked by the server."""
        # Signatures already bind a message to its sender; this refuses even a device
        # re-submitting a peer's message it saw relayed.
        device_id = self.members[index]
        if sender_of(payload) != index:
            raise UnexpectedMessage(f"{device_id} sent a message of another device")
        if self.failed:
            raise UnexpectedMessage(f"{device_id}'s cohort {self.index} was left out")
        self.server.receive(payload)

    def close_stage(self, stage_note: str) -> dict[str, bytes] | None:
        """Close the stage: the next stage's request to each member still in, by device id,
        or None when the cohort fails now (``failed`` says why, ``stage_note`` included)."""
        waiting = len(self.server.waiting_for)
        try:
            out = self.server.close_stage()
        except RoundAborted as exc:
            missing = f", {waiting} of {len(self.members)} had not answered" if waiting else ""
            self.failed = f"SecAgg+ aborted in {exc.stage}: {exc}{missing}{stage_note}"
            return None
        return {self.members[index]: payload for index, payload in out.items()}

    def result(self, floor: int) -> CohortResult:
        """The unmasked sum, or a failure when fewer than ``floor`` inputs are in it (under
        device DP its sum would carry less than the full noise): the cohort is left out."""
        if self.failed:
            return CohortResult(index=self.index, key=self.key, failed=self.failed)
        inputs = self.server.included
        if len(inputs) < floor:
            self.failed = f"{len(inputs)} inputs unmasked, {floor} needed in a cohort"
            return CohortResult(index=self.index, key=self.key, failed=self.failed)
        return CohortResult(
            index=self.index,
            key=self.key,
            included=tuple(self.members[i] for i in sorted(inputs)),
            total=np.asarray(self.server.result, dtype=np.uint64),
        )


def check_cohort_topic(
    cohorts: Cohorts | None, device_id: str, message: rm.DeviceMessage, key: str
) -> None:
    """``WrongCohort`` unless ``message`` may come under cohort topic ``key``: a reply of a
    member of that cohort (check-ins never come there)."""
    if isinstance(message, rm.CheckIn):
        raise WrongCohort(f"{device_id} checked in on cohort topic {key!r}")
    mine = cohorts.key_of(device_id) if cohorts is not None else None
    if mine != key:
        raise WrongCohort(f"{device_id} is not in cohort {key!r} of this round")


class Cohorts:
    """The cohorts of one SecAgg+ round (see the module docstring)."""

    def __init__(self, config: RoundConfig, spec: rm.UpdateSpec) -> None:
        self.config = config
        self.spec = spec
        self.cohorts: list[Cohort] = []
        self._of: dict[str, tuple[Cohort, int]] = {}  # device id -> (cohort, index)
        # Cohorts other instances run, by index: their result once it came back.
        self.remote: dict[int, CohortResult | None] = {}
        self._elsewhere = 0  # see ``elsewhere``; kept as ``remote`` changes

    def open(
        self,
        order: Sequence[str],
        identity_keys: Mapping[str, bytes],
        rng: np.random.Generator,
    ) -> dict[str, rm.SecAggSpec]:
        """Split ``order`` and start each cohort's server; each device's own SecAgg+ spec
        (its cohort's members only). Raises ``ProtocolError`` with nothing opened."""
        cohorts: list[Cohort] = []
        specs: dict[str, rm.SecAggSpec] = {}
        for c, group in enumerate(split(order, self.config.cohort_size, rng)):
            k, t = secagg_parameters(self.config, len(group))
            members = tuple(
                rm.CohortMember(device_id=d, identity_key=identity_keys[d]) for d in group
            )
            for i, d in enumerate(group):
                specs[d] = rm.SecAggSpec(client_id=i, threshold=t, neighbors=k, members=members)
            server = SecAggServer(
                secagg_config(
                    task_id=self.config.task_id,
                    round_id=self.config.round_id,
                    spec=specs[group[0]],
                    update=self.spec,
                )
            )
            key = cohort_key(self.config.task_id, self.config.round_id, c)
            cohorts.append(Cohort(index=c, members=group, server=server, key=key))
        self.cohorts = cohorts
        self._of = {d: (co, i) for co in cohorts for i, d in enumerate(co.members)}
        return specs

    # --- queries ---------------------------------------------------------------------------

    def groups(self) -> list[tuple[str, ...]]:
        return [c.members for c in self.cohorts]

    def live(self) -> list[Cohort]:
        """The cohorts still running here (not failed, not handed to another instance)."""
        return [c for c in self.cohorts if not c.failed and c.index not in self.remote]

    def any_left(self) -> bool:
        """Whether a cohort may still add to the sum: live here, run elsewhere and not
        back yet, or back with a sum."""
        back = any(r is not None and not r.failed for r in self.remote.values())
        return back or bool(self.live()) or bool(self.pending())

    def elsewhere(self) -> int:
        """Devices of handed-over cohorts counted as in: every member of one whose result
        is still due, those in the sum of one whose result came back. Kept, not recounted:
        the round machine weighs it after every answer."""
        return self._elsewhere

    def pending(self) -> list[Cohort]:
        """The cohorts handed to other instances whose result has not come back yet."""
        return [self.cohorts[i] for i, got in sorted(self.remote.items()) if got is None]

    def cohort_of(self, device_id: str) -> Cohort:
        return self._of[device_id][0]

    def key_of(self, device_id: str) -> str | None:
        """The topic key of ``device_id``'s cohort (None: not in this round)."""
        found = self._of.get(device_id)
        return found[0].key if found is not None else None

    def keys(self) -> tuple[str, ...]:
        """Each cohort's topic key, by cohort index."""
        return tuple(c.key for c in self.cohorts)

    def bad_holders(self) -> tuple[str, ...]:
        """Devices any cohort's server found revealing wrong shares (sorted device ids)."""
        return tuple(sorted(c.members[i] for c in self.cohorts for i in c.server.bad_holders))

    def failures(self) -> str:
        """Why the cohorts that failed did, one clause each."""
        failed = {c.index: c.failed for c in self.cohorts if c.failed}
        failed.update({i: r.failed for i, r in self.remote.items() if r is not None and r.failed})
        return "; ".join(
            f"cohort {i} ({len(self.cohorts[i].members)} devices): {why}"
            for i, why in sorted(failed.items())
        )

    # --- cohorts run elsewhere -------------------------------------------------------------

    def delegate(self, indices: Sequence[int]) -> list[str]:
        """Hand cohorts ``indices`` to other instances; their members, by device id."""
        for i in indices:
            if not 0 <= i < len(self.cohorts) or self.cohorts[i].failed:
                raise UnexpectedMessage(f"cohort {i} cannot be handed over")
            self._set_remote(i, None)
        return [d for i in indices for d in self.cohorts[i].members]

    def take_result(self, result: CohortResult) -> None:
        """The result of a cohort another instance ran; ``UnexpectedMessage`` (nothing
        changed) unless it is one awaited, of that cohort's members."""
        if self.remote.get(result.index, result) is not None:
            raise UnexpectedMessage(f"cohort {result.index}'s result is not awaited")
        cohort = self.cohorts[result.index]
        if result.key != cohort.key or not set(result.included) <= set(cohort.members):
            raise UnexpectedMessage(f"a result that is not cohort {result.index}'s")
        self._set_remote(result.index, result)

    def _set_remote(self, index: int, result: CohortResult | None) -> None:
        self._elsewhere -= self._counted_elsewhere(index)
        self.remote[index] = result
        self._elsewhere += self._counted_elsewhere(index)

    def _counted_elsewhere(self, index: int) -> int:
        """What cohort ``index`` adds to ``elsewhere``."""
        if index not in self.remote:
            return 0
        result = self.remote[index]
        return len(self.cohorts[index].members) if result is None else len(result.included)

    # --- the stages ------------------------------------------------------------------------

    def receive(self, device_id: str, payload: bytes) -> None:
        """One SecAgg+ answer of ``device_id``, checked by its cohort's server."""
        cohort, index = self._of[device_id]
        cohort.receive(index, payload)

    def close_stage(self, stage_note: str) -> tuple[dict[str, bytes], list[Cohort]]:
        """Close the stage in every live cohort: (the next stage's request to each device
        still in, by device id; the cohorts that failed now). ``stage_note`` goes into a
        failure's reason (what the deadline was, how many answered)."""
        requests: dict[str, bytes] = {}
        failed: list[Cohort] = []
        for cohort in self.live():
            out = cohort.close_stage(stage_note)
            if out is None:
                failed.append(cohort)
            else:
                requests.update(out)
        return requests, failed

    # --- the end ---------------------------------------------------------------------------

    def total(self) -> CohortSum:
        """The sum over the live cohorts (each read back on its own: its ring and, under
        device DP, its noise are its own). A cohort with fewer inputs than
        ``config.cohort_min_reports`` is left out: under device DP its sum would carry less
        than the full noise. ``RoundFailed`` when no cohort remains."""
        floor = self.floor()
        results = [cohort.result(floor) for cohort in self.live()]
        results += [r for r in self.remote.values() if r is not None]
        return sum_results(results, self.spec, self.failures())

    def floor(self) -> int:
        """The fewest inputs a cohort's sum may hold (see ``total``)."""
        return self.config.cohort_min_reports if self.spec.dp is not None else 2

    def results(self) -> dict[int, npt.NDArray[np.unsignedinteger]]:
        """Each finished cohort's raw SecAgg+ sum, by cohort index (for tests and audits)."""
        out: dict[int, npt.NDArray[np.unsignedinteger]] = {}
        for c in self.live():
            try:
                out[c.index] = c.server.result
            except StageError:  # this cohort has not unmasked yet
                continue
        return out
