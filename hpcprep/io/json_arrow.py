"""JSON lines blocks through Apache Arrow's JSON reader, with hpcprep's record semantics.

:func:`parse_json_arrow` returns exactly what the line-by-line parser of
:mod:`hpcprep.io.lines` would, or None when it cannot promise that for the
block (then the caller parses it line by line). The block falls back when it
holds a NUL byte, a bare ``\\r``, a BOM, invalid UTF-8, a ``\\u`` surrogate
escape, a line starting with whitespace, or when Arrow fails on it (a line
that is not a JSON object, a string or ``true`` where a number belongs, a
number where a text column's string belongs, a repeated key, ...) or finds
another number of records than the block has lines.

Arrow cannot tell a missing key from ``null``, and reads ``-0`` (an integer,
``0.0`` in Python) as ``-0.0``: records with a null in a configured column,
a ``-0.0`` or a NaN are parsed again line by line, so they get the
line-by-line parser's values and flags (``missing key`` included).
"""

from __future__ import annotations

import numpy as np

from .arrow_buffers import arrow_floats
from .csv_split import _count_blank


def parse_json_arrow(buf: bytes, keys: list, n_numeric: int, na: frozenset):
    """Parse normalized whole JSON lines ``buf`` with Arrow.

    Parameters
    ----------
    buf : bytes
        Whole lines (LF line ends, a final newline).
    keys : list of str
        The configured keys: ``n_numeric`` numeric ones, then the text ones.
    na : frozenset of str
        Strings meaning "missing".

    Returns
    -------
    (_JsonArrays, ndarray of int64) or None
        The block's arrays and each record's line index in ``buf`` (0-based,
        blank lines counted), or None where the block must be parsed line by line.
    """
    if not _plain_json(buf):
        return None
    nlines = buf.count(b"\n")
    table = _read(buf, keys, n_numeric)
    if table is None:
        return None
    n = table.num_rows
    blank = 0 if n == nlines else _count_blank(buf)
    if n == 0 or n != nlines - blank:
        return None
    from .lines import _JsonArrays

    out = _JsonArrays.empty(n, n_numeric, len(keys) - n_numeric)
    doubtful = np.zeros(n, bool)
    for j, key in enumerate(keys[:n_numeric]):
        values, valid = arrow_floats(table.column(key))
        out.values[:, j] = values
        doubtful |= np.isnan(values) | ((values == 0) & np.signbit(values))
    for j, key in enumerate(keys[n_numeric:]):
        texts = table.column(key).to_pylist()
        doubtful |= np.fromiter((t is None for t in texts), bool, n)
        out.cats[j] = ["" if t is None or t in na else t for t in texts]
    if blank:
        nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
        rec_line = np.flatnonzero(np.diff(nl, prepend=-1) != 1)
    else:
        rec_line = np.arange(n)
    if doubtful.any():
        _again(buf, np.flatnonzero(doubtful), rec_line, keys, n_numeric, na, out)
    return out, rec_line.astype(np.int64)


def _plain_json(buf: bytes) -> bool:
    """Whether Arrow sees the records of ``buf`` as the line-by-line parser does.

    A line starting with whitespace is refused: Arrow skips a line of spaces
    (a bad record for ``json.loads``) and reads two objects on one line as two
    records, which together could keep the count of records unchanged.
    """
    if buf[:1] in (b" ", b"\t") or b"\n " in buf or b"\n\t" in buf:
        return False
    if b"\x00" in buf or b"\r" in buf or buf.startswith(b"\xef\xbb\xbf"):
        return False
    if b"\\ud" in buf or b"\\uD" in buf:
        return False   # surrogate escapes: Python keeps lone ones, Arrow does not
    if not buf.isascii():
        try:
            buf.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _read(buf: bytes, keys: list, n_numeric: int):
    """The Arrow table of ``keys`` (numbers as float64, text as string), or None on any error."""
    import pyarrow as pa
    import pyarrow.json as pajson

    schema = pa.schema([(k, pa.float64()) for k in keys[:n_numeric]]
                       + [(k, pa.string()) for k in keys[n_numeric:]])
    try:
        table = pajson.read_json(
            pa.BufferReader(buf), read_options=pajson.ReadOptions(use_threads=pa.cpu_count() > 1),
            parse_options=pajson.ParseOptions(explicit_schema=schema, newlines_in_values=False,
                                              unexpected_field_behavior="ignore"))
    except pa.ArrowException:
        return None
    return table


def _again(buf: bytes, records, rec_line, keys, n_numeric, na, out) -> None:
    """Parse ``records`` once more, line by line, replacing what Arrow gave."""
    from .lines import _read_record

    nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
    begins = np.concatenate([[0], nl[:-1] + 1])
    for r in records.tolist():
        k = int(rec_line[r])
        out.values[r] = np.nan
        for cats in out.cats:
            cats[r] = ""
        _read_record(buf[int(begins[k]):int(nl[k])], r, keys, n_numeric, na, out)
