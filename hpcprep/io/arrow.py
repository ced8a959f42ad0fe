"""Parquet and Arrow IPC (Feather v2) input through pyarrow.

Both formats know their row counts without reading data (Parquet row groups
from the footer, Feather record batches from their message headers), so the
plan gives every chunk its rows and global ids at once. A chunk is a row
group or record batch, cut into pieces of at most ``chunk_rows`` rows; only
the configured columns are read.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..config import InputConfig
from ..errors import DataError
from .arrow_buffers import arrow_floats

#: Input formats of this module, by file suffix.
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".feather": "feather", ".arrow": "feather",
            ".ipc": "feather"}


def share_cores(ranks_on_node: int) -> int:
    """Size Arrow's CPU thread pool to this rank's share of its node's cores.

    Ranks of one node that each parse with a pool of every core slow each other
    down (measured: CSV at ``-n 2`` on 2 cores, docs/csv.md). A rank the
    launcher bound to fewer cores than the node has keeps those; otherwise it
    gets ``cores // ranks_on_node`` (at least 1). Returns the pool size.
    """
    visible = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bound = visible < (os.cpu_count() or visible)
    threads = max(1, visible if bound else visible // max(1, ranks_on_node))
    pa.set_cpu_count(threads)
    return threads


def wanted_columns(inp: InputConfig) -> list[str]:
    """The configured columns: features, label, weight, categorical, dates (no duplicates)."""
    cols = list(inp.features) + [c for c in (inp.label, inp.weight) if c] + \
        list(inp.categorical) + list(inp.datetime)
    return list(dict.fromkeys(cols))


def parquet_files_in(folder: str) -> list[str]:
    """The Parquet files under a folder (recursively), skipping ``_*`` and ``.*`` entries."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(("_", ".")) and os.path.splitext(f)[1].lower() in (".parquet", ".pq")]
    return sorted(found)


def _open_parquet(path):
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot open as Parquet ({e})") from None


def _open_feather(path, columns=None):
    try:
        source = pa.memory_map(path, "r")
        schema = ipc.open_file(source).schema
        opts = None if columns is None else ipc.IpcReadOptions(
            included_fields=[schema.get_field_index(c) for c in columns])
        return ipc.open_file(source, options=opts)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot open as Arrow IPC / Feather v2 ({e})") from None


def describe(path: str, fmt: str, inp: InputConfig) -> list[int]:
    """Check a Parquet or Feather file's columns; return the rows of each row group / batch.

    Raises
    ------
    DataError
        Naming the file and the column that is missing, nested or of a type
        its role cannot take.
    """
    if fmt == "parquet":
        f = _open_parquet(path)
        check_schema(path, f.schema_arrow, inp)
        return [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]
    reader = _open_feather(path)
    check_schema(path, reader.schema, inp)
    # Reading a batch with one column included decodes only that column's buffers
    # (nothing at all for an uncompressed, memory-mapped file).
    first = wanted_columns(inp)[:1]
    reader = _open_feather(path, first)
    return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_nested(t):
        return "nested"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
            or pa.types.is_decimal(t) or pa.types.is_null(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or \
            (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t)):
        return "string"
    if pa.types.is_temporal(t):
        return "date"
    return "other"


def check_schema(path: str, schema: pa.Schema, inp: InputConfig) -> None:
    """Every configured column exists, is flat, and has a type its role can read."""
    names = schema.names
    for col in wanted_columns(inp):
        if col not in names:
            raise DataError(f"{path}: no column {col!r}; it has: {', '.join(names)}")
        if names.count(col) > 1:
            raise DataError(f"{path}: column {col!r} appears twice")
    from .plan_formats import role_of

    for col in wanted_columns(inp):
        t = schema.field(col).type
        kind = _kind(t)
        role = role_of(col, inp)
        if kind == "nested":
            raise DataError(f"{path}: column {col!r} ({role}) is a nested column of type {t}; "
                            f"only flat columns of numbers or strings are read: flatten it "
                            f"before hpcprep, or leave it out of {role}")
        if role == "input.datetime":
            _check_date_type(path, col, t)
        elif role == "input.categorical" or (role == "input.label" and inp.label_type != "numeric"):
            if kind not in ("string", "number"):
                raise DataError(f"{path}: column {col!r} ({role}) has type {t}; categories "
                                f"must be strings or numbers")
        elif kind != "number":
            from .plan_formats import how_to_read

            example = "2020-01-01" if kind == "date" else "text"
            raise DataError(f"{path}: column {col!r} ({role}) has type {t}, not a number; "
                            f"{how_to_read(col, role, example)}")


