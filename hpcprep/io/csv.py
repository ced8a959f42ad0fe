"""CSV input: header, byte-range splitting, record counting and vectorized parsing.

A CSV file is read as a header line followed by data lines. Ranks read
disjoint byte ranges that start at line starts (:func:`split_byte_ranges`),
count their records cheaply (:func:`count_records`, :func:`count_lines`) so
that global row ids can be assigned by an exclusive scan, and parse them into
a :class:`CsvBlock` (:func:`parse_range`).

Conventions (see ``docs/csv.md``):

- Line ends are ``\\n`` or ``\\r\\n``; a missing final newline is fine.
- A *blank line* (empty, or only ``\\r``) is not a record: it is skipped by
  :func:`parse_range` and not counted by :func:`count_records`, but it still
  counts as a physical line, so line numbers are those an editor shows.
  Every other line is one record, valid or flagged bad.
- The quote character is ``"``; quoted fields may contain the delimiter and
  doubled quotes ``""``. A quoted field containing a newline is unsupported
  and raises :class:`~hpcprep.errors.DataError`.
- Numbers follow Python's ``float()`` syntax (surrounding spaces allowed).
  A field equal to one of ``na_values`` is missing: NaN in numeric columns,
  ``""`` in categorical columns.
- Bytes that are not valid UTF-8 make their line a bad record (reason
  ``BAD_ENCODING``); the header must be valid UTF-8 (a leading BOM is skipped).
"""

from __future__ import annotations

import csv as _pycsv
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

DEFAULT_NA_VALUES = ("", "NA", "NaN", "null", "None")
QUOTE = '"'

BAD_NONE = 0
BAD_FIELD_COUNT = 1
BAD_NUMBER = 2
BAD_ENCODING = 3
BAD_QUOTING = 4

#: Text of each ``CsvBlock.bad_reason`` code.
BAD_REASONS = {
    BAD_NONE: "ok",
    BAD_FIELD_COUNT: "wrong number of fields",
    BAD_NUMBER: "unparsable number",
    BAD_ENCODING: "bytes that are not valid UTF-8",
    BAD_QUOTING: "malformed quoting",
}

_WINDOW = 1 << 16           # bytes read around each cut by split_byte_ranges
_MAX_GATHER = 1 << 26       # bytes of one fixed-width column gather before falling back
_BLOCK = 64                 # below this many values, a failing bulk conversion goes one by one
_PIECE = 1 << 22            # bytes parsed at once by parse_range


@dataclass
class CsvBlock:
    """The records of one byte range, in file order.

    Attributes
    ----------
    features : ndarray of float64, shape (n, d)
        The ``features`` columns in the order asked for; NaN where missing
        (and for every column of a record with the wrong number of fields).
    labels : ndarray of float64, shape (n,), or None
        The label column (NaN where missing), None without a label.
    weights : ndarray of float64, shape (n,), or None
        The weight column (NaN where missing), None without a weight.
    categorical : dict of str -> ndarray of str, shape (n,)
        Fixed-width unicode arrays; ``""`` marks a missing value.
    lines : ndarray of int64, shape (n,)
        Physical line number of each record (1-based; the header is line 1).
    bad : ndarray of bool, shape (n,)
        True for malformed records (they are kept, so that ids can be
        assigned by position; the caller drops them or raises).
    bad_reason : ndarray of int8, shape (n,)
        A code of :data:`BAD_REASONS` (``BAD_NONE`` for good records).
    bad_column : ndarray of int32, shape (n,)
        For ``BAD_NUMBER``: index in ``header`` of the first unparsable
        column; -1 otherwise.
    header : list of str
        The file's column names (to name ``bad_column``).
    column_bad : ndarray of int64, shape (k,)
        Per numeric column (``features``, then label, then weight): how many
        records hold a value that is not missing and does not parse.
    column_example : list of (int, str) or None
        Per numeric column: the first such record (index into this block) and
        its value; None where every value parsed.
    """

    features: np.ndarray
    labels: np.ndarray | None
    weights: np.ndarray | None
    categorical: dict
    lines: np.ndarray
    bad: np.ndarray
    bad_reason: np.ndarray
    bad_column: np.ndarray
    header: list = field(default_factory=list)
    column_bad: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    column_example: list = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.lines.shape[0])

    def reason_text(self, i: int) -> str:
        """Describe why record ``i`` is bad (``"ok"`` for a good record)."""
        code = int(self.bad_reason[i])
        text = BAD_REASONS[code]
        col = int(self.bad_column[i])
        if code == BAD_NUMBER and col >= 0:
            text += f" in column {self.header[col]!r}"
        return text


