"""Planning the formats read by column name: CSV, JSON lines, Parquet, Feather, compressed files.

Each file's header and first records are checked (a missing column, a column
that is mostly not numbers) before any work, and the file is cut into chunks;
:func:`hpcprep.io.plan.build_input_plan` calls these for each such file.
"""

import os
import re

import numpy as np

from ..config import InputConfig
from ..errors import DataError
from .datetimes import date_columns
from .plan import ChunkDesc

#: Bytes of a CSV file sampled to estimate the line length (chunk_rows lines per chunk).
_CSV_SAMPLE = 1 << 16


def _plan_csv(path, fi, inp, names, chunks) -> list[str]:
    """Check a CSV file's header and cut it into byte ranges of about ``chunk_rows`` lines."""
    from .csv_split import read_header, split_byte_ranges

    if not isinstance(inp.features, list):
        raise DataError(f"{path}: CSV input needs input.features = [\"col\", ...] (column names)")
    from .arrow import wanted_columns
    from .datetimes import feature_names

    header, data_start = read_header(path, inp.delimiter)
    for col in wanted_columns(inp):
        if col not in header:
            raise DataError(f"{path}: the header has no column {col!r}; it has: {', '.join(header)}")
    if names is not None and names != feature_names(inp):
        raise DataError(f"{path}: features differ from the first file's")
    _probe_csv(path, header, data_start, inp)
    with open(path, "rb") as fh:
        fh.seek(data_start)
        sample = fh.read(_CSV_SAMPLE)
    line_bytes = max(1, len(sample) // max(1, sample.count(b"\n")))
    chunk_bytes = max(1, inp.chunk_rows * line_bytes)
    for start, stop in split_byte_ranges(path, chunk_bytes, inp.delimiter):
        chunks.append(ChunkDesc(len(chunks), fi, path, "csv", start, stop, -1, -1))
    return feature_names(inp)


#: Records at the start of each CSV file parsed while planning to find columns that are not numbers.
PROBE_RECORDS = 1000


def _probe_csv(path, header, data_start, inp) -> None:
    """Raise if a numeric column fails to parse in most of the file's first records."""
    from .csv_parse import probe_numeric_columns

    failing = probe_numeric_columns(path, header, data_start, features=inp.features,
                                    label=inp.label or None, weight=inp.weight or None,
                                    delimiter=inp.delimiter, na_values=tuple(inp.na_values),
                                    max_records=PROBE_RECORDS)
    _raise_failing(path, failing, inp)
    if date_columns(inp):
        from .csv_parse import parse_buffer
        from .csv_records import QuotedNewlineError

        try:
            block = parse_buffer(_head_lines(path, data_start), path, header=header, features=[],
                                 categorical=date_columns(inp), delimiter=inp.delimiter,
                                 na_values=tuple(inp.na_values), first_line=2)
        except QuotedNewlineError:
            return   # reported in file order when the file is counted
        probe_dates(path, block, inp)


def role_of(col: str, inp: InputConfig) -> str:
    """The config key that names a column: ``input.features``, ``input.label``, ..."""
    if col in inp.categorical:
        return "input.categorical"
    if col in inp.datetime:
        return "input.datetime"
    return "input.label" if col == inp.label else \
        "input.weight" if col == inp.weight else "input.features"


def probe_dates(path, block, inp: InputConfig) -> None:
    """Raise if a date column of a file's first records (a parsed block) is not a date in most.

    Raises
    ------
    DataError
        Naming the file, the column, how many records failed and the first one.
    """
    from .datetimes import parse_text

    for col in date_columns(inp):
        inst = parse_text(block.categorical[col])
        bad = inst.bad & ~block.bad
        n = int((~block.bad).sum())
        if n and 2 * int(bad.sum()) > n:
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column {col!r} (input.datetime) is not an ISO 8601 date in "
                            f"{int(bad.sum())} of the first {n} records (e.g. line "
                            f"{int(block.lines[i])}: {str(block.categorical[col][i])[:80]!r}); "
                            f"write dates as 2024-03-01, 2024-03-01T12:34:56 or "
                            f"2024-03-01T12:34:56+01:00, or leave the column out of input.datetime")


def _raise_failing(path, failing: list[dict], inp: InputConfig) -> None:
    """Raise for the first numeric column failing in most of a file's first records (if any)."""
    if inp.label_type != "numeric":   # a text label is read as classes
        failing = [f for f in failing if f["column"] != inp.label]
    if not failing:
        return
    f = failing[0]
    others = [g["column"] for g in failing[1:]]
    also = f" (also not numbers: {', '.join(others)})" if others else ""
    role = role_of(f["column"], inp)
    raise DataError(f"{path}: column {f['column']!r} ({role}) is not a number in {f['bad']} of "
                    f"the first {f['records']} records (e.g. line {f['line']}: {f['value']!r}); "
                    f"{how_to_read(f['column'], role, f['value'])}{also}")


_DATE = re.compile(r"\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\S*\s*")


def how_to_read(column: str, role: str, value: str) -> str:
    """What would read a column of text (the end of the probe's error message)."""
    if _DATE.fullmatch(value):
        return (f"it looks like a date: read it as dates with input.datetime = "
                f"{{ {column} = [\"epoch\", \"year\", ...] }} (docs/inputs.md) instead of {role}")
    categorical = (f"list it in input.categorical and encode it with "
                   f"{{ op = \"categorical\", columns = [\"{column}\"] }} in a [[standardize]] table")
    if role == "input.label":
        return ("a text label is not supported as a number: set input.label_type = \"class\" "
                "to read its classes as codes 0, 1, ... of their sorted names, or, to use it "
                f"as a feature instead, {categorical}")
    if role == "input.weight":
        return "a weight must be a number: fix or convert the column, or remove input.weight"
    return f"to read text categories, move it from input.features: {categorical}"


