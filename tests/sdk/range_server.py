"""A real HTTP server on loopback (stdlib) that serves one blob with Range support and faults."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Blob:
    """What the server serves, and how it misbehaves."""

    body: bytes
    cut_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False
    status: int = 200
    ranges: list[str | None] = field(default_factory=list)  # Range header of each request


_RANGE = re.compile(r"^bytes=(\d+)-$")


def _handler(blob: Blob) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            header = self.headers.get("Range")
            blob.ranges.append(header)
            if blob.status != 200:
                self.send_error(blob.status)
                return
            start = 0
            match = _RANGE.match(header or "")
            if match and not blob.ignore_range:
                start = int(match.group(1))
                if start >= len(blob.body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(blob.body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                end = len(blob.body) - 1
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(blob.body)}")
            else:
                self.send_response(200)
            body = blob.body[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if blob.cut_after is not None:
                self.wfile.write(body[: blob.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(blob: Blob) -> Iterator[str]:
    """Serve ``blob`` at http://127.0.0.1:PORT/model.tflite for the duration of the block."""
    with serve_handler(_handler(blob)) as base:
        yield f"{base}/model.tflite"


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on a loopback port; yields the base URL, http://127.0.0.1:PORT."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