class QuotedNewlineError(DataError):
    """A quoted field reaches the end of its line (unsupported); ``line`` is where it opens."""

    reason = ("a quoted field contains a newline (or its closing quote is missing); "
              "quoted newlines are not supported")

    def __init__(self, path, line: int):
        super().__init__(f"{os.fspath(path)}, line {line}: {self.reason}")
        self.line = line


# --------------------------------------------------------------------------- header

def _check_delimiter(delimiter: str) -> bytes:
    if not isinstance(delimiter, str) or len(delimiter) != 1 or ord(delimiter) > 127:
        raise ValueError(f"delimiter must be one ASCII character, got {delimiter!r}")
    if delimiter in ('"', "\n", "\r"):
        raise ValueError(f"delimiter {delimiter!r} is not allowed")
    return delimiter.encode("ascii")


def read_header(path, delimiter: str = ",") -> tuple[list[str], int]:
    """Read the header line of a CSV file.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    delimiter : str
        One ASCII character.

    Returns
    -------
    names : list of str
        The column names (quoted names are unquoted; a UTF-8 BOM is skipped).
    data_start : int
        Byte offset of the first data line (the file size for a header-only
        file without a final newline).

    Raises
    ------
    DataError
        If the file is empty, its first line is blank, it is not valid UTF-8,
        or a column name appears twice.
    """
    _check_delimiter(delimiter)
    line = b""
    with open(path, "rb") as f:
        while True:
            piece = f.readline(_WINDOW)
            line += piece
            if not piece or piece.endswith(b"\n"):
                break
    return header_from_line(line, path, delimiter), len(line)


def header_from_line(line: bytes, path, delimiter: str = ",") -> list[str]:
    """The column names of a header line (its raw bytes, line end included or not).

    Raises
    ------
    DataError
        As :func:`read_header`, naming ``path``.
    """
    _check_delimiter(delimiter)
    data_start = len(line)
    text = line.rstrip(b"\n").rstrip(b"\r")
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    if not text:
        what = "empty file" if data_start == 0 else "the first line is blank"
        raise DataError(f"{os.fspath(path)}: no header ({what}); a CSV file must start with a header line")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{os.fspath(path)}, line 1 (header): bytes that are not valid UTF-8 "
                        f"at byte {e.start}") from None
    try:
        names = next(_pycsv.reader([decoded], delimiter=delimiter, quotechar=QUOTE, strict=True))
    except _pycsv.Error as e:
        raise DataError(f"{os.fspath(path)}, line 1 (header): {e}") from None
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{os.fspath(path)}, line 1 (header): column {name!r} appears twice")
        seen.add(name)
    return names


# --------------------------------------------------------------------------- ranges

def _next_line_start(f, pos: int, size: int) -> int:
    """Smallest line start >= pos (a line start is 0 or a byte after ``\\n``)."""
    if pos <= 0:
        return 0
    f.seek(pos - 1)
    at = pos - 1
    while at < size:
        win = f.read(_WINDOW)
        k = win.find(b"\n")
        if k >= 0:
            return at + k + 1
        at += len(win)
        if not win:
            break
    return size


def split_byte_ranges(path, chunk_bytes: int, delimiter: str = ",") -> list[tuple[int, int]]:
    """Cut the data part of a CSV file into byte ranges that start at line starts.

    The cuts are placed every ``chunk_bytes`` bytes after the header and moved
    forward to the next line start, reading only a small window around each
    cut. A range may hold more than ``chunk_bytes`` bytes (a long line) and
    ranges never hold part of a line.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    chunk_bytes : int
        Target size of a range in bytes (> 0).
    delimiter : str
        The delimiter (only used to read the header).

    Returns
    -------
    list of (start, end)
        Consecutive half-open byte ranges covering ``[data_start, file size)``;
        empty for a header-only file.

    Raises
    ------
    DataError
        If the file has no header (see :func:`read_header`).
    """
    if int(chunk_bytes) <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    chunk_bytes = int(chunk_bytes)
    _, data_start = read_header(path, delimiter)
    size = os.path.getsize(path)
    if data_start >= size:
        return []
    bounds = [data_start]
    with open(path, "rb") as f:
        cut = data_start + chunk_bytes
        while cut < size:
            b = _next_line_start(f, cut, size)
            if b >= size:
                break
            if b > bounds[-1]:
                bounds.append(b)
            cut = b + chunk_bytes
    bounds.append(size)
    return list(zip(bounds[:-1], bounds[1:]))


