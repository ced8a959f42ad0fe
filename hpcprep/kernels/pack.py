"""Bucketing and packing of send buffers for all-to-all exchanges, and row gathers.

A row travels as one fixed-size record of raw bytes: the columns of the row,
one after the other, with no padding (the layout of a packed NumPy structured
dtype, see :func:`record_dtype`). Packing groups the records by destination in
one contiguous ``(n, itemsize)`` uint8 buffer, so the rows for destination
``p`` are the slice ``displs[p] : displs[p] + counts[p]``: exactly what
``Alltoallv`` needs. CuPy has no structured dtypes, so on the GPU the same bytes
are handled as a uint8 matrix; on the host ``buf.view(dtype)[:, 0]`` gives records.
"""

from dataclasses import dataclass

import numpy as np

from .xp import array_module
from ._util import argsort_stable, is_cupy, to_host


@dataclass
class Packed:
    """Rows packed by destination.

    Attributes
    ----------
    buf : array of uint8, shape (n, dtype.itemsize)
        C-contiguous records in destination order (NumPy or CuPy).
    counts : ndarray of int64, shape (n_parts,)
        Rows per destination (always a host NumPy array: MPI counts live there).
    displs : ndarray of int64, shape (n_parts,)
        First row of each destination in ``buf``.
    dtype : numpy.dtype
        Packed structured dtype of one record.
    order : array of int64, shape (n,)
        Source row of each packed row (stable: source order within a destination).
    """

    buf: object
    counts: np.ndarray
    displs: np.ndarray
    dtype: np.dtype
    order: object


def record_dtype(columns) -> np.dtype:
    """Packed structured dtype of one row of ``columns``.

    Parameters
    ----------
    columns : dict of str -> array, or numpy structured array
        Per-row columns (first axis = rows; further axes become sub-array fields).

    Returns
    -------
    numpy.dtype
        Structured dtype without padding (``align=False``), fields in dict order.
    """
    if isinstance(columns, np.ndarray) and columns.dtype.names is not None:
        return columns.dtype
    return np.dtype([(name, np.dtype(a.dtype.str), tuple(a.shape[1:]))
                     for name, a in columns.items()])


def _as_row_bytes(a, n, xp):
    """View the rows of ``a`` as a ``(n, row_nbytes)`` uint8 matrix (copies only if needed)."""
    a = xp.ascontiguousarray(a)
    width = a.dtype.itemsize * (a.size // n if n else int(np.prod(a.shape[1:], dtype=np.int64)))
    return a.reshape(-1).view(xp.uint8).reshape(n, width)


def destination_order(dest, n_parts: int):
    """Counts per destination and the stable order grouping rows by destination.

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
    """
    xp = array_module(dest)
    dest = dest.astype(xp.int64, copy=False)
    if dest.size:
        lo, hi = int(dest.min()), int(dest.max())
        if lo < 0 or hi >= n_parts:
            raise ValueError(f"destination out of range [0, {n_parts}): min {lo}, max {hi}")
    counts = to_host(xp.bincount(dest, minlength=n_parts)).astype(np.int64)
    order = argsort_stable(dest, xp).astype(xp.int64, copy=False)
    return order, counts


def pack_by_destination(columns, dest, n_parts: int) -> Packed:
    """Pack rows into one contiguous record buffer, grouped by destination.

    Parameters
    ----------
    columns : dict of str -> array, or numpy structured array
        The rows' columns, all NumPy or all CuPy, same first dimension ``n``.
    dest : array of int, shape (n,)
        Destination of each row (same array module as the columns).
    n_parts : int
        Number of destinations.

    Returns
    -------
    Packed
        ``buf`` (uint8 records in destination order), host ``counts`` and
        ``displs`` in rows, the record ``dtype`` and the ``order`` used.

    Examples
    --------
    >>> import numpy as np
    >>> p = pack_by_destination({"a": np.arange(3.0)}, np.array([1, 0, 1]), 2)
    >>> p.counts.tolist(), p.buf.view(p.dtype)["a"].ravel().tolist()
    ([1, 2], [1.0, 0.0, 2.0])
    """
    dtype = record_dtype(columns)
    xp = array_module(dest)
    n = int(dest.shape[0])
    order, counts = destination_order(dest, n_parts)
    buf = xp.empty((n, dtype.itemsize), dtype=xp.uint8)
    if isinstance(columns, np.ndarray) and columns.dtype.names is not None:
        if len(columns) != n:
            raise ValueError(f"{len(columns)} records but {n} destinations")
        buf[...] = xp.asarray(_as_row_bytes(columns, n, np))[order]
    else:
        col = 0
        for name, a in columns.items():
            if array_module(a) is not xp:
                raise TypeError(f"column {name!r} is not in the same array module as dest")
            if a.shape[0] != n:
                raise ValueError(f"column {name!r} has {a.shape[0]} rows, expected {n}")
            b = _as_row_bytes(a, n, xp)
            buf[:, col:col + b.shape[1]] = b[order]
            col += b.shape[1]
    displs = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return Packed(buf=buf, counts=counts, displs=displs, dtype=dtype, order=order)


def unpack_columns(buf, dtype):
    """Split a record buffer back into columns.

    Parameters
    ----------
    buf : array of uint8, shape (n, dtype.itemsize)
        Records as made by :func:`pack_by_destination` (NumPy or CuPy).
    dtype : numpy.dtype
        The packed structured dtype of one record.

    Returns
    -------
    dict of str -> array
        C-contiguous columns in the array module of ``buf``.
    """
    xp = array_module(buf)
    dtype = np.dtype(dtype)
    n = int(buf.shape[0])
    if buf.ndim != 2 or buf.shape[1] != dtype.itemsize:
        raise ValueError(f"buffer of shape {buf.shape} does not hold records of {dtype.itemsize} bytes")
    out = {}
    for name in dtype.names:
        fdt, off = dtype.fields[name][:2]
        base, shape = fdt.base, fdt.shape
        raw = xp.ascontiguousarray(buf[:, off:off + fdt.itemsize])
        out[name] = raw.reshape(-1).view(base).reshape((n,) + shape)
    return out


def gather_rows(x, idx):
    """Rows ``x[idx]`` along the first axis.

    Parameters
    ----------
    x : array, shape (n, ...)
        NumPy or CuPy.
    idx : array of int, shape (m,)
        Row indices; moved to the array module of ``x`` if needed.

    Returns
    -------
    array, shape (m, ...)
        A new C-contiguous array in the array module of ``x``.
    """
    xp = array_module(x)
    idx = xp.asarray(idx)
    if is_cupy(xp):
        return xp.ascontiguousarray(xp.take(x, idx, axis=0))
    return np.take(x, idx, axis=0)
