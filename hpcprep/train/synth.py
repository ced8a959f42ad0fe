"""Small synthetic datasets in the output format (docs/FORMAT.md), for tests, demos and benchmarks.

This is a fixture writer, not the pipeline's writer (``hpcprep/output``): it
writes in-memory arrays as shards + master ``data.h5`` (virtual datasets with
relative source paths) + ``manifest.json``, exactly the documented layout, so
that the loader and the trainer can be exercised without running the pipeline.
"""

import json
import os
import zlib
from pathlib import Path

import h5py
import numpy as np

from .. import __version__


def shard_crc32(ids, features, labels=None, weights=None) -> int:
    """``zlib.crc32`` over ids, features, labels, weights (little-endian C-order bytes, chained)."""
    crc = 0
    for a in (ids, features, labels, weights):
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        crc = zlib.crc32(a.tobytes(), crc)
    return crc


def write_dataset(path, features, labels=None, shard_rows=None, *, ids=None, seed=0,
                  feature_names=None) -> Path:
    """Write ``features`` (n, d) and ``labels`` (n,) as an hpcprep dataset folder.

    Parameters
    ----------
    path : path-like
        Folder to create (must not exist or be empty).
    features : ndarray (n, d)
    labels : ndarray (n,), optional
    shard_rows : list of int, optional
        Rows per shard, in order (zeros allowed); default: one shard.
    ids : ndarray of int64, optional
        Global ids; default ``arange(n)``.
    seed : int
        Recorded in the manifest.
    feature_names : list of str, optional

    Returns
    -------
    Path
        The dataset folder.
    """
    path = Path(path)
    features = np.asarray(features)
    n, d = features.shape
    if shard_rows is None:
        shard_rows = [n]
    if sum(shard_rows) != n:
        raise ValueError(f"shard_rows sum to {sum(shard_rows)}, not {n}")
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    names = feature_names or [f"f{j}" for j in range(d)]
    (path / "shards").mkdir(parents=True, exist_ok=True)
    shards = _write_shards(path, features, labels, ids, shard_rows)
    columns = [("features", features)] + ([("labels", labels)] if labels is not None else []) \
        + [("ids", ids)]
    _write_master(path, columns, shards, features, names, seed)
    manifest = {
        "format": "hpcprep-dataset", "format_version": 1, "hpcprep_version": __version__,
        "rows": int(n), "n_features": int(d), "feature_names": names,
        "feature_dtype": str(features.dtype), "label": labels is not None,
        "label_dtype": None if labels is None else str(np.asarray(labels).dtype),
        "weights": False, "seed": seed, "master": "data.h5", "shards": shards, "splits": {},
    }
    _write_json(path / "manifest.json", manifest)
    return path


def _write_shards(path: Path, features, labels, ids, shard_rows) -> list[dict]:
    """Write one shard file per entry of ``shard_rows``; their manifest entries."""
    shards = []
    start = 0
    for k, rows in enumerate(shard_rows):
        rel = f"shards/part-{k:05d}.h5"
        sl = slice(start, start + rows)
        with h5py.File(path / rel, "w") as f:
            f.create_dataset("features", data=features[sl])
            f.create_dataset("ids", data=ids[sl])
            if labels is not None:
                f.create_dataset("labels", data=labels[sl])
        crc = shard_crc32(ids[sl], features[sl], None if labels is None else labels[sl])
        shards.append({"path": rel, "start": start, "rows": int(rows), "crc32": int(crc)})
        start += rows
    return shards


def _write_master(path: Path, columns, shards, features, names, seed) -> None:
    """Write ``data.h5``: virtual datasets over the shards, attributes and ``/stats``."""
    n, d = features.shape
    with h5py.File(path / "data.h5", "w") as f:
        for name, arr in columns:
            if n == 0:
                f.create_dataset(name, data=arr)
                continue
            layout = h5py.VirtualLayout(shape=arr.shape, dtype=arr.dtype)
            for s in shards:
                if s["rows"] == 0:
                    continue
                src = h5py.VirtualSource(s["path"], name, shape=(s["rows"],) + arr.shape[1:])
                layout[s["start"]:s["start"] + s["rows"]] = src
            f.create_virtual_dataset(name, layout)
        f.attrs["hpcprep_version"] = __version__
        f.attrs["seed"] = seed
        f.attrs["config"] = ""
        f.attrs["rows"] = n
        f.attrs["feature_names"] = json.dumps(names)
        f.attrs["counts"] = "{}"
        st = f.create_group("stats")
        st["mean"] = features.mean(axis=0) if n else np.zeros(d)
        st["std"] = features.std(axis=0) if n else np.zeros(d)


def write_split_root(path, splits: dict) -> Path:
    """Write the top-level manifest of a split dataset whose splits are subfolders of ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    first = json.loads((path / next(iter(splits.values())) / "manifest.json").read_text())
    manifest = {k: first[k] for k in ("format", "format_version", "hpcprep_version",
                                      "n_features", "feature_names", "feature_dtype", "label",
                                      "label_dtype", "weights", "seed")}
    manifest.update(rows=0, master=None, shards=[], splits=dict(splits))
    _write_json(path / "manifest.json", manifest)
    return path


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def linear_problem(n: int, d: int, seed: int = 0, noise: float = 1.0, classes: int = 2):
    """A linear signal with a noisy label: ``(x float32 (n, d), y int64 (n,))``.

    Binary (``classes=2``): ``y = [x @ w + noise * logistic > 0]``. Multi-class:
    ``y = argmax(x @ W + noise * gumbel)``. Features are standardized normal.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    if classes == 2:
        w = rng.standard_normal(d)
        z = x @ w / np.sqrt(d) * 3.0 + noise * rng.logistic(size=n)
        y = (z > 0).astype(np.int64)
    else:
        w = rng.standard_normal((d, classes))
        z = x @ w / np.sqrt(d) * 3.0 + noise * rng.gumbel(size=(n, classes))
        y = z.argmax(axis=1).astype(np.int64)
    return x.astype(np.float32), y


def make_linear_dataset(path, n: int = 2000, d: int = 8, seed: int = 0, val_fraction: float = 0.25,
                        shards: int = 3, classes: int = 2, noise: float = 1.0) -> Path:
    """Write a split dataset ``path/{train,val}`` from :func:`linear_problem`."""
    path = Path(path)
    x, y = linear_problem(n, d, seed, noise, classes)
    n_val = int(round(n * val_fraction))
    n_tr = n - n_val
    for name, sl in (("train", slice(0, n_tr)), ("val", slice(n_tr, n))):
        rows = sl.stop - sl.start
        parts = [rows // shards + (k < rows % shards) for k in range(shards)]
        write_dataset(path / name, x[sl], y[sl], parts, ids=np.arange(n)[sl], seed=seed)
    return write_split_root(path, {"train": "train", "val": "val"})
