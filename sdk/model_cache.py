"""The device's model cache: a plan's version fetched in its cheapest form, rebuilt, verified.

Forms, cheapest first (the coordinator lists them in the version's metadata, ``delivery``):

1. **deltas** from a version the device holds (``protocol.weights_delta``), applied in order;
2. **weights** (flat float32), when no held version is in the chain or the chain costs more;
3. the version's whole **file**: for a version without ``delivery`` (a base export), or
   when anything in 1-2 fails.

The architecture's **graph** (the file without its weights, ``strip_weights``) is cached
once by its sha256, derived from any held file of the same architecture or else fetched.
A rebuilt file is ``replace_weights(graph, weights)``, and it is used only if it hashes to
the sha256 that the coordinator signed (checked, with its manifest, before anything is
fetched): the blobs' own hashes catch a damaged download early, the signed hash makes a
forged delta, weights or graph a `RebuildMismatch`, after which the device takes the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrt.model_export.errors import ExportError
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import replace_weights, unflatten
from fedrt.model_export.weights_layout import stripped, weight_layout, weights_of
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.weights_delta import apply_delta, weights_from_bytes
from fedrt.sdk.download import download_blob, download_model, verify_model_signature
from fedrt.sdk.errors import DownloadError, ModelRejected, RebuildMismatch, SdkError

__all__ = ["FetchedModel", "RebuildMismatch", "fetch_version", "prune"]

log = logging.getLogger(__name__)

GRAPH, WEIGHTS, DELTA, FILE = "graph", "weights", "delta", "file"
# Version files kept besides the one just fetched: a device that drops out of a round or
# misses a few still holds a version the next delta chain starts from.
KEEP_VERSIONS = 2


@dataclass(slots=True)
class FetchedModel:
    path: Path
    manifest: Manifest
    # Bytes fetched by form (``GRAPH``, ``WEIGHTS``, ``DELTA``, ``FILE``).
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    form: str = FILE  # how the version arrived ("cached" if it was already there)

    @property
    def fetched_bytes(self) -> int:
        return sum(self.bytes_by_kind.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class _Http:
    headers: Mapping[str, str]
    ssl_context: ssl.SSLContext | None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_ok(path: Path, sha256: str) -> bool:
    try:
        return _sha256(path.read_bytes()) == sha256
    except OSError:
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    # No fsync: every file of the cache is named by its sha256 and checked against it before
    # it is used (a torn write after a power cut is fetched again), and a thousand simulated
    # devices (or an SD card) pay for each sync.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch_version(
    *,
    url: str,
    sha256: str,
    signature: bytes,
    public_key: bytes,
    raw_manifest: Mapping[str, Any],
    meta: Mapping[str, Any],
    model_dir: Path,
    headers: Mapping[str, str],
    ssl_context: ssl.SSLContext | None = None,
) -> FetchedModel:
    """The plan's version in ``model_dir/<sha256>.tflite``, fetched in its cheapest form."""
    verify_model_signature(public_key, sha256, raw_manifest, signature)
    try:
        manifest = Manifest.from_dict(dict(raw_manifest))
    except ExportError as exc:
        raise ModelRejected(f"bad manifest: {exc}") from exc
    target = model_dir / f"{sha256}.tflite"
    if _file_ok(target, sha256):
        return FetchedModel(path=target, manifest=manifest, form="cached")
    model_dir.mkdir(parents=True, exist_ok=True)
    http = _Http(headers=headers, ssl_context=ssl_context)
    fetched = FetchedModel(path=target, manifest=manifest)
    delivery = meta.get("delivery")
    if isinstance(delivery, Mapping):
        try:
            _rebuild(url, sha256, manifest, delivery, model_dir, http, fetched)
            prune(model_dir, keep=target)
            return fetched
        # Whatever goes wrong with a part (refused, damaged, forged, malformed reply), the
        # signed file is still there to fetch.
        except (SdkError, ProtocolError, ExportError, KeyError, TypeError, ValueError,
                OSError) as exc:  # fmt: skip
            log.warning("model %s: rebuilding from its parts failed (%s: %s); fetching the file",
                        sha256[:12], type(exc).__name__, exc)  # fmt: skip
    result = download_model(url, target, sha256=sha256, signature=signature,
                            public_key=public_key, manifest=raw_manifest, headers=headers,
                            ssl_context=ssl_context)  # fmt: skip
    fetched.bytes_by_kind[FILE] = fetched.bytes_by_kind.get(FILE, 0) + result.fetched_bytes
    fetched.form = FILE
    prune(model_dir, keep=target)
    return fetched


