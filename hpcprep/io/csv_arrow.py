"""CSV blocks through Apache Arrow's parser, with hpcprep's record semantics.

:func:`parse_arrow` parses a block of whole lines with ``pyarrow.csv`` and
returns exactly what the hand-written parser (:mod:`hpcprep.io.csv_parse`)
would, or None when it cannot promise that; the caller then parses the block
with the hand-written parser. What falls back, and why, is listed in
``docs/csv.md`` ("Arrow and the fallback parser"). In short, a block is
parsed by Arrow unless it holds a NUL byte, a bare ``\\r``, a UTF-8 BOM at its
start, bytes that are not valid UTF-8, a quote that is not part of a plain
RFC 4180 quoted field, or a quoted line longer than the csv module's field
limit; and unless Arrow itself fails on it (any error other than a number
that does not convert).

Numbers: Arrow's float parser accepts a subset of Python's ``float()``
syntax and is correctly rounded, except that it also reads ``nan(...)``.
So a numeric column converts in Arrow when every value does and none is a
NaN that is not missing; otherwise the column is read as text, values in the
syntax both accept (:data:`FLOAT_SYNTAX`) are cast by Arrow and the others
converted one by one as the hand-written parser does (``float()`` on UTF-8
bytes), which flags the unparsable ones.
"""

from __future__ import annotations

import csv as _pycsv

import numpy as np

from .csv_convert import _Builder, _Columns, _as_bytes, _to_float
from .csv_records import BAD_FIELD_COUNT
from .csv_split import _count_blank, count_newlines

#: Float literals that Arrow and Python's ``float()`` both read, to the same value.
FLOAT_SYNTAX = (r"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
                r"|(?i:inf|infinity|nan))$")
_BOM = b"\xef\xbb\xbf"


class _Doubtful(Exception):
    """Arrow cannot give the hand-written parser's semantics for this block."""


class _NotMissingNaN(Exception):
    """A float column read a NaN that is not missing (maybe ``nan(...)``): read it as text."""


def parse_arrow(buf: bytes, header, cols: _Columns, delimiter: str, na_values, na_s,
                first_line: int):
    """Parse normalized whole lines ``buf`` (LF line ends, a final newline) with Arrow.

    Parameters
    ----------
    buf : bytes
        Whole lines, as :func:`~hpcprep.io.csv_split._normalize` returns them.
    header : list of str
        The file's column names.
    cols : _Columns
        The resolved columns (:func:`~hpcprep.io.csv_convert._resolve_columns`).
    delimiter : str
        One ASCII character (checked by the caller).
    na_values : sequence of str
        As :func:`~hpcprep.io.csv_parse.parse_buffer`; ``na_s`` is them as a
        bytes array.
    first_line : int
        Physical line number of the first line of ``buf``.

    Returns
    -------
    (_Builder, ndarray of int64) or None
        The block's arrays and each record's physical line, or None where the
        hand-written parser must parse the block.
    """
    numeric = [header[h] for h in cols.numeric]
    text = [header[h] for h in cols.cats]
    if set(numeric) & set(text) or not _plain_enough(buf, delimiter):
        return None
    nlines = count_newlines(buf)
    if nlines == 0:
        return None
    read = lambda as_text: _read_table(buf, header, numeric, text, delimiter,  # noqa: E731
                                       na_values, as_text)
    try:
        try:
            out, blank = _build(read(False), cols, nlines, buf, numeric, text, na_s)
        except _NotMissingNaN:
            out, blank = _build(read(True), cols, nlines, buf, numeric, text, na_s)
    except _Doubtful:
        return None
    if out is None:
        return None
    return out, _record_lines(buf, first_line, nlines, blank)


def _build(read, cols, nlines, buf, numeric, text, na_s):
    """(_Builder, blank lines) of an Arrow read ``(table, invalid)``; (None, 0) if the
    records are not the block's non-blank lines."""
    table, invalid = read
    n = table.num_rows + len(invalid)
    blank = 0 if n == nlines else _count_blank(buf)
    if n != nlines - blank or n == 0:
        return None, 0
    out = _Builder(n, cols)
    rows = slice(None)
    if invalid:
        skipped = np.asarray(invalid, np.int64) - 1
        out.reason[skipped] = BAD_FIELD_COUNT
        rows = np.delete(np.arange(n), skipped)
    _fill(out, table, rows, numeric, text, na_s)
    return out, blank