def _check_date_type(path: str, col: str, t: pa.DataType) -> None:
    """A date column is a timestamp, date32, date64 or string column (dictionary-encoded or not)."""
    from .datetimes import is_date_type

    value = t.value_type if pa.types.is_dictionary(t) else t
    if not (is_date_type(value) or _kind(value) == "string" or pa.types.is_null(value)):
        raise DataError(f"{path}: column {col!r} (input.datetime) has type {t}; dates are read "
                        f"from timestamp, date32, date64 or string (ISO 8601) columns")


def chunk_ranges(group_rows: list[int], chunk_rows: int) -> list[tuple[int, int]]:
    """Row ranges of a file: each row group / batch, cut into pieces of at most ``chunk_rows``."""
    out, at = [], 0
    for n in group_rows:
        for s in range(0, n, chunk_rows):
            out.append((at + s, at + min(n, s + chunk_rows)))
        at += n
    return out


class ArrowFileReader:
    """Reads row ranges of one Parquet or Feather file, in order, without re-reading.

    Consecutive ranges (the usual case: a rank reads its chunks in order) continue
    the open batch stream; any other range reopens the file at its row group.
    """

    def __init__(self, path: str, fmt: str, columns: list[str], batch_rows: int):
        self.path, self.fmt, self.columns, self.batch_rows = path, fmt, columns, batch_rows
        self._pos = None       # file row of the next row the stream yields
        self._batches = None   # iterator of record batches
        self._left = None      # part of a batch not yet handed out
        if fmt == "parquet":
            self._file = _open_parquet(path)
            rows = [self._file.metadata.row_group(i).num_rows
                    for i in range(self._file.metadata.num_row_groups)]
        else:
            self._file = _open_feather(path, columns)
            rows = None
        self._group_rows = rows

    def _restart(self, start: int) -> None:
        if self.fmt == "parquet":
            first = np.cumsum([0] + self._group_rows)
            g = int(np.searchsorted(first, start, side="right") - 1)
            g = min(g, max(0, len(self._group_rows) - 1))
            self._batches = self._file.iter_batches(
                batch_size=self.batch_rows, row_groups=list(range(g, len(self._group_rows))),
                columns=self.columns, use_threads=False)
            self._pos = int(first[g])
        else:
            self._batches = (self._file.get_batch(i) for i in range(self._file.num_record_batches))
            self._pos = 0
        self._left = None

    def _next(self) -> pa.RecordBatch:
        if self._left is not None:
            b, self._left = self._left, None
            return b
        try:
            return next(self._batches)
        except StopIteration:
            raise DataError(f"{self.path}: ends before row {self._pos} (changed since planned?)") \
                from None
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{self.path}: cannot read rows from {self._pos} ({e})") from None

    def read(self, start: int, stop: int) -> pa.Table:
        """Rows ``[start, stop)`` of the configured columns."""
        if self._pos != start:
            self._restart(start)
        parts = []
        while self._pos < stop:
            b = self._next()
            if self._pos < start:       # skip to start
                skip = min(start - self._pos, b.num_rows)
                b, self._pos = b.slice(skip), self._pos + skip
                if b.num_rows == 0:
                    continue
            take = min(stop - self._pos, b.num_rows)
            parts.append(b.slice(0, take))
            if take < b.num_rows:
                self._left = b.slice(take)
            self._pos += take
        if not parts:
            return pa.Table.from_batches([], schema=self._schema())
        return pa.Table.from_batches(parts).select(self.columns)

    def _schema(self):
        schema = self._file.schema_arrow if self.fmt == "parquet" else self._file.schema
        return pa.schema([schema.field(c) for c in self.columns])


def to_float(col) -> np.ndarray:
    """A numeric Arrow column as float64; nulls become NaN."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    values, _ = arrow_floats(pc.cast(col, pa.float64(), safe=False))
    return values


def to_text(col) -> np.ndarray:
    """A category column as fixed-width strings; nulls become ``""`` (missing)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    values = ["" if v is None else v for v in col.to_pylist()]
    return np.array(values, dtype=str) if values else np.array([], dtype="U1")
