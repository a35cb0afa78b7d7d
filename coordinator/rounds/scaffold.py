"""SCAFFOLD in a round: the plan's control variate, the doubled update, the optimizer's |S|/N.

A SCAFFOLD training round asks each device for 2P values (model delta, then its new variate
c_i+ times lr x epochs: ``strategies.scaffold``), so its ``UpdateSpec``
sizes them and SecAgg+ sums both halves at once. The server variate c a round starts from
is the ``control_variate`` of the optimizer state saved with the version it starts from:
the plan names its float32 form (``models.control_variate``: sha256, and the URL that
serves it next to the version), and a device fetches it once per version. A version
without a saved state holding c (the uploaded one) has c = 0, and the plan names none. The
form is not signed on its own: the plan, which came from the coordinator, carries its
sha256, and the device checks the bytes against it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from fedrt.coordinator.errors import NotFoundError, StoreError
from fedrt.coordinator.models.blobs import BlobStore
from fedrt.coordinator.models.control_variate import variate_form
from fedrt.coordinator.records import ModelRecord
from fedrt.coordinator.rounds.commands import RoundConfig
from fedrt.coordinator.strategies.scaffold import CONTROL_VARIATE, NAME
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_messages as rm

log = logging.getLogger(__name__)


def with_scaffold(
    config: RoundConfig,
    spec: TaskSpec,
    model: ModelRecord,
    model_url_prefix: str,
    blobs: BlobStore,
) -> RoundConfig:
    """``config`` as a SCAFFOLD training round of ``spec`` starting from ``model``."""
    if spec.strategy != NAME or config.kind is not rm.RoundKind.TRAIN:
        return config
    form = None
    if model.optimizer_state_sha256 is not None:
        try:
            form = variate_form(blobs, model.optimizer_state_sha256)
        except (StoreError, NotFoundError) as exc:
            # The round's optimizer then starts fresh too (optimizer_state.load_state): c = 0.
            log.error("version %s: its control variate is unusable: %s", model.sha256[:12], exc)
    ref = None
    if form is not None:
        ref = rm.ModelRef(
            version=model.round_no or 0,
            sha256=form,
            url=f"{model_url_prefix}{model.sha256}/{CONTROL_VARIATE}",
        )
    return replace(config, scaffold=True, control_variate=ref)


__all__ = ["CONTROL_VARIATE", "with_scaffold"]