# --------------------------------------------------------------------------- counting

def _read_range(path, start: int, end: int) -> bytes:
    if start < 0 or end < start:
        raise ValueError(f"bad byte range [{start}, {end})")
    if start == end:
        return b""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                raise ValueError(f"{os.fspath(path)}: byte {start} is not at a line start")
        buf = f.read(end - start)
    if len(buf) != end - start:
        raise ValueError(f"{os.fspath(path)}: range [{start}, {end}) is past the end of the file")
    return buf


def _normalize(buf: bytes) -> bytes:
    """Append a final newline and turn CRLF into LF (byte offsets are not kept)."""
    if buf and not buf.endswith(b"\n"):
        buf += b"\n"
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    return buf


def _count_blank(nbuf: bytes) -> int:
    if not nbuf.startswith(b"\n") and b"\n\n" not in nbuf:
        return 0
    nl = np.flatnonzero(np.frombuffer(nbuf, np.uint8) == 10)
    return int(nl[0] == 0) + int(np.count_nonzero(np.diff(nl) == 1))


def range_counts(path, start: int, end: int) -> tuple[int, int]:
    """Count the records and the physical lines of a byte range in one read.

    Returns
    -------
    records : int
        What :func:`count_records` returns.
    lines : int
        What :func:`count_lines` returns.
    """
    nbuf = _normalize(_read_range(path, start, end))
    lines = nbuf.count(b"\n")
    return lines - _count_blank(nbuf), lines


def count_records(path, start: int, end: int) -> int:
    """Number of records in ``[start, end)``: the lines that are not blank.

    Equals ``len(parse_range(path, start, end, ...))`` whenever that call
    succeeds (good and bad records alike). Uses bulk byte counts, with a
    NumPy pass only when the range has blank lines.
    """
    return range_counts(path, start, end)[0]


def count_lines(path, start: int, end: int) -> int:
    """Number of physical lines in ``[start, end)``, blank ones included.

    The ``first_line`` of the next range is this range's ``first_line`` plus
    this count.
    """
    return range_counts(path, start, end)[1]


# --------------------------------------------------------------------------- parsing

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
        first_bad = np.full(rows.shape[0], np.iinfo(np.int32).max, np.int64)
        for j, (hidx, raw) in enumerate(zip(self.cols.numeric, numeric)):
            vals, bad = _to_float(raw, na_u if raw.dtype.kind == "U" else na_s)
            self.values[rows, j] = vals
            if bad.any():
                first_bad[bad] = np.minimum(first_bad[bad], hidx)
                self._note_column(j, rows, raw, bad)
        for j, raw in enumerate(cats):
            s = _to_str(raw, na_u)
            if s.dtype.itemsize > self.cats[j].dtype.itemsize:
                self.cats[j] = self.cats[j].astype(s.dtype)
            self.cats[j][rows] = s
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


def parse_range(path, start: int, end: int, *, header, features, label=None,
                categorical=(), weight=None, delimiter: str = ",",
                na_values=DEFAULT_NA_VALUES, first_line: int) -> CsvBlock:
    """Parse the records of ``[start, end)`` into arrays.

    Lines without a quote character are split and converted with bulk NumPy
    operations (field boundaries from byte searches, one ``astype`` per
    column); only lines holding a ``"`` go through Python's ``csv`` module.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    start, end : int
        A byte range starting at a line start (e.g. from
        :func:`split_byte_ranges`).
    header : list of str
        The column names (from :func:`read_header`).
    features : list of str
        Numeric feature columns, in output order.
    label, weight : str or None
        Numeric label and weight columns.
    categorical : sequence of str
        Columns kept as strings.
    delimiter : str
        One ASCII character.
    na_values : sequence of str
        Field values that mean "missing" (compared exactly, no stripping).
    first_line : int
        Physical line number of the range's first line (2 for the first data
        line; add :func:`count_lines` of the previous ranges).

    Returns
    -------
    CsvBlock
        One entry per non-blank line, bad records included and flagged.

    Raises
    ------
    DataError
        If a configured column is not in ``header``, or a quoted field holds a
        newline (unsupported); the message names the file and the line.
    """
    return parse_buffer(_read_range(path, start, end), path, header=header, features=features,
                        label=label, categorical=categorical, weight=weight, delimiter=delimiter,
                        na_values=na_values, first_line=first_line)


