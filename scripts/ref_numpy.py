"""REF-1 baseline: the pipeline as one expert would write it in NumPy + h5py, single process.

dropna -> dedup -> outliers (|z| > threshold) -> standard scale -> shuffle -> HDF5,
with hpcprep's semantics (DESIGN §2-§3, the steps' docstrings):

- every row's global id is its position in the ordered input (files sorted, rows in order);
- ``dropna`` drops rows with a NaN feature (or a NaN float label);
- ``dedup`` drops exact duplicate rows (features, and the label unless ``--dedup-features-only``;
  -0.0 equals 0.0), keeping the occurrence with the smallest global id;
- ``outliers`` (zscore, action drop) uses the mean and the population std (ddof = 0, float64)
  of the rows left after dedup and drops every row with some ``|(x - mean) / std| > threshold``
  (computed in float64 in that order, as hpcprep does); a feature with zero std never flags a row;
- ``scale`` (standard) uses the mean and population std of the rows left after the outliers
  (std 0 -> 1) and computes ``(x - mean) / std`` in float64, stored as float32;
- ``shuffle`` orders rows by ``splitmix64(stream_base(seed, 2**32) ^ id)`` (the first sampling
  layer's stream), so the output rows come in the same order as hpcprep's.

How it is written (what "expert" means here): one read of every file straight into one
preallocated array (``read_direct``), no copy of the data set: NaN test and row hashes in one
blocked pass, dedup on the 64-bit hashes (sorted, equal neighbours confirmed row by row), the
statistics as blocked float64 Chan merges over the kept rows, and scaling fused into the
final gather in output order, written in blocks. Every pass works on cache-sized blocks.

The step list is configurable (``--steps dropna,dedup,outliers,scale``) so the benchmark can run
the steps hpcprep has.

Usage::

    python scripts/ref_numpy.py --out out.h5 --seed 7 raw/part-*.h5

prints one JSON line: rows in/out, per-step drops, seconds per phase, peak RSS.
"""

import argparse
import glob
import json
import resource
import sys
import time

import h5py
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1
SAMPLE_STREAM = 1 << 32  # hpcprep.layers.sample.SAMPLE_STREAM: stream of sampling layer 0
BLOCK = 1 << 15          # rows per block in the blocked passes (4 MiB of float32 x 32)


def _mix_int(x: int) -> int:
    z = (x + int(GOLDEN)) & _MASK
    z = ((z ^ (z >> 30)) * int(_M1)) & _MASK
    z = ((z ^ (z >> 27)) * int(_M2)) & _MASK
    return z ^ (z >> 31)


