"""Dev-time: writes tests/fixtures/cifar, a miniature of torchvision's CIFAR downloads in the
originals' own pickle form (Python 2 cPickle protocol 2: byte-string keys, the image array as
numpy.core.multiarray._reconstruct + BUILD with a BINSTRING), and the same images as PNG
ImageFolders (written by PIL from the arrays, as torchvision's `Image.fromarray` sees them), so
the tests can hold the CIFAR reader to the PNG path. Checks first that Python reads each batch
back as torchvision does (`pickle.load(f, encoding="latin1")`).

    python3 scripts/dev/make_cifar_fixture.py   # needs numpy and Pillow
"""
import os
import pickle
import struct
import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "cifar")
C10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def s(b):  # SHORT_BINSTRING (Python 2 str under 256 bytes)
    return b"U" + bytes([len(b)]) + b


class Writer:
    def __init__(self):
        self.memo = 0

    def put(self):
        self.memo += 1
        return b"q" + bytes([self.memo])

    def array(self, a):
        assert a.dtype == np.uint8 and a.ndim == 2
        n, w = a.shape
        out = b"cnumpy.core.multiarray\n_reconstruct\n" + self.put()
        out += b"cnumpy\nndarray\n" + self.put() + b"K\x00\x85" + s(b"b") + b"\x87R" + self.put()
        out += b"(K\x01" + b"M" + struct.pack("<H", n) + b"M" + struct.pack("<H", w) + b"\x86"
        out += b"cnumpy\ndtype\n" + self.put() + s(b"u1") + b"K\x00K\x01\x87R" + self.put()
        out += b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        out += b"\x89T" + struct.pack("<I", a.nbytes) + a.tobytes() + b"tb"
        return out

    def int_list(self, xs):
        return b"]" + self.put() + b"(" + b"".join(b"K" + bytes([x]) for x in xs) + b"e"

    def str_list(self, xs):
        return b"]" + self.put() + b"(" + b"".join(s(x.encode()) for x in xs) + b"e"


def batch(items):
    w = Writer()
    body = b"\x80\x02}" + w.put() + b"("
    for key, kind, v in items:
        body += s(key.encode()) + w.put()
        body += {"array": w.array, "ints": w.int_list, "strs": w.str_list}[kind](v) if kind != "str" else s(v.encode())
    return body + b"u."


def photo(rng, n):
    y, x = np.mgrid[0:32, 0:32]
    imgs = []
    for _ in range(n):
        a = np.stack([x * rng.uniform(2, 8), y * rng.uniform(2, 8), (x + y) * rng.uniform(1, 4)], -1)
        a = a + rng.normal(0, 30, (32, 32, 3)) + 60 * np.sin(x / rng.uniform(2, 6))[..., None]
        imgs.append(np.clip(a, 0, 255).astype(np.uint8))
    return np.stack(imgs)  # N, 32, 32, 3 (HWC, as torchvision transposes it)


def write(path, items, images, labels):
    raw = batch(items)
    open(path, "wb").write(raw)
    d = pickle.load(open(path, "rb"), encoding="latin1")  # torchvision's read
    for key, kind, v in items:
        if kind == "array":
            assert np.array_equal(d[key], v), key
        else:
            assert d[key] == v, key
    back = d["data"].reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
    assert np.array_equal(back, images)


def main():
    rng = np.random.default_rng(0)
    c10 = os.path.join(OUT, "cifar-10-batches-py")
    c100 = os.path.join(OUT, "cifar-100-python")
    os.makedirs(c10, exist_ok=True)
    os.makedirs(c100, exist_ok=True)
    folders = os.path.join(OUT, "folders")
    sets = []
    for i in range(1, 6):
        sets.append((os.path.join(c10, f"data_batch_{i}"), "cifar10/train", [2 * i - 2, 2 * i - 1]))
    sets.append((os.path.join(c10, "test_batch"), "cifar10/test", [3, 0, 9, 3, 5, 1]))
    sets.append((os.path.join(c100, "train"), "cifar100/train", [0, 1, 2, 99, 50, 1]))
    sets.append((os.path.join(c100, "test"), "cifar100/test", [1, 99, 0, 2]))
    c100_names = [f"class{i:02d}" for i in range(100)]
    for path, where, labels in sets:
        imgs = photo(rng, len(labels))
        data = imgs.transpose((0, 3, 1, 2)).reshape(len(labels), 3072)
        names = [f"img_{where.replace('/', '_')}_{k}.png" for k in range(len(labels))]
        if where.startswith("cifar10/"):
            items = [("batch_label", "str", "batch"), ("labels", "ints", labels), ("data", "array", data),
                     ("filenames", "strs", names)]
        else:
            items = [("filenames", "strs", names), ("batch_label", "str", "batch"), ("fine_labels", "ints", labels),
                     ("coarse_labels", "ints", [l // 5 for l in labels]), ("data", "array", data)]
        write(path, items, imgs, labels)
        cls_names = C10 if where.startswith("cifar10/") else c100_names
        for k, (img, l) in enumerate(zip(imgs, labels)):
            d = os.path.join(folders, where, cls_names[l])
            os.makedirs(d, exist_ok=True)
            # The batch file and index, so the tests can pair each PNG with its CIFAR row.
            Image.fromarray(img).save(os.path.join(d, f"{os.path.basename(path)}-{k}.png"))
    meta10 = b"\x80\x02}q\x01(" + s(b"num_cases_per_batch") + b"K\x02" + s(b"label_names") + b"]q\x02(" + b"".join(
        s(n.encode()) for n in C10) + b"e" + s(b"num_vis") + b"M\x00\x0cu."
    open(os.path.join(c10, "batches.meta"), "wb").write(meta10)
    assert pickle.load(open(os.path.join(c10, "batches.meta"), "rb"), encoding="latin1")["label_names"] == C10
    meta100 = b"\x80\x02}q\x01(" + s(b"fine_label_names") + b"]q\x02(" + b"".join(
        s(n.encode()) for n in c100_names) + b"e" + s(b"coarse_label_names") + b"]q\x03(" + b"".join(
        s(f"super{i:02d}".encode()) for i in range(20)) + b"eu."
    open(os.path.join(c100, "meta"), "wb").write(meta100)
    assert pickle.load(open(os.path.join(c100, "meta"), "rb"), encoding="latin1")["fine_label_names"] == c100_names
    print("wrote", OUT)


if __name__ == "__main__":
    main()
