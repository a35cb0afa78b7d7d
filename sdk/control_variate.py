"""SCAFFOLD on the device (Karimireddy et al. 2020, option II): c_i on disk, c from the plan.

A device keeps one control variate c_i per task in its state directory, float32 in the
model's flat (manifest) order, starting at zero and started again at zero when the model's
tensors (names, shapes) change. A SCAFFOLD round trains with the correction c - c_i added
to every gradient (the ``correction`` input of a model exported with ``--scaffold``), then

    c_i+ = c_i - c + (x - y_i) / (K lr)        (K: local steps taken, lr: the plan's rate)

and sends ``[y_i - x, s * c_i+]`` as its update vector (s: ``protocol.scaffold.
variate_scale``, lr times the local epochs: at that scale the variate fits the round's clip
and quantization range), so SecAgg+ hides it like the model delta. It sends c_i+ itself,
not c_i+ - c_i: the server's c is then a running mean of the variates it receives
(``strategies.scaffold``), whose quantization and clipping errors fade, where a c summed
from increments kept every round's 8-bit noise and drifted away from the devices' c_i.

c_i+ is kept as *pending* until the round ends, and becomes c_i only when the coordinator
says the round committed (``ROUND_COMPLETE``): an update left out of the aggregate (the
round abandoned, the device dropped or restarted) would otherwise move c_i while c never
saw it. A device whose masked input was summed but which missed the end of the round keeps
its old c_i: c_i+ is recomputed from scratch (option II) in its next round.

The server's c comes as float32 little-endian values in manifest order (the plan names
its sha256; ``coordinator.models.control_variate``), fetched once per version and
verified against that sha256; a plan naming none means c = 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedrt.model_export.manifest import TensorSpec
from fedrt.protocol import round_messages as rm
from fedrt.sdk.download import download_blob
from fedrt.sdk.errors import DownloadError, ModelError

__all__ = [
    "ScaffoldRound",
    "VariateStore",
    "parse_server_variate",
    "start_round",
    "variate_dir",
]

Floats = npt.NDArray[np.float32]
# Bytes-down kind of the server variate (``WorkResult.down_by_kind``).
KIND = "control_variate"


def variate_dir(data_dir: Path) -> Path:
    """Where a device keeps its control variates, in its state directory."""
    return data_dir / "scaffold"


def _shape_key(specs: Sequence[TensorSpec]) -> str:
    names = [[s.name, list(s.shape)] for s in specs]
    return hashlib.sha256(json.dumps(names).encode()).hexdigest()


def _size(specs: Sequence[TensorSpec]) -> int:
    return sum(s.size for s in specs)


def parse_server_variate(data: bytes, size: int) -> Floats:
    """c from its float32 little-endian form; ``ModelError`` for another model's size."""
    if len(data) != 4 * size:
        raise ModelError(f"the server's control variate has {len(data)} bytes, not {4 * size}")
    c = np.frombuffer(data, "<f4").astype(np.float32)
    if not np.all(np.isfinite(c)):
        raise DownloadError("the server's control variate holds NaN or infinity")
    return c


