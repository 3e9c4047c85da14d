"""A minimal PNG reader for the report's screenshot test (Pillow is not a dependency).

Reads 8-bit greyscale, RGB and RGBA, non-interlaced PNGs (what Chromium's screenshots are) into a
numpy array of shape (height, width, channels); rows with the None/Sub/Up filters are undone with
numpy, Average/Paeth rows in plain Python (Chromium uses them on a few rows only).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_CHANNELS = {0: 1, 2: 3, 6: 4}


def read_png(path: str | Path) -> np.ndarray:
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    w, h, depth, color, _, _, interlace = ihdr
    if depth != 8 or color not in _CHANNELS or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {color}, interlace {interlace})")
    bpp = _CHANNELS[color]
    stride = w * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, stride + 1)
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:]
        if f == 0:
            cur = line.copy()
        elif f == 1:   # Sub: running sum along the row, per channel, mod 256
            cur = (np.cumsum(line.reshape(w, bpp).astype(np.uint32), axis=0) % 256).astype(np.uint8).reshape(stride)
        elif f == 2:   # Up
            cur = (line.astype(np.uint16) + prev).astype(np.uint8)
        elif f in (3, 4):
            cur = _slow_row(bytes(line), bytes(prev), bpp, f)
        else:
            raise ValueError(f"{path}: bad filter {f} on row {y}")
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)


def _slow_row(line: bytes, prev: bytes, bpp: int, f: int) -> np.ndarray:
    cur = bytearray(len(line))
    for i, x in enumerate(line):
        a = cur[i - bpp] if i >= bpp else 0
        b = prev[i]
        if f == 3:
            cur[i] = (x + ((a + b) >> 1)) & 255
        else:
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            cur[i] = (x + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return np.frombuffer(bytes(cur), dtype=np.uint8)


def write_png(path: str | Path, img: np.ndarray) -> None:
    """RGB(A) array -> PNG (no filtering): to save crops for a person to look at."""
    h, w, ch = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    color = {1: 0, 3: 2, 4: 6}[ch]
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
