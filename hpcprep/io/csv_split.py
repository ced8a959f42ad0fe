"""CSV files cut for ranks: the header, byte ranges at line starts, record and line counts.

Ranks read disjoint byte ranges that start at line starts
(:func:`split_byte_ranges`) and count their records cheaply
(:func:`count_records`, :func:`count_lines`) so that global row ids can be
assigned by an exclusive scan; :mod:`hpcprep.io.csv_parse` parses them. The
conventions (line ends, blank lines, quoting) are in ``docs/csv.md``.
"""

from __future__ import annotations

import csv as _pycsv
import os

import numpy as np

from ..errors import DataError

QUOTE = '"'
_WINDOW = 1 << 16           # bytes read around each cut by split_byte_ranges
_SCAN_PIECE = 1 << 22       # bytes per streamed read or count (fits in cache)


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
        _seek_line_start(f, path, start)
        buf = f.read(end - start)
    if len(buf) != end - start:
        raise ValueError(f"{os.fspath(path)}: range [{start}, {end}) is past the end of the file")
    return buf


def _seek_line_start(f, path, start: int) -> None:
    """Seek ``f`` to ``start``, which must be a line start."""
    if start > 0:
        f.seek(start - 1)
        if f.read(1) != b"\n":
            raise ValueError(f"{os.fspath(path)}: byte {start} is not at a line start")
    f.seek(start)


def _normalize(buf: bytes) -> bytes:
    """Append a final newline and turn CRLF into LF (byte offsets are not kept)."""
    if buf and not buf.endswith(b"\n"):
        buf += b"\n"
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    return buf


def _count_blank(nbuf: bytes) -> int:
    """Blank lines of whole lines ``nbuf`` (a newline at its start or right after another)."""
    return newline_counts(nbuf)[1]


def newline_counts(buf, scratch=None) -> tuple[int, int]:
    """Newlines and blank lines of ``buf`` (whole lines), a cache-sized piece at a time with NumPy.

    One pass (0.09 s per 300 MB where ``b"\\n\\n" in buf`` alone took 0.33 s:
    CPython's search stops at every newline). ``scratch``: two bool arrays of at
    least ``min(len(buf), _SCAN_PIECE)`` elements to reuse (a caller counting
    piece after piece allocates them once).
    """
    arr = np.frombuffer(buf, np.uint8)
    size = min(len(arr), _SCAN_PIECE)
    is_nl, pairs = scratch if scratch is not None else (np.empty(size, bool), np.empty(size, bool))
    lines = blank = 0
    prev = True   # a newline at byte 0 is a blank line
    for s in range(0, len(arr), _SCAN_PIECE):
        piece = arr[s:s + _SCAN_PIECE]
        nl = np.equal(piece, 10, out=is_nl[:len(piece)])
        lines += int(np.count_nonzero(nl))
        both = np.logical_and(nl[1:], nl[:-1], out=pairs[:len(piece) - 1])
        blank += int(prev and nl[0]) + int(np.count_nonzero(both))
        prev = bool(nl[-1])
    return lines, blank


def range_counts(path, start: int, end: int) -> tuple[int, int]:
    """Count the records and the physical lines of a byte range in one read.

    Returns
    -------
    records : int
        What :func:`count_records` returns.
    lines : int
        What :func:`count_lines` returns.
    """
    return buffer_counts(_read_range(path, start, end))


def buffer_counts(raw: bytes) -> tuple[int, int]:
    """:func:`range_counts` of bytes already read (whole lines)."""
    lines, blank = newline_counts(_normalize(raw))
    return lines - blank, lines


def count_newlines(buf) -> int:
    """``buf.count(b"\n")``, a cache-sized piece at a time with NumPy (about 3x faster)."""
    arr = np.frombuffer(buf, np.uint8)
    is_nl = np.empty(min(len(arr), _SCAN_PIECE), bool)
    total = 0
    for s in range(0, len(arr), _SCAN_PIECE):
        piece = arr[s:s + _SCAN_PIECE]
        total += int(np.count_nonzero(np.equal(piece, 10, out=is_nl[:len(piece)])))
    return total


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