def _header_of(c: ChunkDesc, inp: InputConfig) -> list[str]:
    """The CSV header of a chunk's file (decompressing its first line if compressed)."""
    from .csv_split import header_from_line, read_header

    if not c.compression:
        return read_header(c.path, inp.delimiter)[0]
    from .compressed import Decompressed, first_line

    stream = Decompressed(c.path, c.compression)
    try:
        return header_from_line(first_line(stream), c.path, inp.delimiter)
    finally:
        stream.close()


def _plan_columns(path, fi, fmt, compression, inp, names, chunks, first_id) -> list[str]:
    """Plan a Parquet, Feather, JSON lines or compressed CSV file; append its chunks."""
    from .datetimes import feature_names

    if not isinstance(inp.features, list):
        raise DataError(f"{path}: {fmt} input needs input.features = [\"col\", ...] (column names)")
    if names is not None and names != feature_names(inp):
        raise DataError(f"{path}: features differ from the first file's")
    if fmt in ("parquet", "feather"):
        from .arrow import chunk_ranges, describe

        at = first_id
        for start, stop in chunk_ranges(describe(path, fmt, inp), inp.chunk_rows):
            chunks.append(ChunkDesc(len(chunks), fi, path, fmt, start, stop, at, stop - start))
            at += stop - start
        return feature_names(inp)
    if compression:
        data_start = _probe_compressed(path, fmt, compression, inp)
        size = os.path.getsize(path)   # only to balance files over ranks until counted
        chunks.append(ChunkDesc(len(chunks), fi, path, fmt, data_start, data_start + max(1, size),
                                -1, -1, compression=compression))
        return feature_names(inp)
    _probe_json(path, _head_lines(path, 0), inp)
    from .csv_split import _next_line_start

    size = os.path.getsize(path)
    chunk_bytes = max(1, inp.chunk_rows * _line_bytes(_head_lines(path, 0)))
    bounds = [0]
    with open(path, "rb") as f:
        while bounds[-1] + chunk_bytes < size:
            b = _next_line_start(f, bounds[-1] + chunk_bytes, size)
            if b >= size:
                break
            bounds.append(b)
    bounds.append(size)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop > start:
            chunks.append(ChunkDesc(len(chunks), fi, path, fmt, start, stop, -1, -1))
    return feature_names(inp)


def _line_bytes(sample: bytes) -> int:
    return max(1, len(sample) // max(1, sample.count(b"\n")))


def _head_lines(path, data_start: int) -> bytes:
    """Whole lines at the start of a plain file's data: PROBE_RECORDS lines, at most 1 MiB."""
    from .csv_split import _end_of_records, _read_range

    return _read_range(path, data_start, _end_of_records(path, data_start, PROBE_RECORDS, 1 << 20))


def _numeric_names(inp) -> list[str]:
    return list(inp.features) + [c for c in (inp.label, inp.weight) if c]


def _probe_json(path, head: bytes, inp) -> None:
    """Raise if a key of the first JSON records is nested, or not a number in most records."""
    from .lines import nested_column, parse_json_lines

    block = parse_json_lines(head, path, features=inp.features, label=inp.label or None,
                             categorical=_text_columns(inp), weight=inp.weight or None,
                             na_values=tuple(inp.na_values), first_line=1)
    nested = nested_column(block)
    if nested is not None:
        role = role_of(nested[0], inp)
        raise DataError(f"{path}, line {nested[1]}: key {nested[0]!r} holds a list or object (a "
                        f"nested column, {role}); only flat values (numbers, strings, null) are "
                        f"read: flatten it before hpcprep, or leave it out of {role}")
    from .csv_records import failing_columns

    _raise_failing(path, failing_columns(block, _numeric_names(inp)), inp)
    probe_dates(path, block, inp)


def _text_columns(inp) -> list[str]:
    """The columns read as text: categorical, then dates (no duplicates)."""
    return list(dict.fromkeys([*inp.categorical, *date_columns(inp)]))


def _probe_compressed(path, fmt, compression, inp) -> int:
    """Check a compressed file's header (CSV) and first records; return where its data starts."""
    from .compressed import Decompressed, first_line, pieces

    stream = Decompressed(path, compression)
    try:
        data_start = 0
        if fmt == "csv":
            from .csv_split import header_from_line

            line = first_line(stream)
            header = header_from_line(line, path, inp.delimiter)
            from .arrow import wanted_columns

            for col in wanted_columns(inp):
                if col not in header:
                    raise DataError(f"{path}: the header has no column {col!r}; it has: "
                                    f"{', '.join(header)}")
            data_start = len(line)
        head = next((buf for _, buf in pieces(stream, data_start, PROBE_RECORDS)), b"")
    finally:
        stream.close()
    if fmt == "jsonl":
        _probe_json(path, head, inp)
        return data_start
    from .csv_parse import parse_buffer
    from .csv_records import QuotedNewlineError, failing_columns

    try:
        block = parse_buffer(head, path, header=header, features=inp.features,
                             label=inp.label or None, weight=inp.weight or None,
                             categorical=date_columns(inp), delimiter=inp.delimiter,
                             na_values=tuple(inp.na_values), first_line=2)
    except QuotedNewlineError:
        return data_start   # reported in file order when the file is counted
    _raise_failing(path, failing_columns(block, _numeric_names(inp)), inp)
    probe_dates(path, block, inp)
    return data_start

