"""Packing rows into the records that travel between ranks, and row gathers.

A row travels as one fixed-size record of raw bytes: its fields one after the
other, with no padding (a packed NumPy structured dtype, built by
:func:`hpcprep.layers.sample.record_dtype`). On the host a packed buffer is a
structured array; CuPy has no structured dtypes, so on the GPU the same bytes
are an ``(n, itemsize)`` uint8 matrix (``buf.get().view(dtype)[:, 0]`` gives
the records). Both twins only move bytes, so they agree byte for byte.
"""

import numpy as np

from .xp import array_module
from ._util import is_cupy

#: Rows gathered per slice when packing (a slice of every column stays in cache).
PACK_ROWS = 1 << 14


def pack_rows(columns, dtype, order=None):
    """Records of ``dtype`` holding rows ``order`` of the columns (every row, in order, by default).

    Parameters
    ----------
    columns : list of (str, array)
        ``(field, column)`` pairs; a column's first axis is the rows, its values
        are cast to the field's dtype. Fields of ``dtype`` without a column are
        zero (e.g. the copy tags of fresh rows).
    dtype : numpy.dtype
        Packed structured dtype of one record.
    order : array of int, shape (n,), optional
        The source row of each record (e.g. rows grouped by destination).

    Returns
    -------
    NumPy structured array of ``dtype``, shape (n,); or, for CuPy columns, a
    CuPy uint8 array of shape (n, dtype.itemsize) holding the same bytes.

    Examples
    --------
    >>> import numpy as np
    >>> dt = np.dtype([("id", "<i8"), ("c", "<u8")])
    >>> pack_rows([("id", np.array([5, 6, 7]))], dt, order=np.array([2, 0])).tolist()
    [(7, 0), (5, 0)]
    """
    dtype = np.dtype(dtype)
    cols = dict(columns)
    first = next(iter(cols.values()), None)
    xp = np if first is None else array_module(first)
    n = int(len(order) if order is not None else (0 if first is None else first.shape[0]))
    if is_cupy(xp):
        return _pack_cupy(cols, dtype, order, n, xp)
    buf = np.empty(n, dtype)
    for name in dtype.names:
        if name not in cols:
            buf[name] = 0
            continue
        dst, col = buf[name], np.asarray(cols[name])
        if order is None:
            dst[...] = col
            continue
        for lo in range(0, n, PACK_ROWS):
            dst[lo:lo + PACK_ROWS] = np.take(col, order[lo:lo + PACK_ROWS], axis=0)
    return buf


def _pack_cupy(cols: dict, dtype: np.dtype, order, n: int, xp):
    """:func:`pack_rows` on the device: each field's bytes written into its columns of a uint8 matrix."""
    buf = xp.empty((n, dtype.itemsize), dtype=xp.uint8)
    for name in dtype.names:
        field, off = dtype.fields[name][:2]
        width = field.itemsize
        if name not in cols:
            buf[:, off:off + width] = 0
            continue
        col = cols[name] if order is None else xp.take(cols[name], xp.asarray(order), axis=0)
        col = xp.ascontiguousarray(col.astype(field.base.newbyteorder("="), copy=False))
        buf[:, off:off + width] = col.reshape(-1).view(xp.uint8).reshape(n, width)
    return buf


def gather_rows(x, idx):
    """Rows ``x[idx]`` along the first axis (whole records of a structured array at once).

    Parameters
    ----------
    x : array, shape (n, ...)
        NumPy (structured arrays too) or CuPy.
    idx : array of int, shape (m,)
        Row indices; moved to the array module of ``x`` if needed.

    Returns
    -------
    array, shape (m, ...)
        A new C-contiguous array in the array module of ``x``.
    """
    xp = array_module(x)
    if is_cupy(xp):
        return xp.ascontiguousarray(xp.take(x, xp.asarray(idx), axis=0))
    return np.take(x, idx, axis=0)


def scatter_pieces(pieces: list, order: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The records of ``pieces`` (``(records, ...)`` tuples, consumed) in ``order``.

    ``order`` orders the concatenation of the pieces' records. Each piece is
    written once to its rows' places (records viewed as raw bytes, so each row
    is one copy) instead of concatenating the pieces and gathering: one copy
    of every row less (host arrays).

    Parameters
    ----------
    pieces : list of tuple
        ``(records, ...)``; emptied as the pieces are written.
    order : ndarray of int64
        A permutation of ``0 .. total rows``.
    dtype : numpy dtype
        The records' dtype.

    Returns
    -------
    ndarray
        ``concatenate(records)[order]``.
    """
    where = np.empty(len(order), np.int64)
    where[order] = np.arange(len(order))
    out = np.empty(len(order), dtype)
    raw, start = out.view(f"V{dtype.itemsize}"), 0
    while pieces:
        rec = pieces.pop(0)[0]
        raw[where[start:start + len(rec)]] = rec.view(raw.dtype)
        start += len(rec)
    return out
