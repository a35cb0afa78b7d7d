"""Decode the PNGs headless Chromium writes (8-bit RGB/RGBA, not interlaced) into numpy."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt


def decode_png(data: bytes) -> npt.NDArray[np.uint8]:
    """Return an (height, width, channels) uint8 array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8, f"unsupported bit depth {depth}"
    assert interlace == 0, "interlaced PNG"
    assert color in (2, 6), f"unsupported colour type {color}"
    channels = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(bytes(idat)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros(stride, dtype=np.int32)
        if kind == 0:
            out[y] = line
        elif kind == 1:
            out[y] = _sub(line, channels)
        elif kind == 2:
            out[y] = (line + prev) & 0xFF
        elif kind == 3:
            out[y] = _average(line, prev, channels)
        elif kind == 4:
            out[y] = _paeth(line, prev, channels)
        else:
            raise AssertionError(f"bad filter {kind}")
    return out.astype(np.uint8).reshape(height, width, channels)


def _sub(line: npt.NDArray[np.int32], bpp: int) -> npt.NDArray[np.int32]:
    # Each byte adds the decoded byte bpp to its left: a running sum per channel, mod 256.
    return np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) & 0xFF


def _average(
    line: npt.NDArray[np.int32], prev: npt.NDArray[np.int32], bpp: int
) -> npt.NDArray[np.int32]:
    out = line.copy()
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        out[i] = (out[i] + ((left + prev[i]) >> 1)) & 0xFF
    return out


def _paeth(
    line: npt.NDArray[np.int32], prev: npt.NDArray[np.int32], bpp: int
) -> npt.NDArray[np.int32]:
    out = line.copy()
    for i in range(len(out)):
        a = out[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out[i] = (out[i] + pred) & 0xFF
    return out
