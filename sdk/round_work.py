"""A device's local work for one round: fetch the plan's model, then train or evaluate it.

Runs on a worker thread of the ``Device`` and reports back through a callback. The model
is downloaded once per version (Range-resumable, signature and sha256 verified before it
is used) into the device's model cache; every round opens a fresh interpreter on it, so
the round starts exactly from the committed global weights baked into that version.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedrt.model_export.errors import ExportError
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest
from fedrt.protocol import eval_metrics, qfedavg
from fedrt.protocol import round_messages as rm
from fedrt.protocol.scaffold import variate_scale
from fedrt.sdk.control_variate import KIND as VARIATE_KIND
from fedrt.sdk.control_variate import ScaffoldRound, start_round
from fedrt.sdk.control_variate import variate_dir as variate_dir_of
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.errors import DownloadError, ModelError, SdkError
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.https_trust import check_url, open_url
from fedrt.sdk.model_cache import fetch_version
from fedrt.sdk.personal_layers import (
    PersonalLayers,
    personalize,
    personalized_sums,
    shared_delta,
)
from fedrt.sdk.scheduler import (
    Outcome,
    SchedulerConfig,
    TrainingPlan,
    TrainingScheduler,
    steps_for,
)
from fedrt.sdk.trainer import LiteRtTrainer, TrainerBackend

__all__ = ["RoundWork", "TrainerFactory", "TrainingOutput", "WorkResult"]

log = logging.getLogger(__name__)
_META_TIMEOUT_S = 30.0

# A scheduler training ``trainer`` on the given examples (the round's training part).
SchedulerFactory = Callable[[TrainerBackend, ExampleStore], TrainingScheduler]
# Opens a round's verified model file with its manifest (the Android app plugs its Java
# LiteRT trainer in here; see fedrt.sdk.android_trainer).
TrainerFactory = Callable[[Path, Manifest], TrainerBackend]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingOutput:
    delta: npt.NDArray[np.float32]
    n_examples: int
    mean_loss: float | None
    steps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkResult:
    """What the worker hands back: a training output, evaluation sums, or why it stopped."""

    plan: rm.Plan
    training: TrainingOutput | None = None
    eval_examples: int = 0
    eval_sums: Mapping[str, float] | None = None
    abandon: rm.AbandonReason | None = None
    detail: str = ""
    bytes_down: int = 0
    # bytes_down by what they were: "meta", "file", "graph", "weights", "delta".
    down_by_kind: Mapping[str, int] = field(default_factory=dict)


def _delta(
    trained: Sequence[npt.NDArray[np.float32]], start: Sequence[npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    """trained - start, flattened in manifest order, written into one buffer.

    Flattening both lists first and subtracting would hold three more model-sized vectors
    at once (26 MB for the 28x28 CNN's 1.66M parameters)."""
    out = np.empty(sum(int(w.size) for w in trained), np.float32)
    at = 0
    for w, s in zip(trained, start, strict=True):
        np.subtract(w.reshape(-1), s.reshape(-1), out=out[at : at + w.size])
        at += w.size
    return out


class RoundWork:
    """One ``Train`` or ``Evaluate`` command carried out on a worker thread."""

    def __init__(
        self,
        *,
        plan: rm.Plan,
        deadline: float,
        store: ExampleStore,
        scheduler_factory: SchedulerFactory,
        model_dir: Path,
        public_key: bytes,
        auth_headers: Mapping[str, str],
        meta_url: str,
        done: Callable[[WorkResult], None],
        num_threads: int | None = 1,
        trainer_factory: TrainerFactory | None = None,
        ssl_context: ssl.SSLContext | None = None,
        personal_dir: Path | None = None,
        variate_dir: Path | None = None,
    ) -> None:
        self.plan = plan
        # Where the device keeps its SCAFFOLD control variates (``control_variate``).
        self.variate_dir = variate_dir or variate_dir_of(model_dir.parent)
        # Where the device keeps each task's personal layers (None: the model directory).
        self.personal = PersonalLayers(
            personal_dir or model_dir / "personal", plan.task_id, plan.personal_layers
        )
        # The CA(s) the coordinator must prove itself to on every HTTPS call of this round.
        self.ssl_context = ssl_context
        self.deadline = deadline
        self.store = store
        self.scheduler_factory = scheduler_factory
        self.model_dir = model_dir
        self.public_key = public_key
        self.auth_headers = dict(auth_headers)
        self.meta_url = meta_url
        self.done = done
        self.num_threads = num_threads
        self.trainer_factory = trainer_factory or self._open_litert
        self.bytes_by_kind: dict[str, int] = {}
        self._cancel = threading.Event()
        self._job_lock = threading.Lock()
        self._job: object | None = None
        self._thread = threading.Thread(target=self._main, name="fedrt-round-work", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()
        with self._job_lock:
            job = self._job
        if job is not None:
            job.cancel()  # type: ignore[attr-defined]

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker
    def _main(self) -> None:
        try:
            result = self._run()
        except SdkError as exc:
            log.warning("round %d: %s", self.plan.round_id, exc)
            reason = (
                rm.AbandonReason.MODEL_UNAVAILABLE
                if isinstance(exc, DownloadError | ModelError)
                else rm.AbandonReason.ERROR
            )
            result = WorkResult(plan=self.plan, abandon=reason, detail=str(exc)[:200])
        except ExportError as exc:
            result = WorkResult(
                plan=self.plan, abandon=rm.AbandonReason.MODEL_UNAVAILABLE, detail=str(exc)[:200]
            )
        if not self._cancel.is_set():
            self.done(replace(result, down_by_kind=dict(self.bytes_by_kind)))

    def _run(self) -> WorkResult:
        manifest, path, fetched = self._fetch_model()
        if self._cancel.is_set():
            return WorkResult(plan=self.plan, abandon=rm.AbandonReason.ERROR, detail="cancelled")
        try:
            trainer = self.trainer_factory(path, manifest)
        except ExportError as exc:
            raise ModelError(f"cannot load model {self.plan.model.sha256[:12]}: {exc}") from exc
        # Closed as soon as the work is done: the interpreter's tensor arena and XNNPACK's
        # workspace are freed before the update's clip/quantize/SecAgg+ buffers are made,
        # which reuse that memory instead of adding to the device's peak RSS.
        try:
            evaluating = self.plan.kind is rm.RoundKind.EVALUATE
            if len(self._part(held_out=evaluating)) < 1:
                return WorkResult(
                    plan=self.plan, abandon=rm.AbandonReason.NO_DATA, detail="no local examples"
                )
            if self.plan.kind is rm.RoundKind.EVALUATE:
                n, sums = self._evaluate(trainer)
                if self.plan.personal_layers or self.plan.finetune_steps:
                    # The same examples again, through this device's personalized model.
                    personalize(
                        trainer,
                        self.personal,
                        self._part(held_out=False).batch,  # never the held-out examples
                        finetune_steps=self.plan.finetune_steps,
                        lr=self.plan.training.learning_rate,
                        cancelled=self._cancel.is_set,
                    )
                    sums = {**sums, **personalized_sums(self._evaluate(trainer)[1])}
                return WorkResult(
                    plan=self.plan, eval_examples=n, eval_sums=sums, bytes_down=fetched
                )
            if self.plan.personal_layers:  # FedPer: this device's own tensors over the global
                trainer.set_weights(
                    self.personal.merge(trainer.get_weights(), trainer.weight_specs)
                )
            return self._train(trainer, fetched)
        finally:
            try:
                trainer.close()
            except Exception as exc:  # a failed close must not lose the round's result
                log.warning("round %d: closing the trainer failed: %s", self.plan.round_id, exc)

    def _open_litert(self, path: Path, manifest: Manifest) -> TrainerBackend:
        return LiteRtTrainer(LiteRTModel(path, manifest, num_threads=self.num_threads), manifest)

    def _fetch_model(self) -> tuple[Manifest, Path, int]:
        ref = self.plan.model
        check_url(ref.url, what="model url")  # a plan that would leak credentials sends nothing
        request = urllib.request.Request(self.meta_url, headers=self.auth_headers)  # noqa: S310
        try:
            with open_url(
                request, context=self.ssl_context, timeout=_META_TIMEOUT_S, what="model meta url"
            ) as resp:
                body = resp.read()
                meta = json.loads(body)
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise DownloadError(f"cannot fetch model metadata: {exc}") from None
        raw_manifest = meta.get("manifest") if isinstance(meta, dict) else None
        if not isinstance(raw_manifest, dict):
            raise DownloadError("model metadata has no manifest")
        # The signature comes from the plan (signed by the coordinator), not from this reply;
        # every form the reply offers is checked against it once rebuilt.
        fetched = fetch_version(
            url=ref.url,
            sha256=ref.sha256,
            signature=ref.signature,
            public_key=self.public_key,
            raw_manifest=raw_manifest,
            meta=meta,
            model_dir=self.model_dir,
            headers=self.auth_headers,
            ssl_context=self.ssl_context,
        )
        self.bytes_by_kind = {**fetched.bytes_by_kind, "meta": len(body)}
        return fetched.manifest, fetched.path, fetched.fetched_bytes + len(body)

    def _train(self, trainer: TrainerBackend, fetched: int) -> WorkResult:
        cfg = self.plan.training
        # What the plan asks of the model is done or refused (abandoned with the reason),
        # never quietly left out: FedProx's mu and the momentum are train inputs.
        if cfg.fedprox_mu > 0 and not trainer.supports_mu:
            raise ModelError("the plan asks for FedProx (mu) and the model has no mu input")
        trainer.use_momentum(self.plan.momentum)
        scaffold = self._start_scaffold(trainer) if self.plan.scaffold else None
        examples = self._part(held_out=False)
        # q-FedAvg weighs the update by the loss at the start weights: measured before training.
        start_loss = self._mean_loss(trainer, examples) if self.plan.qfedavg_q is not None else 0.0
        steps = steps_for(
            examples=len(examples),
            batch_size=trainer.batch_size,
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
        )
        plan = TrainingPlan(
            round_id=f"{self.plan.task_id}/{self.plan.round_id}",
            steps=steps,
            lr=cfg.learning_rate,
            deadline=self.deadline,
            mu=cfg.fedprox_mu if cfg.fedprox_mu > 0 else None,
        )
        scheduler = self.scheduler_factory(trainer, examples)
        with self._job_lock:
            job = scheduler.start(plan)
            self._job = job
        result = job.result()
        with self._job_lock:
            self._job = None
        if result.outcome is not Outcome.COMPLETED:
            reason = {
                Outcome.ABANDONED: rm.AbandonReason.DEADLINE,
                Outcome.FAILED: rm.AbandonReason.ERROR,
            }.get(result.outcome, rm.AbandonReason.ERROR)
            return WorkResult(
                plan=self.plan, abandon=reason, detail=result.reason[:200], bytes_down=fetched
            )
        trained, start = result.checkpoint.weights, result.checkpoint.start_weights
        if self.plan.personal_layers:  # kept here, never uploaded
            self.personal.keep(trained, trainer.weight_specs)
            delta = shared_delta(trained, start, trainer.weight_specs, self.plan.personal_layers)
        else:
            delta = _delta(trained, start)
        if scaffold is not None:  # the variate update travels after the model delta
            delta = scaffold.finish(
                delta,
                steps=result.steps_done,
                lr=cfg.learning_rate,
                scale=variate_scale(cfg),
                clip_norm=self.plan.update.clip_norm,
            )
            fetched += scaffold.fetched_bytes
        n_examples = result.examples
        if self.plan.qfedavg_q is not None:  # F^q d / b, weighted by b (protocol.qfedavg)
            delta, n_examples = qfedavg.device_update(
                delta,
                start_loss,
                self.plan.qfedavg_q,
                cfg.learning_rate,
                self.plan.update.weight_cap,
            )
        return WorkResult(
            plan=self.plan,
            training=TrainingOutput(
                delta=delta,
                n_examples=n_examples,
                mean_loss=result.checkpoint.mean_loss,
                steps=result.steps_done,
            ),
            bytes_down=fetched,
        )

    def _start_scaffold(self, trainer: TrainerBackend) -> ScaffoldRound:
        """c and c_i for this round; the trainer adds c - c_i to every gradient."""
        scaffold = start_round(
            self.plan,
            trainer.weight_specs,
            self.variate_dir,
            headers=self.auth_headers,
            ssl_context=self.ssl_context,
        )
        if scaffold.fetched_bytes:
            self.bytes_by_kind[VARIATE_KIND] = scaffold.fetched_bytes
        trainer.use_correction(scaffold.correction)
        return scaffold

    def _part(self, *, held_out: bool) -> ExampleStore:
        """The examples this round may train on, or evaluate on (``sdk.holdout``): at a
        plan's holdout of 0, every example for both (the behaviour before honest evaluation)."""
        if self.plan.holdout <= 0:
            return self.store
        return self.store.part(self.plan.holdout, held_out=held_out)

    def _mean_loss(self, trainer: TrainerBackend, examples: ExampleStore) -> float:
        n, sums = self._evaluate(trainer, examples)
        return sums[eval_metrics.LOSS] / n if n else 0.0

    def _evaluate(
        self, trainer: TrainerBackend, examples: ExampleStore | None = None
    ) -> tuple[int, dict[str, float]]:
        """(examples seen, metric sums) over ``examples``, by default the held-out ones."""
        store = examples if examples is not None else self._part(held_out=True)
        n = len(store)
        b = trainer.batch_size
        loss_sum, correct, seen, cursor = 0.0, 0, 0, 0
        while seen < n and not self._cancel.is_set():
            batch = store.batch(b, cursor)
            loss, right = trainer.evaluate(batch.x, batch.y)
            take = min(b, n - seen)
            # A wrapped last batch repeats examples: count only the new ones, pro rata.
            loss_sum += loss * take
            correct += round(right * take / b)
            seen += take
            cursor = batch.next_cursor
        return seen, {eval_metrics.LOSS: loss_sum, eval_metrics.ACCURACY: float(correct)}


def default_scheduler_factory(
    *,
    device_state: object,
    policy: EligibilityPolicy,
    config: SchedulerConfig,
) -> SchedulerFactory:
    def make(trainer: TrainerBackend, examples: ExampleStore) -> TrainingScheduler:
        return TrainingScheduler(
            trainer=trainer,
            store=examples,
            device_state=device_state,  # type: ignore[arg-type]
            policy=policy,
            config=config,
        )

    return make
