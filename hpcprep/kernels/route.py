"""Routing arithmetic for all-to-all exchanges: owner of a key range, grouping by destination,
contiguous targets."""

import numpy as np

from .xp import array_module
from ._util import argsort_stable, to_host


def key_range_owner(keys, n_parts: int):
    """Owner of each key when the uint64 key space is cut into ``n_parts`` equal ranges.

    ``owner = ((key >> 32) * n_parts) >> 32`` is monotone in the key, so the
    concatenation of the parts in order is sorted when each part is sorted.

    With ``n_parts = P * F`` it gives fine ranges: fine range ``g`` lies in the
    range ``g // F`` of ``P`` parts (``floor(floor(h P F / 2^32) / F) = floor(h P / 2^32)``).
    Integer arithmetic only: the NumPy and CuPy twins agree exactly.

    Parameters
    ----------
    keys : array of uint64
        NumPy or CuPy.
    n_parts : int
        At most ``2**32``.

    Returns
    -------
    array of int64 in ``[0, n_parts)``
    """
    xp = array_module(keys)
    hi = keys >> xp.uint64(32)
    return ((hi * xp.uint64(n_parts)) >> xp.uint64(32)).astype(xp.int64)


def destination_order(dest, n_parts: int):
    """The stable order grouping rows by destination, and the rows per destination.

    Destinations are sorted as uint16 where ``n_parts <= 2**16`` (a stable sort
    of small integers is a radix sort). Integers only: the NumPy and CuPy twins
    agree exactly (CuPy's argsort is stable).

    Parameters
    ----------
    dest : array of int, shape (n,)
        Destination of each row, in ``[0, n_parts)`` (NumPy or CuPy).
    n_parts : int

    Returns
    -------
    order : array of int64, shape (n,)
        Row indices grouped by destination, source order kept within a group.
    counts : ndarray of int64, shape (n_parts,)
        Host NumPy array.

    Raises
    ------
    ValueError
        A destination outside ``[0, n_parts)``.
    """
    xp = array_module(dest)
    small = xp.uint16 if n_parts <= 1 << 16 else xp.int64
    if dest.dtype != small:
        if dest.size and (int(dest.min()) < 0 or int(dest.max()) >= n_parts):
            raise ValueError(f"destination out of range [0, {n_parts}): min {int(dest.min())}, "
                             f"max {int(dest.max())}")
        dest = dest.astype(small)
    counts = to_host(xp.bincount(dest, minlength=n_parts)).astype(np.int64)
    if len(counts) > n_parts:
        raise ValueError(f"destination out of range [0, {n_parts}): max {len(counts) - 1}")
    return argsort_stable(dest, xp).astype(xp.int64, copy=False), counts


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
