"""64-bit hash of each row's bytes, for deduplication (identical on NumPy and CuPy)."""

import numpy as np

from .hashing import mix_inplace, splitmix64
from .xp import array_module
from ._util import is_cupy

#: Offset of the word keys of :func:`row_hash` (a fixed constant: hashes must not depend on the run).
ROW_HASH_KEY = 0x726F77686173680A

#: Rows the NumPy twin hashes at a time (their words and scratch stay in cache).
BLOCK_ROWS = 1 << 14


def _canonical(x, xp):
    """Make equal float values equal bytes: -0.0 -> +0.0, every NaN -> one NaN (a copy of ``x``)."""
    if x.dtype.kind not in "fc":
        return x
    with np.errstate(invalid="ignore"):          # a signaling NaN may set the flag
        x = x + x.dtype.type(0)                  # -0.0 + 0.0 == +0.0; copies
        if xp is np and not np.isnan(np.add.reduce(x, axis=None)):
            return x                             # no NaN (a NaN makes the sum NaN): one pass less
    nan = xp.isnan(x)
    return xp.where(nan, xp.asarray(np.nan, dtype=x.dtype), x)


def word_keys(n_words: int) -> np.ndarray:
    """The fixed key of each word position of :func:`row_hash`: ``splitmix64(ROW_HASH_KEY + j)``."""
    return splitmix64(np.arange(n_words, dtype=np.uint64) + np.uint64(ROW_HASH_KEY))


def row_words(x, canonical=False):
    """The bytes of each row as little-endian uint64 words, zero padded.

    Parameters
    ----------
    x : array, shape (n,) or (n, d)
        Plain numeric dtype (NumPy or CuPy).
    canonical : bool, default False
        Bytes of the float values, not of their bit patterns: ``-0.0`` as
        ``0.0`` and every NaN as one NaN (the bytes :func:`row_hash` hashes).

    Returns
    -------
    words : array of uint64, shape (n, ceil(row_nbytes / 8)), C-contiguous
    row_nbytes : int
    """
    xp = array_module(x)
    if x.dtype.names is not None or x.dtype.kind not in "biufc":
        raise TypeError(f"row_hash: needs a plain numeric dtype, got {x.dtype}")
    if canonical:
        x = _canonical(x, xp)
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


def row_hash(x, seed=0, canonical=True, out=None):
    """64-bit hash of each row, equal for equal rows, identical on NumPy and CuPy.

    ``h = splitmix64(splitmix64(seed ^ row_nbytes) ^ sum_j splitmix64(w_j ^ k_j))``
    over the row's 64-bit words ``w_j`` (little-endian bytes, zero padded), with
    the fixed keys ``k_j`` of :func:`word_keys` and the sum modulo 2**64: the
    words are mixed independently (one vectorized pass, not a chain of ``d``
    dependent ones), the key makes the position count. Integer arithmetic only,
    so both devices give the same integers. The NumPy twin works
    :data:`BLOCK_ROWS` rows at a time, in place; the CuPy twin runs one thread
    per row (:func:`hpcprep.kernels.gpu.row_hash_kernel`).

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
    out : array of uint64, shape (n,), optional
        Where the hashes go (may be ``seed`` itself); a new array by default.

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
    n = int(x.shape[0])
    h = xp.empty(n, dtype=xp.uint64) if out is None else out
    if isinstance(seed, (int, np.integer)):
        h.fill(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF))
    else:
        seed = xp.asarray(seed, dtype=xp.uint64)
        if seed.shape != (n,):
            raise ValueError(f"seed array of shape {seed.shape}, expected ({n},)")
        if seed is not h:
            h[...] = seed
    if not is_cupy(xp):
        _fold_numpy(x, h, canonical)
        return h
    from .gpu import launch_1d, row_hash_kernel

    words, nb = row_words(x, canonical)
    h0 = xp.ascontiguousarray(splitmix64(h ^ xp.uint64(nb), xp))
    keys = xp.asarray(word_keys(words.shape[1]))
    launch_1d(row_hash_kernel(), n, (words, keys, h0, h, np.int64(n), np.int64(words.shape[1])))
    return h


def _fold_numpy(x, h: np.ndarray, canonical: bool) -> None:
    """Fold the rows' words into the states ``h`` in place, :data:`BLOCK_ROWS` rows at a time."""
    n = len(h)
    if n == 0:
        row_words(x[:0], canonical)   # the dtype checks
        return
    t = np.empty(min(n, BLOCK_ROWS), dtype=np.uint64)
    keys = scratch = None
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        hb, tb = h[lo:hi], t[:hi - lo]
        words, nb = row_words(x[lo:hi], canonical)
        if keys is None:
            keys = word_keys(words.shape[1])
            scratch = np.empty((2, min(n, BLOCK_ROWS), words.shape[1]), dtype=np.uint64)
        mixed = np.bitwise_xor(words, keys, out=scratch[0, :hi - lo])
        mix_inplace(mixed, scratch[1, :hi - lo])
        hb ^= np.uint64(nb)
        mix_inplace(hb, tb)
        hb ^= np.add.reduce(mixed, axis=1, dtype=np.uint64)
        mix_inplace(hb, tb)