def parse_buffer(raw: bytes, path, *, header, features, label=None, categorical=(), weight=None,
                 delimiter: str = ",", na_values=DEFAULT_NA_VALUES, first_line: int) -> CsvBlock:
    """:func:`parse_range` of bytes already read (whole lines; ``path`` names errors).

    For input that is not a plain byte range of a file, e.g. a piece of a
    decompressed stream.
    """
    dbyte = _check_delimiter(delimiter)
    cols = _resolve_columns(path, header, features, label, categorical, weight)
    na_u = np.array(list(na_values), dtype=str) if len(na_values) else np.array([], "U1")
    na_s = np.array([v.encode("utf-8") for v in na_values], dtype="S") if len(na_values) \
        else np.array([], "S1")
    buf = _normalize(raw)

    # Large ranges are parsed in pieces of whole lines: the temporaries of a
    # piece stay in cache, which is faster than one pass over a big buffer.
    parts, lines, pos, line = [], [], 0, first_line
    while pos < len(buf):
        cut = buf.find(b"\n", pos + _PIECE - 1) + 1 or len(buf)
        piece = buf[pos:cut] if (pos, cut) != (0, len(buf)) else buf
        builder, rec_lines = _parse_piece(path, piece, line, cols, dbyte, delimiter, na_s, na_u)
        parts.append(builder)
        lines.append(rec_lines)
        line += piece.count(b"\n")
        pos = cut
    if not parts:
        parts.append(_Builder(0, cols))
        lines.append(np.empty(0, np.int64))
    if len(parts) == 1:
        values, cats, reason, bad_column = parts[0].values, parts[0].cats, parts[0].reason, \
            parts[0].bad_column
    else:
        values = np.concatenate([b.values for b in parts])
        cats = [np.concatenate([b.cats[j] for b in parts]) for j in range(len(cols.cats))]
        reason = np.concatenate([b.reason for b in parts])
        bad_column = np.concatenate([b.bad_column for b in parts])
    column_bad, column_example = _merge_column_notes(parts)
    nf = len(features)
    labels = values[:, nf] if label is not None else None
    weights = values[:, nf + (label is not None)] if weight is not None else None
    return CsvBlock(
        features=np.ascontiguousarray(values[:, :nf]),
        labels=None if labels is None else np.ascontiguousarray(labels),
        weights=None if weights is None else np.ascontiguousarray(weights),
        categorical={name: c for name, c in zip(categorical, cats)},
        lines=np.concatenate(lines) if len(lines) > 1 else lines[0],
        bad=reason != BAD_NONE,
        bad_reason=reason,
        bad_column=bad_column,
        header=list(header),
        column_bad=column_bad,
        column_example=column_example,
    )


def _merge_column_notes(parts):
    """Per-column unparsable counts and earliest examples of the pieces of one range."""
    column_bad = sum(b.column_bad for b in parts)
    examples, offset = [None] * len(column_bad), 0
    for b in parts:
        for j, ex in enumerate(b.column_example):
            if ex is not None and examples[j] is None:
                examples[j] = (ex[0] + offset, ex[1])
        offset += len(b.reason)
    return column_bad, examples


