"""Line-based inputs beyond plain CSV: JSON lines, and compressed CSV / JSON lines.

JSON lines (``.jsonl``, ``.ndjson``): one JSON object per line; a newline
never occurs inside a record, so plain files split into byte ranges at line
starts like CSV. Blank lines are not records but count as lines.

Compressed files (``.gz``, ``.bz2``, ``.zst``, ``.xz``) cannot be split: one
input rank decompresses each file as a stream. While counting (see
:func:`hpcprep.io.plan_count.count_csv_chunks`) it cuts the decompressed text into
pieces of ``chunk_rows`` lines; the pieces become the file's chunks, with
offsets into the decompressed text, and a reader continues its open stream
from piece to piece.
"""

from __future__ import annotations

import bz2
import json
import lzma
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .csv_records import BAD_DATE, BAD_ENCODING, BAD_NONE, BAD_NUMBER, BAD_REASONS, CsvBlock
from .csv_split import _count_blank, _normalize, count_newlines

#: Compression of a file, by its last suffix.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".xz": "xz"}

BAD_JSON = 5
BAD_NOT_OBJECT = 6
BAD_MISSING_KEY = 7
BAD_NESTED = 8

#: Text of the JSON lines reason codes (beside :data:`hpcprep.io.csv_records.BAD_REASONS`).
JSON_BAD_REASONS = {
    BAD_JSON: "not valid JSON",
    BAD_NOT_OBJECT: "not a JSON object",
    BAD_MISSING_KEY: "missing key",
    BAD_NESTED: "a list or object where a value belongs",
}

_READ = 1 << 22   # bytes decompressed at a time


def compression_of(path: str) -> str:
    """``gzip``, ``bz2``, ``zstd``, ``xz`` from the suffix, or ``""`` (not compressed)."""
    return COMPRESSIONS.get(os.path.splitext(path)[1].lower(), "")


# --------------------------------------------------------------------------- streams

def open_stream(path: str, compression: str):
    """A binary file object of the decompressed content (``read(n)``, ``close()``)."""
    try:
        if compression == "xz":
            return lzma.open(path, "rb")
        if compression == "bz2":
            return bz2.open(path, "rb")
        import pyarrow as pa

        return pa.input_stream(path, compression=compression)
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e})") from None