def _plain_enough(buf: bytes, delimiter: str) -> bool:
    """Whether Arrow splits ``buf`` into the records and fields the csv rules say (docs/csv.md)."""
    if b"\x00" in buf or b"\r" in buf or buf.startswith(_BOM):
        return False
    if not buf.isascii():
        try:
            buf.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return b'"' not in buf or quotes_well_formed(buf, delimiter)


def quotes_well_formed(buf: bytes, delimiter: str) -> bool:
    """Whether every ``"`` of ``buf`` belongs to a plain RFC 4180 quoted field on one line.

    ``buf`` ends with a newline. Quotes pair up in order (opening, closing);
    True when no pair holds a newline, an opening quote starts a field (or
    follows a closing one: ``""`` inside a field), a closing quote ends a
    field (or precedes an opening one), and no line is longer than the csv
    module's field size limit. Then Python's csv module and Arrow split every
    line alike, and no quoted field holds a newline.
    """
    a = np.frombuffer(buf, np.uint8)
    q = np.flatnonzero(a == 34)
    if q.size % 2:
        return False
    opening, closing = q[0::2], q[1::2]
    nl = np.flatnonzero(a == 10)
    if (np.searchsorted(q, nl) % 2).any():
        return False   # an odd number of quotes before a line end: a pair holds a newline
    dbyte = ord(delimiter)
    before = a[np.maximum(opening - 1, 0)]
    glued = np.zeros(opening.size, bool)       # opening i right after closing i - 1
    glued[1:] = opening[1:] == closing[:-1] + 1
    if not ((before == dbyte) | (before == 10) | (opening == 0) | glued).all():
        return False
    after = a[closing + 1]
    glued_next = np.append(glued[1:], False)   # closing i right before opening i + 1
    if not ((after == dbyte) | (after == 10) | glued_next).all():
        return False
    return int(np.diff(nl, prepend=-1).max()) <= _pycsv.field_size_limit()


def _read_table(buf, header, numeric, text, delimiter, na_values, as_text: bool):
    """The Arrow table of the wanted columns and the 1-based records with a wrong field count.

    Numeric columns are read as float64, or as text (``as_text``, or when one
    does not convert; ``_fill`` converts them then).
    """
    import pyarrow as pa

    try:
        table, invalid = _arrow_read(buf, header, numeric, text, delimiter, na_values,
                                     pa.string() if as_text else pa.float64())
    except pa.ArrowInvalid as e:
        if "conversion error" not in str(e):
            raise _Doubtful() from None
        table, invalid = _arrow_read(buf, header, numeric, text, delimiter, na_values, pa.string())
    if invalid and None in invalid:
        # Threaded reads do not number the rows they skip: read once more in one thread.
        types = {name: table.schema.field(name).type for name in table.column_names}
        table, invalid = _arrow_read(buf, header, numeric, text, delimiter, na_values, types,
                                     threads=False)
    return table, invalid


def _arrow_read(buf, header, numeric, text, delimiter, na_values, numeric_type, threads=True):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    invalid = []

    def skip(row):
        invalid.append(row.number)
        return "skip"

    if isinstance(numeric_type, dict):
        types = numeric_type
    else:
        types = {name: numeric_type for name in numeric}
        types.update({name: pa.string() for name in text})
    try:
        table = pacsv.read_csv(
            pa.BufferReader(buf),
            read_options=pacsv.ReadOptions(column_names=list(header),
                                           use_threads=threads and pa.cpu_count() > 1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"', double_quote=True,
                                             escape_char=False, newlines_in_values=False,
                                             ignore_empty_lines=True, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(dict.fromkeys(numeric + text)),
                null_values=list(na_values), strings_can_be_null=True,
                quoted_strings_can_be_null=True, check_utf8=True))
    except pa.ArrowInvalid:
        raise
    except pa.ArrowException:
        raise _Doubtful() from None
    return table, invalid