def _parse_piece(path, buf, first_line, cols, dbyte, delimiter, na_s, na_u):
    """Parse whole lines ``buf`` (ending with a newline); return the builder and line numbers."""
    a = np.frombuffer(buf, np.uint8)
    # One scan finds every field end (delimiter or newline); lines come from it.
    ends = np.flatnonzero((a == dbyte[0]) | (a == 10))
    end_is_nl = a[ends] == 10
    nl = ends[end_is_nl]
    fields_per_line = np.diff(np.flatnonzero(end_is_nl), prepend=-1)
    line_start = np.empty_like(nl)
    if nl.size:
        line_start[0] = 0
        line_start[1:] = nl[:-1] + 1
    nonblank = nl != line_start
    rec_line = np.flatnonzero(nonblank)           # record k lives on line rec_line[k]
    n = rec_line.shape[0]
    lines = first_line + rec_line.astype(np.int64)
    out = _Builder(n, cols)
    line_to_rec = np.full(nl.shape[0], -1, np.int64)
    line_to_rec[rec_line] = np.arange(n)

    # Lines that take the slow path or are flagged before splitting.
    special = np.zeros(nl.shape[0], bool)
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        for i, (s, e) in enumerate(zip(line_start.tolist(), nl.tolist())):
            try:
                buf[s:e].decode("utf-8")
            except UnicodeDecodeError:
                special[i] = True
                out.reason[line_to_rec[i]] = BAD_ENCODING
    quoted = np.zeros(nl.shape[0], bool)
    if b'"' in buf:
        qline = np.searchsorted(nl, np.flatnonzero(a == 34))
        quoted[qline] = True
        quoted &= ~special
        special |= quoted

    fast = nonblank & ~special
    wrong = fast & (fields_per_line != cols.ncol)
    out.reason[line_to_rec[wrong]] = BAD_FIELD_COUNT
    fast &= ~wrong

    if fast.any():
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        if not fast.all():
            keep = np.repeat(fast, fields_per_line)
            starts, fends = starts[keep], ends[keep]
        else:
            fends = ends
        starts = starts.reshape(-1, cols.ncol)
        fends = fends.reshape(-1, cols.ncol)
        used = cols.numeric + cols.cats
        width = max((int((fends[:, h] - starts[:, h]).max()) for h in used), default=0) + 1
        pad = np.concatenate([a, np.zeros(min(width, 1 << 12), np.uint8)])
        numeric = [_gather(a, pad, starts[:, h], fends[:, h]) for h in cols.numeric]
        cats = [_gather(a, pad, starts[:, h], fends[:, h]) for h in cols.cats]
        out.put(line_to_rec[fast], numeric, cats, na_s, na_u)

    if quoted.any():
        _parse_quoted(path, buf, line_start, nl, np.flatnonzero(quoted), line_to_rec,
                      first_line, cols, delimiter, out, na_s, na_u)

    return out, lines


def _parse_quoted(path, buf, line_start, nl, qlines, line_to_rec, first_line, cols,
                  delimiter, out: _Builder, na_s, na_u):
    """Parse lines holding a quote character with Python's csv module."""
    texts = [buf[s:e].decode("utf-8") + "\n"
             for s, e in zip(line_start[qlines].tolist(), nl[qlines].tolist())]
    recs_of = line_to_rec[qlines]

    try:
        records = _read_quoted(texts, delimiter)
    except _OpenQuote as e:
        raise QuotedNewlineError(path, first_line + int(qlines[e.k])) from None
    lens = np.fromiter((-1 if r is None else len(r) for r in records), np.int64, len(records))
    out.reason[recs_of[lens == -1]] = BAD_QUOTING
    out.reason[recs_of[(lens >= 0) & (lens != cols.ncol)]] = BAD_FIELD_COUNT
    good = np.flatnonzero(lens == cols.ncol)
    if good.size == 0:
        return
    if good.size != len(records):
        records = [records[i] for i in good.tolist()]
    columns = list(zip(*records))
    out.put(recs_of[good], [_as_bytes(columns[h]) for h in cols.numeric],
            [np.array(columns[h], dtype=str) for h in cols.cats], na_s, na_u)


class _OpenQuote(Exception):
    """Text ``k`` leaves a quoted field open at its end."""

    def __init__(self, k: int):
        super().__init__(k)
        self.k = k


def _read_quoted(texts, delimiter) -> list:
    """csv-module records of one-line texts (None where the module rejects a line).

    Raises
    ------
    _OpenQuote
        At the first text whose quoted field reaches the end of the line.
    """
    # Each text is one line, so one record per text unless a quote is left open (it
    # swallows the next text, or the final newline) or the csv module rejects a line.
    records = None
    try:
        records = list(_pycsv.reader(texts, delimiter=delimiter, quotechar=QUOTE))
    except _pycsv.Error:
        pass
    if records is None or len(records) != len(texts) or "\n" in (records[-1] or [""])[-1]:
        records = []
        reader = _pycsv.reader(iter(texts), delimiter=delimiter, quotechar=QUOTE)
        consumed = 0
        while consumed < len(texts):
            k = consumed
            try:
                fields = next(reader)
            except _pycsv.Error:
                fields = None
            consumed = reader.line_num
            if fields is not None and (consumed - k > 1 or "\n" in (fields or [""])[-1]):
                raise _OpenQuote(k)
            records.append(fields)
    return records


