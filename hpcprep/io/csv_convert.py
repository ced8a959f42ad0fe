"""CSV field conversion: fields gathered into fixed-width arrays, converted to float or text.

Used by :mod:`hpcprep.io.csv_parse` on the fast path (NumPy byte searches)
and the slow path (lines with quotes, through Python's ``csv`` module) alike,
and by :mod:`hpcprep.io.csv_arrow` for the values Arrow does not convert.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .csv_records import BAD_NUMBER

_MAX_GATHER = 1 << 26       # bytes of one fixed-width column gather before falling back
_BLOCK = 64                 # below this many values, a failing bulk conversion goes one by one
_PIECE = 1 << 16            # bytes per step of not_plain_floats


@dataclass
class _Columns:
    ncol: int
    numeric: list  # header indices: features..., label?, weight?
    cats: list     # header indices of categorical columns


def _resolve_columns(path, header, features, label, categorical, weight) -> _Columns:
    where = {name: i for i, name in enumerate(header)}
    wanted = list(features) + ([label] if label is not None else []) \
        + ([weight] if weight is not None else []) + list(categorical)
    for name in wanted:
        if name not in where:
            raise DataError(f"{os.fspath(path)}: column {name!r} is not in the header "
                            f"(columns: {', '.join(header)})")
    numeric = [where[n] for n in features]
    if label is not None:
        numeric.append(where[label])
    if weight is not None:
        numeric.append(where[weight])
    return _Columns(len(header), numeric, [where[n] for n in categorical])


def _to_float(col: np.ndarray, na: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert a string array (S or U) to float64; return (values, unparsable mask)."""
    n = col.shape[0]
    missing = np.isin(col, na)
    if missing.any():
        if col.dtype.itemsize // (4 if col.dtype.kind == "U" else 1) < 3:
            col = col.astype(f"{col.dtype.kind}3")
        else:
            col = col.copy()
        col[missing] = "nan" if col.dtype.kind == "U" else b"nan"
    try:
        return col.astype(np.float64), np.zeros(n, bool)
    except ValueError:
        pass
    # Some value is unparsable. Values with a byte that cannot occur in a float
    # literal are converted one by one; the rest in bulk, halving failing parts.
    out = np.empty(n, np.float64)
    bad = np.zeros(n, bool)
    if col.dtype.kind == "S":
        odd = ~_FLOAT_BYTES[col.view(np.uint8).reshape(n, col.dtype.itemsize)].all(axis=1)
    else:
        odd = np.zeros(n, bool)
    _convert_one_by_one(col, np.flatnonzero(odd), out, bad)
    _convert_bisect(col, np.flatnonzero(~odd), out, bad)
    return out, bad


