#!/usr/bin/env python3
"""Dev-time: tests/fixtures/tiff, the TIFFs we read ourselves and what Pillow makes of them.

Palette ("P") TIFFs: Pillow writes the 8-bit ones (uncompressed, PackBits, LZW, Deflate); the
1-, 2- and 4-bit ones, the big-endian one, the Deflate one with the horizontal predictor and
several strips are written here byte by byte. JPEG-compressed TIFFs (Pillow through libtiff):
RGB, YCbCr and gray, in one strip and in several, with a partial last strip. The Orientation
tag (2-8), which Pillow applies as it loads a TIFF. Tiled and planar ("separate") TIFFs, written
by tifffile: gray, gray + alpha, RGB, RGB with an unspecified extra sample, RGBA with
unassociated and with associated alpha, palette, JPEG (RGB, YCbCr, gray, planar RGB), with
padded edge tiles; gray + alpha in strips (Pillow's writer); BigTIFF in strips and tiles.

expected.json holds, per file, the mode Pillow opens it in, its size and the sha256 of its
pixels: `convert("RGB").tobytes()` for "P" (we hold a palette image as its RGB), else
`tobytes()` in its own mode.

    python3 scripts/dev/make_tiff_fixture.py   # needs Pillow, numpy, tifffile, imagecodecs
"""
import hashlib
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "tiff")


