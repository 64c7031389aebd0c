#!/usr/bin/env python3
"""Dev-time: tests/fixtures/bmp, BMP layouts Pillow's writer does not make, written here byte by
byte, and what Pillow makes of them: RLE8 and RLE4 (encoded and absolute runs), 16-bit 5-5-5
(plain and with bit fields) and 5-6-5 (every stored level in a ramp, then noise), 32-bit BGRX,
32-bit with an alpha mask in V4 and V5 headers, and a top-down 24-bit file.

expected.json holds, per file, the mode Pillow opens it in, its size and the sha256 of its
pixels: `convert("RGB").tobytes()` for "P" (we hold a palette image as its RGB), else
`tobytes()` in its own mode.

    python3 scripts/dev/make_bmp_fixture.py   # needs Pillow, numpy
"""
import os
import struct

import numpy as np

from make_tiff_fixture import write_expected  # same folder

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "bmp")


def write_bmp(path, w, h, bpp, data, compression=0, palette=(), header=40, masks=None, topdown=False):
    """One BMP: `data` the pixel array as stored (rows bottom-up unless `topdown`)."""
    pal = b"".join(bytes([b, g, r, 0]) for (r, g, b) in palette)
    info = struct.pack("<IiiHHIIiiII", header, w, -h if topdown else h, 1, bpp, compression, len(data),
                       2835, 2835, len(palette), 0)
    after = b""
    if header == 40 and compression == 3:
        after = b"".join(struct.pack("<I", m) for m in masks[:3])
    elif header in (108, 124):
        info += b"".join(struct.pack("<I", m) for m in masks) + b"BGRs" + bytes(36 + 12)
        info += bytes(16) if header == 124 else b""
    offset = 14 + len(info) + len(after) + len(pal)
    with open(path, "wb") as f:
        f.write(b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + after + pal + data)


def padded(rows):
    return b"".join(r + bytes(-len(r) % 4) for r in rows)


def rle8(idx):
    out = bytearray()
    for row in idx[::-1]:
        x = 0
        while x < len(row):
            run = 1
            while x + run < len(row) and row[x + run] == row[x] and run < 255:
                run += 1
            if run >= 2:
                out += bytes([run, row[x]])
                x += run
            elif len(row) - x >= 3:
                n = min(5, len(row) - x)
                out += bytes([0, n]) + bytes(row[x:x + n]) + bytes(n % 2)
                x += n
            else:
                out += bytes([1, row[x]])
                x += 1
        out += b"\0\0"
    return bytes(out + b"\0\1")


def rle4(idx):
    out = bytearray()
    for row in idx[::-1]:
        for x in range(0, len(row), 2):
            pair = row[x:x + 2]
            out += bytes([len(pair), (pair[0] << 4) | (pair[1] if len(pair) == 2 else 0)])
        out += b"\0\0"
    return bytes(out + b"\0\1")


def sixteen(rgb, layout):
    r, g, b = (rgb[..., i].astype(np.uint16) for i in range(3))
    v = (r >> 3) << 10 | (g >> 3) << 5 | (b >> 3) if layout == 555 else (r >> 3) << 11 | (g >> 2) << 5 | (b >> 3)
    return padded([row.astype("<u2").tobytes() for row in v[::-1]])


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(11)
    w, h = 37, 21
    palette = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(256)]
    idx = rng.integers(0, 8, (h, w)).astype(np.uint8)
    idx[3:9, 4:30] = 5  # long runs
    files = []

    def add(name, *args, **kw):
        p = os.path.join(OUT, name + ".bmp")
        write_bmp(p, *args, **kw)
        files.append(p)

    add("rle8", w, h, 8, rle8(idx), compression=1, palette=palette)
    add("rle4", w, h, 4, rle4(idx % 16), compression=2, palette=palette[:16])
    # Every stored level first (row 0 from the top: the ramp), then noise.
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ramp = rgb.copy()
    ramp[0, :32] = (np.arange(32) * 8)[:, None]
    ramp[1, :32, 1] = np.arange(32) * 8 + 4
    add("bgr15", w, h, 16, sixteen(ramp, 555))
    add("bgr15_bitfields", w, h, 16, sixteen(ramp, 555), compression=3, masks=[0x7C00, 0x3E0, 0x1F])
    green = rgb.copy()
    green[0, :, 1] = np.arange(w) * 4 + 3
    add("bgr16_bitfields", w, h, 16, sixteen(green, 565), compression=3, masks=[0xF800, 0x7E0, 0x1F])
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    bgra = np.concatenate([rgb[..., ::-1], alpha], -1)
    rows = [r.tobytes() for r in bgra[::-1]]
    add("bgrx32", w, h, 32, b"".join(rows))
    add("bgra32_v4", w, h, 32, b"".join(rows), compression=3, header=108, masks=[0xFF0000, 0xFF00, 0xFF, 0xFF000000])
    add("bgra32_v5", w, h, 32, b"".join(rows), compression=3, header=124, masks=[0xFF0000, 0xFF00, 0xFF, 0xFF000000])
    add("bgr24_topdown", w, h, 24, padded([r.tobytes() for r in rgb[..., ::-1]]), topdown=True)
    write_expected(OUT, files)

if __name__ == "__main__":
    main()
