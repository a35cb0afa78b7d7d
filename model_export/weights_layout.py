"""Where each weight's initial value lies in the files one graph makes: rebuilds by splicing.

Every version built from an architecture's graph is ``replace_weights(graph, w)``, and the
FlatBuffers layout of that file does not depend on the values of ``w``, only on their
sizes: the versions of one graph differ only inside the weights' (and FedProx anchors')
data vectors. A ``WeightLayout`` finds those byte ranges once per graph, so a version is
rebuilt by copying a template and writing the weights in place, and a held version's
weights are read the same way, instead of unpacking and repacking the whole model through
the schema's object API (tens of milliseconds per call for a 40 KB model; a simulated
fleet of a thousand devices rebuilding each round spent most of its training window so).

A layout checks itself when it is made (its splice must equal ``replace_weights`` byte for
byte) and ``read`` checks every byte outside the weights against the template, so a file
of another layout is never misread: callers fall back to ``flat_weights``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fedrt.model_export.errors import ModelFileError
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import (
    _NUMPY,
    _assigned,
    _schema,
    _unpack,
    _weight_inits,
    flat_weights,
    replace_weights,
    strip_weights,
    unflatten,
)

__all__ = ["WeightLayout", "stripped", "weight_layout", "weights_of"]

_V = TypeVar("_V")

# Layouts kept per process (a device has one architecture per task; a simulated fleet
# shares them): each holds a template the size of the model.
_CACHE_SIZE = 8


@dataclass(frozen=True, slots=True)
class _Region:
    start: int
    size: int  # parameters
    dtype: type[np.generic]


class WeightLayout:
    """The byte ranges of each weight's initial value (and its anchor's) in the files
    ``replace_weights(graph, ·)`` makes for ``manifest``."""

    def __init__(self, graph: bytes, manifest: Manifest) -> None:
        self.manifest = manifest
        zeros = [np.zeros(spec.shape, _NUMPY[spec.dtype]) for spec in manifest.weights]
        template = replace_weights(graph, manifest, zeros)
        self._template = np.frombuffer(template, np.uint8).copy()
        inits = _weight_inits(_unpack(template), manifest)
        root = _schema().Model.GetRootAs(template, 0)
        self._regions: list[list[_Region]] = []
        fixed = np.ones(len(template), dtype=bool)
        for spec in manifest.weights:
            dtype: type[np.generic] = np.dtype(_NUMPY[spec.dtype]).type
            spans = []
            for tensor in _assigned(inits, spec):
                table = root.Buffers(int(tensor.buffer))._tab  # type: ignore[attr-defined]
                field = table.Offset(4)  # Buffer.data
                start, length = table.Vector(field), table.VectorLen(field)
                if field == 0 or length != spec.size * np.dtype(dtype).itemsize:
                    raise ModelFileError(f"weight {spec.name}: no data vector of its size")
                spans.append(_Region(int(start), spec.size, dtype))
                fixed[start : start + length] = False
            self._regions.append(spans)
        self._fixed = fixed
        self._check(graph)

    def _check(self, graph: bytes) -> None:
        """The splice must be what ``replace_weights`` writes, byte for byte."""
        probe = np.arange(self.manifest.num_params, dtype=np.float32) * np.float32(0.5) - 7
        if self.build(probe) != replace_weights(
            graph, self.manifest, unflatten(probe, self.manifest)
        ):
            raise ModelFileError("this graph's files do not keep their weights in place")

    def build(self, flat: npt.NDArray[np.generic]) -> bytes:
        """``replace_weights(graph, unflatten(flat))``, spliced into the template."""
        if flat.size != self.manifest.num_params:
            raise ModelFileError(f"{flat.size} weights for a model of {self.manifest.num_params}")
        out = self._template.copy()
        at = 0
        for spans in self._regions:
            size = spans[0].size if spans else 0
            for span in spans:
                data = np.ascontiguousarray(flat[at : at + size], dtype=span.dtype)
                out[span.start : span.start + data.nbytes] = data.view(np.uint8)
            at += size
        return out.tobytes()

    def read(self, model: bytes) -> npt.NDArray[np.float32] | None:
        """The weights of a file of this layout (float32, manifest order), or None for a
        file of another layout (a base export, another graph)."""
        data = np.frombuffer(model, np.uint8)
        if data.size != self._template.size:
            return None
        if not np.array_equal(data[self._fixed], self._template[self._fixed]):
            return None
        parts = [
            data[
                spans[0].start : spans[0].start + spans[0].size * np.dtype(spans[0].dtype).itemsize
            ]
            .view(spans[0].dtype)
            .astype(np.float32)
            for spans in self._regions
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


_Key = tuple[str, tuple[tuple[str, str, tuple[int, ...]], ...]]
_lock = threading.Lock()
_layouts: OrderedDict[_Key, WeightLayout | None] = OrderedDict()
_graphs: OrderedDict[_Key, bytes] = OrderedDict()
_weights: OrderedDict[_Key, npt.NDArray[np.float32]] = OrderedDict()


def _key(data: bytes, manifest: Manifest) -> _Key:
    weights = tuple((w.name, w.dtype, tuple(w.shape)) for w in manifest.weights)
    return hashlib.sha256(data).hexdigest(), weights


def _remember(cache: OrderedDict[_Key, _V], key: _Key, value: _V) -> _V:
    with _lock:
        cache[key] = value
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return value


def _recall(cache: OrderedDict[_Key, _V], key: _Key) -> tuple[bool, _V | None]:
    """(whether ``key`` is cached, its value)."""
    with _lock:
        if key not in cache:
            return False, None
        cache.move_to_end(key)
        return True, cache[key]


def weight_layout(graph: bytes, manifest: Manifest) -> WeightLayout | None:
    """The layout of ``graph``'s files (made once per process), or None when this graph's
    files cannot be spliced (then ``replace_weights`` and ``flat_weights`` do the work)."""
    key = _key(graph, manifest)
    known, layout = _recall(_layouts, key)
    if known:
        return layout
    try:
        layout = WeightLayout(graph, manifest)
    except ModelFileError:
        layout = None
    return _remember(_layouts, key, layout)


def stripped(model: bytes, manifest: Manifest) -> bytes:
    """``strip_weights(model, manifest)``, made once per process for the same file."""
    key = _key(model, manifest)
    graph = _graphs.get(key)
    if graph is not None:
        return graph
    return _remember(_graphs, key, strip_weights(model, manifest))


def weights_of(model: bytes, manifest: Manifest) -> npt.NDArray[np.float32]:
    """``flat_weights(model, manifest)``, read once per process for the same file (a base
    export, which no graph's layout fits); a read-only array."""
    key = _key(model, manifest)
    flat = _weights.get(key)
    if flat is not None:
        return flat
    flat = flat_weights(model, manifest)
    flat.setflags(write=False)
    return _remember(_weights, key, flat)
