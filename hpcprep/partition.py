"""Splitting ordered items over ranks: the arithmetic lives here and nowhere else.

Equal counts, offsets, contiguous ranges, largest remainder and proportional
counts; :mod:`hpcprep.assign` (rounding a plan, rows by speed), the trainer's
batch sizes, the loader's row ranges and the pipeline's shard sizes all use these.
"""

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


def nearest_cuts(sizes, loads) -> list[tuple[int, int]]:
    """Cut an ordered list of items into one contiguous range per load, at the nearest boundaries.

    Range ``k`` ends at the item boundary nearest to the cumulative target
    ``loads[0] + ... + loads[k]`` (ties to the lower boundary), so every range
    is within one item of its load at each end; the last range ends at the
    last item.

    Parameters
    ----------
    sizes : sequence of int
        Size of each item (rows of each chunk), in order; >= 0.
    loads : sequence of float
        Real-valued target of each range (e.g. a plan's rows per worker).

    Returns
    -------
    list of (start, stop)
        Half-open index ranges covering ``0..len(sizes)`` without gaps (a range may be empty).
    """
    loads = np.asarray(loads, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    if int(bounds[-1]) == 0:
        stops = np.full(loads.size, sizes.size)
        stops[:-1] = 0
    else:
        goals = np.cumsum(loads)[:-1]
        right = np.clip(np.searchsorted(bounds, goals, side="left"), 1, sizes.size)
        left = right - 1
        nearer_left = (goals - bounds[left]) <= (bounds[right] - goals)
        stops = np.where(nearer_left, left, right)
        stops = np.maximum.accumulate(np.concatenate([stops, [sizes.size]]))
    starts = np.concatenate([[0], stops[:-1]])
    return [(int(a), int(b)) for a, b in zip(starts, stops)]


def largest_remainder(shares, total: int, lower=None, upper=None) -> np.ndarray:
    """Whole numbers near the real ``shares``, within ``[lower, upper]``, that sum to ``total``.

    Start from ``clip(floor(shares), lower, upper)``, then add one to the largest
    remainders ``shares - y`` (or take one from the smallest) among the items with
    room, until the sum is ``total``. Ties go to the lower index, so every rank
    computes the same result.

    Parameters
    ----------
    shares : array of float, shape (n,)
    total : int
    lower, upper : array of int, shape (n,), optional
        Bounds of each item (default 0 and unbounded).

    Returns
    -------
    array of int64, shape (n,)

    Raises
    ------
    ValueError
        When the bounds admit no solution (``sum(lower) > total`` or ``sum(upper) < total``).

    Examples
    --------
    >>> largest_remainder([2.5, 2.5, 5.0], 10).tolist()
    [3, 2, 5]
    """
    shares = np.asarray(shares, dtype=np.float64)
    lower = np.zeros(shares.size, np.int64) if lower is None else np.asarray(lower, dtype=np.int64)
    upper = np.full(shares.size, max(int(total), 0), np.int64) if upper is None else \
        np.asarray(upper, dtype=np.int64)
    if lower.sum() > total or upper.sum() < total:
        raise ValueError(f"cannot place {total} whole units within bounds summing to "
                         f"{lower.sum()}..{upper.sum()}")
    y = np.clip(np.floor(shares + 1e-9).astype(np.int64), lower, upper)
    deficit = int(total - y.sum())
    while deficit != 0:
        step = 1 if deficit > 0 else -1
        room = (upper - y) if step > 0 else (y - lower)
        candidates = np.flatnonzero(room > 0)
        remainder = shares[candidates] - y[candidates]
        ranked = candidates[np.argsort(-remainder * step, kind="stable")]
        chosen = ranked[: abs(deficit)]
        y[chosen] += step
        deficit -= step * chosen.size
    return y


def proportional_counts(total: int, weights) -> np.ndarray:
    """Split ``total`` into whole counts proportional to ``weights`` (largest remainder).

    The counts sum to ``total`` exactly; ties go to the lower index. Weights that
    are negative or sum to zero count as equal.

    Examples
    --------
    >>> proportional_counts(10, [1, 1, 1]).tolist()
    [4, 3, 3]
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size and (not np.all(w >= 0) or w.sum() <= 0):
        w = np.ones_like(w)
    return largest_remainder(total * w / w.sum() if w.size else w, int(total))
