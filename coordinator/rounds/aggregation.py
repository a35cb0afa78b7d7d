"""What a round's answers add up to: SecAgg+ set-up, plain updates, evaluations, the commit.

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
from fedrt.coordinator.rounds.commands import Commit, EvaluationDone, RoundConfig, RoundMetrics
from fedrt.coordinator.strategies.aggregators import WeightedMean
from fedrt.coordinator.strategies.optimizers import (
    AggregationError,
    OptimizerState,
    ServerOptimizer,
)
from fedrt.protocol import round_dp, round_update
from fedrt.protocol import round_messages as rm
from fedrt.protocol.graph import choose_parameters, validate_parameters
from fedrt.protocol.round_errors import RoundFailed
from fedrt.protocol.round_secagg import secagg_config
from fedrt.protocol.secagg_server import SecAggServer


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
        self._evals: dict[str, rm.EvalReport] = {}
        self.server: SecAggServer | None = None
        self._cohort: tuple[str, ...] = ()  # device id of each SecAgg+ index

    # --- SecAgg+ ---------------------------------------------------------------------------

    def secagg_parameters(self, n: int) -> tuple[int, int]:
        """(neighbours k, threshold t) for a cohort of ``n``; ``ParameterError`` if invalid."""
        cfg = self.config
        if cfg.secagg_neighbors is not None and cfg.secagg_threshold is not None:
            k, t = min(cfg.secagg_neighbors, n - 1), cfg.secagg_threshold
            validate_parameters(n, k, t)
            return k, t
        return choose_parameters(n, dropout=cfg.expected_dropout)

    def open_secagg(
        self, order: Sequence[str], identity_keys: Mapping[str, bytes]
    ) -> list[rm.SecAggSpec]:
        """Start the SecAgg+ server for the cohort ``order``; the spec for each index."""
        k, t = self.secagg_parameters(len(order))
        members = tuple(rm.CohortMember(device_id=d, identity_key=identity_keys[d]) for d in order)
        self._cohort = tuple(order)
        specs = [
            rm.SecAggSpec(client_id=i, threshold=t, neighbors=k, members=members)
            for i in range(len(order))
        ]
        self.server = SecAggServer(
            secagg_config(
                task_id=self.config.task_id,
                round_id=self.config.round_id,
                spec=specs[0],
                update=self.spec,
            )
        )
        return specs

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
        delta = round_update.clip(delta, self.spec.clip_norm)
        self._plain[device_id] = (delta.astype(np.float32), count / self.spec.weight_cap)

    def add_evaluation(self, device_id: str, report: rm.EvalReport) -> None:
        self._evals[device_id] = report

    def bad_holders(self) -> tuple[str, ...]:
        """Devices the SecAgg+ server found revealing wrong shares (sorted device ids)."""
        if self.server is None:
            return ()
        return tuple(sorted(self._cohort[i] for i in self.server.bad_holders))

    def discard(self) -> None:
        self._plain.clear()
        self._sum = None
        self._evals.clear()
        self.server = None

    # --- the end ---------------------------------------------------------------------------

    def finish(self, answered: Sequence[str], metrics: RoundMetrics) -> Commit | EvaluationDone:
        """Aggregate the answers of ``answered`` (the devices that completed the last stage)."""
        cfg = self.config
        if cfg.kind is rm.RoundKind.EVALUATE:
            return self._finish_evaluation(answered, metrics)
        unclipped: float | None = None
        if self.server is not None:
            included = self.server.included
            if len(included) < cfg.min_reports:
                raise RoundFailed(f"{len(included)} inputs unmasked, {cfg.min_reports} needed")
            total = np.asarray(self.server.result, dtype=np.uint64)
            # Under DP the devices may have added noise (read back centred) and clip bits.
            delta, weight, unclipped = round_dp.decode_sum(total, self.spec, len(included))
            count = len(included)
        elif self._streaming:
            if self._sum is None or self._sum.count < max(1, cfg.min_reports):
                raise RoundFailed(f"too few updates summed, {cfg.min_reports} needed")
            delta, weight, count = self._sum.mean(), self._sum.weight, self._sum.count
        else:
            rows = [self._plain[d] for d in answered]
            matrix = np.stack([r[0] for r in rows])
            ws = np.array([r[1] for r in rows])
            try:
                delta = cfg.aggregator.aggregate(matrix, ws)
            except AggregationError as exc:
                raise RoundFailed(f"{cfg.aggregator.name}: {exc}") from None
            weight, count = float(ws.sum()), len(rows)
        # --- central DP (issue 9): noise the aggregate before the optimizer sees it ---
        if self._central_noise is not None:
            delta = self._central_noise.apply(delta, weight=weight, clip_norm=self.spec.clip_norm)
        # --- end central DP ---
        try:
            new, state = self._optimizer.apply(self._weights, delta, self._state)
        except AggregationError as exc:
            raise RoundFailed(str(exc)) from None
        final = replace(
            metrics,
            included=count,
            total_weight=weight,
            update_norm=float(np.linalg.norm(delta)),
            unclipped=unclipped,
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
        )


__all__ = ["RoundAggregation"]