def open_quote_line(path, start: int, end: int, delimiter: str = ",") -> int | None:
    """Relative line (0 = first of the range) of the first quoted newline in ``[start, end)``.

    The check :func:`parse_range` makes, without converting anything: only
    lines holding a ``"`` (and valid UTF-8) go through the csv module; a range
    without a quote costs one byte search.
    """
    _check_delimiter(delimiter)
    buf = _normalize(_read_range(path, start, end))
    if b'"' not in buf:
        return None
    a = np.frombuffer(buf, np.uint8)
    nl = np.flatnonzero(a == 10)
    qlines = np.unique(np.searchsorted(nl, np.flatnonzero(a == 34)))
    begins = np.concatenate([[0], nl[:-1] + 1])
    lines, texts = [], []
    for k in qlines.tolist():
        try:
            texts.append(buf[int(begins[k]):int(nl[k])].decode("utf-8") + "\n")
        except UnicodeDecodeError:
            continue
        lines.append(k)
    if not texts:
        return None
    try:
        _read_quoted(texts, delimiter)
    except _OpenQuote as e:
        return lines[e.k]
    return None


def _as_bytes(values) -> np.ndarray:
    """UTF-8 bytes array of strings, so numbers convert exactly as in the fast path."""
    try:
        return np.array(values, dtype="S")
    except UnicodeEncodeError:
        return np.array([v.encode("utf-8") for v in values], dtype="S")


def first_bad_error(block: CsvBlock, path) -> DataError | None:
    """The error to raise for ``on_bad_row = "error"``: the first bad record.

    Returns
    -------
    DataError or None
        Names the file, the line and (for unparsable numbers) the column;
        None if the block has no bad record.
    """
    hits = np.flatnonzero(block.bad)
    if hits.size == 0:
        return None
    i = int(hits[0])
    msg = f"{os.fspath(path)}, line {int(block.lines[i])}: {block.reason_text(i)}"
    if block.bad_reason[i] == BAD_FIELD_COUNT:
        msg += f" (the header has {len(block.header)})"
    more = hits.size - 1
    if more:
        msg += f"; {more} more bad record{'s' if more > 1 else ''} in this range"
    return DataError(msg + ' (set on_bad_row = "drop" to drop and count them)')


# --------------------------------------------------------------------------- bad records

#: Bytes of a bad record's raw line kept for rejects.h5 (longer lines are cut).
RAW_LIMIT = 1024
#: Characters of a raw line shown in an error message or report.json.
SHOWN_LIMIT = 200


@dataclass(frozen=True)
class BadRecord:
    """One bad record: its line (relative or absolute, as the caller says), reason and raw bytes."""

    line: int
    reason: str
    raw: bytes

    def message(self, path, line: int) -> str:
        """One line naming the file, the line, the reason and the raw text (cut to SHOWN_LIMIT)."""
        return f"{os.fspath(path)}, line {line}: {self.reason}: {shown_text(self.raw)}"


def line_text(raw: bytes, limit: int | None = None) -> str:
    """A raw line as text (invalid UTF-8 bytes as ``\\xNN``), cut to ``limit`` characters."""
    text = raw.decode("utf-8", "backslashreplace")
    return text if limit is None else text[:limit]


def shown_text(raw: bytes, limit: int = SHOWN_LIMIT) -> str:
    """A raw line as a one-line quoted string for messages, cut to ``limit`` characters."""
    text = line_text(raw)
    return repr(text[:limit]) + (" ..." if len(text) > limit else "")


def raw_lines(path, start: int, end: int, rel_lines, limit: int = RAW_LIMIT) -> list[bytes]:
    """The raw bytes of physical lines of ``[start, end)`` (0 = the range's first line).

    Line ends (``\\n``, ``\\r\\n``) are not included; each line is cut to ``limit`` bytes.
    """
    return buffer_lines(_read_range(path, start, end), rel_lines, limit)


def buffer_lines(raw: bytes, rel_lines, limit: int = RAW_LIMIT) -> list[bytes]:
    """:func:`raw_lines` of bytes already read (whole lines)."""
    buf = _normalize(raw)
    nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
    begins = np.concatenate([[0], nl[:-1] + 1]) if nl.size else nl
    out = []
    for k in np.asarray(rel_lines, dtype=np.int64).tolist():
        s = int(begins[k])
        out.append(buf[s:min(int(nl[k]), s + limit)])
    return out