def splitmix64_inplace(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array, in place (wrapping arithmetic)."""
    t = np.empty_like(z)
    z += GOLDEN
    np.right_shift(z, np.uint64(30), out=t)
    z ^= t
    z *= _M1
    np.right_shift(z, np.uint64(27), out=t)
    z ^= t
    z *= _M2
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
    return z


def shuffle_keys(seed: int, ids: np.ndarray, stream: int = SAMPLE_STREAM) -> np.ndarray:
    base = _mix_int(_mix_int(seed & _MASK) ^ (stream & _MASK))
    z = ids.astype(np.uint64)
    z ^= np.uint64(base)
    return splitmix64_inplace(z)


class _Moments:
    """Column count, mean, M2 in float64, merged block by block (Chan et al.)."""

    def __init__(self, d):
        self.n, self.mean, self.m2 = 0, np.zeros(d), np.zeros(d)

    def add(self, block32: np.ndarray):
        nb = block32.shape[0]
        if nb == 0:
            return
        b = block32.astype(np.float64)
        bm = b.sum(axis=0) / nb
        b -= bm
        b *= b
        bm2 = b.sum(axis=0)
        n = self.n + nb
        delta = bm - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + bm2 + delta * delta * (self.n * nb / n)
        self.n = n

    @property
    def std(self):
        return np.sqrt(self.m2 / self.n) if self.n else np.full_like(self.mean, np.nan)


def read_all(files, features="features", label="labels"):
    """One read of every file into one preallocated array per column."""
    sizes, d, fdt, ldt = [], None, None, None
    handles = [h5py.File(p, "r") for p in files]
    try:
        for f in handles:
            ds = f[features]
            sizes.append(ds.shape[0])
            d, fdt = ds.shape[1], ds.dtype
            if label:
                ldt = f[label].dtype
        n = sum(sizes)
        x = np.empty((n, d), dtype=np.float32)
        y = np.empty(n, dtype=ldt) if label else None
        lo = 0
        for f, m in zip(handles, sizes):
            if m:
                if fdt == np.float32:
                    f[features].read_direct(x, dest_sel=np.s_[lo:lo + m])
                else:
                    x[lo:lo + m] = f[features][...]
                if label:
                    f[label].read_direct(y, dest_sel=np.s_[lo:lo + m])
            lo += m
    finally:
        for f in handles:
            f.close()
    return x, y


def _row_hash(xb: np.ndarray, yb, mult: np.ndarray) -> np.ndarray:
    """64-bit hash of each row of a float32 block (+ label): multilinear over words, then mixed."""
    xb = xb + np.float32(0)  # -0.0 -> +0.0 (copy of the block; NaN rows are dropped before)
    nbytes = xb.shape[1] * 4
    if nbytes % 8:
        xb = np.concatenate([xb, np.zeros((len(xb), 1), np.float32)], axis=1)
    words = xb.view(np.uint64)
    h = (words * mult[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
    if yb is not None:
        if yb.dtype.kind == "f":
            yw = (yb.astype(np.float64) + 0.0).view(np.uint64)   # -0.0 -> +0.0
        else:
            yw = yb.astype(np.int64).view(np.uint64)
        h ^= yw
    return splitmix64_inplace(h)


def _rows_equal(x, y, a, b):
    eq = (x[a] == x[b]).all(axis=1)
    if y is not None:
        eq &= y[a] == y[b]
    return eq


def dedup_mask(x, y, keep, hashes):
    """Drop exact duplicates among the kept rows, keeping the smallest id (row index)."""
    cand = np.flatnonzero(keep)
    h = hashes[cand]
    order = np.argsort(h)
    hs = h[order]
    same = hs[1:] == hs[:-1]
    if not same.any():
        return 0
    # groups of equal hashes with more than one row
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    sizes = np.diff(np.append(starts, len(hs)))
    multi = sizes > 1
    g_start, g_size = starts[multi], sizes[multi]
    g_off = np.concatenate([[0], np.cumsum(g_size)[:-1]])
    group_of = np.repeat(np.arange(len(g_start)), g_size)
    pos = np.repeat(g_start, g_size) + (np.arange(int(g_size.sum())) - np.repeat(g_off, g_size))
    members = cand[order[pos]]
    first = np.minimum.reduceat(members, g_off)
    rep = first[group_of]
    other = members != rep
    eq = _rows_equal(x, y, members[other], rep[other])
    if eq.all():
        drop = members[other]
    else:  # a hash collision between different rows: settle those groups exactly
        bad_groups = np.unique(group_of[other][~eq])
        drop = list(members[other][~np.isin(group_of[other], bad_groups)])
        for g in bad_groups:
            rows = np.sort(members[group_of == g])
            seen = []
            for r in rows:
                if any(_rows_equal(x, y, np.array([r]), np.array([s]))[0] for s in seen):
                    drop.append(r)
                else:
                    seen.append(r)
        drop = np.asarray(drop, dtype=np.int64)
    keep[drop] = False
    return len(drop)


def moments_of(x, keep):
    mom = _Moments(x.shape[1])
    for lo in range(0, len(x), BLOCK):
        k = keep[lo:lo + BLOCK]
        mom.add(x[lo:lo + BLOCK][k])
    return mom


def run(files, out, seed, steps, threshold=6.0, features="features", label="labels",
        dedup_label=True, timings=None):
    """Run the reference pipeline; return the summary dict (also the JSON the CLI prints)."""
    t = timings if timings is not None else {}
    t0 = time.perf_counter()
    x, y = read_all(files, features, label)
    n, d = x.shape
    t["read"] = time.perf_counter() - t0
    drops = {}

    t1 = time.perf_counter()
    keep = np.ones(n, dtype=bool)
    want_hash = "dedup" in steps
    hashes = np.empty(n, dtype=np.uint64) if want_hash else None
    mult = (splitmix64_inplace(np.arange(1, 64, dtype=np.uint64)) | np.uint64(1))
    for lo in range(0, n, BLOCK):
        xb = x[lo:lo + BLOCK]
        if "dropna" in steps:
            bad = np.isnan(xb).any(axis=1)
            if y is not None and y.dtype.kind == "f":
                bad |= np.isnan(y[lo:lo + BLOCK])
            keep[lo:lo + BLOCK] = ~bad
        if want_hash:
            hashes[lo:lo + BLOCK] = _row_hash(xb, y[lo:lo + BLOCK] if (y is not None and dedup_label)
                                              else None, mult)
    drops["dropna"] = int(n - keep.sum()) if "dropna" in steps else 0
    t["dropna+hash"] = time.perf_counter() - t1

    if want_hash:
        t1 = time.perf_counter()
        drops["dedup"] = dedup_mask(x, y if dedup_label else None, keep, hashes)
        del hashes
        t["dedup"] = time.perf_counter() - t1

    mean = np.zeros(d)
    std = np.ones(d)
    if "outliers" in steps:
        t1 = time.perf_counter()
        mom = moments_of(x, keep)
        # z = (x - mean) / std as hpcprep computes it (same rounding at the threshold);
        # a zero-variance feature divides by inf: z = 0, never an outlier
        std_z = np.where(mom.std > 0, mom.std, np.inf)
        scale_mom = _Moments(d)
        before = int(keep.sum())
        for lo in range(0, n, BLOCK):
            k = keep[lo:lo + BLOCK]
            b = x[lo:lo + BLOCK][k].astype(np.float64)
            b -= mom.mean
            b /= std_z
            np.abs(b, out=b)
            out_rows = (b > threshold).any(axis=1)
            idx = np.flatnonzero(k)
            k[idx[out_rows]] = False          # k is a view of keep
            if "scale" in steps:
                scale_mom.add(x[lo:lo + BLOCK][k])
        drops["outliers"] = before - int(keep.sum())
        t["outliers"] = time.perf_counter() - t1
    else:
        scale_mom = None
    if "scale" in steps:
        t1 = time.perf_counter()
        if scale_mom is None:
            scale_mom = moments_of(x, keep)
        mean = scale_mom.mean if scale_mom.n else np.zeros(d)
        std = scale_mom.std
        std = np.where(std > 0, std, 1.0)
        t["scale fit"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    idx = np.flatnonzero(keep)
    del keep
    keys = shuffle_keys(seed, idx)          # ids are row positions
    order = idx[np.argsort(keys)]
    del keys, idx
    t["shuffle"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    m = len(order)
    with h5py.File(out, "w") as f:
        fx = f.create_dataset("features", (m, d), dtype=np.float32)
        fy = f.create_dataset("labels", (m,), dtype=y.dtype) if y is not None else None
        f.create_dataset("ids", data=order)
        wblock = 1 << 14  # reused buffers: no page faults, cache-sized
        g32 = np.empty((wblock, d), dtype=np.float32)
        g64 = np.empty((wblock, d), dtype=np.float64)
        for lo in range(0, m, wblock):
            o = order[lo:lo + wblock]
            k = len(o)
            np.take(x, o, axis=0, out=g32[:k])
            if "scale" in steps:
                np.subtract(g32[:k], mean, out=g64[:k])
                g64[:k] /= std
                g32[:k] = g64[:k]
            fx[lo:lo + k] = g32[:k]
        if fy is not None:
            fy[...] = y[order]
    t["scale+write"] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    return {"rows_in": int(n), "rows_out": int(m), "dropped": drops, "seconds": total,
            "phases": t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "steps": list(steps)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="HDF5 files or globs (sorted: global row order)")
    p.add_argument("--out", required=True, help="output HDF5 file (features, labels, ids)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default="dropna,dedup,outliers,scale",
                   help="comma-separated subset of dropna,dedup,outliers,scale (always in that order)")
    p.add_argument("--threshold", type=float, default=6.0, help="outliers: |z| threshold")
    p.add_argument("--features", default="features")
    p.add_argument("--label", default="labels", help="label dataset; empty = none")
    p.add_argument("--dedup-features-only", action="store_true", help="dedup ignores the label")
    a = p.parse_args(argv)
    files = sorted({f for pat in a.inputs for f in (glob.glob(pat) or [pat])})
    steps = [s for s in a.steps.split(",") if s]
    unknown = set(steps) - {"dropna", "dedup", "outliers", "scale"}
    if unknown:
        p.error(f"unknown steps: {', '.join(sorted(unknown))}")
    summary = run(files, a.out, a.seed, steps, a.threshold, a.features, a.label or None,
                  dedup_label=not a.dedup_features_only)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
