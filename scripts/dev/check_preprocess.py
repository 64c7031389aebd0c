"""Dev-time: compare `pyramidclip preprocess` with PIL + torchvision's rule on generated images
of many modes and sizes. Needs Pillow and numpy (not torch: torchvision's Resize/CenterCrop
rule is restated below). Usage: python3 scripts/dev/check_preprocess.py [BINARY] [COUNT] [large]
(`large`: camera-sized images, 1200-4600 px with a 4032x3024 first, in the common photo modes;
about 2 minutes with COUNT 3)."""
import io, os, random, subprocess, sys, tempfile
import numpy as np
from PIL import Image
from safetensors.numpy import load_file

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/pyramidclip"
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 6
LARGE = len(sys.argv) > 3 and sys.argv[3] == "large"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32).reshape(3, 1, 1)


def reference(path, n):
    im = Image.open(path)
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(n * long / short)
    size = (n, new_long) if w <= h else (new_long, n)
    im = im.resize(size, Image.BICUBIC)
    W, H = im.size
    top, left = int(round((H - n) / 2.0)), int(round((W - n) / 2.0))
    im = im.crop((left, top, left + n, top + n)).convert("RGB")
    a = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return (a - MEAN) / STD


def photo(w, h, rng):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 / max(w, 1)), (y * 255 / max(h, 1)), ((x + y) * 128 / max(w + h, 1))], -1)
    noise = rng.normal(0, 25, (h, w, 3))
    blobs = 60 * np.sin(x / (3 + rng.random() * 20))[..., None] * np.cos(y / (3 + rng.random() * 20))[..., None]
    return np.clip(base + noise + blobs, 0, 255).astype(np.uint8)


