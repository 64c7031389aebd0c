"""Dev-time: tests/fixtures/exif, images carrying an EXIF orientation (JPEG APP1, PNG eXIf,
WebP EXIF) or only an XMP one (which Pillow's getexif falls back to), and how Hugging Face
`datasets` decodes them as an Image column (its `Image().decode_example`: PIL opens the bytes,
then `ImageOps.exif_transpose` when there is an orientation). expected.json: per file the
orientation PIL's getexif() reports, the decoded mode, size and the sha256 of its pixels.

    python3 scripts/dev/make_exif_fixture.py   # needs datasets, pillow, numpy
"""
import hashlib
import io
import json
import os

import numpy as np
from PIL import Image
import datasets

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "exif")


def picture(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // w, y * 255 // h, (x * y) % 256], -1) + rng.integers(0, 40, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def exif(o):
    e = Image.Exif()
    if o is not None:
        e[0x0112] = o
    else:
        e[0x010F] = "maker"  # EXIF without an orientation
    return e.tobytes()


def xmp(o, form):
    if form == "attr":
        return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
                b'tiff:Orientation="%d"/></rdf:RDF></x:xmpmeta>' % o)
    return b'<x:xmpmeta><rdf:Description><tiff:Orientation>%d</tiff:Orientation></rdf:Description></x:xmpmeta>' % o


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {
        "jpeg_o3.jpg": (picture(37, 45, 1), "JPEG", 3),
        "jpeg_o6.jpg": (picture(37, 45, 2), "JPEG", 6),
        "jpeg_o8.jpg": (picture(40, 29, 3), "JPEG", 8),
        "jpeg_gray_o5.jpg": (picture(37, 45, 4).convert("L"), "JPEG", 5),
        "jpeg_o1.jpg": (picture(31, 22, 5), "JPEG", 1),
        "jpeg_none.jpg": (picture(31, 22, 6), "JPEG", None),
        "png_o6.png": (picture(37, 45, 7), "PNG", 6),
        "png_rgba_o2.png": (picture(23, 17, 8).convert("RGBA"), "PNG", 2),
        "webp_o7.webp": (picture(37, 45, 9), "WEBP", 7),
        # XMP only, or EXIF without an orientation: Pillow takes XMP's.
        "jpeg_xmp6.jpg": (picture(37, 45, 10), "JPEG", ("xmp", 6, "attr")),
        "jpeg_exif_noorient_xmp8.jpg": (picture(37, 45, 11), "JPEG", ("both", 8, "elem")),
        "png_itxt_xmp5.png": (picture(37, 45, 12), "PNG", ("xmp", 5, "elem")),
        "png_itxt_z_xmp3.png": (picture(37, 45, 13), "PNG", ("xmpz", 3, "attr")),
        "webp_xmp6.webp": (picture(37, 45, 14), "WEBP", ("xmp", 6, "attr")),
        # EXIF's orientation wins over XMP's.
        "jpeg_exif3_xmp6.jpg": (picture(37, 45, 15), "JPEG", ("exif+xmp", 3, "attr")),
    }
    feature = datasets.Image()
    expected = {}
    for name, (im, fmt, o) in files.items():
        buf = io.BytesIO()
        kw = {"exif": exif(o)} if isinstance(o, int) else {}
        if isinstance(o, tuple):
            how, n, form = o
            if how == "both":
                kw["exif"] = exif(None)
            if how == "exif+xmp":
                kw["exif"] = exif(n)
                n = 6
            if fmt == "PNG":
                from PIL import PngImagePlugin
                info = PngImagePlugin.PngInfo()
                info.add_itxt("XML:com.adobe.xmp", xmp(n, form).decode(), zip=how == "xmpz")
                kw["pnginfo"] = info
            else:
                kw["xmp"] = xmp(n, form)
        if fmt == "WEBP":
            kw["lossless"] = True
        im.save(buf, fmt, **kw)
        data = buf.getvalue()
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        dec = feature.decode_example({"bytes": data, "path": None})
        got = Image.open(io.BytesIO(data))
        got.load()
        o = got.getexif().get(0x0112)
        expected[name] = {"mode": dec.mode, "size": list(dec.size), "orientation": o,
                          "pixels_sha256": hashlib.sha256(dec.tobytes()).hexdigest()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