def _rebuild(
    url: str,
    sha256: str,
    manifest: Manifest,
    delivery: Mapping[str, Any],
    model_dir: Path,
    http: _Http,
    fetched: FetchedModel,
) -> None:
    held = _held_versions(model_dir)
    graph = _graph(url, manifest, delivery["graph"], held, model_dir, http, fetched)
    # Files made from this graph differ only in their weights' bytes: spliced in place,
    # not repacked (``weights_layout``); None for a graph that does not allow it.
    layout = weight_layout(graph, manifest)
    chain = _chain_from(delivery.get("deltas") or [], held)
    weights_form = delivery["weights"]
    if chain and sum(int(d["bytes"]) for d in chain[1]) < int(weights_form["bytes"]):
        start, links = chain
        start_data = start.read_bytes()
        flat = layout.read(start_data) if layout is not None else None
        if flat is None:  # a base export (laid out by the converter), or no layout
            flat = weights_of(start_data, manifest)
        for link in links:
            blob = _blob(url, link, model_dir, http, fetched, DELTA)
            flat = apply_delta(flat, blob)
        fetched.form = DELTA
    else:
        blob = _blob(url, weights_form, model_dir, http, fetched, WEIGHTS)
        flat = weights_from_bytes(blob, int(delivery["params"]))
        fetched.form = WEIGHTS
    if flat.size != manifest.num_params:
        raise RebuildMismatch(f"{flat.size} weights for a model of {manifest.num_params}")
    if layout is not None:
        data = layout.build(flat)
    else:
        data = replace_weights(graph, manifest, unflatten(flat, manifest))
    if _sha256(data) != sha256:
        raise RebuildMismatch(
            f"version rebuilt from its {fetched.form} hashes to {_sha256(data)[:16]}…, "
            f"the signed version is {sha256[:16]}…"
        )
    _write_atomic(fetched.path, data)


def _held_versions(model_dir: Path) -> dict[str, Path]:
    """Version files in the cache by sha256, newest first (by modification time)."""
    files = sorted(model_dir.glob("*.tflite"), key=lambda p: p.stat().st_mtime, reverse=True)
    return {p.stem: p for p in files if len(p.stem) == 64}


def _chain_from(
    deltas: list[Mapping[str, Any]], held: Mapping[str, Path]
) -> tuple[Path, list[Mapping[str, Any]]] | None:
    """The held version nearest the target among the chain's starts, and the deltas from it
    in the order to apply them; None if no start is held."""
    for i, link in enumerate(deltas):  # newest first: the fewest deltas to apply
        start = held.get(str(link["from"]))
        if start is not None:
            return start, list(reversed(deltas[: i + 1]))
    return None


def _graph(
    url: str,
    manifest: Manifest,
    form: Mapping[str, Any],
    held: Mapping[str, Path],
    model_dir: Path,
    http: _Http,
    fetched: FetchedModel,
) -> bytes:
    sha = str(form["sha256"])
    cached = model_dir / "graphs" / f"{sha}.graph"
    if _file_ok(cached, sha):
        return cached.read_bytes()
    cached.parent.mkdir(parents=True, exist_ok=True)
    for path in held.values():  # a held file of the same architecture strips to it
        try:
            graph = stripped(path.read_bytes(), manifest)
        except ExportError:
            continue
        if _sha256(graph) == sha:
            _write_atomic(cached, graph)
            return graph
    data = _blob(url, form, model_dir, http, fetched, GRAPH, dest=cached)
    return data


def _blob(
    url: str,
    form: Mapping[str, Any],
    model_dir: Path,
    http: _Http,
    fetched: FetchedModel,
    kind: str,
    *,
    dest: Path | None = None,
) -> bytes:
    """One blob of a version's delivery, Range-resumed, checked against its sha256."""
    sha = str(form["sha256"])
    path = dest or model_dir / "parts" / f"{sha}.{kind}"
    blob_url = urllib.parse.urljoin(url, str(form["path"]))
    if urllib.parse.urlsplit(blob_url)[:2] != urllib.parse.urlsplit(url)[:2]:
        # The device's credentials go with the request: never to another server.
        raise DownloadError(f"{kind} path {form['path']!r} leaves the model's server")
    result = download_blob(blob_url, path, sha256=sha,
                           headers=http.headers, ssl_context=http.ssl_context,
                           what=kind)  # fmt: skip
    fetched.bytes_by_kind[kind] = fetched.bytes_by_kind.get(kind, 0) + result.fetched_bytes
    data = path.read_bytes()
    if dest is None:
        path.unlink(missing_ok=True)  # its content now lives in the version file
    return data


def prune(model_dir: Path, *, keep: Path) -> None:
    """Remove version files but ``keep`` and the ``KEEP_VERSIONS`` newest others."""
    others = [p for p in _held_versions(model_dir).values() if p != keep]
    for old in others[KEEP_VERSIONS:]:
        old.unlink(missing_ok=True)
