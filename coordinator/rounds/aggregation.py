"""What a round's answers add up to: SecAgg+ cohorts, plain updates, evaluations, the commit.

``RoundAggregation`` holds the data side of one round while ``machine`` holds the
control side: the machine decides WHEN a stage closes, this decides WHAT the answers are
worth. Every ``add_*`` validates fully before storing, so a bad payload changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.privacy.central import CentralNoise
from fedrt.coordinator.rounds.cohorts import Cohorts
from fedrt.coordinator.rounds.commands import Commit, EvaluationDone, RoundConfig, RoundMetrics
from fedrt.coordinator.rounds.eval_figures import device_evals
from fedrt.coordinator.rounds.personal_spans import embed
from fedrt.coordinator.strategies.aggregators import WeightedMean, norm_outliers
from fedrt.coordinator.strategies.optimizers import (
    AggregationError,
    OptimizerState,
    ServerOptimizer,
)
from fedrt.coordinator.strategies.scaffold import for_round
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.round_errors import RoundFailed


class RoundAggregation:
    """The aggregation state of one round (see the module docstring)."""

    def __init__(
        self,
        config: RoundConfig,
        spec: rm.UpdateSpec,
        *,
        weights: npt.NDArray[np.floating],
        optimizer: ServerOptimizer,
        optimizer_state: OptimizerState,
        central_noise: CentralNoise | None = None,
    ) -> None:
        self.config = config
        self._central_noise = central_noise  # central DP (issue 9): noise on the aggregate
        self.spec = spec
        self._weights = np.asarray(weights)
        self._optimizer = optimizer
        self._state = optimizer_state
        # FedAvg keeps one running sum (memory flat in the cohort size); robust rules such as
        # the median or Krum need every delta, so they keep each one.
        self._streaming = isinstance(config.aggregator, WeightedMean)
        self._sum: round_update.PlainSum | None = None  # made by the first plain update
        self._plain: dict[str, tuple[npt.NDArray[np.float32], float]] = {}
        self._norms: dict[str, float] = {}  # robust rules: each update's norm before the clip
        self._evals: dict[str, rm.EvalReport] = {}
        self.cohorts: Cohorts | None = None  # SecAgg+ rounds, from selection on

    # --- SecAgg+ ---------------------------------------------------------------------------

    def open_secagg(
        self, order: Sequence[str], identity_keys: Mapping[str, bytes], rng: np.random.Generator
    ) -> dict[str, rm.SecAggSpec]:
        """Split ``order`` into cohorts and start their SecAgg+ servers; each device's spec."""
        cohorts = Cohorts(self.config, self.spec)
        specs = cohorts.open(order, identity_keys, rng)
        self.cohorts = cohorts
        return specs

    def add_secagg(self, device_id: str, payload: bytes) -> None:
        """A device's SecAgg+ answer, for its cohort's server."""
        assert self.cohorts is not None
        self.cohorts.receive(device_id, payload)

    # --- answers ---------------------------------------------------------------------------

    def add_plain(self, device_id: str, payload: bytes) -> None:
        """A device's plain quantized update (SecAgg off)."""
        vector = round_update.unpack(payload, self.spec)
        if self._streaming:
            # Clipped inside the sum. Once added an update stays in: a device that answered
            # and then withdraws or checks in again has still sent a complete, valid update.
            if self._sum is None:
                self._sum = round_update.PlainSum(self.spec)
            self._sum.add(vector)
            return
        delta, count = round_update.decode_one(vector, self.spec)
        # The server sees this update, so it enforces the clip itself (SecAgg+ cannot).
        self._norms[device_id] = float(np.linalg.norm(delta))
        delta = round_update.clip(delta, self.spec.clip_norm)
        self._plain[device_id] = (delta.astype(np.float32), count / self.spec.weight_cap)

    def add_evaluation(self, device_id: str, report: rm.EvalReport) -> None:
        self._evals[device_id] = report

    def bad_holders(self) -> tuple[str, ...]:
        """Devices the SecAgg+ server found revealing wrong shares (sorted device ids)."""
        return () if self.cohorts is None else self.cohorts.bad_holders()

    def secagg_metrics(self, metrics: RoundMetrics, *, secagg: bool) -> RoundMetrics:
        """``metrics`` with the SecAgg+ figures: cohorts, bad holders."""
        cohorts = 0 if self.cohorts is None else len(self.cohorts.cohorts)
        return replace(metrics, bad_holders=self.bad_holders(), secagg=secagg, cohorts=cohorts)

    def discard(self) -> None:
        self._plain.clear()
        self._norms.clear()
        self._sum = None
        self._evals.clear()
        self.cohorts = None

    # --- the end ---------------------------------------------------------------------------

    def finish(self, answered: Sequence[str], metrics: RoundMetrics) -> Commit | EvaluationDone:
        """Aggregate the answers of ``answered`` (the devices that completed the last stage)."""
        cfg = self.config
        if cfg.kind is rm.RoundKind.EVALUATE:
            return self._finish_evaluation(answered, metrics)
        unclipped: float | None = None
        committed = discarded = 0
        norms: list[float] = []  # robust figures: only where each update is seen
        if self.cohorts is not None:
            # Under DP the devices may have added noise (read back centred) and clip bits.
            got = self.cohorts.total()
            count, committed = len(got.included), got.committed
            if count < cfg.min_reports:
                failed = self.cohorts.failures()
                raise RoundFailed(
                    f"{count} inputs unmasked, {cfg.min_reports} needed"
                    + (f" (left out: {failed})" if failed else "")
                )
            delta, weight, unclipped = got.delta, got.weight, got.unclipped
        elif self._streaming:
            if self._sum is None or self._sum.count < max(1, cfg.min_reports):
                raise RoundFailed(f"too few updates summed, {cfg.min_reports} needed")
            delta, weight, count = self._sum.mean(), self._sum.weight, self._sum.count
            norms = self._sum.norms
        else:
            rows = [self._plain[d] for d in answered]
            matrix = np.stack([r[0] for r in rows])
            ws = np.array([r[1] for r in rows])
            try:
                delta, discarded = cfg.aggregator.robust(matrix, ws)
                norms = [self._norms[d] for d in answered]
            except AggregationError as exc:
                raise RoundFailed(f"{cfg.aggregator.name}: {exc}") from None
            weight, count = float(ws.sum()), len(rows)
        # --- central DP (issue 9): noise the aggregate before the optimizer sees it ---
        if self._central_noise is not None:
            delta = self._central_noise.apply(delta, weight=weight, clip_norm=self.spec.clip_norm)
        # --- end central DP ---
        # Personal tensors (FedPer) were not in the update: a zero delta leaves them as is.
        delta = embed(delta, int(self._weights.size), cfg.personal_spans)
        optimizer = for_round(self._optimizer, included=count, population=cfg.population)
        try:
            new, state = optimizer.apply(self._weights, delta, self._state)
        except AggregationError as exc:
            raise RoundFailed(str(exc)) from None
        final = replace(
            metrics,
            included=count,
            total_weight=weight,
            update_norm=float(np.linalg.norm(delta)),
            unclipped=unclipped,
            cohorts_committed=committed,
            aggregator="" if self.cohorts is not None else cfg.aggregator.name,
            robust_discarded=discarded,
            norm_outliers=norm_outliers(np.array(norms)),
        )
        return Commit(
            round_id=cfg.round_id, weights=new, optimizer_state=state, delta=delta, metrics=final
        )

    def _finish_evaluation(self, answered: Sequence[str], metrics: RoundMetrics) -> EvaluationDone:
        reports = [self._evals[d] for d in answered]
        n = sum(r.n_examples for r in reports)
        sums: dict[str, float] = {}
        for r in reports:
            for m in r.metrics:
                sums[m.name] = sums.get(m.name, 0.0) + m.value
        means = tuple(sorted((k, v / n) for k, v in sums.items())) if n else ()
        return EvaluationDone(
            round_id=self.config.round_id,
            model_version=self.config.model.version,
            n_examples=n,
            metrics=means,
            round_metrics=replace(metrics, included=len(reports), total_weight=float(n)),
            devices=device_evals({d: self._evals[d] for d in answered}),
        )


__all__ = ["RoundAggregation"]