class VariateStore:
    """One task's c_i (and the pending c_i+ of the round in flight) under ``directory``."""

    def __init__(self, directory: Path, task_id: str) -> None:
        self.directory = directory
        self.current = directory / f"{task_id}.npz"
        self.pending = directory / f"{task_id}.pending.npz"

    def load(self, specs: Sequence[TensorSpec]) -> Floats:
        """c_i for a model of these tensors: zero when none is kept or the model changed."""
        saved = self._read(self.current)
        if saved is None or saved[0] != _shape_key(specs) or saved[1].size != _size(specs):
            return np.zeros(_size(specs), np.float32)
        return saved[1]

    def stage(self, round_id: int, specs: Sequence[TensorSpec], value: Floats) -> None:
        """Keep c_i+ of ``round_id`` until ``settle`` says whether the round committed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(self.pending, _shape_key(specs), value, round_id)

    def settle(self, round_id: int, *, committed: bool) -> bool:
        """The round ended: c_i+ becomes c_i if it committed, else it is dropped. Whether
        c_i changed."""
        saved = self._read(self.pending)
        if saved is None or saved[2] != round_id:
            return False
        if committed:
            os.replace(self.pending, self.current)
            return True
        self.pending.unlink(missing_ok=True)
        return False

    @staticmethod
    def _read(path: Path) -> tuple[str, Floats, int] | None:
        try:
            with np.load(path, allow_pickle=False) as f:
                return str(f["key"]), np.asarray(f["c"], np.float32), int(f["round"])
        except (OSError, KeyError, ValueError):
            return None

    @staticmethod
    def _write(path: Path, key: str, value: Floats, round_id: int) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as fh:
            np.savez(fh, key=np.array(key), c=value.astype(np.float32), round=round_id)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


@dataclass(slots=True)
class ScaffoldRound:
    """One SCAFFOLD round on the device: c and c_i as it started, where c_i+ goes."""

    round_id: int
    specs: tuple[TensorSpec, ...]
    server: Floats
    local: Floats
    store: VariateStore
    fetched_bytes: int = 0

    @property
    def correction(self) -> Floats:
        """c - c_i, the train signature's ``correction`` input."""
        return np.subtract(self.server, self.local, dtype=np.float32)

    def finish(
        self, delta: Floats, *, steps: int, lr: float, scale: float, clip_norm: float
    ) -> Floats:
        """The update vector ``[delta, scale * c_i+]`` clipped to ``clip_norm`` as the
        round's encoding will clip it; c_i+ is staged (``settle``).

        ``delta`` is y_i - x, so (x - y_i) / (K lr) = -delta / (K lr). c_i+ is kept as it
        was sent, after the clip: it is what reaches c, and the clip bounds it. Kept
        unclipped, one device's c_i grew round after round to 1e23 (fedrt bench learning,
        zoo:cnn): a large c_i makes a large correction, large weights, larger gradients."""
        if steps < 1 or delta.shape != self.local.shape or not (clip_norm > 0 and scale > 0):
            raise ModelError(f"a SCAFFOLD update needs steps >= 1 and {self.local.size} values")
        p = delta.size
        fresh = self.local - self.server - delta / np.float32(steps * lr)
        out = np.empty(2 * p, np.float32)
        out[:p] = delta
        np.multiply(fresh, np.float32(scale), out=out[p:])
        norm = float(np.linalg.norm(out.astype(np.float64)))
        if norm > clip_norm:
            out *= np.float32(clip_norm / norm)
        self.store.stage(self.round_id, self.specs, out[p:] / np.float32(scale))
        return out


def start_round(
    plan: rm.Plan,
    specs: Sequence[TensorSpec],
    directory: Path,
    *,
    headers: Mapping[str, str],
    ssl_context: ssl.SSLContext | None,
) -> ScaffoldRound:
    """c (fetched once per version into ``directory``) and this device's c_i for ``plan``."""
    size = _size(specs)
    store = VariateStore(directory, plan.task_id)
    ref, fetched = plan.control_variate, 0
    if ref is None:
        server = np.zeros(size, np.float32)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"server-{ref.sha256}.bin"
        # c is the model's size: fetched once per version, the last one kept.
        got = download_blob(
            ref.url,
            target,
            sha256=ref.sha256,
            headers=headers,
            ssl_context=ssl_context,
            what="control variate",
        )
        fetched = got.fetched_bytes
        server = parse_server_variate(target.read_bytes(), size)
        for old in directory.glob("server-*.bin"):
            if old != target:
                old.unlink(missing_ok=True)
    return ScaffoldRound(
        round_id=plan.round_id,
        specs=tuple(specs),
        server=server,
        local=store.load(specs),
        store=store,
        fetched_bytes=fetched,
    )
