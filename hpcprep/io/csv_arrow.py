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

from .arrow_buffers import (arrow_floats, bool_values, from_indices, from_mask, null_like, string_offsets,
                            valid_mask)
from .csv_convert import _Builder, _Columns, _as_bytes, _to_float, not_plain_floats
from .csv_records import BAD_FIELD_COUNT
from .csv_split import _count_blank, count_newlines

#: Float literals that Arrow and Python's ``float()`` both read, to the same value.
FLOAT_SYNTAX = (r"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
                r"|(?i:inf|infinity|nan))$")
_BOM = b"\xef\xbb\xbf"
_QUOTE_PIECE = 1 << 16     # bytes of whole lines per step of quotes_well_formed


class _Doubtful(Exception):
    """Arrow cannot give the hand-written parser's semantics for this block."""


class _NotMissingNaN(Exception):
    """A float column read a NaN that is not missing (maybe ``nan(...)``): read it as text."""


def parse_arrow(buf: bytes, header, cols: _Columns, delimiter: str, na_values, na_s,
                first_line: int, quotes_plain: bool = False):
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
    quotes_plain : bool
        Every ``"`` of ``buf`` is known plain (checked while counting): not checked again.

    Returns
    -------
    (_Builder, ndarray of int64) or None
        The block's arrays and each record's physical line, or None where the
        hand-written parser must parse the block.
    """
    numeric = [header[h] for h in cols.numeric]
    text = [header[h] for h in cols.cats]
    if set(numeric) & set(text) or not _plain_enough(buf, delimiter, quotes_plain):
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


def _plain_enough(buf: bytes, delimiter: str, quotes_plain: bool = False) -> bool:
    """Whether Arrow splits ``buf`` into the records and fields the csv rules say (docs/csv.md)."""
    if b"\x00" in buf or b"\r" in buf or buf.startswith(_BOM):
        return False
    if not buf.isascii():
        try:
            buf.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return quotes_plain or b'"' not in buf or quotes_well_formed(buf, delimiter)


def quotes_well_formed(buf, delimiter: str, stop: int | None = None) -> bool:
    """Whether every ``"`` of ``buf`` belongs to a plain RFC 4180 quoted field on one line.

    ``buf`` (bytes or bytearray; only ``buf[:stop]`` when ``stop`` is given)
    holds whole lines and ends with a newline. Quotes pair up in order
    (opening, closing); True when no pair holds a newline, an opening quote
    starts a field (or follows a closing one: ``""`` inside a field), a closing
    quote ends a field (or precedes an opening one), and no line holding a
    quote is longer than the csv module's field size limit. Then Python's csv
    module and Arrow split every line alike, and no quoted field holds a newline.
    """
    stop = len(buf) if stop is None else stop
    a = np.frombuffer(buf, np.uint8, count=stop)
    if stop == 0 or a[-1] != 10:
        return stop == 0
    fits = np.zeros(256, bool)   # bytes allowed before an opening / after a closing quote
    fits[[ord(delimiter), 10, 34]] = True
    start = 0
    while start < stop:   # pieces of whole lines: their temporaries stay in cache (2-3x faster)
        cut = buf.find(b"\n", start + _QUOTE_PIECE - 1, stop) + 1 or stop
        if not _piece_quotes_ok(a, start, cut, fits):
            return False
        start = cut
    return True


def _piece_quotes_ok(a: np.ndarray, start: int, stop: int, fits: np.ndarray) -> bool:
    """:func:`quotes_well_formed` of the whole lines ``a[start:stop]``."""
    piece = a[start:stop]
    q = np.flatnonzero(piece == 34)
    if q.size == 0:
        return True
    if q.size % 2:
        return False
    # Before an opening quote: the delimiter, a newline, or a quote, which is then the
    # closing one before it (``""`` inside a field); likewise after a closing quote.
    # a[-1] (before a quote at byte 0) is the final newline: a line start.
    q += start
    after = a[q[1::2] + 1]
    if not (fits[a[q[0::2] - 1]].all() and fits[after].all()):
        return False
    limit = _pycsv.field_size_limit()
    if np.count_nonzero(after == 10) == np.count_nonzero(piece == 10) and stop - start <= limit:
        return True   # every line end follows a closing quote: outside the pairs
    nl = np.flatnonzero(piece == 10)
    if (np.searchsorted(q - start, nl) % 2).any():
        return False   # an odd number of quotes before a line end: a pair holds a newline
    return int(np.diff(nl, prepend=-1).max()) <= limit


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
    if any(number is None for number, _ in invalid):
        # Threaded reads do not number the rows they skip: find their lines by their text,
        # or else read once more in one thread.
        numbers = _number_skipped(buf, [row_text for _, row_text in invalid])
        if numbers is not None:
            return table, numbers
        types = {name: table.schema.field(name).type for name in table.column_names}
        table, invalid = _arrow_read(buf, header, numeric, text, delimiter, na_values, types,
                                     threads=False)
    return table, [number for number, _ in invalid]


def _number_skipped(buf: bytes, texts: list) -> list | None:
    """1-based record numbers of the lines of ``buf`` equal to one of ``texts``, the rows
    Arrow skipped; None unless there are exactly ``len(texts)`` such lines.

    A line equal to a skipped row's text is skipped too (each line parses on its
    own), so the count check makes the lines found exactly the rows skipped.
    """
    want = {t.encode("utf-8") for t in texts}
    a = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(a == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lens = ends - starts
    maybe = np.flatnonzero(np.isin(lens, [len(t) for t in want if t]))
    hits = [k for k, s, e in zip(maybe.tolist(), starts[maybe].tolist(), ends[maybe].tolist())
            if buf[s:e] in want]
    if len(hits) != len(texts):
        return None
    blank = np.flatnonzero(lens == 0)   # blank lines are not records
    return (np.array(hits, np.int64) - np.searchsorted(blank, hits) + 1).tolist()


def _arrow_read(buf, header, numeric, text, delimiter, na_values, numeric_type, threads=True):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    invalid = []

    def skip(row):
        invalid.append((row.number, row.text))
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


def _text_to_float(col, na_s):
    """(values, unparsable mask, raw values) of a numeric column read as text.

    Values of plain float bytes (digits, ``.``, ``e``, ``E``, ``+``, ``-``) are
    cast by Arrow, which reads such a value exactly when ``float()`` does, to
    the same number; the others (there are few in practice) convert as in the
    hand-written parser. Should Arrow reject a plain-looking value (``1-2``),
    the values outside :data:`FLOAT_SYNTAX` are the others instead. Missing
    values (Arrow nulls) are NaN.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    col = pa.chunked_array([col.combine_chunks()])   # one pass over each (not 1 per MiB read)
    odd = _odd_values(col.chunks[0])
    try:
        vals = _cast_except(col, odd)
    except pa.ArrowInvalid:
        odd = ~bool_values(pc.match_substring_regex(col, FLOAT_SYNTAX), null=True)
        vals = _cast_except(col, odd)
    odd = np.flatnonzero(odd)
    bad = np.zeros(n, bool)
    raw = np.zeros(n, "S1")
    if odd.size:
        texts = pc.take(col, from_indices(odd)).to_pylist()
        odd_raw = _as_bytes(texts)
        odd_vals, odd_bad = _to_float(odd_raw, na_s)
        vals[odd] = odd_vals
        bad[odd] = odd_bad
        if odd_bad.any():
            raw = np.zeros(n, odd_raw.dtype)
            raw[odd] = odd_raw
    return vals, bad, raw


def _odd_values(ch) -> np.ndarray:
    """Mask of the values of Arrow string array ``ch`` that are not null and not plain
    float bytes (or are empty)."""
    n = len(ch)
    if n == 0:
        return np.zeros(0, bool)
    data = ch.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data else np.zeros(0, np.uint8)
    odd = not_plain_floats(string_offsets(ch), data)
    return odd & valid_mask(ch) if ch.null_count else odd


def _cast_except(col, odd: np.ndarray) -> np.ndarray:
    """Arrow string column ``col`` cast to float64 but where ``odd`` (NaN there and where
    null), as a writable array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if odd.any():
        col = pc.if_else(from_mask(odd), null_like(col), col)
    values, _ = arrow_floats(col.cast(pa.float64()))
    return values if values.flags.writeable else values.copy()


def _record_lines(buf: bytes, first_line: int, nlines: int, blank: int) -> np.ndarray:
    """Physical line number of each record (non-blank line) of ``buf`` (``nlines`` lines)."""
    if blank == 0:
        return first_line + np.arange(nlines, dtype=np.int64)
    nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
    nonblank = np.diff(nl, prepend=-1) != 1
    return first_line + np.flatnonzero(nonblank).astype(np.int64)