def pattern(w, h, levels, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = ((x * 3 + y * 5) // 4 + rng.integers(0, 2, (h, w))) % levels
    return a.astype(np.uint8)


def colormap(levels, seed):
    rng = np.random.default_rng(seed)
    # 16-bit entries that are not multiples of 256, so `v // 256` is what is checked.
    return rng.integers(0, 65536, 3 * levels).astype(np.uint16)


def pack(a, bits):
    h, w = a.shape
    per = 8 // bits
    rows = []
    for r in a:
        row = bytearray((w * bits + 7) // 8)
        for x, v in enumerate(r):
            row[x // per] |= int(v) << (8 - bits * (x % per + 1))
        rows.append(bytes(row))
    return rows


def write_tiff(path, a, bits, cmap, compression=1, predictor=1, rows_per_strip=None, big=False):
    """A baseline palette TIFF with one IFD; strips of `rows_per_strip` rows."""
    h, w = a.shape
    e = ">" if big else "<"
    rows = pack(a, bits)
    rps = rows_per_strip or h
    strips = []
    for s in range(0, h, rps):
        chunk = rows[s:s + rps]
        if predictor == 2:
            chunk = [bytes(np.diff(np.frombuffer(r, np.uint8), prepend=0).astype(np.uint8)) for r in chunk]
        data = b"".join(chunk)
        if compression == 8:
            data = zlib.compress(data)
        strips.append(data)
    header = (b"MM\0*" if big else b"II*\0") + struct.pack(e + "I", 8)
    entries = [(256, 3, [w]), (257, 3, [h]), (258, 3, [bits]), (259, 3, [compression]),
               (262, 3, [3]), (273, 4, None), (277, 3, [1]), (278, 3, [rps]), (279, 4, [len(s) for s in strips]),
               (320, 3, [int(v) for v in cmap])]
    if predictor != 1:
        entries.append((317, 3, [predictor]))
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_size
    extra = bytearray()
    data_at = None

    def value_bytes(typ, vals):
        return b"".join(struct.pack(e + ("H" if typ == 3 else "I"), v) for v in vals)

    # Out-of-line values first, then the strips.
    out_of_line = {}
    for tag, typ, vals in entries:
        if vals is None:
            vals = [0] * len(strips)
        b = value_bytes(typ, vals)
        if len(b) > 4:
            out_of_line[tag] = extra_at + len(extra)
            extra += b
            if len(extra) % 2:
                extra += b"\0"
    data_at = extra_at + len(extra)
    offsets = []
    blob = bytearray()
    for s in strips:
        offsets.append(data_at + len(blob))
        blob += s
    ifd = bytearray(struct.pack(e + "H", len(entries)))
    for tag, typ, vals in entries:
        if vals is None:
            vals = offsets
            b = value_bytes(typ, vals)
            if len(b) > 4:
                at = out_of_line[tag]
                extra[at - extra_at:at - extra_at + len(b)] = b
        b = value_bytes(typ, vals)
        ifd += struct.pack(e + "HHI", tag, typ, len(vals))
        ifd += struct.pack(e + "I", out_of_line[tag]) if len(b) > 4 else b.ljust(4, b"\0")
    ifd += struct.pack(e + "I", 0)
    with open(path, "wb") as f:
        f.write(header + ifd + extra + blob)


def main():
    os.makedirs(OUT, exist_ok=True)
    files = []
    # Pillow's own writer: 8-bit indices, four compressions.
    a = pattern(37, 23, 256, 1)
    pal = np.random.default_rng(2).integers(0, 256, 768).astype(np.uint8)
    for name, comp in [("p8_raw", "raw"), ("p8_packbits", "packbits"), ("p8_lzw", "tiff_lzw"),
                       ("p8_deflate", "tiff_adobe_deflate")]:
        im = Image.fromarray(a, "P")
        im.putpalette(pal.tobytes())
        p = os.path.join(OUT, name + ".tif")
        im.save(p, compression=comp)
        files.append(p)
    # Written here: low bit depths, big-endian, predictor, several strips, odd widths.
    for name, bits, kw in [
        ("p1_raw", 1, {}),
        ("p2_raw_strips", 2, {"rows_per_strip": 4}),
        ("p4_raw_be", 4, {"big": True}),
        ("p4_deflate_strips", 4, {"compression": 8, "rows_per_strip": 5}),
        ("p8_deflate_predictor", 8, {"compression": 8, "predictor": 2, "rows_per_strip": 7}),
    ]:
        levels = 1 << bits
        a = pattern(29, 17, levels, bits)
        p = os.path.join(OUT, name + ".tif")
        write_tiff(p, a, bits, colormap(levels, 10 + bits), **kw)
        files.append(p)
    # JPEG strips: a photo-like RGB image (libtiff writes photometric RGB), as YCbCr
    # (photometric YCbCr), as gray; one strip and strips of 16 rows (the last one partial).
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:45, 0:37]
    rgb = np.clip(np.stack([x * 6, y * 5, (x + y) * 3], -1) + rng.normal(0, 30, (45, 37, 3)), 0, 255)
    im = Image.fromarray(rgb.astype(np.uint8), "RGB")
    for name, img, kw in [
        ("jpeg_rgb", im, {}),
        ("jpeg_rgb_strips", im, {"strip_size": 16 * 37 * 3}),
        ("jpeg_ycbcr_strips", im.convert("YCbCr"), {"strip_size": 16 * 37 * 3}),
        ("jpeg_gray", im.convert("L"), {"quality": 60}),
    ]:
        p = os.path.join(OUT, name + ".tif")
        img.save(p, compression="jpeg", **kw)
        files.append(p)
    # The Orientation tag, which Pillow applies as it loads a TIFF: every value on an RGB
    # image, and 6 / 8 on a palette and a JPEG one.
    small = im.crop((0, 0, 11, 7))
    for o in range(2, 9):
        p = os.path.join(OUT, f"orient{o}.tif")
        small.save(p, tiffinfo={274: o})
        files.append(p)
    pal_im = Image.fromarray(pattern(13, 6, 256, 3), "P")
    pal_im.putpalette(pal.tobytes())
    for name, img, kw in [
        ("orient6_palette", pal_im, {"compression": "tiff_lzw"}),
        ("orient8_jpeg", im, {"compression": "jpeg", "strip_size": 16 * 37 * 3}),
    ]:
        p = os.path.join(OUT, name + ".tif")
        img.save(p, tiffinfo={274: int(name[6])}, **kw)
        files.append(p)
    # Tiled and planar files (tifffile; tiles must be multiples of 16 pixels): 37 x 23 pixels,
    # so the right and bottom tiles are padded.
    import tifffile

    rgba = np.concatenate([rgb[:23, :37], rng.integers(0, 256, (23, 37, 1))], -1).astype(np.uint8)
    planes = np.ascontiguousarray(rgba.transpose(2, 0, 1))
    cmap = colormap(256, 7).reshape(3, 256)
    for name, a, kw in [
        ("tiled_gray_packbits", rgba[..., 0], dict(photometric="minisblack", compression="packbits")),
        ("tiled_la_deflate", rgba[..., [0, 3]], dict(photometric="minisblack", compression="zlib",
                                                    extrasamples=["unassalpha"])),
        ("tiled_rgb_lzw_predictor", rgba[..., :3], dict(photometric="rgb", compression="lzw", predictor=True)),
        ("tiled_rgbx", rgba, dict(photometric="rgb", extrasamples=["unspecified"])),
        ("tiled_rgba_associated", rgba, dict(photometric="rgb", compression="zlib", extrasamples=["assocalpha"])),
        ("tiled_palette_lzw", rgba[..., 0], dict(photometric="palette", colormap=cmap, compression="lzw")),
        ("tiled_jpeg_rgb", rgba[..., :3], dict(photometric="rgb", compression="jpeg")),
        ("tiled_jpeg_ycbcr", rgba[..., :3], dict(photometric="ycbcr", compression="jpeg")),
        ("tiled_jpeg_gray", rgba[..., 0], dict(photometric="minisblack", compression="jpeg")),
        ("planar_rgb_deflate_strips", planes[:3], dict(photometric="rgb", compression="zlib", rowsperstrip=8,
                                                       tile=None)),
        ("planar_tiled_rgba", planes, dict(photometric="rgb", extrasamples=["unassalpha"])),
        ("planar_tiled_rgb_lzw", planes[:3], dict(photometric="rgb", compression="lzw")),
        ("planar_jpeg_strips", planes[:3], dict(photometric="rgb", compression="jpeg", rowsperstrip=16,
                                                tile=None)),
        ("planar_tiled_jpeg", planes[:3], dict(photometric="rgb", compression="jpeg")),
        # BigTIFF (64-bit offsets; Pillow reads it, the `image` crate's format guess does not).
        ("bigtiff_rgb_strips", rgba[..., :3], dict(photometric="rgb", compression="lzw", bigtiff=True,
                                                   rowsperstrip=8, tile=None)),
        ("bigtiff_tiled_rgba", rgba, dict(photometric="rgb", extrasamples=["unassalpha"], bigtiff=True)),
    ]:
        kw = {"tile": (16, 16), **kw}
        if kw["tile"] is None:
            del kw["tile"]
        if name.startswith("planar"):
            kw["planarconfig"] = "separate"
        p = os.path.join(OUT, name + ".tif")
        tifffile.imwrite(p, a, **kw)
        files.append(p)
    # Gray + alpha in strips (Pillow's writer), which the `tiff` crate does not read.
    p = os.path.join(OUT, "la_lzw.tif")
    Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]]), "LA").save(p, compression="tiff_lzw")
    files.append(p)
    write_expected(OUT, files, lambda im: {"chunks": chunk_count(im)})


def chunk_count(im):
    chunks = im.tag_v2.get(273) or im.tag_v2[324]
    return len(chunks) if isinstance(chunks, tuple) else 1


def write_expected(out, files, more=lambda im: {}):
    """out/expected.json: per file, Pillow's mode, size and the sha256 of its pixels ("P" as
    its RGB), and what `more(image)` adds."""
    expected = {}
    for p in files:
        im = Image.open(p)
        px = im.convert("RGB") if im.mode == "P" else im
        expected[os.path.basename(p)] = {
            "mode": im.mode,
            "size": list(im.size),
            **more(im),
            "pixels_sha256": hashlib.sha256(px.tobytes()).hexdigest(),
        }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(expected, indent=1))

if __name__ == "__main__":
    main()