def not_plain_floats(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Mask of the strings ``data[offsets[i]:offsets[i + 1]]`` that are empty or hold a byte
    other than the plain float bytes ``0-9 . e E + -`` (Arrow's string layout)."""
    odd = offsets[1:] == offsets[:-1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    x, m = np.empty(min(hi - lo, _PIECE), np.uint8), np.empty(min(hi - lo, _PIECE), bool)
    for s in range(lo, hi, _PIECE):   # pieces that stay in cache
        piece = data[s:min(s + _PIECE, hi)]
        k = piece.size
        np.subtract(piece, 43, out=x[:k])   # plain: 43 (+), 45 (-), 46 (.), 48-57, e, E
        np.greater(x[:k], 14, out=m[:k])
        m[:k] |= (x[:k] == 1) | (x[:k] == 4)
        m[:k] &= np.bitwise_or(piece, 32, out=x[:k]) != 101
        hits = np.flatnonzero(m[:k])
        if hits.size:   # (in the offsets' dtype: searchsorted would convert them, every time)
            odd[np.searchsorted(offsets, (hits + s).astype(offsets.dtype), "right") - 1] = True
    return odd


_FLOAT_BYTES = np.zeros(256, bool)
_FLOAT_BYTES[np.frombuffer(b"0123456789+-.eE_ \t\r\x0b\x0c\x00infatyINFATY", np.uint8)] = True


def _convert_one_by_one(col, idx, out, bad):
    for i, x in zip(idx.tolist(), col[idx].tolist()):
        try:
            out[i] = float(x)
        except ValueError:
            out[i] = np.nan
            bad[i] = True


def _convert_bisect(col, idx, out, bad):
    if idx.size == 0:
        return
    try:
        out[idx] = col[idx].astype(np.float64)
        return
    except ValueError:
        pass
    if idx.size <= _BLOCK:
        _convert_one_by_one(col, idx, out, bad)
        return
    half = idx.size // 2
    _convert_bisect(col, idx[:half], out, bad)
    _convert_bisect(col, idx[half:], out, bad)


def _to_str(col: np.ndarray, na: np.ndarray) -> np.ndarray:
    """Convert a string array (S or U) to unicode with ``""`` for missing values."""
    if col.dtype.kind == "S":
        if col.size and col.view(np.uint8).max(initial=0) >= 128:
            col = np.char.decode(col, "utf-8")
        else:
            col = col.astype(f"U{max(col.dtype.itemsize, 1)}")
    missing = np.isin(col, na)
    if missing.any():
        col = col.copy()
        col[missing] = ""
    return col


def _gather(a: np.ndarray, pad: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Fields ``a[starts[i]:ends[i]]`` as a fixed-width bytes array."""
    lens = ends - starts
    w = max(int(lens.max(initial=0)), 1)
    if w * starts.shape[0] > _MAX_GATHER or w > pad.shape[0] - a.shape[0]:
        buf = a.tobytes()
        return np.array([buf[s:e] for s, e in zip(starts.tolist(), ends.tolist())], dtype=f"S{w}")
    # Element i of this view is the w bytes from offset i: one take copies every field
    # with its tail (the next fields), which is then zeroed.
    at = np.ndarray(buffer=pad, dtype=f"S{w}", shape=(a.shape[0],), strides=(1,))
    col = at[starts]
    col.view(np.uint8).reshape(-1, w)[...] *= np.arange(w) < lens[:, None]
    return col


class _Builder:
    """Output arrays of one block, filled by the fast and the slow path."""

    def __init__(self, n: int, cols: _Columns):
        self.values = np.full((n, len(cols.numeric)), np.nan)
        self.cats = [np.zeros(n, "U1") for _ in cols.cats]
        self.reason = np.zeros(n, np.int8)
        self.bad_column = np.full(n, -1, np.int32)
        self.column_bad = np.zeros(len(cols.numeric), np.int64)
        self.column_example = [None] * len(cols.numeric)
        self.cols = cols

    def put(self, rows: np.ndarray, numeric: list, cats: list, na_s, na_u):
        """Store converted columns for ``rows`` (string arrays, one per column)."""
        first_bad = self.no_bad(rows)
        for j, raw in enumerate(numeric):
            vals, bad = _to_float(raw, na_u if raw.dtype.kind == "U" else na_s)
            self.values[rows, j] = vals
            self.note_bad(j, rows, raw, bad, first_bad)
        for j, raw in enumerate(cats):
            self.put_text(j, rows, _to_str(raw, na_u))
        self.mark_bad_numbers(rows, first_bad)

    @staticmethod
    def no_bad(rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows``: the header index of its first unparsable column, none yet."""
        return np.full(rows.shape[0], np.iinfo(np.int32).max, np.int64)

    def note_bad(self, j: int, rows, raw, bad, first_bad) -> None:
        """Numeric column ``j`` failed to parse where ``bad`` (a mask over ``rows``)."""
        if bad.any():
            first_bad[bad] = np.minimum(first_bad[bad], self.cols.numeric[j])
            self._note_column(j, rows, raw, bad)

    def put_text(self, j: int, rows, s: np.ndarray) -> None:
        """Store text column ``j`` (unicode, ``""`` = missing) for ``rows``."""
        if s.dtype.itemsize > self.cats[j].dtype.itemsize:
            self.cats[j] = self.cats[j].astype(s.dtype)
        self.cats[j][rows] = s

    def mark_bad_numbers(self, rows, first_bad) -> None:
        """Flag the rows with an unparsable number (``first_bad`` from :meth:`note_bad`)."""
        hit = first_bad != np.iinfo(np.int32).max
        if hit.any():
            self.reason[rows[hit]] = BAD_NUMBER
            self.bad_column[rows[hit]] = first_bad[hit]

    def _note_column(self, j: int, rows, raw, bad) -> None:
        """Count column ``j``'s unparsable values; keep the one of the earliest record."""
        self.column_bad[j] += int(np.count_nonzero(bad))
        k = int(np.flatnonzero(bad)[0])
        ex = self.column_example[j]
        if ex is None or int(rows[k]) < ex[0]:
            v = raw[k]
            self.column_example[j] = (int(rows[k]), v.decode("utf-8", "backslashreplace")
                                      if isinstance(v, bytes) else str(v))


def _as_bytes(values) -> np.ndarray:
    """UTF-8 bytes array of strings, so numbers convert exactly as in the fast path."""
    try:
        return np.array(values, dtype="S")
    except UnicodeEncodeError:
        return np.array([v.encode("utf-8") for v in values], dtype="S")