def _fill(out: _Builder, table, rows, numeric, text, na_s) -> None:
    """Convert the table's columns into ``out`` at ``rows`` (the records Arrow kept)."""
    import pyarrow as pa

    idx = np.arange(out.reason.shape[0])[rows]   # record index of each table row
    first_bad = out.no_bad(idx)
    for j, name in enumerate(numeric):
        col = table.column(name)
        if col.type == pa.float64():
            out.values[rows, j] = _floats(col)
            continue
        vals, bad, raw = _text_to_float(col, na_s)
        out.values[rows, j] = vals
        out.note_bad(j, idx, raw, bad, first_bad)
    out.mark_bad_numbers(idx, first_bad)
    for j, name in enumerate(text):
        values = table.column(name).to_pylist()
        if values:
            out.put_text(j, rows, np.array(["" if v is None else v for v in values], dtype=str))


def _floats(col) -> np.ndarray:
    """A float64 Arrow column as NumPy (NaN where null).

    Raises
    ------
    _NotMissingNaN
        For a NaN that is not null: Arrow reads ``nan(...)``, ``float()`` does not.
    """
    values, valid = arrow_floats(col)
    if valid is None:
        if np.isnan(values).any():
            raise _NotMissingNaN()
    elif (np.isnan(values) & valid).any():
        raise _NotMissingNaN()
    return values


def arrow_floats(col) -> tuple[np.ndarray, np.ndarray | None]:
    """A float64 Arrow column as NumPy straight from its buffers (no pandas, no copy if possible).

    Returns
    -------
    values : ndarray of float64
        NaN where null.
    valid : ndarray of bool or None
        False where null; None when nothing is null.
    """
    parts, valids = [], []
    for ch in col.chunks:
        if len(ch) == 0:
            continue
        v = np.frombuffer(ch.buffers()[1], np.float64, count=len(ch), offset=ch.offset * 8)
        valid = np.ones(len(ch), bool)
        if ch.null_count:
            bits = np.frombuffer(ch.buffers()[0], np.uint8)
            valid = np.unpackbits(bits, count=ch.offset + len(ch), bitorder="little")[ch.offset:]
            valid = valid.astype(bool)
            v = np.where(valid, v, np.nan)
        parts.append(v)
        valids.append(valid)
    if not parts:
        return np.empty(0), None
    values = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if col.null_count == 0:
        return values, None
    return values, valids[0] if len(valids) == 1 else np.concatenate(valids)


def _text_to_float(col, na_s):
    """(values, unparsable mask, raw values) of a numeric column read as text.

    Values in :data:`FLOAT_SYNTAX` are cast by Arrow; the others (there are
    few in practice) convert as in the hand-written parser. Missing values
    (Arrow nulls) are NaN.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    ok = pc.fill_null(pc.match_substring_regex(col, FLOAT_SYNTAX), True)
    vals = pc.if_else(ok, col, pa.scalar(None, pa.string())).cast(pa.float64()).to_numpy()
    odd = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    bad = np.zeros(n, bool)
    raw = np.zeros(n, "S1")
    if odd.size:
        texts = pc.take(col, pa.array(odd)).to_pylist()
        odd_raw = _as_bytes(texts)
        odd_vals, odd_bad = _to_float(odd_raw, na_s)
        vals[odd] = odd_vals
        bad[odd] = odd_bad
        if odd_bad.any():
            raw = np.zeros(n, odd_raw.dtype)
            raw[odd] = odd_raw
    return vals, bad, raw


def _record_lines(buf: bytes, first_line: int, nlines: int, blank: int) -> np.ndarray:
    """Physical line number of each record (non-blank line) of ``buf`` (``nlines`` lines)."""
    if blank == 0:
        return first_line + np.arange(nlines, dtype=np.int64)
    nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
    nonblank = np.diff(nl, prepend=-1) != 1
    return first_line + np.flatnonzero(nonblank).astype(np.int64)
