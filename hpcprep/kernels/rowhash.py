"""64-bit hash of each row's bytes, for deduplication (identical on NumPy and CuPy)."""

import numpy as np

from .hashing import splitmix64
from .xp import array_module
from ._util import is_cupy


def _canonical(x, xp):
    """Make equal float values equal bytes: -0.0 -> +0.0, every NaN -> one NaN."""
    if x.dtype.kind not in "fc":
        return x
    with np.errstate(invalid="ignore"):          # a signaling NaN may set the flag
        x = x + x.dtype.type(0)                  # -0.0 + 0.0 == +0.0; copies
    nan = xp.isnan(x)
    return xp.where(nan, xp.asarray(np.nan, dtype=x.dtype), x)


def row_words(x):
    """The bytes of each row as little-endian uint64 words, zero padded.

    Parameters
    ----------
    x : array, shape (n,) or (n, d)
        Plain numeric dtype (NumPy or CuPy).

    Returns
    -------
    words : array of uint64, shape (n, ceil(row_nbytes / 8)), C-contiguous
    row_nbytes : int
    """
    xp = array_module(x)
    if x.dtype.names is not None or x.dtype.kind not in "biufc":
        raise TypeError(f"row_hash: needs a plain numeric dtype, got {x.dtype}")
    n = int(x.shape[0])
    x = xp.ascontiguousarray(x.reshape(n, -1) if n else x.reshape(0, int(np.prod(x.shape[1:]))))
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    nb = x.shape[1] * x.dtype.itemsize
    nw = (nb + 7) // 8
    b = x.reshape(-1).view(xp.uint8).reshape(n, nb)
    if nb % 8:
        padded = xp.zeros((n, nw * 8), dtype=xp.uint8)
        padded[:, :nb] = b
        b = padded
    return b.reshape(-1).view(xp.uint64).reshape(n, nw), nb


def row_hash(x, seed=0, canonical=True):
    """64-bit hash of each row, equal for equal rows, identical on NumPy and CuPy.

    ``h = splitmix64(seed ^ row_nbytes)``, then for each 64-bit word ``w`` of
    the row (little-endian bytes, zero padded): ``h = splitmix64(h ^ w)``.
    Integer arithmetic only, so both devices give the same integers.

    Parameters
    ----------
    x : array, shape (n,) or (n, d)
        Rows to hash (NumPy or CuPy, plain numeric dtype).
    seed : int or array of uint64, shape (n,)
        Initial state. Pass the hash of other columns to hash several columns
        as one row: ``row_hash(labels, seed=row_hash(features))``; pass another
        constant for an independent second hash (128 bits in all).
    canonical : bool, default True
        Hash float values, not bit patterns: ``-0.0`` equals ``0.0`` and all
        NaNs are equal (pandas' ``duplicated`` semantics).

    Returns
    -------
    array of uint64, shape (n,)
        Same array module as ``x``.

    Notes
    -----
    Two different rows share a hash with probability about ``2**-64`` per pair
    (n rows: about ``n**2 / 2**65`` in all); confirm equality of the rows that
    share a hash, or add a second seed, where that matters.
    """
    xp = array_module(x)
    if canonical:
        x = _canonical(x, xp)
    words, nb = row_words(x)
    n, nw = words.shape
    if isinstance(seed, (int, np.integer)):
        h = xp.full(n, np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), dtype=xp.uint64)
    else:
        h = xp.asarray(seed, dtype=xp.uint64)
        if h.shape != (n,):
            raise ValueError(f"seed array of shape {h.shape}, expected ({n},)")
    h = splitmix64(h ^ xp.uint64(nb), xp)
    if not is_cupy(xp):
        for j in range(nw):
            h = splitmix64(h ^ words[:, j], np)
        return h
    from .gpu import launch_1d, row_hash_kernel

    out = xp.empty(n, dtype=xp.uint64)
    h = xp.ascontiguousarray(h)
    launch_1d(row_hash_kernel(), n, (words, h, out, np.int64(n), np.int64(nw)))
    return out
