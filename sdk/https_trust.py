"""Where a device may send credentials, and which HTTPS servers it trusts.

Credentials (the enrollment token, the device's Basic auth) travel over ``https://``, or over
plain ``http://`` to a loopback address only (127.0.0.0/8, ::1, localhost): a URL that would
send them anywhere else in clear text is refused before a socket is opened (`InsecureUrl`).
An HTTPS server is trusted when its certificate verifies against the device's ``ca_file``
and/or the CA the coordinator handed out at enrollment; with neither, the system store.
Redirects are not followed: urllib would repeat the Authorization header to the new host.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import threading
import urllib.error
import urllib.request
from http.client import HTTPResponse
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from fedrt.sdk.errors import InsecureUrl, SdkConfigError, TlsError

__all__ = ["check_url", "is_loopback", "open_url", "trust_context"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; names are never resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, what: str) -> SplitResult:
    """``url`` split, if credentials may go there; else `SdkConfigError`/`InsecureUrl`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SdkConfigError(f"{what} must be an http(s) URL with a host, got {url!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise InsecureUrl(
            f"{what} {url!r} is plain http to {parts.hostname}, which would send credentials "
            "in clear text: use https (plain http is allowed to a loopback address only)"
        )
    return parts


def trust_context(ca_file: Path | None = None, ca_pem: str | None = None) -> ssl.SSLContext:
    """A client context that trusts ``ca_file`` and ``ca_pem`` (neither: the system store).

    Contexts are shared: loading the system store takes ~50 ms, once per device started
    (most of a simulated fleet's start-up). The key holds ``ca_file``'s size and mtime, so
    a CA file replaced on disk is read again. Client contexts are not changed after this.
    """
    stamp: tuple[int, int] | None = None
    if ca_file is not None:
        try:
            st = Path(ca_file).stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None  # create_default_context below reports the unreadable file
    with _CONTEXTS_LOCK:
        return _context(str(ca_file) if ca_file is not None else None, stamp, ca_pem or None)


_CONTEXTS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=32)
def _context(
    ca_file: str | None, stamp: tuple[int, int] | None, ca_pem: str | None
) -> ssl.SSLContext:
    del stamp  # part of the cache key only
    try:
        return ssl.create_default_context(cafile=ca_file, cadata=ca_pem)
    except ssl.SSLError as exc:  # before OSError, its base class
        source = f"ca_file {ca_file}" if ca_file is not None else "the enrolled CA"
        raise SdkConfigError(f"{source} holds no usable PEM certificate ({exc})") from None
    except OSError as exc:
        raise SdkConfigError(f"cannot read ca_file {ca_file}: {exc.strerror}") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def open_url(
    request: urllib.request.Request, *, context: ssl.SSLContext | None, timeout: float, what: str
) -> HTTPResponse:
    """Open ``request`` (its URL checked first, no redirects); TLS failures are `TlsError`.

    Other failures surface as urllib raises them (``HTTPError``, ``URLError``, ``OSError``)
    for the caller to map to its own errors.
    """
    parts = check_url(request.full_url, what=what)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects)
    try:
        response: HTTPResponse = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise TlsError(
                f"the certificate of {parts.hostname} did not verify against the CA this device "
                f"trusts ({reason.verify_message or reason}); check [device] ca_file"
            ) from None
        if isinstance(reason, ssl.SSLError):
            raise TlsError(f"TLS with {parts.hostname} failed: {reason}") from None
        raise
    return response
