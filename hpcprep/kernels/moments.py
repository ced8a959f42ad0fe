"""Per-column moments ``(n, mean, M2)`` of a 2-D array on either device (NaN and ±inf ignored)."""

import numpy as np

from .xp import array_module
from ._util import to_host

#: Bytes of float64 work buffer per block of rows of the NumPy twin (about an L2 cache).
BLOCK_BYTES = 1 << 20


def moments_of(x):
    """Per-column count, mean and sum of squared deviations, in float64, non-finite values ignored.

    ``n_j`` counts the finite values of column j, ``mean_j`` is their sum over
    ``max(n_j, 1)`` and ``M2_j`` the sum of their squared deviations from it.
    The results merge across chunks and ranks (Chan–Golub–LeVeque,
    :meth:`hpcprep.steps.moments.Moments.merge`).

    On NumPy a C-ordered array with at least two columns is summed a block of
    rows at a time, bit for bit as the one-shot formulas (see :func:`_blocked`),
    without their full-size float64 temporaries. On CuPy the same formulas run
    on the device and only the ``3 * d`` results come back; the device reduces
    the sums in another order, so the twins agree to a few ulps (about 1e-12
    relative), not bit for bit.

    Parameters
    ----------
    x : array, shape (n, d)
        NumPy or CuPy, any real dtype.

    Returns
    -------
    n, mean, m2 : ndarray of float64, shape (d,)
        Host NumPy arrays.
    """
    xp = array_module(x)
    if x.ndim != 2:
        raise ValueError(f"moments need a 2-D array, got shape {x.shape}")
    if xp is np and _blocked_ok(x):
        with np.errstate(all="ignore"):
            m = _blocked(x, np.isnan)
            if not (np.isfinite(m[1]).all() and np.isfinite(m[2]).all()):
                # an infinity (or an overflow): again, leaving out every non-finite value
                m = _blocked(x, _not_finite)
        return m
    x = x.astype(xp.float64, copy=False)
    finite = xp.isfinite(x)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow: the step's check says it once
        if bool(finite.all()):
            n = xp.full(x.shape[1], float(x.shape[0]))
            mean = x.sum(axis=0) / xp.maximum(n, 1)
            m2 = ((x - mean) ** 2).sum(axis=0)
        else:
            n = finite.sum(axis=0).astype(xp.float64)
            xz = xp.where(finite, x, 0.0)
            mean = xz.sum(axis=0) / xp.maximum(n, 1)
            m2 = (xp.where(finite, x - mean, 0.0) ** 2).sum(axis=0)
    return tuple(np.asarray(to_host(a), dtype=np.float64) for a in (n, mean, m2))


def _blocked_ok(x) -> bool:
    """True where the blocked sums of :func:`_blocked` equal NumPy's one-shot sums.

    NumPy adds the rows of a C-ordered array with at least two columns one by one
    (axis-0 reduction); a single column or another memory order reduces pairwise,
    so those keep the one-shot formulas.
    """
    return (x.shape[1] >= 2 and x.flags.c_contiguous and x.dtype.kind in "fiub"
            and x.shape[0] > max(1, BLOCK_BYTES // (8 * x.shape[1])))


def _blocked(x: np.ndarray, skip):
    """:func:`moments_of` for a C-ordered NumPy array, a block of rows at a time (bit for bit the same).

    ``skip(a, out=mask)`` flags the values to leave out: ``np.isnan`` is
    enough (and cheaper) while the data holds no infinity; the result of a
    column with one is not finite, and :func:`moments_of` runs again with
    :func:`_not_finite`.

    NumPy sums the rows of a C-ordered ``(n, d >= 2)`` array one after the other
    into the ``d`` column totals. Each block here is summed the same way with the
    running totals as its first row, so every total sees the same additions in
    the same order as the one-shot formulas, without their full-size float64
    temporaries (the float64 copy, the NaN mask, ``x - mean``, its square).
    """
    rows, d = x.shape
    b = max(1, BLOCK_BYTES // (8 * d))
    buf = np.empty((b + 1, d))
    nan = np.empty((b, d), dtype=bool)
    missing = np.zeros(d, dtype=np.int64)
    blocks_with_nan = []
    total = None
    for s in range(0, rows, b):
        k = min(b, rows - s)
        at = 0 if total is None else 1
        body = buf[at:at + k]
        body[...] = x[s:s + k]
        m = skip(body, out=nan[:k])
        if m.any():
            missing += m.sum(axis=0)
            body[m] = 0.0  # as np.where(finite, x, 0.0)
            blocks_with_nan.append(s)
        if at:
            buf[0] = total
        total = buf[:at + k].sum(axis=0)
    if blocks_with_nan:
        n = (rows - missing).astype(np.float64)
    else:
        n = np.full(d, float(rows))
    mean = total / np.maximum(n, 1)
    with_nan = set(blocks_with_nan)
    m2 = None
    for s in range(0, rows, b):
        k = min(b, rows - s)
        at = 0 if m2 is None else 1
        body = buf[at:at + k]
        body[...] = x[s:s + k]
        if s in with_nan:
            m = skip(body, out=nan[:k])
        body -= mean
        np.square(body, out=body)
        if s in with_nan:
            body[m] = 0.0  # as np.where(finite, x - mean, 0.0) ** 2
        if at:
            buf[0] = m2
        m2 = buf[:at + k].sum(axis=0)
    return n, mean, m2


def _not_finite(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``~np.isfinite(a)`` into ``out`` (the mask of :func:`_blocked`)."""
    np.isfinite(a, out=out)
    return np.logical_not(out, out=out)
