"""JSON lines (``.jsonl``, ``.ndjson``): one JSON object per line.

A newline never occurs inside a record, so plain files split into byte ranges
at line starts like CSV. Blank lines are not records but count as lines.
Compressed ones are streamed by :mod:`hpcprep.io.compressed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .csv_records import BAD_DATE, BAD_ENCODING, BAD_NONE, BAD_NUMBER, BAD_REASONS, CsvBlock
from .csv_split import _normalize

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