class Decompressed:
    """A decompressed file read forward; reopened when asked to go back.

    Parameters
    ----------
    path, compression : str
        The file and its compression (:func:`compression_of`).
    """

    def __init__(self, path: str, compression: str):
        self.path, self.compression = path, compression
        self._f = None
        self.pos = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes from the current position (fewer only at the end)."""
        if self._f is None:
            self._f = open_stream(self.path, self.compression)
        parts, want = [], n
        while want > 0:
            try:
                piece = self._f.read(min(want, _READ))
            except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
                raise DataError(f"{self.path}: corrupt or truncated {self.compression} data "
                                f"after {self.pos} bytes ({e})") from None
            except Exception as e:   # pyarrow's errors (ArrowInvalid, ...)
                if type(e).__module__.startswith("pyarrow"):
                    raise DataError(f"{self.path}: corrupt or truncated {self.compression} data "
                                    f"after {self.pos} bytes ({e})") from None
                raise
            if not piece:
                break
            parts.append(bytes(piece))
            want -= len(piece)
            self.pos += len(piece)
        return b"".join(parts)

    def range(self, start: int, stop: int) -> bytes:
        """Decompressed bytes ``[start, stop)``: continues the stream, or reopens it to go back."""
        if start < self.pos:
            self.close()
        while self.pos < start:
            if not self.read(min(start - self.pos, _READ)):
                break
        buf = self.read(stop - start)
        if len(buf) != stop - start:
            raise DataError(f"{self.path}: ends at {self.pos} decompressed bytes, before {stop} "
                            f"(changed since planned?)")
        return buf

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        self._f, self.pos = None, 0


def first_line(stream: Decompressed, limit: int = 1 << 16) -> bytes:
    """The first line of a stream (with its newline), reading at most ``limit`` bytes of it."""
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        piece = stream.read(4096)
        if not piece:
            break
        buf += piece
    k = buf.find(b"\n")
    return buf if k < 0 else buf[:k + 1]


@dataclass(frozen=True)
class Piece:
    """``lines`` physical lines of a decompressed file: bytes ``[start, stop)``, ``records`` records."""

    start: int
    stop: int
    records: int
    lines: int


def pieces(stream: Decompressed, data_start: int, chunk_lines: int):
    """Yield ``(Piece, bytes)`` of ``chunk_lines`` lines each (the last may have fewer),
    from decompressed byte ``data_start`` to the end."""
    stream.range(0, data_start)
    at, carry = data_start, b""
    while True:
        parts, have, eof = [carry], count_newlines(carry), False
        while have < chunk_lines:   # each part counted once, joined once
            more = stream.read(_READ)
            if not more:
                eof = True
                break
            parts.append(more)
            have += count_newlines(more)
        buf = b"".join(parts)
        if eof:
            body, carry = buf, b""
        else:   # the chunk_lines-th newline is in the last part
            last = np.flatnonzero(np.frombuffer(parts[-1], np.uint8) == 10)
            before = have - len(last)
            cut = len(buf) - len(parts[-1]) + int(last[chunk_lines - before - 1]) + 1
            body, carry = buf[:cut], buf[cut:]
        del parts
        if body:
            nbuf = _normalize(body)
            lines = count_newlines(nbuf)
            yield Piece(at, at + len(body), lines - _count_blank(nbuf), lines), body
            at += len(body)
        if eof:
            return


# --------------------------------------------------------------------------- kept text

class KeptText:
    """Write a compressed file's decompressed text to ``keep_dir`` as it is counted.

    The kept file holds the text at the same offsets (bytes before ``data_start``
    are not written, but the one before it is a newline, so a range there starts at
    a line start). :meth:`done` gives the entry :func:`kept_range` reads it by
    (the counting pass keeps them in ``InputPlan.kept_text``, per process).
    """

    def __init__(self, keep_dir: str, path: str, file_index: int, data_start: int):
        os.makedirs(keep_dir, exist_ok=True)
        self.source, self.path = path, os.path.join(keep_dir, f"inflated-{file_index:06d}.txt")
        self._f = open(self.path, "wb")
        if data_start:
            self._f.seek(data_start - 1)
            self._f.write(b"\n")

    def write(self, buf: bytes) -> None:
        self._f.write(buf)

    def done(self) -> tuple[str, int, int]:
        """Close the kept file; its entry: (kept path, source size, source mtime)."""
        self._f.close()
        st = os.stat(self.source)
        return self.path, st.st_size, st.st_mtime_ns

    def discard(self) -> None:
        self._f.close()
        os.unlink(self.path)


def kept_range(kept_text: dict, path: str, start: int, stop: int) -> bytes | None:
    """Decompressed bytes ``[start, stop)`` of ``path`` from its kept text, or None if not kept
    (or the file changed, or its kept text is gone). ``kept_text``: source path -> the
    entry of :meth:`KeptText.done`."""
    kept = kept_text.get(path)
    if kept is None or not os.path.exists(kept[0]):
        return None
    st = os.stat(path)
    if (st.st_size, st.st_mtime_ns) != kept[1:]:
        return None
    from .csv_split import _read_range

    return _read_range(kept[0], start, stop)


# --------------------------------------------------------------------------- JSON lines

class JsonBlock(CsvBlock):
    """A :class:`~hpcprep.io.csv_records.CsvBlock` of JSON records; ``header`` is the wanted keys."""

    def reason_text(self, i: int) -> str:
        code = int(self.bad_reason[i])
        text = JSON_BAD_REASONS.get(code) or BAD_REASONS[code]
        col = int(self.bad_column[i])
        if code in (BAD_NUMBER, BAD_MISSING_KEY, BAD_NESTED, BAD_DATE) and col >= 0:
            text += f" {'in column' if code != BAD_MISSING_KEY else ''} {self.header[col]!r}"
            text = text.replace("  ", " ")
        return text


def _number(v, na: frozenset):
    """``(value, ok)`` of one JSON value in a numeric column (missing = NaN)."""
    if v is None:
        return np.nan, True
    if isinstance(v, bool):
        return np.nan, False
    if isinstance(v, (int, float)):
        return float(v), True
    if isinstance(v, str):
        if v in na:
            return np.nan, True
        try:
            return float(v), True
        except ValueError:
            return np.nan, False
    return np.nan, False


def _text(v, na: frozenset) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return "" if v in na else v
    return json.dumps(v)


def parse_json_lines(raw: bytes, path, *, features, label=None, categorical=(), weight=None,
                     na_values=(), first_line: int) -> JsonBlock:
    """Parse whole JSON lines into a :class:`JsonBlock` (bad records kept and flagged).

    A numeric value is a JSON number, or a string in Python's ``float()``
    syntax; ``null`` and strings in ``na_values`` are missing. A category is a
    string (``null`` and ``na_values`` missing) or any other JSON value as its
    JSON text. A line that is not JSON, not an object, lacks a configured key,
    or holds a list/object, ``true``/``false`` or text where a number belongs
    is a bad record.
    """
    numeric = list(features) + [c for c in (label, weight) if c]
    keys = numeric + list(categorical)
    na = frozenset(na_values)
    buf = _normalize(raw)
    from .json_arrow import parse_json_arrow

    parsed = parse_json_arrow(buf, keys, len(numeric), na)
    out, rec_line = parsed if parsed is not None else _parse_lines(buf, keys, len(numeric), na)
    values, cats, reason = out.values, out.cats, out.reason
    nf = len(features)
    return JsonBlock(
        features=np.ascontiguousarray(values[:, :nf]),
        labels=np.ascontiguousarray(values[:, nf]) if label else None,
        weights=np.ascontiguousarray(values[:, nf + bool(label)]) if weight else None,
        categorical={c: (np.array(v, dtype=str) if v else np.array([], "U1"))
                     for c, v in zip(categorical, cats)},
        lines=first_line + np.asarray(rec_line, dtype=np.int64),
        bad=reason != BAD_NONE,
        bad_reason=reason,
        bad_column=out.bad_column,
        header=keys,
        column_bad=out.column_bad,
        column_example=out.example,
    )


def _parse_lines(buf: bytes, keys: list, n_numeric: int, na: frozenset):
    """The line-by-line parser: (``_JsonArrays``, each record's line index in ``buf``)."""
    texts = buf.split(b"\n")[:-1]
    rec_line = [k for k, t in enumerate(texts) if t]
    out = _JsonArrays.empty(len(rec_line), n_numeric, len(keys) - n_numeric)
    for r, k in enumerate(rec_line):
        _read_record(texts[k], r, keys, n_numeric, na, out)
    return out, np.asarray(rec_line, dtype=np.int64)


@dataclass
class _JsonArrays:
    """Output arrays of :func:`parse_json_lines`, filled record by record."""

    values: np.ndarray
    cats: list
    reason: np.ndarray
    bad_column: np.ndarray
    column_bad: np.ndarray
    example: list

    @classmethod
    def empty(cls, n: int, n_numeric: int, n_categorical: int) -> "_JsonArrays":
        return cls(np.full((n, n_numeric), np.nan), [[""] * n for _ in range(n_categorical)],
                   np.zeros(n, np.int8), np.full(n, -1, np.int32), np.zeros(n_numeric, np.int64),
                   [None] * n_numeric)

    def flag(self, r: int, code: int, j: int) -> None:
        """Record ``r`` is bad for ``code`` in column ``j``, unless already bad."""
        if self.reason[r] == BAD_NONE:
            self.reason[r], self.bad_column[r] = code, j

    def note(self, r: int, j: int, value: str) -> None:
        """Count a bad value of numeric column ``j``; keep the first as its example."""
        self.column_bad[j] += 1
        if self.example[j] is None:
            self.example[j] = (r, value)


def _read_record(text: bytes, r: int, keys: list, n_numeric: int, na: frozenset,
                 out: _JsonArrays) -> None:
    """Parse the JSON line ``text`` as record ``r`` into ``out``, flagging it where it is bad."""
    try:
        obj = json.loads(text)
    except UnicodeDecodeError:
        out.reason[r] = BAD_ENCODING
        return
    except ValueError:
        out.reason[r] = BAD_JSON
        return
    if not isinstance(obj, dict):
        out.reason[r] = BAD_NOT_OBJECT
        return
    for j, key in enumerate(keys):
        if key not in obj:
            out.flag(r, BAD_MISSING_KEY, j)
            if j < n_numeric:
                out.note(r, j, "<missing>")
            continue
        v = obj[key]
        if isinstance(v, (list, dict)):
            out.flag(r, BAD_NESTED, j)
            if j < n_numeric:
                out.note(r, j, json.dumps(v)[:80])
        elif j < n_numeric:
            x, ok = _number(v, na)
            if ok:
                out.values[r, j] = x
            else:
                out.note(r, j, v if isinstance(v, str) else json.dumps(v))
                out.flag(r, BAD_NUMBER, j)
        else:
            out.cats[j - n_numeric][r] = _text(v, na)


def nested_column(block: JsonBlock) -> tuple[str, int] | None:
    """The first column holding a list/object in the block, and its line, or None."""
    hits = np.flatnonzero(block.bad_reason == BAD_NESTED)
    if hits.size == 0:
        return None
    i = int(hits[0])
    return block.header[int(block.bad_column[i])], int(block.lines[i])
