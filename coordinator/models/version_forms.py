"""A version built from its parent for the downlink: graph + weights, and the delta to them.

The version's file is ``replace_weights(graph, weights)`` with the architecture's graph
(``strip_weights``, one per architecture), so a device holding the graph rebuilds it from
weights alone. With ``bits``, the weights are the parent's plus the dequantized delta
(``protocol.weights_delta``): what devices holding the parent rebuild, bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.models.blobs import BlobStore
from fedrt.coordinator.models.delivery import Delivery, DeliveryIndex
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import replace_weights, strip_weights, unflatten
from fedrt.model_export.weights_layout import weight_layout
from fedrt.protocol.weights_delta import encode_delta, weights_bytes

_SEED_DOMAIN = b"fedrt/downlink-delta/v1\n"


@dataclass(frozen=True, slots=True)
class BuiltVersion:
    """A version's file and manifest, the weights it holds, and its blobs (not yet named by
    a registered version: ``record`` does that once the catalog signed it)."""

    data: bytes
    manifest: Manifest
    weights: npt.NDArray[np.float32]
    graph_sha256: str
    weights_sha256: str
    delta_sha256: str | None
    bits: int

    def record(self, index: DeliveryIndex, *, version: str, parent: str, task_id: str) -> Delivery:
        """File the delivery of the registered ``version`` (made from ``parent``)."""
        delivery = Delivery(
            version=version,
            graph=self.graph_sha256,
            weights=self.weights_sha256,
            params=int(self.weights.size),
            parent=parent,
            delta=self.delta_sha256,
            delta_bits=self.bits,
        )
        index.put(delivery, task_id=task_id)
        return delivery


def build_version(
    blobs: BlobStore,
    index: DeliveryIndex,
    *,
    parent_sha256: str,
    parent_data: bytes,
    parent_weights: npt.NDArray[np.float32],
    manifest: Manifest,
    target: npt.NDArray[np.floating],
    bits: int,
    round_no: int,
) -> BuiltVersion:
    """The version after ``parent`` towards ``target`` weights (``bits`` 0: exactly them)."""
    parent = index.get(parent_sha256)
    graph = (blobs.read(parent.graph) if parent is not None
             else strip_weights(parent_data, manifest))  # fmt: skip
    delta_sha = None
    if bits:
        seed = hashlib.sha256(
            _SEED_DOMAIN + bytes.fromhex(parent_sha256) + round_no.to_bytes(8, "little")
        ).digest()
        encoded = encode_delta(parent_weights, target, bits=max(bits, 2), seed=seed)
        weights = encoded.result
        delta_sha = blobs.put_bytes(encoded.blob)
    else:
        weights = np.asarray(target, np.float32).reshape(-1)
    layout = weight_layout(graph, manifest)  # the graph's files, spliced (as devices do)
    if layout is not None:
        data = layout.build(weights)
    else:
        data = replace_weights(graph, manifest, unflatten(weights, manifest))
    sha = hashlib.sha256(data).hexdigest()
    return BuiltVersion(
        data=data,
        manifest=dataclasses.replace(manifest, sha256=sha, model_bytes=len(data)),
        weights=weights,
        graph_sha256=blobs.put_bytes(graph),
        weights_sha256=blobs.put_bytes(weights_bytes(weights)),
        delta_sha256=delta_sha,
        bits=max(bits, 2) if bits else 0,
    )


__all__ = ["BuiltVersion", "build_version"]
