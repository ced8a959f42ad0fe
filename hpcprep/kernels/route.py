"""Routing arithmetic for all-to-all exchanges: owner of a key range, contiguous targets."""

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
