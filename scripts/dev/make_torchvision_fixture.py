"""Dev-time: writes tests/fixtures/torchvision, miniatures of the downloads torchvision's
Oxford-IIIT Pet, FGVC-Aircraft, Flowers102, Stanford Cars, SUN397, Caltech101, GTSRB,
Country211, RenderedSST2, MNIST, STL10 and PCAM read, and CLIP_benchmark's ObjectNet and VOC2007
(the originals' file layouts and formats: text lists, MATLAB level-5 files written by scipy,
plain and compressed, with the originals' variable names and types, IDX and STL-10 binaries,
VOC's XML annotations, PCAM's HDF5 files written by h5py: contiguous as the originals, and
chunked and compressed in two other file-format versions), then lists every split with torchvision's own dataset classes and writes
what they give (image path relative to the fixture, label; the classes) to
tests/fixtures/torchvision/expected.json. The Rust tests hold `data::listed` to that file.
For the datasets whose samples are not whole files (MNIST, STL-10 and PCAM images in arrays,
VOC2007's objects cut from images) it also writes, per sample, the sha256 of the 224 x 224
crop (CHW bytes) that the dataset's image gives under Resize(224, BICUBIC), CenterCrop(224),
convert('RGB').

    /tmp/venv/bin/python scripts/dev/make_torchvision_fixture.py   # torchvision, scipy, Pillow
    CB_OBJECTNET=/tmp/cb/objectnet.py CB_VOC2007=/tmp/cb/voc2007.py ...   # also check those
                                                           # listings against CLIP_benchmark's

Flowers102's and STL10's integrity checks (md5 of the real files) are bypassed; nothing else is.
"""
import glob
import hashlib
import importlib.util
import json
import os
import random
import shutil

import numpy as np
import scipy.io as sio
from PIL import Image, ImageDraw
from torchvision import datasets as tv

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "torchvision")
NAMES = os.path.join(ROOT, "configs", "data", "datasets")
rng = random.Random(7)


