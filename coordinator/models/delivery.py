"""How a version reaches devices besides its whole file: graph, weights, delta from its parent.

A version built from its architecture's graph (``replace_weights(graph, weights)``) is
described by a small JSON record next to the blobs (``root/delivery/<sha256>.json``,
written atomically, carried by backups with the artifacts): the graph's blob, the flat
float32 weights' blob and the blob of the quantized delta from its parent. The record is
also kept in the store, as state of the version's task, so that every coordinator instance
on a shared store serves every version's forms (the file is then that instance's cache).
Every form is a content-addressed blob served with Range and ETag; none needs a signature
of its own: a device rebuilds the version's file and checks it against the version's signed sha256.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fedrt.coordinator.errors import NotFoundError, StoreError
from fedrt.coordinator.models.blobs import BlobStore, check_sha256
from fedrt.coordinator.store.base import Store

# Deltas listed for one version: a device further behind fetches the weights instead
# (a chain this long is already about as large as the weights at 8 bits).
MAX_CHAIN = 4
# Forms of a version a device can fetch, as bytes-down kinds.
GRAPH, WEIGHTS, DELTA, FILE, META = "graph", "weights", "delta", "file", "meta"
KINDS = (META, FILE, GRAPH, WEIGHTS, DELTA)
# Versions whose records and views are kept in memory (a few per task are in use at once).
_MEMO_VERSIONS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """The blobs that rebuild ``version``: ``replace_weights(graph, weights)`` is its file."""

    version: str
    graph: str
    weights: str
    params: int
    parent: str | None = None
    delta: str | None = None  # the blob turning the parent's weights into these
    delta_bits: int = 0

    def blob(self, kind: str) -> str:
        """The blob sha256 of one form (``GRAPH``, ``WEIGHTS``, ``DELTA``)."""
        sha = {GRAPH: self.graph, WEIGHTS: self.weights, DELTA: self.delta}.get(kind)
        if sha is None:
            raise NotFoundError(f"version {self.version} has no {kind} form")
        return sha

    @classmethod
    def from_json(cls, obj: Any) -> Delivery:
        try:
            d = cls(**obj)
            for sha in (d.version, d.graph, d.weights, d.parent, d.delta):
                if sha is not None:
                    check_sha256(sha)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"bad delivery record: {exc}") from None
        return d


def _state_key(version: str) -> str:
    return f"delivery/{version}"


class DeliveryIndex:
    """The delivery records of versions, beside the blobs they name and in the store."""

    def __init__(self, blobs: BlobStore, store: Store | None = None) -> None:
        self.blobs = blobs
        self.store = store
        self.root = blobs.root / "delivery"
        # Records are written once and never change: each is read from disk (or the store)
        # once, not per device download (~2,300 reads a round at a thousand devices).
        self._known: OrderedDict[str, Delivery] = OrderedDict()
        # delivery_view of versions (a chain never changes: see ``view``); shared by every
        # meta request, so read, never changed.
        self._views: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {self.root}: {exc}") from None

    def put(self, delivery: Delivery, *, task_id: str | None = None) -> None:
        """File the record (and, with a store and the version's task, share it there)."""
        for kind in (GRAPH, WEIGHTS, DELTA):
            if kind != DELTA or delivery.delta is not None:
                self.blobs.size(delivery.blob(kind))  # NotFoundError unless stored
        if self.store is not None and task_id is not None:
            self.store.save_task_state(task_id, _state_key(delivery.version), asdict(delivery))
        self._cache(delivery)

    def _cache(self, delivery: Delivery) -> None:
        target = self.root / f"{check_sha256(delivery.version)}.json"
        tmp = self.root / f".{secrets.token_hex(8)}.tmp"
        tmp.write_text(json.dumps(asdict(delivery), sort_keys=True))
        os.replace(tmp, target)
        self._remember(self._known, delivery.version, delivery)

    def _remember(self, memo: OrderedDict[str, Any], version: str, value: Any) -> None:
        with self._lock:
            memo[version] = value
            memo.move_to_end(version)
            while len(memo) > _MEMO_VERSIONS:
                memo.popitem(last=False)

    def _recall(self, memo: OrderedDict[str, Any], version: str) -> Any:
        with self._lock:
            return memo.get(version)

    def get(self, version: str) -> Delivery | None:
        """The version's record, or None (a base export, or a version made before)."""
        known = self._recall(self._known, version)
        if known is not None:
            return known  # type: ignore[no-any-return]
        try:
            text = (self.root / f"{check_sha256(version)}.json").read_text()
        except FileNotFoundError:
            return self._shared(version)
        except OSError as exc:
            raise StoreError(f"cannot read the delivery record of {version}: {exc}") from None
        try:
            delivery = Delivery.from_json(json.loads(text))
        except json.JSONDecodeError:
            raise StoreError(f"delivery record of {version} is not JSON") from None
        self._remember(self._known, version, delivery)
        return delivery

    def _shared(self, version: str) -> Delivery | None:
        """The record another instance filed in the store, cached here once found."""
        if self.store is None:
            return None
        try:
            task_id = self.store.get_model(version).task_id
        except NotFoundError:
            return None
        if task_id is None:
            return None
        obj = self.store.load_task_state(task_id, _state_key(version))
        if obj is None:
            return None
        delivery = Delivery.from_json(obj)
        self._cache(delivery)
        return delivery

    def chain(self, version: str, limit: int = MAX_CHAIN) -> list[Delivery]:
        """The records of ``version`` and its ancestors joined by deltas, newest first."""
        out: list[Delivery] = []
        current = self.get(version)
        while current is not None and current.delta is not None and len(out) < limit:
            out.append(current)
            if current.parent is None:
                break
            current = self.get(current.parent)
        return out

    def view(self, version: str) -> Mapping[str, Any] | None:
        """``delivery_view`` of ``version``, built once per version (shared: not to change)."""
        known = self._recall(self._views, version)
        if known is not None:
            return known  # type: ignore[no-any-return]
        d = self.get(version)
        if d is None:
            return None

        def form(kind: str, owner: str, sha: str) -> dict[str, Any]:
            return {"sha256": sha, "bytes": self.blobs.size(sha), "path": f"{owner}/{kind}"}

        view = {
            "params": d.params,
            "graph": form(GRAPH, version, d.graph),
            "weights": form(WEIGHTS, version, d.weights),
            "deltas": [
                {
                    "from": link.parent,
                    "to": link.version,
                    "bits": link.delta_bits,
                    **form(DELTA, link.version, link.blob(DELTA)),
                }
                for link in self.chain(version)
            ],
        }
        # Final once built: a parent is committed, and its record filed, before its child.
        self._remember(self._views, version, view)
        return view


class TransferMeter:
    """Bytes of model forms served, by the version they belong to and kind (``KINDS``);
    a round takes the counts of the version it started from when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[str, Counter[str]] = {}

    def add(self, version: str, kind: str, n: int) -> None:
        with self._lock:
            self._sent.setdefault(version, Counter())[kind] += n

    def take(self, version: str) -> dict[str, int]:
        """The counts for ``version`` since the last ``take`` (every kind, zeros included)."""
        with self._lock:
            sent = self._sent.pop(version, Counter())
        return {kind: int(sent[kind]) for kind in KINDS}


def delivery_view(index: DeliveryIndex, version: str) -> Mapping[str, Any] | None:
    """The ``delivery`` part of a version's metadata: its forms and the deltas leading to it
    (newest first; apply them oldest first), each with its blob's sha256, size and path,
    relative to the version's URL (``.../v1/models/<sha256>``: ``<sha256>/delta``), so a
    coordinator behind a path prefix works unchanged. The view ``index`` keeps, not a copy:
    a caller puts it in a reply of its own and changes nothing in it."""
    return index.view(version)


__all__ = [
    "DELTA",
    "FILE",
    "GRAPH",
    "KINDS",
    "MAX_CHAIN",
    "META",
    "WEIGHTS",
    "Delivery",
    "DeliveryIndex",
    "TransferMeter",
    "delivery_view",
]
