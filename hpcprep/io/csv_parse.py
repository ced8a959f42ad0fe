"""CSV parsing: byte ranges of records into a :class:`~hpcprep.io.csv_records.CsvBlock`.

Ranks read disjoint byte ranges that start at line starts and count their
records cheaply (:mod:`hpcprep.io.csv_split`) so that global row ids can be
assigned by an exclusive scan, and parse them into a :class:`CsvBlock`
(:func:`parse_range`). A block is parsed by Apache Arrow
(:mod:`hpcprep.io.csv_arrow`) where Arrow gives the same result, else by the
hand-written parser here (NumPy byte searches; lines with quotes through
Python's ``csv`` module), which defines the semantics (``docs/csv.md``):
line ends ``\\n`` or ``\\r\\n``; blank lines are not records but count as
lines; quoted fields hold the delimiter and ``""`` but no newline (a
:class:`~hpcprep.errors.DataError`); numbers in Python's ``float()`` syntax;
``na_values`` missing; a line that is not valid UTF-8 a bad record.
"""

from __future__ import annotations

import csv as _pycsv

import numpy as np

from ..errors import DataError
from .csv_arrow import parse_arrow, quotes_well_formed
from .csv_convert import _Builder, _as_bytes, _gather, _resolve_columns
from .csv_records import (BAD_ENCODING, BAD_FIELD_COUNT, BAD_NONE, BAD_QUOTING, DEFAULT_NA_VALUES,
                          BadRecord, CsvBlock, QuotedNewlineError, block_first_bad, failing_columns,
                          raw_lines)
from .csv_split import QUOTE, _check_delimiter, _end_of_records, _normalize, _read_range

_PIECE = 1 << 22            # bytes parsed at once by parse_range


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
        :func:`~hpcprep.io.csv_split.split_byte_ranges`).
    header : list of str
        The column names (from :func:`~hpcprep.io.csv_split.read_header`).
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
        line; add :func:`~hpcprep.io.csv_split.count_lines` of the previous ranges).

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
                 delimiter: str = ",", na_values=DEFAULT_NA_VALUES, first_line: int,
                 quotes_plain: bool = False) -> CsvBlock:
    """:func:`parse_range` of bytes already read (whole lines; ``path`` names errors).

    For input that is not a plain byte range of a file, e.g. a piece of a
    decompressed stream. ``quotes_plain``: the caller found every ``"`` of ``raw``
    plain (``ChunkDesc.quotes_plain``), so the Arrow path does not check them again.
    """
    dbyte = _check_delimiter(delimiter)
    cols = _resolve_columns(path, header, features, label, categorical, weight)
    na_u = np.array(list(na_values), dtype=str) if len(na_values) else np.array([], "U1")
    na_s = np.array([v.encode("utf-8") for v in na_values], dtype="S") if len(na_values) \
        else np.array([], "S1")
    buf = _normalize(raw)
    arrow = parse_arrow(buf, header, cols, delimiter, na_values, na_s, first_line, quotes_plain)
    parts, lines = ([arrow[0]], [arrow[1]]) if arrow is not None else \
        _parse_pieces(path, buf, first_line, cols, dbyte, delimiter, na_s, na_u)
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


def _parse_pieces(path, buf, first_line, cols, dbyte, delimiter, na_s, na_u):
    """The hand-written parser over ``buf``: (builders, record lines), one per piece."""
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
    return parts, lines


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

    special, quoted = _special_lines(buf, a, line_start, nl, line_to_rec, out)
    fast = nonblank & ~special
    wrong = fast & (fields_per_line != cols.ncol)
    out.reason[line_to_rec[wrong]] = BAD_FIELD_COUNT
    fast &= ~wrong
    if fast.any():
        _parse_fast(a, ends, fast, fields_per_line, line_to_rec, cols, out, na_s, na_u)
    if quoted.any():
        _parse_quoted(path, buf, line_start, nl, np.flatnonzero(quoted), line_to_rec,
                      first_line, cols, delimiter, out, na_s, na_u)
    return out, lines


def _special_lines(buf, a, line_start, nl, line_to_rec, out: _Builder):
    """Lines that take the slow path or are flagged before splitting: (special, quoted) masks.

    Lines that are not valid UTF-8 are flagged ``BAD_ENCODING`` in ``out``.
    """
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
    return special, quoted


def _parse_fast(a, ends, fast, fields_per_line, line_to_rec, cols, out: _Builder, na_s, na_u):
    """Split and convert the ``fast`` lines (no quote, right field count) in bulk."""
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

    The check :func:`parse_range` makes, without converting anything: a range
    without a quote costs one byte search, one whose quotes are all plain quoted
    fields (:func:`~hpcprep.io.csv_arrow.quotes_well_formed`) a few vectorized
    passes; otherwise its lines holding a ``"`` (and valid UTF-8) go through the
    csv module.
    """
    return open_quote_in(_read_range(path, start, end), delimiter)


def open_quote_in(raw: bytes, delimiter: str = ",") -> int | None:
    """:func:`open_quote_line` of bytes already read (whole lines)."""
    _check_delimiter(delimiter)
    buf = _normalize(raw)
    if b'"' not in buf or quotes_well_formed(buf, delimiter):
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