def builtin(name):
    with open(os.path.join(NAMES, f"{name}_classnames.txt")) as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def image(path):
    """A small distinct JPEG."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w, h = rng.randint(24, 48), rng.randint(24, 48)
    im = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x, y = rng.randrange(w), rng.randrange(h)
        d.ellipse([x - 6, y - 6, x + 6, y + 6], fill=tuple(rng.randrange(256) for _ in range(3)))
    im.save(path, quality=90)


def pets(root):
    base = os.path.join(root, "oxford-iiit-pet")
    classes = builtin("pet")
    raw = [c.replace(" ", "_") for c in classes]
    splits = {"trainval": [], "test": []}
    for split, per in (("trainval", 2), ("test", 1)):
        for label in (0, 5, 12, 36, 1):
            for k in range(per):
                n = rng.randint(100, 999)
                iid = f"{raw[label]}_{n}"
                species = 1 if raw[label][0].isupper() else 2
                splits[split].append(f"{iid} {label + 1} {species} {k + 1}")
                image(os.path.join(base, "images", f"{iid}.jpg"))
    os.makedirs(os.path.join(base, "annotations"), exist_ok=True)
    for split, lines in splits.items():
        with open(os.path.join(base, "annotations", f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


def aircraft(root):
    data = os.path.join(root, "fgvc-aircraft-2013b", "data")
    os.makedirs(data, exist_ok=True)
    variants = builtin("aircraft")
    with open(os.path.join(data, "variants.txt"), "w") as f:
        f.write("\n".join(variants) + "\n")
    picks = [0, 3, 99, 42, 17]
    for split in ("train", "val", "trainval", "test"):
        lines = []
        for i, v in enumerate(picks):
            iid = f"{rng.randint(0, 2_000_000):07d}"
            lines.append(f"{iid} {variants[v]}")
            image(os.path.join(data, "images", f"{iid}.jpg"))
        with open(os.path.join(data, f"images_variant_{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


def flowers(root):
    base = os.path.join(root, "flowers-102")
    os.makedirs(base, exist_ok=True)
    n = 24
    labels = np.array([rng.randint(1, 102) for _ in range(n)], dtype=np.uint8)
    labels[0], labels[1] = 1, 102
    ids = list(range(1, n + 1))
    rng.shuffle(ids)
    # The originals hold doubles in [1 x N] rows; setid's ids are uint16.
    sio.savemat(os.path.join(base, "imagelabels.mat"), {"labels": labels.astype(np.float64)[None, :]},
                do_compression=True)
    sio.savemat(os.path.join(base, "setid.mat"),
                {"trnid": np.array(ids[:8], dtype=np.uint16)[None, :],
                 "valid": np.array(ids[8:14], dtype=np.uint16)[None, :],
                 "tstid": np.array(ids[14:], dtype=np.uint16)[None, :]}, do_compression=False)
    for i in range(1, n + 1):
        image(os.path.join(base, "jpg", f"image_{i:05d}.jpg"))


def cars(root):
    base = os.path.join(root, "stanford_cars")
    names = builtin("car")
    os.makedirs(os.path.join(base, "devkit"), exist_ok=True)
    meta = np.empty((1, len(names)), dtype=object)
    for i, c in enumerate(names):
        meta[0, i] = c
    sio.savemat(os.path.join(base, "devkit", "cars_meta.mat"), {"class_names": meta}, do_compression=True)
    dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    for split, path, folder, compress in (
        ("train", os.path.join("devkit", "cars_train_annos.mat"), "cars_train", True),
        ("test", "cars_test_annos_withlabels.mat", "cars_test", False),
    ):
        picks = [1, 196, 50, 7, 50, 120]
        rec = np.zeros((1, len(picks)), dtype=dt)
        for i, c in enumerate(picks):
            fname = f"{i + 1:05d}.jpg"
            rec[0, i] = (np.array([[3]], np.uint8), np.array([[5]], np.uint8), np.array([[30]], np.uint16),
                         np.array([[20]], np.uint16), np.array([[c]], np.uint8), fname)
            image(os.path.join(base, folder, fname))
        sio.savemat(os.path.join(base, path), {"annotations": rec}, do_compression=compress)


SUN_CLASSES = ["/a/abbey", "/a/airport_terminal", "/b/bakery/shop", "/b/bedroom", "/c/church/outdoor"]


def sun397(root):
    base = os.path.join(root, "SUN397")
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "ClassName.txt"), "w") as f:
        f.write("\n".join(SUN_CLASSES) + "\n")
    for c in SUN_CLASSES:
        for _ in range(2):
            image(os.path.join(base, c[1:], f"sun_{rng.getrandbits(40):010x}.jpg"))
    # Not matched by torchvision's glob: another name, another extension.
    image(os.path.join(base, "a", "abbey", "other.jpg"))
    image(os.path.join(base, "a", "abbey", "sun_upper.JPG"))


def caltech101(root):
    cats = os.path.join(root, "caltech101", "101_ObjectCategories")
    for c, n in (("BACKGROUND_Google", 2), ("Faces", 2), ("Leopards", 1), ("accordion", 3), ("airplanes", 2)):
        for i in range(1, n + 1):
            image(os.path.join(cats, c, f"image_{i:04d}.jpg"))


OBJECTNET_FOLDERS = {"air_freshener": "Air freshener", "alarm_clock": "Alarm clock", "backpack": "Backpack",
                     "banana": "Banana", "bench": "Bench", "tv": "TV"}
# Not in folder order, as the original is not; air_freshener has no ImageNet class.
OBJECTNET_IMAGENET = {"TV": "television", "Alarm clock": "analog clock; digital clock", "Banana": "banana",
                      "Bench": "park bench", "Backpack": "backpack"}


def objectnet(root):
    """CLIP_benchmark's ObjectNet layout: objectnet-1.0/images/<folder>/*.png, and the mapping
    files copied from objectnet-1.0/mappings/ into the root."""
    for folder, n in (("air_freshener", 2), ("alarm_clock", 2), ("backpack", 1), ("banana", 2), ("bench", 1),
                      ("tv", 2)):
        for i in range(n):
            path = os.path.join(root, "objectnet-1.0", "images", folder, f"{rng.getrandbits(32):08x}.png")
            image(path.replace(".png", ".jpg"))
            Image.open(path.replace(".png", ".jpg")).save(path)
            os.remove(path.replace(".png", ".jpg"))
    names = sorted({n for v in OBJECTNET_IMAGENET.values() for n in v.split("; ")})
    files = {
        "folder_to_objectnet_label.json": json.dumps(OBJECTNET_FOLDERS),
        "objectnet_to_imagenet_1k.json": json.dumps(OBJECTNET_IMAGENET),
        "pytorch_to_imagenet_2012_id.json": json.dumps({str(i): i for i in range(len(names))}),
        "imagenet_to_label_2012_v2": "\n".join(names) + "\n",
    }
    for name, text in files.items():
        with open(os.path.join(root, name), "w") as f:
            f.write(text)


def objectnet_listing():
    """What CLIP_benchmark's objectnet.ObjectNetDataset lists (its logic; set CB_OBJECTNET to
    the path of its objectnet.py to check against the file itself)."""
    with open(os.path.join(OUT, "folder_to_objectnet_label.json")) as f:
        folder_of = {v: k for k, v in json.load(f).items()}
    with open(os.path.join(OUT, "objectnet_to_imagenet_1k.json")) as f:
        mapped = sorted(folder_of[name] for name in json.load(f))
    label = {name: i for i, name in enumerate(mapped)}
    ds = tv.ImageFolder(os.path.join(OUT, "objectnet-1.0", "images"))
    pairs = [(p, label[os.path.basename(os.path.dirname(p))]) for p, _ in ds.samples
             if os.path.basename(os.path.dirname(p)) in label]
    name_of = {v: k for k, v in folder_of.items()}
    classes = [name_of[c].lower() for c in mapped]
    if os.environ.get("CB_OBJECTNET"):
        import importlib.util
        spec = importlib.util.spec_from_file_location("cb_objectnet", os.environ["CB_OBJECTNET"])
        cb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cb)
        real = cb.ObjectNetDataset(OUT, transform=None)
        assert [(p, real.label_map[os.path.basename(os.path.dirname(p))]) for p, _ in real.samples] == pairs
        assert real.classes == classes
        print("ObjectNet: identical to", os.environ["CB_OBJECTNET"])
    return pairs, classes


def gtsrb(root):
    base = os.path.join(root, "gtsrb")
    for c, n in ((0, 2), (1, 1), (2, 2)):
        for i in range(n):
            p = os.path.join(base, "GTSRB", "Training", f"{c:05d}", f"00000_{i:05d}.ppm")
            image(p + ".jpg")
            Image.open(p + ".jpg").save(p)
            os.remove(p + ".jpg")
        # torchvision takes the .ppm files only (each class folder holds its own CSV).
        with open(os.path.join(base, "GTSRB", "Training", f"{c:05d}", f"GT-{c:05d}.csv"), "w") as f:
            f.write("Filename;ClassId\n")
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, c in enumerate((42, 0, 7, 7, 13)):
        name = f"{i:05d}.ppm"
        p = os.path.join(base, "GTSRB", "Final_Test", "Images", name)
        image(p + ".jpg")
        Image.open(p + ".jpg").save(p)
        os.remove(p + ".jpg")
        rows.append(f"{name};30;31;5;5;25;26;{c}")
    with open(os.path.join(base, "GT-final_test.csv"), "w", newline="") as f:
        f.write("\r\n".join(rows) + "\r\n")


def folder_splits(root, name, splits, classes, ext):
    for split in splits:
        for c in classes:
            for i in range(rng.randint(1, 2)):
                p = os.path.join(root, name, split, c, f"{rng.getrandbits(32):08x}.{ext}")
                image(p + ".jpg")
                Image.open(p + ".jpg").save(p)
                os.remove(p + ".jpg")


def country211(root):
    folder_splits(root, "country211", ("train", "valid", "test"), ("AD", "AE", "ZW"), "jpg")


def rendered_sst2(root):
    folder_splits(root, "rendered-sst2", ("train", "valid", "test"), ("negative", "positive"), "png")


def mnist(root):
    base = os.path.join(root, "MNIST", "raw")
    os.makedirs(base, exist_ok=True)
    for stem, labels in (("train", [5, 0, 4, 1]), ("t10k", [7, 2, 1])):
        px = bytes(rng.randrange(256) if rng.random() < 0.3 else 0 for _ in range(len(labels) * 784))
        with open(os.path.join(base, f"{stem}-images-idx3-ubyte"), "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (len(labels), 28, 28)) + px)
        with open(os.path.join(base, f"{stem}-labels-idx1-ubyte"), "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + bytes(labels))


def pcam(root):
    import h5py
    base = os.path.join(root, "pcam")
    os.makedirs(base, exist_ok=True)
    g = np.random.default_rng(11)
    forms = {"test": ("earliest", {}), "valid": ("earliest", {"chunks": (2, 96, 96, 3), "compression": "gzip"}),
             "train": ("latest", {"chunks": (1, 40, 40, 3), "compression": "gzip", "shuffle": True})}
    for stem, labels in (("train", [1, 0, 0]), ("valid", [0, 1, 1]), ("test", [1, 0, 1, 0])):
        n = len(labels)
        yy, xx = np.mgrid[0:96, 0:96]
        x = np.stack([(xx * (3 + i) + yy * (5 - i) + c * 60) % 256 for i in range(n) for c in range(3)], -1)
        x = x.reshape(96, 96, n, 3).transpose(2, 0, 1, 3) + g.integers(0, 24, (n, 96, 96, 3))
        libver, kw = forms[stem]
        with h5py.File(os.path.join(base, f"camelyonpatch_level_2_split_{stem}_x.h5"), "w", libver=libver) as f:
            f.create_dataset("x", data=x.clip(0, 255).astype(np.uint8), **kw)
        with h5py.File(os.path.join(base, f"camelyonpatch_level_2_split_{stem}_y.h5"), "w", libver=libver) as f:
            f.create_dataset("y", data=np.array(labels, np.uint8).reshape(n, 1, 1, 1))


def stl10(root):
    base = os.path.join(root, "stl10_binary")
    os.makedirs(base, exist_ok=True)
    for split, labels in (("train", [1, 10, 3, 3]), ("test", [7, 2, 9])):
        with open(os.path.join(base, f"{split}_X.bin"), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(len(labels) * 3 * 96 * 96)))
        with open(os.path.join(base, f"{split}_y.bin"), "wb") as f:
            f.write(bytes(labels))
    with open(os.path.join(base, "class_names.txt"), "w") as f:
        f.write("\n".join(builtin("stl10")) + "\n")


VOC_CLASSES = builtin("voc2007")


def voc2007(root):
    base = os.path.join(root, "VOCdevkit", "VOC2007")
    for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    ids = {"train": ["000012", "000017"], "test": ["000001", "000004", "000006"]}
    for split, names in ids.items():
        with open(os.path.join(base, "ImageSets", "Main", f"aeroplane_{split}.txt"), "w") as f:
            f.write("".join(f"{n} {rng.choice([' 1', '-1', ' 0'])}\n" for n in names))
    for n in ids["train"] + ids["test"]:
        w, h = rng.randint(40, 70), rng.randint(40, 70)
        path = os.path.join(base, "JPEGImages", f"{n}.jpg")
        image(path)
        im = Image.open(path).resize((w, h))
        # One grayscale JPEG: CLIP_benchmark converts to RGB before it crops.
        (im.convert("L") if n == "000004" else im).save(path, quality=90)
        objs = []
        for k in range(rng.randint(1, 3)):
            x0, y0 = rng.randint(1, w // 2), rng.randint(1, h // 2)
            x1, y1 = rng.randint(x0 + 4, w), rng.randint(y0 + 4, h)
            if n == "000006" and k == 0:
                x1 = w + 3  # past the edge: PIL fills black
            if n == "000001" and k == 0:
                x0, y0, x1, y1 = 1, 1, w, h  # VOC's boxes count from 1
            c = VOC_CLASSES[rng.randrange(20)]
            objs.append(f"""\t<object>
