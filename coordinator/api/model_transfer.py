"""Model artifacts over HTTP: multipart upload, and downloads with ETag, Range and If-Range."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from fedrt.coordinator.errors import BadArtifactError, BadRequestError
from fedrt.coordinator.models.blobs import MODEL, BlobStore, Verdict, file_sha256
from fedrt.coordinator.models.catalog import ModelCatalog, parse_manifest
from fedrt.coordinator.records import ModelRecord

T = TypeVar("T")


class OnState(Protocol):
    """Runs a function where the store is used (``StateThread.call``)."""

    def __call__(self, fn: Callable[[], T]) -> Awaitable[T]: ...


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 1 << 16
_MAX_MANIFEST = 1 << 20


async def read_upload(
    request: web.Request,
    catalog: ModelCatalog,
    *,
    actor: str,
    max_bytes: int,
    on_state: OnState | None = None,
) -> tuple[ModelRecord, bool]:
    """Parse ``multipart/form-data`` with parts ``manifest`` (first) and ``model``.

    Returns (record, created). The model part streams to disk while it is hashed; nothing
    becomes visible unless size, sha256 and file type all match the manifest. ``on_state``
    runs the store work on the state thread (``state_thread``) while the body streams here.
    """
    run = on_state or _here
    if not request.content_type.startswith("multipart/"):
        raise BadRequestError("upload must be multipart/form-data with 'manifest' and 'model'")
    try:
        reader = await request.multipart()
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "manifest":
            raise BadArtifactError("the first part must be 'manifest' (manifest.json)")
        manifest = parse_manifest(await _read_bounded(part, _MAX_MANIFEST))
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "model":
            raise BadArtifactError("the second part must be 'model' (the model file)")
        before = await run(lambda: {m.sha256 for m in catalog.store.list_models()})
        with catalog.blobs.writer(max_bytes) as writer:
            while chunk := await part.read_chunk(_CHUNK):
                writer.write(chunk)
            record = await run(lambda: catalog.add_uploaded(manifest, writer, actor=actor))
    # aiohttp's multipart parser reports malformed bodies so (bad part headers as
    # HttpProcessingError): a client's mistake, never a server error.
    except (ValueError, HttpProcessingError) as exc:
        raise BadRequestError(f"malformed multipart body: {exc}") from None
    return record, record.sha256 not in before


async def _here(fn: Callable[[], T]) -> T:
    return fn()


async def _read_bounded(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise BadArtifactError(f"part '{part.name}' larger than {limit} bytes")
    return bytes(data)


def _etag(sha256: str) -> str:
    # The content hash is a strong validator: same tag, same bytes, forever.
    return f'"{sha256}"'


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for one satisfiable byte range; None to serve everything.

    Raises ``web.HTTPRequestRangeNotSatisfiable`` for a well-formed unsatisfiable range.
    Several ranges, or anything malformed, are ignored (RFC 9110 lets a server do so).
    """
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    else:
        suffix = int(last)
        start, end = max(size - suffix, 0), size - 1
        if suffix == 0:
            start = size  # unsatisfiable
    if start >= size or size == 0:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, end


async def verified(blobs: BlobStore, sha256: str, *, kind: str = MODEL) -> Verdict:
    """The artifact's verdict once it hashes to its name, else ``CorruptArtifactError``.

    Why not hash while streaming: a mismatch found at the end of a 200 cannot become an
    error any more, the device has the bad bytes (and keeps them to resume from). Instead
    the file is hashed BEFORE a byte goes out, on a worker thread (tens of ms for a large
    model), and the verdict is cached by the file's (device, inode, size, mtime_ns): one
    hash per state of the file, not per download (``BlobStore.verdict``).
    """
    verdict = blobs.verdict(sha256)
    if verdict.ok is None:
        digest = await asyncio.to_thread(file_sha256, verdict.path)
        # Settled back on the loop: corruption listeners (metrics) need no locking.
        verdict = blobs.settle(verdict, digest, kind=kind)
    verdict.require()
    return verdict


async def serve_blob(
    request: web.Request,
    blobs: BlobStore,
    sha256: str,
    *,
    sent: Callable[[int], None] | None = None,
) -> web.StreamResponse:
    """Send an artifact honouring If-None-Match (304), Range (206/416) and If-Range; a
    corrupt one is refused (``CorruptArtifactError``, HTTP 500), never sent. ``sent`` is
    told the body bytes written (also of a download cut short)."""
    verdict = await verified(blobs, sha256)
    size = verdict.size
    etag = _etag(sha256)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    if_none = request.headers.get("If-None-Match")
    if if_none is not None and _etag_matches(if_none, etag):
        return web.Response(status=304, headers=headers)
    span = None
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        try:
            span = parse_range(range_header, size)
        except web.HTTPRequestRangeNotSatisfiable as exc:
            exc.headers.update(headers)
            raise
    start, end = span if span is not None else (0, size - 1)
    response = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = end - start + 1 if size else 0
    if span is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    await response.prepare(request)
    if request.method != "HEAD" and size:
        await _stream(response, verdict.path, start, end, sent)
    await response.write_eof()
    return response


async def _stream(
    response: web.StreamResponse,
    path: Path,
    start: int,
    end: int,
    sent: Callable[[int], None] | None,
) -> None:
    with path.open("rb") as fh:
        fh.seek(start)
        left = end - start + 1
        try:
            while left > 0:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    break
                await response.write(chunk)
                left -= len(chunk)
        finally:
            if sent is not None:
                sent(end - start + 1 - left)


__all__ = ["parse_range", "read_upload", "serve_blob", "verified"]
