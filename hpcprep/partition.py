"""Splitting ordered items over ranks: the arithmetic lives here and nowhere else."""

import numpy as np


def equal_counts(total: int, parts: int) -> np.ndarray:
    """``parts`` counts summing to ``total`` that differ by at most one (larger first)."""
    base, extra = divmod(int(total), int(parts))
    return np.array([base + (i < extra) for i in range(parts)], dtype=np.int64)


def offsets(counts) -> np.ndarray:
    """Exclusive prefix sums with the total appended: ``[0, c0, c0+c1, ...]``."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def balanced_contiguous(sizes, parts: int, weights=None) -> list[tuple[int, int]]:
    """Cut an ordered list of items into ``parts`` contiguous ranges with balanced totals.

    Parameters
    ----------
    sizes : sequence of int
        Size of each item (rows of each chunk), in order.
    parts : int
        Number of ranges.
    weights : sequence of float, optional
        Relative capacity of each part (default equal).

    Returns
    -------
    list of (lo, hi) index ranges, one per part, covering ``0..len(sizes)`` in order.
    Item i goes to the part whose share of the cumulative total contains the
    item's midpoint, so totals are as close to the target as whole items allow.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    w = np.ones(parts) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(sizes) == 0:
        return [(0, 0)] * parts
    bounds = np.cumsum(w) / w.sum() * sizes.sum()
    mid = np.cumsum(sizes) - sizes / 2
    owner = np.minimum(np.searchsorted(bounds, mid, side="right"), parts - 1)
    ranges = []
    for p in range(parts):
        idx = np.flatnonzero(owner == p)
        lo = int(idx[0]) if len(idx) else (ranges[-1][1] if ranges else 0)
        ranges.append((lo, int(idx[-1]) + 1 if len(idx) else lo))
    return ranges
