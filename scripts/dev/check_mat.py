"""Dev-time: holds our MAT-file reader (`pyramidclip dev mat FILE`) to scipy.io.loadmat on
random files scipy writes: every numeric class, logical, char arrays (rows, empty, non-ASCII),
cell arrays and structs nested in each other, empty values, row/column/matrix shapes, plain and
compressed. Prints the number of files and variables compared; exits 1 on the first mismatch.

    /tmp/venv/bin/python scripts/dev/check_mat.py target/release/pyramidclip [N]
"""
import json
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
import scipy.io as sio

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 60
rng = random.Random(3)
NUMERIC = [np.float64, np.float32, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
           np.int64, np.uint64, np.bool_]
WORDS = ["", "a", "AM General Hummer SUV 2000", "image_00001.jpg", "ünï", "x y", "Ford F-150"]


def shape():
    return rng.choice([(1, rng.randint(0, 6)), (rng.randint(0, 5), 1), (rng.randint(1, 3), rng.randint(1, 4)), (0, 0)])


def value(depth=0):
    k = rng.choice(["num", "num", "str", "cell", "struct"] if depth < 3 else ["num", "str"])
    if k == "num":
        t = rng.choice(NUMERIC)
        if t is np.bool_:
            return np.array(rng.choices([True, False], k=6)[: rng.randint(0, 6)], dtype=t)[None, :]
        hi = 100 if np.issubdtype(t, np.integer) else 1e6
        s = shape()
        return np.array([rng.uniform(0, hi) for _ in range(int(np.prod(s)))]).astype(t).reshape(s)
    if k == "str":
        return rng.choice(WORDS)
    if k == "cell":
        s = shape()
        c = np.empty(s, dtype=object)
        for idx in np.ndindex(s):
            c[idx] = value(depth + 1)
        return c
    fields = rng.sample(["fname", "class", "bbox_x1", "names", "z"], rng.randint(1, 4))
    s = (1, rng.randint(1, 4))
    st = np.zeros(s, dtype=[(f, "O") for f in fields])
    for idx in np.ndindex(s):
        st[idx] = tuple(value(depth + 1) for _ in fields)
    return st


def ours_of(x):
    """scipy's loadmat(squeeze_me=False, chars_as_strings=True) value in our JSON form."""
    if isinstance(x, np.ndarray) and x.dtype.names:
        dims = list(x.shape)
        # column-major element order
        items = [[ours_of(e[f]) for f in x.dtype.names] for e in x.flatten(order="F")]
        return {"struct": dims, "fields": list(x.dtype.names), "items": items}
    if isinstance(x, np.ndarray) and x.dtype == object:
        return {"cell": list(x.shape), "items": [ours_of(e) for e in x.flatten(order="F")]}
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        rows = [str(r) for r in x.flatten(order="F")]
        return {"char_rows": rows}
    x = np.asarray(x)
    return {"num": list(x.shape), "data": [float(v) for v in x.flatten(order="F")]}


def normal(j):
    if "char" in j:  # ours keeps the dims; scipy gives the rows
        return {"char_rows": j["rows"]}
    if "cell" in j:
        return {"cell": j["cell"], "items": [normal(e) for e in j["items"]]}
    if "struct" in j:
        return {"struct": j["struct"], "fields": j["fields"], "items": [[normal(e) for e in el] for el in j["items"]]}
    return j


def main():
    vars_n = 0
    with tempfile.TemporaryDirectory() as d:
        for i in range(N):
            data = {f"v{j}": value() for j in range(rng.randint(1, 4))}
            path = os.path.join(d, f"{i}.mat")
            sio.savemat(path, data, do_compression=bool(i % 2))
            want = {k: ours_of(v) for k, v in sio.loadmat(path, chars_as_strings=True).items()
                    if not k.startswith("__")}
            out = subprocess.run([BIN, "dev", "mat", path], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"file {i}: {out.stderr.strip()}")
                sys.exit(1)
            got = {k: normal(v) for k, v in json.loads(out.stdout).items()}
            if json.dumps(got, sort_keys=True) != json.dumps(want, sort_keys=True):
                print(f"file {i} differs:\n ours  {json.dumps(got, sort_keys=True)[:2000]}\n scipy {json.dumps(want, sort_keys=True)[:2000]}")
                sys.exit(1)
            vars_n += len(want)
    print(f"{N} files, {vars_n} variables: identical to scipy.io.loadmat")


if __name__ == "__main__":
    main()
