"""Dev-time: writes tests/fixtures/hdf5, small HDF5 files from h5py in the storage forms the
reader in src/data/hdf5.rs must handle, and `expected.json`: per file and dataset the shape,
numpy dtype and sha256 of the C-order bytes h5py reads back (or, for forms we refuse, the
words the error must contain).

    /tmp/venv/bin/python scripts/dev/make_hdf5_fixture.py   # h5py, numpy
"""
import hashlib
import json
import os
import shutil

import h5py
import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "hdf5")
rng = np.random.default_rng(3)
# Image-like: smooth with noise, so that deflate has something to do.
X = (np.add.outer(np.arange(5 * 7), np.arange(6 * 3)).reshape(5, 7, 6, 3) * 3
     + rng.integers(0, 8, (5, 7, 6, 3))).astype(np.uint8)


def write(name, libver, build, **kw):
    path = os.path.join(OUT, name)
    with h5py.File(path, "w", libver=libver, **kw) as f:
        build(f)
    return path


def lowlevel(f, name, data, layout, early=False):
    """A dataset created through the low-level API (compact or implicit-index layouts)."""
    space = h5py.h5s.create_simple(data.shape)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    if layout == "compact":
        dcpl.set_layout(h5py.h5d.COMPACT)
    else:
        dcpl.set_chunk(layout)
    if early:
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    tid = h5py.h5t.py_create(data.dtype)
    ds = h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))


def sparse(f):
    d = f.create_dataset("x", shape=(3, 40, 30), dtype="u1", chunks=(2, 10, 10), compression="gzip")
    d[1, 12:19, 3:9] = X[0, :, :, 0] + 1
    d[2, 39, 29] = 7


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    labels = (np.arange(2000) % 3).reshape(2000, 1, 1, 1).astype(np.uint8)
    files = {
        # h5py's defaults with the oldest format: superblock 0, symbol-table groups.
        "contiguous_v0.h5": ("earliest", lambda f: f.create_dataset("x", data=X), {}),
        "chunked_filters_v0.h5": ("earliest", lambda f: [
            f.create_dataset("x", data=X, chunks=(2, 4, 4, 3), compression="gzip", shuffle=True, fletcher32=True),
            f.create_dataset("y", data=np.arange(50, dtype=">i2").reshape(5, 10) * 37 - 900, chunks=(2, 3),
                             compression="gzip", shuffle=True)], {}),
        # Many names in one symbol-table group (several symbol nodes), a user block before it all.
        "many_v0.h5": ("earliest", lambda f: [f.create_dataset(f"d{i:02}", data=np.full((2, 2), i, ">i2"))
                                             for i in range(20)] + [f.create_dataset("x", data=X)],
                       {"userblock_size": 512}),
        # HDF5 1.10+: superblock 3, v2 object headers, link messages, layout 4 indexes.
        "fixed_array_latest.h5": ("latest", lambda f: f.create_dataset(
            "x", data=X, chunks=(1, 7, 6, 3), compression="gzip"), {}),
        "paged_latest.h5": ("latest", lambda f: f.create_dataset("y", data=labels, chunks=(1, 1, 1, 1)), {}),
        "single_chunk_latest.h5": ("latest", lambda f: f.create_dataset(
            "x", data=X, chunks=X.shape, compression="gzip", shuffle=True), {}),
        "implicit_latest.h5": ("latest", lambda f: lowlevel(f, "x", X, (2, 3, 6, 3), early=True), {}),
        "floats_v0.h5": ("earliest", lambda f: f.create_dataset("x", data=np.linspace(-1, 1, 6, dtype="<f4").reshape(2, 3)), {}),
        # Chunks never written read as zeros (the default fill value), as h5py reads them.
        "sparse_v0.h5": ("earliest", sparse, {}),
        "compact_v0.h5": ("earliest", lambda f: lowlevel(f, "y", np.array([[1.5], [0.25], [-2.0]], ">f4"), "compact"), {}),
        "v18.h5": ("v108", lambda f: f.create_dataset("x", data=X, chunks=(3, 5, 4, 3), compression="gzip"), {}),
        # Refused: unlimited dimensions index their chunks otherwise.
        "extensible_latest.h5": ("latest", lambda f: f.create_dataset(
            "x", data=X, chunks=(1, 7, 6, 3), maxshape=(None, 7, 6, 3)), {}),
    }
    expected = {}
    for name, (libver, build, kw) in files.items():
        path = write(name, libver, build, **kw)
        entry = {}
        with h5py.File(path, "r") as f:
            for key in f:
                a = f[key][()]
                entry[key] = {"shape": list(a.shape), "dtype": a.dtype.str,
                              "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
        expected[name] = entry
    expected["extensible_latest.h5"] = {"error": "unlimited dimensions"}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print({k: sorted(v) for k, v in expected.items()})


if __name__ == "__main__":
    main()
