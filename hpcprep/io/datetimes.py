"""Dates and timestamps (``input.datetime``): a column of instants becomes numeric features.

``input.datetime = {ts = ["epoch", "year", "hour"]}`` reads column ``ts`` as
instants and appends the features ``ts.epoch``, ``ts.year``, ``ts.hour`` after
``input.features`` (columns in the order of the table, the parts of each in the
order listed). Every part is computed in UTC from whole seconds and days with
integer arithmetic, so it is exact; ``epoch`` is seconds since 1970-01-01 with
the fraction of the second added.

Text (CSV, JSON lines, string columns of Parquet/Feather) is parsed as ISO 8601,
vectorized: by Arrow's cast to a timestamp where a block of values takes it, else
by one regex over the block and integer arithmetic (:func:`parse_text`); Arrow ``date32``,
``date64`` and ``timestamp`` columns (any unit; a zone, if any, only labels the
UTC values Arrow stores) are converted without text (:func:`from_arrow`). A
value that does not parse is a bad record (:data:`BAD_DATE`); a missing one
(``""``, ``na_values``, null) is NaN in every part.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..config import InputConfig
from ..errors import ConfigError, DataError
from .arrow_buffers import (arrow_floats, bool_values, empty_or_null, fixed_values, from_mask, from_strings,
                            null_like, string_scalar, valid_mask)
from .csv_records import BAD_DATE, BAD_REASONS

#: The parts a date column can give, in the order the docs list them.
PARTS = ("epoch", "year", "month", "day", "hour", "minute", "second", "weekday", "dayofyear")

#: The reason under which records whose date does not parse (code ``BAD_DATE``) are counted.
UNPARSABLE_DATE = BAD_REASONS[BAD_DATE]

#: ISO 8601: a date, optionally a time (``T`` or a space; hours, optional minutes, seconds
#: and fraction) with optionally ``Z`` or an offset ``+hh:mm`` / ``+hhmm`` / ``+hh``; spaces around.
#: Every string Arrow's own cast to a timestamp accepts (the fast path) matches it.
_ISO = (r"^\s*(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
        r"(?:[T ](?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?"
        r"\s*(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2}))?)?)?\s*$")

_DAY = 86400


# --------------------------------------------------------------------------- config

def date_columns(inp: InputConfig) -> list[str]:
    """The ``input.datetime`` columns, in config order."""
    return list(inp.datetime)


def derived_names(inp: InputConfig) -> list[str]:
    """Names of the features made of the date columns: ``col.part``, in their fixed order."""
    return [f"{col}.{part}" for col, parts in inp.datetime.items() for part in parts]


def feature_names(inp: InputConfig) -> list[str]:
    """All feature names of a format read by column name: ``input.features``, then the dates'."""
    return list(inp.features) + derived_names(inp)


def check_config(inp: InputConfig) -> None:
    """Check ``input.datetime`` (on rank 0, before any work).

    Raises
    ------
    ConfigError
        Naming the key: a part that is not one of :data:`PARTS`, a list that is
        empty or repeats a part, a column that is also a feature, the label,
        the weight or categorical, a derived name that is also a feature name.
    """
    table = inp.datetime
    if table and not isinstance(inp.features, list):
        raise ConfigError("input.datetime: dates are read from columns of CSV, JSON lines, "
                          "Parquet or Feather files; input.features names an HDF5/.npy dataset")
    roles = {c: "input.features" for c in inp.features}
    roles.update({c: "input.categorical" for c in inp.categorical})
    roles.update({getattr(inp, k): f"input.{k}" for k in ("label", "weight") if getattr(inp, k)})
    allowed = ", ".join(repr(p) for p in PARTS)
    for col, parts in table.items():
        key = f"input.datetime.{col}"
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
            raise ConfigError(f"{key} = {parts!r}: expected a non-empty list of parts, "
                              f"e.g. [\"epoch\", \"year\"]; allowed: {allowed}")
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ConfigError(f"{key}: unknown part {unknown[0]!r}; allowed: {allowed}")
        if len(set(parts)) != len(parts):
            twice = next(p for p in parts if parts.count(p) > 1)
            raise ConfigError(f"{key}: part {twice!r} is listed twice")
        if col in roles:
            raise ConfigError(f"{key}: column {col!r} is also in {roles[col]}; a column has "
                              f"one role: remove it from one of them")
    clash = sorted(set(derived_names(inp)) & set(inp.features))
    if clash:
        raise ConfigError(f"input.datetime: the derived feature {clash[0]!r} is also a name in "
                          f"input.features")


# --------------------------------------------------------------------------- instants