\t\t<name>{c}</name>
\t\t<pose>Left</pose>
\t\t<truncated>{rng.randint(0, 1)}</truncated>
\t\t<difficult>{rng.randint(0, 1)}</difficult>
\t\t<bndbox>
\t\t\t<xmin>{x0}</xmin>
\t\t\t<ymin>{y0}</ymin>
\t\t\t<xmax>{x1}</xmax>
\t\t\t<ymax>{y1}</ymax>
\t\t</bndbox>
\t</object>
""")
        with open(os.path.join(base, "Annotations", f"{n}.xml"), "w") as f:
            f.write(f"""<annotation>
\t<folder>VOC2007</folder>
\t<filename>{n}.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t</source>
\t<size>
\t\t<width>{w}</width>
\t\t<height>{h}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
{"".join(objs)}</annotation>
""")


def voc2007_listing(split):
    """CLIP_benchmark's PASCALVoc2007Cropped, written here with its logic: the split's ids from
    aeroplane_<split>.txt, each object of each id's XML (first child the name, bndbox's four
    children in order), in that order."""
    import xml.etree.ElementTree as ET
    base = os.path.join(OUT, "VOCdevkit", "VOC2007")
    with open(os.path.join(base, "ImageSets", "Main", f"aeroplane_{split}.txt")) as f:
        ids = [l.split()[0] for l in f if l.split()]
    out = []
    for i in ids:
        for obj in ET.parse(os.path.join(base, "Annotations", i + ".xml")).findall("object"):
            box = obj.find("bndbox")
            out.append((os.path.join(base, "JPEGImages", i + ".jpg"), VOC_CLASSES.index(obj[0].text),
                        tuple(int(box[k].text) for k in range(4))))
    if os.environ.get("CB_VOC2007"):
        spec = importlib.util.spec_from_file_location("cb_voc2007", os.environ["CB_VOC2007"])
        cb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cb)
        ds = cb.PASCALVoc2007Cropped(OUT, split)
        theirs = [(os.path.join(base, "JPEGImages", p + ".jpg"), c, b) for p, b, c in ds.bndboxes]
        assert theirs == out, (theirs, out)
        assert list(ds.classes) == VOC_CLASSES
        for k, (p, c, b) in enumerate(out):
            mine = Image.open(p).convert("RGB").crop(b)
            assert ds[k][0].tobytes() == mine.tobytes() and ds[k][1] == c
        print(f"voc2007/{split}: CLIP_benchmark's own listing and crops are identical")
    return out


def crop_hash(img):
    """sha256 of the 224 x 224 crop (CHW bytes) of a PIL image, as every image is cropped."""
    from torchvision import transforms as T
    t = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    a = np.asarray(t(img).convert("RGB"))
    return hashlib.sha256(np.ascontiguousarray(a.transpose(2, 0, 1)).tobytes()).hexdigest()


def listing(ds, paths_labels):
    return [[os.path.relpath(str(p), OUT).replace(os.sep, "/"), int(l)] for p, l in paths_labels]


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    for make in (pets, aircraft, flowers, cars, sun397, caltech101, objectnet, gtsrb, country211,
                 rendered_sst2, mnist, stl10, voc2007, pcam):
        make(OUT)
    tv.Flowers102._check_integrity = lambda self: True
    tv.STL10._check_integrity = lambda self: True
    out = {}
    for split in ("trainval", "test"):
        ds = tv.OxfordIIITPet(OUT, split=split)
        out[f"pets/{split}"] = {"samples": listing(ds, zip(ds._images, ds._labels)), "classes": ds.classes}
    for split in ("train", "val", "trainval", "test"):
        ds = tv.FGVCAircraft(OUT, split=split)
        out[f"fgvc_aircraft/{split}"] = {"samples": listing(ds, zip(ds._image_files, ds._labels)), "classes": ds.classes}
    for split in ("train", "val", "test"):
        ds = tv.Flowers102(OUT, split=split)
        out[f"flowers/{split}"] = {"samples": listing(ds, zip(ds._image_files, ds._labels)), "classes": None}
    for split in ("train", "test"):
        ds = tv.StanfordCars(OUT, split=split)
        out[f"cars/{split}"] = {"samples": listing(ds, ds._samples), "classes": ds.classes}
    ds = tv.SUN397(OUT)
    pairs = sorted(zip(ds._image_files, ds._labels))  # torchvision's glob order is the disk's
    out["sun397/test"] = {"samples": listing(ds, pairs), "classes": ds.classes}
    ds = tv.Caltech101(OUT)
    files = [os.path.join(ds.root, "101_ObjectCategories", ds.categories[y], f"image_{i:04d}.jpg")
             for i, y in zip(ds.index, ds.y)]
    out["caltech101/test"] = {"samples": listing(ds, zip(files, ds.y)), "classes": ds.categories}
    # CLIP_benchmark's caltech101 (its own copy of torchvision's class, not installed here):
    # BACKGROUND_Google kept, each folder's images counted by glob("*.jpg").
    cats = os.path.join(OUT, "caltech101", "101_ObjectCategories")
    categories = sorted(os.listdir(cats))
    pairs = [(os.path.join(cats, c, f"image_{i:04d}.jpg"), y) for y, c in enumerate(categories)
             for i in range(1, len(glob.glob(os.path.join(cats, c, "*.jpg"))) + 1)]
    out["clip_benchmark_caltech101/test"] = {"samples": listing(None, pairs), "classes": categories}
    for split in ("train", "test"):
        ds = tv.GTSRB(OUT, split=split)
        out[f"gtsrb/{split}"] = {"samples": listing(ds, ds._samples), "classes": None}
    for split in ("train", "valid", "test"):
        ds = tv.Country211(OUT, split=split)
        out[f"country211/{split}"] = {"samples": listing(ds, ds.samples), "classes": ds.classes}
    for split in ("train", "val", "test"):
        ds = tv.RenderedSST2(OUT, split=split)
        out[f"renderedsst2/{split}"] = {"samples": listing(ds, ds._samples), "classes": ds.classes}
    # Array images: `<array file>/<index>`, the path our samples carry.
    for split in ("train", "test"):
        ds = tv.MNIST(OUT, train=split == "train")
        f = os.path.join(OUT, "MNIST", "raw", ("train" if split == "train" else "t10k") + "-images-idx3-ubyte")
        out[f"mnist/{split}"] = {"samples": listing(None, [(f"{f}/{i}", int(y)) for i, y in enumerate(ds.targets)]),
                                 "classes": None, "crops": [crop_hash(ds[i][0]) for i in range(len(ds))]}
        ds = tv.STL10(OUT, split=split)
        f = os.path.join(OUT, "stl10_binary", f"{split}_X.bin")
        out[f"stl10/{split}"] = {"samples": listing(None, [(f"{f}/{i}", int(y)) for i, y in enumerate(ds.labels)]),
                                 "classes": ds.classes, "crops": [crop_hash(ds[i][0]) for i in range(len(ds))]}
        objs = voc2007_listing(split)
        out[f"voc2007/{split}"] = {"samples": listing(None, [(p, c) for p, c, _ in objs]),
                                   "boxes": [list(b) for _, _, b in objs], "classes": VOC_CLASSES,
                                   "crops": [crop_hash(Image.open(p).convert("RGB").crop(b)) for p, _, b in objs]}
    for split in ("train", "val", "test"):
        ds = tv.PCAM(OUT, split=split)
        stem = "valid" if split == "val" else split
        f = os.path.join(OUT, "pcam", f"camelyonpatch_level_2_split_{stem}_x.h5")
        items = [ds[i] for i in range(len(ds))]
        out[f"pcam/{split}"] = {"samples": listing(None, [(f"{f}/{i}", y) for i, (_, y) in enumerate(items)]),
                                "classes": None, "crops": [crop_hash(im) for im, _ in items]}
    # CLIP_benchmark's voc2007_multilabel: whole images, every object's class (multi-hot).
    objs = voc2007_listing("test")
    images = []
    for p, c, _ in objs:
        if not images or images[-1][0] != p:
            images.append((p, set()))
        images[-1][1].add(c)
    targets = [sorted(cs) for _, cs in images]
    if os.environ.get("CB_VOC2007"):
        spec = importlib.util.spec_from_file_location("cb_voc2007", os.environ["CB_VOC2007"])
        cb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cb)
        ds = cb.PASCALVoc2007(OUT, "test")
        theirs = [sorted(int(k) for k in row.nonzero().flatten()) for row in ds.labels]
        assert theirs == targets, (theirs, targets)
        print("voc2007_multilabel/test: CLIP_benchmark's own multi-hot labels are identical")
    out["voc2007_multilabel/test"] = {"samples": listing(None, [(p, t[0] if t else 0) for (p, _), t in zip(images, targets)]),
                                      "targets": targets, "classes": VOC_CLASSES}
    pairs, classes = objectnet_listing()
    out["objectnet/test"] = {"samples": listing(None, pairs), "classes": classes}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print({k: len(v["samples"]) for k, v in out.items()})


if __name__ == "__main__":
    main()
