"""Model download: HTTP GET with Range resume, then sha256 and Ed25519 checks, then an atomic swap.

Order of trust: the coordinator's signature over (sha256, manifest) is checked first — before
a byte is fetched — so a forged plan costs no bandwidth; the downloaded bytes must then hash
to that sha256. Only then does the file replace the current model (``os.replace``), so a
tampered, truncated or badly signed download leaves the previous model in place. A partial
download is kept next to the target (named by the expected hash) and resumed with a
``Range`` request next time.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrt.protocol.signed_payloads import model_signing_payload
from fedrt.sdk.errors import (
    BadSignature,
    ChecksumMismatch,
    DownloadError,
    DownloadRefused,
    SdkConfigError,
)
from fedrt.sdk.https_trust import check_url, open_url

__all__ = [
    "DownloadResult",
    "download_blob",
    "download_model",
    "model_signing_payload",
    "verify_model_signature",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
# Far above any model a device trains (the cnn zoo model is well under 10 MB).
DEFAULT_MAX_BYTES = 256 << 20


def verify_model_signature(
    public_key: bytes, sha256: str, manifest: Mapping[str, Any], signature: bytes
) -> None:
    """Raise `BadSignature` unless ``signature`` is the coordinator's over this version."""
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise SdkConfigError("the coordinator public key must be 32 raw Ed25519 bytes") from exc
    try:
        payload = model_signing_payload(sha256, manifest)
        key.verify(signature, payload)
    except (InvalidSignature, ValueError, TypeError):
        raise BadSignature(
            "the model's signature does not verify with the coordinator key"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    path: Path
    fetched_bytes: int  # bytes transferred by this call
    resumed: bool  # a Range request continued an earlier partial download
    already_present: bool  # the target already held this exact model: nothing fetched


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def download_model(
    url: str,
    dest: str | Path,
    *,
    sha256: str,
    signature: bytes,
    public_key: bytes,
    manifest: Mapping[str, Any],
    timeout_s: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> DownloadResult:
    """Fetch ``url`` into ``dest`` if and only if it is the signed model with this sha256.

    ``url`` must be https, or plain http to a loopback address (else `InsecureUrl`, before
    anything is sent); ``ssl_context`` says which CA the server must prove itself to.
    """
    if not _SHA256.match(sha256):
        raise SdkConfigError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    check_url(url, what="model url")
    verify_model_signature(public_key, sha256, manifest, signature)
    return download_blob(url, dest, sha256=sha256, timeout_s=timeout_s, max_bytes=max_bytes,
                         headers=headers, ssl_context=ssl_context)  # fmt: skip


def download_blob(
    url: str,
    dest: str | Path,
    *,
    sha256: str,
    timeout_s: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    what: str = "model",
) -> DownloadResult:
    """Fetch ``url`` into ``dest`` (Range-resumed, swapped in atomically) if its bytes hash
    to ``sha256``, else `ChecksumMismatch` with ``dest`` untouched. The hash is all it
    checks: callers check what it is worth (a signed version, or one rebuilt from it)."""
    if not _SHA256.match(sha256):
        raise SdkConfigError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    check_url(url, what="model url")
    if max_bytes < 1 or timeout_s <= 0:
        raise SdkConfigError("max_bytes and timeout_s must be positive")
    target = Path(dest)
    if target.is_file() and _file_sha256(target) == sha256:
        return DownloadResult(path=target, fetched_bytes=0, resumed=False, already_present=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{sha256[:16]}.part")
    offset = part.stat().st_size if part.is_file() else 0
    if offset > max_bytes:
        part.unlink()
        offset = 0

    fetched, resumed = _fetch(url, part, offset, timeout_s, max_bytes, headers or {}, ssl_context)
    actual = _file_sha256(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"downloaded {what} has sha256 {actual[:16]}…, expected {sha256[:16]}…; "
            "refused, previous model kept"
        )
    os.replace(part, target)
    _fsync_dir(target.parent)
    return DownloadResult(
        path=target, fetched_bytes=fetched, resumed=resumed, already_present=False
    )


def _fetch(
    url: str,
    part: Path,
    offset: int,
    timeout_s: float,
    max_bytes: int,
    headers: Mapping[str, str],
    context: ssl.SSLContext | None,
) -> tuple[int, bool]:
    """Append the rest of ``url`` to ``part``; returns (bytes fetched, resumed)."""
    request = urllib.request.Request(url, headers=dict(headers))  # noqa: S310 (scheme checked)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = open_url(request, context=context, timeout=timeout_s, what="model url")
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # Nothing after our offset: the part may already be complete; the hash decides.
            return 0, True
        raise DownloadRefused(
            f"model server answered {exc.code} {exc.reason}", status=exc.code
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot fetch {url}: {exc}") from exc

    with response:
        resumed = False
        if offset and response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                raise DownloadError("the server answered the Range request with another range")
            resumed = True
        elif offset:
            offset = 0  # the server ignored Range and sent everything: start over
        length_header = response.headers.get("Content-Length")
        expected = int(length_header) if length_header and length_header.isdigit() else None
        if expected is not None and offset + expected > max_bytes:
            raise DownloadError(f"model of {offset + expected} bytes exceeds {max_bytes}")
        fetched = 0
        with part.open("ab" if offset else "wb") as fh:
            try:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    fetched += len(chunk)
                    if offset + fetched > max_bytes:
                        raise DownloadError(f"model exceeds {max_bytes} bytes")
                    fh.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                # A dropped link (IncompleteRead, reset, timeout): keep what arrived for Range.
                raise DownloadError(
                    f"download interrupted after {fetched} bytes ({exc!r}); it resumes next time"
                ) from exc
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        if expected is not None and fetched < expected:
            raise DownloadError(
                f"download cut short ({fetched} of {expected} bytes); resumes next time"
            )
    return fetched, resumed