@dataclass
class Instants:
    """Instants in UTC: ``secs`` (int64, whole seconds since 1970, floored) plus ``frac``
    (float64 in [0, 1)); ``missing`` and ``bad`` (bool) mark rows without an instant."""

    secs: np.ndarray
    frac: np.ndarray
    missing: np.ndarray
    bad: np.ndarray


def days_from_civil(y, m, d) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (int64 arrays; H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(year, month, day)`` of days since 1970-01-01 (the inverse of :func:`days_from_civil`)."""
    z = days + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (m <= 2), m, d


def _ints(parts, name: str) -> np.ndarray:
    """A captured group as int64 (0 where it did not take part)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    s = parts.field(name)
    s = pc.if_else(from_mask(empty_or_null(s)), string_scalar("0"), s)
    return fixed_values(pc.cast(s, pa.int64()), np.int64)[0]


def parse_text(values) -> Instants:
    """Parse ISO 8601 dates and timestamps (a NumPy array of str or an Arrow string array).

    ``""`` and nulls are missing; anything else that is not a valid date and time
    (``2024-02-30``, ``25:00``, ``+24:00``) is bad. Offsets are subtracted (UTC).
    Blocks of values that Arrow's cast to a timestamp takes whole are converted by
    it (C++, fast); the rest, down to blocks of :data:`_BLOCK` values, by the regex.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    arr = from_strings(values) if isinstance(values, np.ndarray) else values
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    missing = empty_or_null(arr)
    inst = Instants(np.zeros(n, np.int64), np.zeros(n), missing, np.zeros(n, bool))
    if missing.any():
        arr = pc.if_else(from_mask(missing), null_like(arr), arr)
    if n and not missing.all():
        _parse_into(arr, 0, inst)
    return inst


#: Values below which a block Arrow's cast rejects goes to the regex whole (not halved further).
_BLOCK = 4096


def _parse_into(arr, at: int, inst: Instants) -> None:
    """Fill ``inst[at:at + len(arr)]``: Arrow's cast where it takes the block, else halves."""
    sl = slice(at, at + len(arr))
    valid = np.flatnonzero(~inst.missing[sl])
    if valid.size == 0:
        return
    us = _cast_us(arr, arr[int(valid[0])].as_py())
    if us is None and len(arr) > _BLOCK:
        half = len(arr) // 2
        _parse_into(arr.slice(0, half), at, inst)
        _parse_into(arr.slice(half), at + half, inst)
        return
    if us is not None:
        secs = np.floor_divide(us, 10**6)
        inst.secs[sl], inst.frac[sl] = secs, (us - secs * 10**6) / 10**6
    else:
        inst.secs[sl], inst.frac[sl], inst.bad[sl] = _parse_regex(arr)


_ZONE = re.compile(r"(?:[Zz]|[+-]\d\d(?::?\d\d)?)\s*$")


def _cast_us(arr, first: str) -> np.ndarray | None:
    """Microseconds since 1970 (UTC) by Arrow's cast of every value, or None where it rejects
    one. The cast reads either naive values or values with an offset (each value it rejects
    costs microseconds): the kind of ``first`` (a value of ``arr``) decides which."""
    import pyarrow as pa
    import pyarrow.compute as pc
    zoned = bool(_ZONE.search(first[10:]))
    try:
        out = pc.cast(arr, pa.timestamp("us", "UTC" if zoned else None))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return fixed_values(pc.cast(out, pa.int64()), np.int64, 0)[0]


def _parse_regex(arr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(secs, frac, bad)`` of a block of strings by :data:`_ISO` (nulls: not bad)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    parts = pc.extract_regex(arr, _ISO)     # null where null or not matched
    matched = valid_mask(parts)
    y, mo, d, h, mi, s, oh, om = (_ints(parts, k) for k in ("y", "mo", "d", "h", "mi", "s", "oh", "om"))
    days = days_from_civil(y, mo, d)
    ok = matched & (mo >= 1) & (mo <= 12) & (d >= 1) & (h < 24) & (mi < 60) & (s < 60) \
        & (oh < 24) & (om < 60)
    ok &= civil_from_days(days)[2] == d     # the day exists in its month
    sign = np.where(bool_values(pc.equal(parts.field("sign"), string_scalar("-"))), -1, 1)
    secs = days * _DAY + h * 3600 + mi * 60 + s - sign * (oh * 3600 + om * 60)
    frac = pc.cast(pc.binary_join_element_wise(string_scalar("0."), parts.field("f"), string_scalar("0"),
                                               string_scalar("")), pa.float64())
    frac = np.nan_to_num(arrow_floats(frac)[0])
    bad = ~ok & valid_mask(arr)
    return np.where(ok, secs, 0), np.where(ok, frac, 0.0), bad


_UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def is_date_type(t) -> bool:
    """Whether an Arrow type (``pyarrow.DataType``) is read as instants without text: date32, date64, timestamp."""
    import pyarrow as pa
    return pa.types.is_timestamp(t) or pa.types.is_date32(t) or pa.types.is_date64(t)


def from_arrow(col) -> Instants:
    """Instants of an Arrow column: timestamp (any unit, UTC), date32, date64, or text."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    t = col.type
    if not is_date_type(t):
        return parse_text(pc.cast(col, pa.string()) if not pa.types.is_string(t) else col)
    missing = ~valid_mask(col)
    if pa.types.is_date32(t):   # days
        v, per, scale = pc.cast(pc.cast(col, pa.int32()), pa.int64()), 1, _DAY
    else:                        # milliseconds (date64) or the timestamp's unit
        per = 1000 if pa.types.is_date64(t) else _UNITS[t.unit]
        v, scale = pc.cast(col, pa.int64()), 1
    v = fixed_values(v, np.int64, 0)[0]
    secs = np.floor_divide(v, per)
    frac = (v - secs * per) / per
    return Instants(secs * scale, frac, missing, np.zeros(len(v), bool))


def derive(inst: Instants, parts: list[str]) -> np.ndarray:
    """The ``parts`` of instants as an (n, len(parts)) float64 array; NaN where missing or bad."""
    days = np.floor_divide(inst.secs, _DAY)
    sod = inst.secs - days * _DAY
    y, m, d = civil_from_days(days)
    values = {"epoch": lambda: inst.secs + inst.frac, "year": lambda: y, "month": lambda: m,
              "day": lambda: d, "hour": lambda: sod // 3600, "minute": lambda: sod % 3600 // 60,
              "second": lambda: sod % 60, "weekday": lambda: (days + 3) % 7,   # 1970-01-01: Thu
              "dayofyear": lambda: days - days_from_civil(y, np.ones_like(y), np.ones_like(y)) + 1}
    out = np.empty((inst.secs.shape[0], len(parts)), dtype=np.float64)
    for j, part in enumerate(parts):
        out[:, j] = values[part]()
    out[inst.missing | inst.bad] = np.nan
    return out


# --------------------------------------------------------------------------- readers

def block_dates(block, inp: InputConfig) -> np.ndarray:
    """The date features of a parsed text block; records whose date is bad are flagged in it.

    ``block`` is a :class:`~hpcprep.io.csv_records.CsvBlock` (or JSON lines block)
    parsed with the date columns among its categorical (text) columns. A record
    not already bad whose date does not parse gets ``bad``, :data:`BAD_DATE` and
    the column (its index in ``block.header``); the first such column counts.
    """
    out = []
    for col, parts in inp.datetime.items():
        inst = parse_text(block.categorical[col])
        new = inst.bad & ~block.bad
        if new.any():
            block.bad_reason[new] = BAD_DATE
            block.bad_column[new] = block.header.index(col)
            block.bad |= new
        out.append(derive(inst, parts))
    return np.hstack(out) if out else np.empty((len(block), 0))


def table_dates(table, inp: InputConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Date features of an Arrow table; also ``bad`` (bool) and, where bad, the column's index
    in :func:`date_columns` (the first bad column of the row; -1 elsewhere)."""
    n = table.num_rows
    out, bad, where = [], np.zeros(n, bool), np.full(n, -1, np.int32)
    for k, (col, parts) in enumerate(inp.datetime.items()):
        inst = from_arrow(table.column(col))
        where[inst.bad & ~bad] = k
        bad |= inst.bad
        out.append(derive(inst, parts))
    return (np.hstack(out) if out else np.empty((n, 0))), bad, where


def date_error(path, where: str, column: str, value: str, more: int) -> DataError:
    """The ``on_bad_row = "error"`` error of an unparsable date: file, line or row, column, value."""
    also = f"; {more} more bad record{'s' if more > 1 else ''} in this range" if more else ""
    return DataError(f"{os.fspath(path)}, {where}: {UNPARSABLE_DATE} in column {column!r}: "
                     f"{value[:200]!r} (expected ISO 8601, e.g. 2024-03-01 or "
                     f"2024-03-01T12:34:56+01:00){also} (set on_bad_row = \"drop\" to drop and "
                     f"count them)")


def block_date_error(block, path) -> DataError | None:
    """:func:`date_error` for a block whose first bad record is a bad date, else None."""
    hits = np.flatnonzero(block.bad)
    if hits.size == 0 or block.bad_reason[hits[0]] != BAD_DATE:
        return None
    i = int(hits[0])
    col = block.header[int(block.bad_column[i])]
    return date_error(path, f"line {int(block.lines[i])}", col, str(block.categorical[col][i]),
                      hits.size - 1)
