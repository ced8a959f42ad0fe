"""Routing kernels for all-to-all exchanges: destination by key range, packing, local sort.

NumPy reference implementations; CuPy twins share the signatures and dispatch on
the array module of their inputs.
"""

import numpy as np

from .xp import array_module


def key_range_owner(keys, n_parts: int):
    """Owner of each key when the uint64 key space is cut into ``n_parts`` equal ranges.

    ``owner = ((key >> 32) * n_parts) >> 32`` is monotone in the key, so the
    concatenation of the parts in order is sorted when each part is sorted.

    Returns
    -------
    array of int64 in ``[0, n_parts)``
    """
    xp = array_module(keys)
    hi = keys >> xp.uint64(32)
    return ((hi * xp.uint64(n_parts)) >> xp.uint64(32)).astype(xp.int64)


def bucket_by_destination(dest, n_parts: int):
    """Stable order that groups rows by destination, and the count per destination.

    Parameters
    ----------
    dest : array of int64
        Destination of each row, in ``[0, n_parts)``.
    n_parts : int

    Returns
    -------
    order : array of int64
        Row indices grouped by destination, original order kept within a group.
    counts : array of int64, shape (n_parts,)
    """
    xp = array_module(dest)
    counts = xp.bincount(dest, minlength=n_parts).astype(xp.int64)
    order = xp.argsort(dest, kind="stable")
    return order, counts


def sort_by_key(keys):
    """Indices that sort ``keys`` ascending (stable)."""
    xp = array_module(keys)
    return xp.argsort(keys, kind="stable")


def contiguous_targets(global_start: int, n_rows: int, target_offsets) -> np.ndarray:
    """Rows to send to each target when a contiguous range moves onto target ranges.

    Parameters
    ----------
    global_start : int
        Global position of this rank's first row.
    n_rows : int
        Rows this rank holds (positions ``global_start .. global_start + n_rows``).
    target_offsets : array of int64, shape (P + 1,)
        Target p owns global positions ``target_offsets[p] .. target_offsets[p + 1]``.

    Returns
    -------
    counts : ndarray of int64, shape (P,)
    """
    offs = np.asarray(target_offsets, dtype=np.int64)
    lo = np.clip(offs[:-1], global_start, global_start + n_rows)
    hi = np.clip(offs[1:], global_start, global_start + n_rows)
    return np.maximum(hi - lo, 0)