def make(kind, w, h, rng, d):
    a = photo(w, h, rng)
    im = Image.fromarray(a, "RGB")
    p = os.path.join(d, f"{kind}_{w}x{h}")
    if kind in ("jpeg420", "jpeg422", "jpeg444", "jpegprog"):
        sub = {"jpeg420": 2, "jpeg422": 1, "jpeg444": 0, "jpegprog": 2}[kind]
        im.save(p + ".jpg", quality=int(rng.integers(50, 98)), subsampling=sub, progressive=kind == "jpegprog")
        return p + ".jpg"
    if kind == "jpeggray":
        im.convert("L").save(p + ".jpg", quality=90); return p + ".jpg"
    if kind == "jpegcmyk":
        im.convert("CMYK").save(p + ".jpg", quality=90); return p + ".jpg"
    if kind == "pngL": im.convert("L").save(p + ".png"); return p + ".png"
    if kind == "pngLA":
        la = im.convert("LA"); la.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))); la.save(p + ".png"); return p + ".png"
    if kind == "pngRGBA":
        rgba = im.convert("RGBA"); rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))); rgba.save(p + ".png"); return p + ".png"
    if kind == "pngP": im.convert("P", palette=Image.ADAPTIVE).save(p + ".png"); return p + ".png"
    if kind == "pngPtrns":
        q = im.convert("P", palette=Image.ADAPTIVE); q.save(p + ".png", transparency=3); return p + ".png"
    if kind == "png1": im.convert("1").save(p + ".png"); return p + ".png"
    if kind == "png16":
        Image.fromarray((a[..., 0].astype(np.uint16) * 3)).save(p + ".png"); return p + ".png"
    if kind == "pngRGBtrns": im.save(p + ".png", transparency=(10, 20, 30)); return p + ".png"
    if kind == "gif": im.convert("P", palette=Image.ADAPTIVE).save(p + ".gif"); return p + ".gif"
    if kind == "gifgray": im.convert("L").save(p + ".gif"); return p + ".gif"
    if kind == "bmp": im.save(p + ".bmp"); return p + ".bmp"
    if kind == "tiff": im.save(p + ".tif"); return p + ".tif"
    if kind == "webp": im.save(p + ".webp", quality=80); return p + ".webp"
    if kind == "webplossless": im.save(p + ".webp", lossless=True); return p + ".webp"
    if kind == "ppm": im.save(p + ".ppm"); return p + ".ppm"
    if kind == "pgm": im.convert("L").save(p + ".pgm"); return p + ".pgm"
    if kind == "bmpP": im.convert("P", palette=Image.ADAPTIVE).save(p + ".bmp"); return p + ".bmp"
    if kind == "bmp1": im.convert("1").save(p + ".bmp"); return p + ".bmp"
    if kind == "tiff1": im.convert("1").save(p + ".tif"); return p + ".tif"
    if kind == "tiffcmyk": im.convert("CMYK").save(p + ".tif", compression="tiff_lzw"); return p + ".tif"
    if kind in ("tiffP", "tiffPlzw"):
        im.convert("P", palette=Image.ADAPTIVE).save(p + ".tif", compression="tiff_lzw" if kind == "tiffPlzw" else "raw")
        return p + ".tif"
    if kind == "tiffrot":
        im.save(p + ".tif", tiffinfo={274: int(rng.integers(2, 9))}, compression="tiff_lzw"); return p + ".tif"
    if kind == "tiffjpeg": im.save(p + ".tif", compression="jpeg", quality=int(rng.integers(50, 98))); return p + ".tif"
    if kind == "tiffjpeggray": im.convert("L").save(p + ".tif", compression="jpeg"); return p + ".tif"
    if kind == "tiffjpegycc": im.convert("YCbCr").save(p + ".tif", compression="jpeg"); return p + ".tif"
    if kind == "tiff16":
        Image.fromarray(a[..., 1].astype(np.uint16) * 200).save(p + ".tif"); return p + ".tif"
    # Deep and odd-maxval Netpbm, written by hand (PIL writes only maxval 255 / 65535 gray).
    if kind in ("ppm16", "ppm1000", "pgm16", "pbm"):
        if kind == "pbm":
            bits = (a[..., 0] > 127).astype(np.uint8)
            body = b"".join(np.packbits(r).tobytes() for r in bits)
            open(p + ".ppm", "wb").write(b"P4\n%d %d\n" % (w, h) + body); return p + ".ppm"
        maxval = 1000 if kind == "ppm1000" else 65535
        x = (a.astype(np.uint32) * maxval // 255).astype(">u2")
        if kind == "pgm16":
            open(p + ".pgm", "wb").write(b"P5\n%d %d\n%d\n" % (w, h, maxval) + (x[..., 0] // 200).tobytes())
            return p + ".pgm"
        open(p + ".ppm", "wb").write(b"P6\n%d %d\n%d\n" % (w, h, maxval) + x.tobytes()); return p + ".ppm"
    # Less common layouts: interlaced and low-bit-depth PNGs (written with pypng, which Pillow
    # cannot), restart markers, first frames of animations and of MPO (camera) files.
    if kind in ("pngInterlaced", "png16RGB", "pngP4", "pngL2", "pngLA16Interlaced"):
        import png
        if kind == "pngInterlaced":
            w_ = png.Writer(w, h, greyscale=False, interlace=True)
            rows = a.reshape(h, w * 3)
        elif kind == "png16RGB":
            w_ = png.Writer(w, h, greyscale=False, bitdepth=16)
            rows = np.minimum(a.astype(np.int64) * 257 + rng.integers(0, 257, a.shape), 65535).reshape(h, w * 3)
        elif kind == "pngP4":
            pal = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(16)]
            w_ = png.Writer(w, h, palette=pal, bitdepth=4, interlace=bool(rng.integers(0, 2)))
            rows = (a[..., 0] >> 4)
        elif kind == "pngL2":
            w_ = png.Writer(w, h, greyscale=True, bitdepth=2)
            rows = (a[..., 1] >> 6)
        else:
            w_ = png.Writer(w, h, greyscale=True, alpha=True, bitdepth=16, interlace=True)
            la = np.stack([a[..., 0].astype(np.uint16) * 257, rng.integers(0, 65536, (h, w))], -1)
            rows = la.reshape(h, w * 2)
        with open(p + ".png", "wb") as f:
            w_.write(f, [list(map(int, r)) for r in rows])
        return p + ".png"
    if kind == "jpegrestart":
        im.save(p + ".jpg", quality=85, restart_marker_blocks=int(rng.integers(1, 9))); return p + ".jpg"
    if kind == "jpegicc":
        im.save(p + ".jpg", quality=85, icc_profile=b"\0" * 3000); return p + ".jpg"
    if kind == "mpo":
        second = Image.fromarray(255 - a, "RGB")
        im.save(p + ".jpg", format="MPO", save_all=True, append_images=[second], quality=85); return p + ".jpg"
    if kind == "gifanim":
        q = im.convert("P", palette=Image.ADAPTIVE)
        q.save(p + ".gif", save_all=True, append_images=[Image.fromarray(255 - a, "RGB").convert("P")]); return p + ".gif"
    if kind == "giftrns": im.convert("P", palette=Image.ADAPTIVE).save(p + ".gif", transparency=5); return p + ".gif"
    if kind == "webpRGBA":
        rgba = im.convert("RGBA"); rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        rgba.save(p + ".webp", quality=80); return p + ".webp"
    if kind == "webpanim":
        im.save(p + ".webp", save_all=True, append_images=[Image.fromarray(255 - a, "RGB")], quality=80); return p + ".webp"
    if kind == "tiffRGBA":
        rgba = im.convert("RGBA"); rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        rgba.save(p + ".tif", compression="tiff_adobe_deflate"); return p + ".tif"
    raise ValueError(kind)


KINDS = ["jpeg420", "jpeg422", "jpeg444", "jpegprog", "jpeggray", "jpegcmyk", "pngL", "pngLA", "pngRGBA", "pngP",
         "pngPtrns", "png1", "png16", "pngRGBtrns", "gif", "gifgray", "bmp", "tiff", "webp", "webplossless", "ppm", "pgm",
         "bmpP", "bmp1", "tiff1", "tiffcmyk", "tiff16", "tiffP", "tiffPlzw", "tiffjpeg", "tiffjpeggray", "tiffjpegycc", "tiffrot", "ppm16", "ppm1000", "pgm16", "pbm"]
EXTRA = ["pngInterlaced", "png16RGB", "pngP4", "pngL2", "pngLA16Interlaced", "jpegrestart", "jpegicc", "mpo",
         "gifanim", "giftrns", "webpRGBA", "webpanim", "tiffRGBA"]
if os.environ.get("KINDS") == "extra":
    KINDS = EXTRA
elif os.environ.get("KINDS"):
    KINDS = os.environ["KINDS"].split(",")

if LARGE:
    KINDS = ["jpeg420", "jpeg422", "jpeg444", "jpegprog", "jpeggray", "pngRGBA", "pngP", "webp"]
rng = np.random.default_rng(0)
with tempfile.TemporaryDirectory() as d:
    paths, kinds = [], []
    for kind in KINDS:
        for i in range(COUNT):
            lo, hi = (1200, 4600) if LARGE else (20, 700)
            w, h = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
            if i == 0: w, h = (4032, 3024) if LARGE else (500, 375)
            paths.append(make(kind, w, h, rng, d)); kinds.append(kind)
    for n in (224, 64):
        out = os.path.join(d, "out.safetensors")
        subprocess.run([BIN, "preprocess", "--resolution", str(n), "--out", out] + paths, check=True)
        ours = load_file(out)["pixels"]
        step = 1 / 255 / STD.min()
        print(f"resolution {n}")
        print(f"{'mode':14} {'images':>6} {'exact %':>9} {'<=1 level %':>12} {'max levels':>10}")
        for kind in KINDS:
            idx = [i for i, k in enumerate(kinds) if k == kind]
            ex = w1 = tot = 0; mx = 0.0
            for i in idx:
                ref = reference(paths[i], n)
                diff = np.abs(ours[i] - ref) * STD * 255
                ex += (diff < 1e-3).sum(); w1 += (diff <= 1.001).sum(); tot += diff.size; mx = max(mx, diff.max())
            print(f"{kind:14} {len(idx):6d} {100*ex/tot:9.3f} {100*w1/tot:12.3f} {mx:10.1f}")
