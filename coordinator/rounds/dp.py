"""A DP task's rounds, as the driver runs them: the noise multiplier calibrated off the event
loop, each training round's plan laid over its config, the charge at commit, and the stop
before a round that could overspend the budget (``privacy.rounds`` does the arithmetic).
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fedrt.coordinator.privacy.accounting import PrivacyBudgetExceeded
from fedrt.coordinator.privacy.central import CentralNoise
from fedrt.coordinator.rounds.commands import Commit, RoundConfig, select_count
from fedrt.coordinator.rounds.runs import Run
from fedrt.coordinator.store.base import Store
from fedrt.protocol import round_dp

log = logging.getLogger(__name__)

# While a DP task's noise multiplier is calibrated: how often to look, and the wait before
# trying again after a failure.
_CALIBRATION_POLL_S = 0.2
_CALIBRATION_RETRY_S = 5.0


class NoiseCalibration:
    """Calibrates DP tasks' noise multipliers on a worker thread (one, made on first use)."""

    def __init__(self) -> None:
        self._workers: ThreadPoolExecutor | None = None

    def ready(self, run: Run, store: Store, now: float) -> bool:
        """Whether a DP task's noise multiplier is known. Calibrating it for a target epsilon
        takes dp_accounting 1-2 s: that runs on a worker thread while the round waits, so the
        coordinator's event loop keeps serving (driver calls must not block)."""
        privacy = run.privacy
        assert privacy is not None
        if not privacy.needs_calibration:
            return True
        future = run.calibrating
        if future is None:
            population = sum(1 for d in store.list_devices() if not d.revoked)
            cohort = max(1, select_count(run.spec.goal_count, run.spec.over_selection))
            if run.spec.mode == "async":  # no amplification by sampling (async_driver)
                population = cohort = run.spec.buffer_size
            if self._workers is None:
                self._workers = ThreadPoolExecutor(1, thread_name_prefix="fedrt-dp-calibrate")
            run.calibrating = self._workers.submit(
                privacy.noise_multiplier, max(population, cohort), cohort
            )
        elif future.done():
            run.calibrating = None
            try:
                future.result()
            except Exception:
                log.exception("task %s: calibrating the noise multiplier failed", run.task_id)
                run.next_start = now + _CALIBRATION_RETRY_S
                return False
            return True
        run.next_start = now + _CALIBRATION_POLL_S
        return False


def with_dp(run: Run, config: RoundConfig, *, population: int) -> RoundConfig:
    """Plan a DP task's training round (``run.dp_round``) and lay the plan over ``config``;
    ``PrivacyBudgetExceeded`` when the round could take the task past its budget."""
    privacy = run.privacy
    assert privacy is not None
    # Population: the enrolled devices any of which may check in (dp_accounting).
    run.dp_round = privacy.plan(population=population, cohort=config.select_count)
    n = run.dp_round.privacy.population
    if privacy.config.delta >= 1.0 / n:
        log.warning("task %s: delta %g is not below 1/%d enrolled devices: the "
                    "guarantee allows leaking one of them", run.task_id,
                    privacy.config.delta, n)  # fmt: skip
    # Every update is clipped to the DP bound and weighs 1: one device moves the
    # sum by at most the clip, which is what the noise is calibrated to.
    return dataclasses.replace(
        config,
        clip_norm=run.dp_round.clip,
        weight_cap=1,
        device_dp=privacy.device_dp(run.dp_round),
    )


def central_noise(run: Run, rng: np.random.Generator) -> CentralNoise | None:
    """The noise the coordinator adds to the running round's sum (central DP), if any."""
    if run.privacy is not None and run.dp_round is not None:
        return run.privacy.central_noise(run.dp_round, rng)
    return None


def charge(run: Run, commit: Commit, rng: np.random.Generator) -> float | None:
    """Charge a committed DP round to the task's budget; the noise std on its sum."""
    if run.privacy is None or run.dp_round is None:
        return None
    spec = run.machine.update_spec if run.machine is not None else None
    n = commit.metrics.included
    # Charged for the pool the cohort was really drawn from (the planned one is the most
    # that could check in); the round's stored plan becomes this one.
    m = commit.metrics
    run.dp_round = run.privacy.as_sampled(run.dp_round, pool=m.checked_in, cohort=m.selected)
    return run.privacy.commit(
        run.dp_round,
        included=n,
        unclipped=commit.metrics.unclipped,
        device_sum_std=round_dp.float_sum_std(spec, n) if spec is not None else 0.0,
        rng=rng,
    )


def budget_exhausted(run: Run, exc: PrivacyBudgetExceeded) -> dict[str, Any]:
    """The audit detail of a task stopped BEFORE a round that could overspend its budget."""
    assert run.privacy is not None
    log.warning("task %s: stopped after %d rounds: %s", run.task_id, run.round_no, exc)
    return {
        "reason": str(exc),
        "epsilon": run.privacy.epsilon,
        "epsilon_after_next_round": exc.epsilon,
        "budget_epsilon": exc.budget,
    }


__all__ = ["NoiseCalibration", "budget_exhausted", "central_noise", "charge", "with_dp"]
