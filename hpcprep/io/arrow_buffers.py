"""NumPy arrays from Arrow arrays' buffers, and Arrow arrays from NumPy, without pandas.

Arrow's own conversions (``Array.to_numpy``, ``pa.array(ndarray)``, a scalar
built from a Python value) first initialise its pandas support, which imports
pandas when it is installed: about 0.45 s in every process that converts once,
on the critical path of every rank. The input layer converts through these
helpers instead: plain reads of the validity bitmap and the value buffer.
"""

import numpy as np


def _chunks(arr) -> list:
    """The chunks of a ChunkedArray, or ``[arr]`` for an Array."""
    return list(arr.chunks) if hasattr(arr, "chunks") else [arr]


def _bits(buf, offset: int, n: int) -> np.ndarray:
    """``n`` bits from bit ``offset`` of an Arrow bitmap (least significant bit first), as bool."""
    raw = np.frombuffer(buf, np.uint8)
    return np.unpackbits(raw, count=offset + n, bitorder="little")[offset:].astype(bool)


def valid_mask(arr) -> np.ndarray:
    """True where the Arrow array (or chunked array) ``arr`` is not null."""
    parts = [np.ones(len(ch), bool) if ch.null_count == 0 else _bits(ch.buffers()[0], ch.offset, len(ch))
             for ch in _chunks(arr) if len(ch)]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def bool_values(arr, null: bool = False) -> np.ndarray:
    """A boolean Arrow array (or chunked array) as NumPy bool; ``null`` where null."""
    parts = []
    for ch in _chunks(arr):
        if len(ch) == 0:
            continue
        v = _bits(ch.buffers()[1], ch.offset, len(ch))
        if ch.null_count:
            v = np.where(_bits(ch.buffers()[0], ch.offset, len(ch)), v, null)
        parts.append(v)
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def fixed_values(arr, dtype, null=0) -> tuple[np.ndarray, np.ndarray | None]:
    """A fixed-width Arrow array (or chunked array) as NumPy ``dtype`` (its exact type).

    Returns
    -------
    values : ndarray of ``dtype``
        ``null`` where null; a view of Arrow's buffer (read-only) where nothing
        is null and there is one chunk.
    valid : ndarray of bool or None
        False where null; None when nothing is null.
    """
    dtype = np.dtype(dtype)
    parts, valids = [], []
    for ch in _chunks(arr):
        if len(ch) == 0:
            continue
        v = np.frombuffer(ch.buffers()[1], dtype, count=len(ch), offset=ch.offset * dtype.itemsize)
        valid = np.ones(len(ch), bool)
        if ch.null_count:
            valid = _bits(ch.buffers()[0], ch.offset, len(ch))
            v = np.where(valid, v, np.asarray(null, dtype))
        parts.append(v)
        valids.append(valid)
    if not parts:
        return np.empty(0, dtype), None
    values = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if arr.null_count == 0:
        return values, None
    return values, valids[0] if len(valids) == 1 else np.concatenate(valids)


def arrow_floats(col) -> tuple[np.ndarray, np.ndarray | None]:
    """A float64 Arrow column as NumPy straight from its buffers (NaN where null).

    Returns
    -------
    values : ndarray of float64
    valid : ndarray of bool or None
        False where null; None when nothing is null.
    """
    return fixed_values(col, np.float64, np.nan)


def from_mask(mask: np.ndarray):
    """A NumPy bool array as an Arrow BooleanArray (no nulls)."""
    import pyarrow as pa

    mask = np.asarray(mask, bool)
    bits = np.packbits(mask, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def from_indices(idx: np.ndarray):
    """A NumPy integer array as an Arrow Int64Array (no nulls), e.g. for ``pc.take``."""
    import pyarrow as pa

    idx = np.ascontiguousarray(idx, np.int64)
    return pa.Array.from_buffers(pa.int64(), len(idx), [None, pa.py_buffer(idx)])


def null_like(arr):
    """A null scalar of ``arr``'s type (e.g. for ``pc.if_else``)."""
    import pyarrow as pa

    return pa.nulls(1, arr.type)[0]


def from_strings(values):
    """A NumPy array of str as an Arrow StringArray (no nulls), through UTF-8 bytes."""
    import pyarrow as pa

    raw = np.char.encode(np.asarray(values, str), "utf-8")
    n, width = len(raw), raw.dtype.itemsize
    lengths = np.char.str_len(raw) if n else np.zeros(0, np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if n and width:
        data = raw.view(np.uint8).reshape(n, width)[np.arange(width) < lengths[:, None]]
    else:
        data = np.zeros(0, np.uint8)
    large = offsets[-1] >= 2**31
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), n,
                                 [None, pa.py_buffer(offsets if large else offsets.astype(np.int32)),
                                  pa.py_buffer(data)])


def string_scalar(text: str):
    """An Arrow string scalar (for compute functions: ``pc.equal(arr, string_scalar(""))``)."""
    return from_strings(np.array([text]))[0]


def string_offsets(ch) -> np.ndarray:
    """The ``len(ch) + 1`` value offsets of one Arrow string (or large string) array into its
    data buffer (value ``i`` is ``data[off[i]:off[i + 1]]``)."""
    dtype = np.dtype(np.int64 if str(ch.type) == "large_string" else np.int32)
    return np.frombuffer(ch.buffers()[1], dtype, count=len(ch) + 1, offset=ch.offset * dtype.itemsize)


def empty_or_null(arr) -> np.ndarray:
    """True where the Arrow string array (or chunked array) ``arr`` is null or ``""``."""
    parts = [np.diff(string_offsets(ch)) == 0 for ch in _chunks(arr) if len(ch)]
    empty = np.concatenate(parts) if parts else np.zeros(0, bool)
    return empty | ~valid_mask(arr)
