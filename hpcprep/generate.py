"""``hpcprep generate``: a seeded synthetic click-log-like dataset with known mess.

Features are float32 with per-feature offsets and scales; the binary label
follows a logistic model of the standardized features (a real signal to learn).
Mess at known rates: rows with a NaN, rows with an extreme outlier, exact
duplicate rows (features and label copied from a clean row of the same file),
and one constant feature. Each file is a pure function of ``(seed, file index)``,
so the dataset is the same for any number of ranks; under mpiexec rank r writes
files r, r + size, ...
"""

import json
import os

import h5py
import numpy as np

from .mpi.agree import write_line

NAN_RATE = 0.01
OUTLIER_RATE = 0.005
DUPLICATE_RATE = 0.02
OUTLIER_SIGMAS = 1000.0
BLOCK_ROWS = 1 << 18


def ground_truth(n_features: int, seed: int) -> dict:
    """The generating model: feature offsets and scales, label weights and bias."""
    rng = np.random.default_rng([seed, 0xC0FFEE])
    d = n_features
    offsets = rng.normal(0, 10, d)
    scales = rng.uniform(0.5, 20, d)
    weights = rng.normal(0, 1, d) * (rng.uniform(size=d) < 0.7)
    constant = d - 1 if d > 1 else -1
    if constant >= 0:
        weights[constant] = 0.0
    return {"offsets": offsets, "scales": scales, "weights": weights, "bias": -0.3,
            "constant_feature": constant}


def _block(rng, rows, truth):
    d = len(truth["offsets"])
    z = rng.standard_normal((rows, d))
    logits = z @ truth["weights"] + truth["bias"]
    y = (rng.uniform(size=rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
    x = (z * truth["scales"] + truth["offsets"]).astype(np.float32)
    if truth["constant_feature"] >= 0:
        x[:, truth["constant_feature"]] = 1.0
    return x, y


def _add_mess(rng, x, y, truth):
    """Put NaNs, outliers and duplicates into disjoint sets of rows; return their counts."""
    n, d = x.shape
    counts = {"nan_rows": 0, "outlier_rows": 0, "duplicate_rows": 0}
    if n < 4 or d == 0:
        return counts
    n_nan = rng.binomial(n, NAN_RATE)
    n_out = rng.binomial(n, OUTLIER_RATE)
    n_dup = rng.binomial(n, DUPLICATE_RATE)
    n_dup = min(n_dup, max(0, (n - n_nan - n_out) // 2))
    perm = rng.permutation(n)
    nan_rows = perm[:n_nan]
    out_rows = perm[n_nan:n_nan + n_out]
    dup_rows = perm[n_nan + n_out:n_nan + n_out + n_dup]
    clean = perm[n_nan + n_out + n_dup:]
    variable = [j for j in range(d) if j != truth["constant_feature"]] or [0]
    x[nan_rows, rng.choice(variable, len(nan_rows))] = np.nan
    cols = rng.choice(variable, len(out_rows))
    signs = rng.choice([-1.0, 1.0], len(out_rows))
    x[out_rows, cols] = (truth["offsets"][cols] + signs * OUTLIER_SIGMAS * truth["scales"][cols]
                         ).astype(np.float32)
    sources = rng.choice(clean, len(dup_rows))
    x[dup_rows] = x[sources]
    y[dup_rows] = y[sources]
    counts.update(nan_rows=len(nan_rows), outlier_rows=len(out_rows), duplicate_rows=len(dup_rows))
    return counts


def write_file(path: str, rows: int, n_features: int, seed: int, file_index: int) -> dict:
    """Write one generated HDF5 file (datasets ``features`` and ``labels``); return its counts."""
    truth = ground_truth(n_features, seed)
    totals = {"rows": rows, "nan_rows": 0, "outlier_rows": 0, "duplicate_rows": 0}
    tmp = path + ".part"
    with h5py.File(tmp, "w") as f:
        fx = f.create_dataset("features", (rows, n_features), dtype=np.float32,
                              chunks=(min(max(rows, 1), 16384), max(n_features, 1)) if rows else None)
        fy = f.create_dataset("labels", (rows,), dtype=np.int64)
        fx.attrs["feature_names"] = np.array([f"f{i}" for i in range(n_features)],
                                             dtype=h5py.string_dtype())
        for b, lo in enumerate(range(0, rows, BLOCK_ROWS)):
            n = min(BLOCK_ROWS, rows - lo)
            rng = np.random.default_rng([seed, file_index, b])
            x, y = _block(rng, n, truth)
            for k, v in _add_mess(rng, x, y, truth).items():
                totals[k] += v
            fx[lo:lo + n] = x
            fy[lo:lo + n] = y
        f.attrs["seed"] = seed
        f.attrs["file_index"] = file_index
        f.attrs["rates"] = json.dumps({"nan": NAN_RATE, "outlier": OUTLIER_RATE,
                                       "duplicate": DUPLICATE_RATE, "outlier_sigmas": OUTLIER_SIGMAS})
        f.attrs["ground_truth"] = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                              for k, v in truth.items()})
        f.attrs["counts"] = json.dumps(totals)
    os.replace(tmp, path)
    return totals


def generate(out: str, rows: int, n_features: int, n_files: int, seed: int, comm=None,
             quiet: bool = False) -> dict | None:
    """Generate a dataset of ``n_files`` HDF5 files under ``out`` (collective over ``comm``).

    Parameters
    ----------
    out : str
        Folder to write (created); files are ``part-00000.h5``, ...
    rows, n_features, n_files, seed : int
    comm : communicator, optional
        Ranks share the files round robin; rank 0 writes ``truth.json``.

    Returns
    -------
    dict on rank 0: the totals (rows, nan_rows, outlier_rows, duplicate_rows) and file list.
    """
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    if rank == 0:
        os.makedirs(out, exist_ok=True)
    if comm is not None:
        comm.Barrier()
    per_file = [rows // n_files + (i < rows % n_files) for i in range(n_files)]
    mine = {}
    for i in range(rank, n_files, size):
        path = os.path.join(out, f"part-{i:05d}.h5")
        mine[i] = write_file(path, per_file[i], n_features, seed, i)
        if not quiet:
            write_line(f"[hpcprep generate] rank {rank}: wrote {path} ({per_file[i]:,} rows)")
    parts = comm.gather(mine, root=0) if comm is not None else [mine]
    if rank != 0:
        return None
    by_file = {k: v for p in parts for k, v in p.items()}
    totals = {k: sum(by_file[i][k] for i in range(n_files)) for k in
              ("rows", "nan_rows", "outlier_rows", "duplicate_rows")}
    truth = ground_truth(n_features, seed)
    summary = {**totals, "files": [f"part-{i:05d}.h5" for i in range(n_files)], "seed": seed,
               "n_features": n_features,
               "ground_truth": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in truth.items()}}
    with open(os.path.join(out, "truth.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary
