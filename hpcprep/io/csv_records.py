"""Parsed CSV records and bad records: :class:`CsvBlock`, reason codes, raw lines, messages.

What :mod:`hpcprep.io.csv_parse` returns and what the readers, the counting
pass and rejects.h5 make of the records it flags bad.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .csv_split import _normalize, _read_range

DEFAULT_NA_VALUES = ("", "NA", "NaN", "null", "None")

BAD_NONE = 0
BAD_FIELD_COUNT = 1
BAD_NUMBER = 2
BAD_ENCODING = 3
BAD_QUOTING = 4
#: A date of ``input.datetime`` that does not parse (:mod:`hpcprep.io.datetimes`); codes
#: 5-8 are JSON lines' (:data:`hpcprep.io.lines.JSON_BAD_REASONS`).
BAD_DATE = 9

#: Text of each ``CsvBlock.bad_reason`` code.
BAD_REASONS = {
    BAD_NONE: "ok",
    BAD_FIELD_COUNT: "wrong number of fields",
    BAD_NUMBER: "unparsable number",
    BAD_ENCODING: "bytes that are not valid UTF-8",
    BAD_QUOTING: "malformed quoting",
    BAD_DATE: "unparsable date",
}


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
        if code in (BAD_NUMBER, BAD_DATE) and col >= 0:
            text += f" in column {self.header[col]!r}"
        return text


class QuotedNewlineError(DataError):
    """A quoted field reaches the end of its line (unsupported); ``line`` is where it opens."""

    reason = ("a quoted field contains a newline (or its closing quote is missing); "
              "quoted newlines are not supported")

    def __init__(self, path, line: int):
        super().__init__(f"{os.fspath(path)}, line {line}: {self.reason}")
        self.line = line


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


def failing_columns(block: CsvBlock, names: list) -> list[dict]:
    """The numeric columns ``names`` (in ``block.column_bad`` order) failing in most records.

    Returns what :func:`~hpcprep.io.csv_parse.probe_numeric_columns` returns.
    """
    n = len(block)
    out = []
    for j, name in enumerate(names):
        if n and 2 * int(block.column_bad[j]) > n:
            rec, value = block.column_example[j]
            out.append({"column": name, "bad": int(block.column_bad[j]), "records": n,
                        "line": int(block.lines[rec]), "value": value})
    return out
