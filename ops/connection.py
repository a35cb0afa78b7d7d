"""Where the coordinator is and how to prove who we are: URL, admin token, CA; loaded in one place.

Precedence is flag over environment (``--url`` over ``FEDRT_URL``, ``--token-file`` over
``FEDRT_ADMIN_TOKEN``, ``--ca-file`` over ``FEDRT_CA_FILE``). The token is never taken from
the command line itself: argv is visible in ``ps`` and kept in shell history.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fedrt.ops.errors import OpsConfigError

ENV_URL = "FEDRT_URL"
ENV_TOKEN = "FEDRT_ADMIN_TOKEN"  # noqa: S105 -- a variable name, not a secret
ENV_CA_FILE = "FEDRT_CA_FILE"
# Long enough for a model upload of a few MB on a slow link, short enough that a script
# hanging on a dead coordinator gives up within a minute.
DEFAULT_TIMEOUT_S = 30.0
# A token file is one line; anything bigger is the wrong file.
_MAX_TOKEN_FILE = 4096


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127/8, ::1): traffic that stays local."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """A validated coordinator address and admin credentials.

    ``token_source`` names where the token came from, so a refusal can say what to check.
    """

    url: str
    token: str = field(repr=False)
    token_source: str = ENV_TOKEN
    ca_file: Path | None = None
    # Plain http to a non-loopback host sends the bearer token in clear: opt-in only.
    insecure_http: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpsConfigError(
                f"coordinator URL {self.url!r} must look like https://HOST[:PORT] "
                f"(or http://127.0.0.1:PORT): set {ENV_URL} or pass --url"
            )
        if parts.username is not None or parts.password is not None:
            raise OpsConfigError("the coordinator URL must not carry credentials: remove USER@")
        if parts.query or parts.fragment:
            raise OpsConfigError(f"the coordinator URL {self.url!r} must have no ?query or #part")
        try:
            parts.port  # noqa: B018 -- raises ValueError on a bad port
        except ValueError:
            raise OpsConfigError(f"the coordinator URL {self.url!r} has a bad port") from None
        if parts.scheme == "http" and not self.insecure_http and not is_loopback(parts.hostname):
            raise OpsConfigError(
                f"refusing plain http to {parts.hostname}: the admin token would cross the "
                "network in clear. Use https:// (with --ca-file for the coordinator's CA), "
                "or pass --insecure-http if this network is trusted"
            )
        # A header value cannot hold whitespace or control characters; such a token is a
        # copy-paste accident, better named here than as an opaque refusal.
        if not self.token:
            raise OpsConfigError(f"the admin token from {self.token_source} is empty")
        if not (self.token.isascii() and self.token.isprintable()) or " " in self.token:
            raise OpsConfigError(
                f"the admin token from {self.token_source} has spaces or control characters"
            )
        if not self.timeout_s > 0:
            raise OpsConfigError(f"--timeout must be > 0 seconds, got {self.timeout_s}")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    @property
    def is_https(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def is_local(self) -> bool:
        return is_loopback(urlsplit(self.url).hostname or "")

    def ssl_context(self) -> ssl.SSLContext:
        """Certificate and host name verified, against ``ca_file`` or the system store."""
        try:
            return ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise OpsConfigError(
                f"cannot use CA file {self.ca_file} ({exc}): pass the coordinator's CA "
                "certificate (PEM), e.g. DATA_DIR/tls/ca.crt"
            ) from None


def _read_token_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise OpsConfigError(f"cannot read token file {path}: {exc.strerror}") from None
    if len(raw) > _MAX_TOKEN_FILE:
        raise OpsConfigError(f"token file {path} is larger than {_MAX_TOKEN_FILE} bytes")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise OpsConfigError(f"token file {path} is not text") from None


def load_connection(
    *,
    url: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    insecure_http: bool,
    timeout_s: float,
    env: Mapping[str, str],
) -> Connection:
    """Flags (None when not given) over environment; every missing piece named with its fix."""
    url = url or env.get(ENV_URL) or None
    if url is None:
        raise OpsConfigError(
            f"no coordinator URL: set {ENV_URL} or pass --url (e.g. https://coordinator:8080)"
        )
    if token_file is not None:
        token, source = _read_token_file(token_file), f"--token-file {token_file}"
    elif env.get(ENV_TOKEN):
        token, source = env[ENV_TOKEN], ENV_TOKEN
    else:
        raise OpsConfigError(
            f"no admin token: set {ENV_TOKEN} or pass --token-file FILE "
            "(the coordinator writes it to DATA_DIR/admin-token on first start)"
        )
    if ca_file is None and env.get(ENV_CA_FILE):
        ca_file = Path(env[ENV_CA_FILE])
    return Connection(
        url=url,
        token=token,
        token_source=source,
        ca_file=ca_file,
        insecure_http=insecure_http,
        timeout_s=timeout_s,
    )


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENV_CA_FILE",
    "ENV_TOKEN",
    "ENV_URL",
    "Connection",
    "is_loopback",
    "load_connection",
]