def _line_start_offset(path, start: int, end: int, rel_line: int) -> int:
    """Byte offset (in the file) where physical line ``rel_line`` of the range starts."""
    with open(path, "rb") as f:
        f.seek(start)
        pos, seen = start, 0
        while seen < rel_line and pos < end:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            seen += 1
    return pos


def first_bad_record(path, start: int, end: int, *, header, features, label=None,
                     categorical=(), weight=None, delimiter: str = ",",
                     na_values=DEFAULT_NA_VALUES) -> BadRecord | None:
    """The first bad record of ``[start, end)`` in file order, or None.

    Like :func:`parse_range`, but never raises for a quoted newline: that is a
    bad record too (the first of the range unless a record before it is bad).

    Returns
    -------
    BadRecord or None
        ``line`` is relative: 0 is the range's first physical line.
    """
    kwargs = dict(header=header, features=features, label=label, categorical=categorical,
                  weight=weight, delimiter=delimiter, na_values=na_values)
    try:
        block = parse_range(path, start, end, first_line=0, **kwargs)
    except QuotedNewlineError as e:
        cut = _line_start_offset(path, start, end, e.line)
        earlier = first_bad_record(path, start, cut, **kwargs) if cut > start else None
        return earlier or BadRecord(e.line, e.reason, raw_lines(path, start, end, [e.line])[0])
    return block_first_bad(block, lambda line: raw_lines(path, start, end, [line])[0])


def block_first_bad(block: CsvBlock, raw_line) -> BadRecord | None:
    """The first bad record of a parsed ``block``; ``raw_line(line)`` gives a line's text."""
    hits = np.flatnonzero(block.bad)
    if hits.size == 0:
        return None
    i = int(hits[0])
    reason = block.reason_text(i)
    if block.bad_reason[i] == BAD_FIELD_COUNT:
        reason += f" (the header has {len(block.header)})"
    line = int(block.lines[i])
    return BadRecord(line, reason, raw_line(line))


def _end_of_records(path, data_start: int, max_records: int, max_bytes: int) -> int:
    """End of the first ``max_records`` lines after ``data_start``, within ``max_bytes`` (whole lines)."""
    size = os.path.getsize(path)
    want = min(size - data_start, max_bytes)
    with open(path, "rb") as f:
        f.seek(data_start)
        buf = b""
        while True:   # read a little first: most files have short lines
            piece = f.read(min(want, max(_WINDOW, 2 * len(buf))) - len(buf))
            buf += piece
            nls = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
            if nls.size >= max_records:
                return data_start + int(nls[max_records - 1]) + 1
            if len(buf) >= want or not piece:
                break
    if data_start + len(buf) == size:
        return size   # the whole data part (a last line without newline included)
    return data_start + (int(nls[-1]) + 1 if nls.size else 0)


def probe_numeric_columns(path, header, data_start: int, *, features, label=None, weight=None,
                          delimiter: str = ",", na_values=DEFAULT_NA_VALUES,
                          max_records: int = 1000, max_bytes: int = 1 << 20) -> list[dict]:
    """Parse the first records of a file and report numeric columns that mostly fail.

    Reads at most ``max_records`` lines and ``max_bytes`` bytes (whole lines)
    after the header.

    Returns
    -------
    list of dict
        One per column whose values fail to parse in more than half of the
        records read: ``column``, ``bad`` (records), ``records``, ``line`` and
        ``value`` (the first failing value). Empty if none (or no records).
    """
    end = _end_of_records(path, data_start, max_records, max_bytes)
    if end <= data_start:
        return []
    try:
        block = parse_range(path, data_start, end, header=header, features=features, label=label,
                            weight=weight, delimiter=delimiter, na_values=na_values, first_line=2)
    except DataError:
        return []   # a quoted newline: reported in file order when the range is read
    return failing_columns(block, list(features) + [c for c in (label, weight) if c is not None])


def failing_columns(block: CsvBlock, names: list) -> list[dict]:
    """The numeric columns ``names`` (in ``block.column_bad`` order) failing in most records.

    Returns what :func:`probe_numeric_columns` returns.
    """
    n = len(block)
    out = []
    for j, name in enumerate(names):
        if n and 2 * int(block.column_bad[j]) > n:
            rec, value = block.column_example[j]
            out.append({"column": name, "bad": int(block.column_bad[j]), "records": n,
                        "line": int(block.lines[rec]), "value": value})
    return out
