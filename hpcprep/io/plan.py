"""Which files exist, how they split into chunks, and which input rank reads which chunk.

Built on rank 0 before any work (so that a missing file or a bad dataset is
reported once) and broadcast. The plan is small: one entry per chunk.
"""

import glob
import os
import re
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..errors import ConfigError, DataError
from ..partition import balanced_contiguous

SUFFIX_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".he5": "hdf5", ".npy": "npy", ".csv": "csv"}


@dataclass(frozen=True)
class ChunkDesc:
    """One chunk of one input file.

    ``start:stop`` are rows of an HDF5 or .npy file, or byte offsets (at line
    starts) of a CSV file. ``rows`` is the number of records; for CSV it is
    counted collectively after planning (:func:`count_csv_chunks`), until then -1.
    ``first_line`` is the CSV line number of the chunk's first line (header = 1).
    """

    chunk_id: int
    file_index: int
    path: str
    format: str
    start: int
    stop: int
    first_id: int
    rows: int
    first_line: int = 0


@dataclass
class InputPlan:
    """The ordered input: files, chunks and the chunk ranges of each input rank."""

    files: list[str]
    file_rows: list[int]
    n_features: int
    feature_names: list[str]
    feature_dtype: str
    label_dtype: str | None
    chunks: list[ChunkDesc]
    ranges: list[tuple[int, int]] = field(default_factory=list)
    weights: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.file_rows)

    def chunks_of(self, input_index: int) -> list[ChunkDesc]:
        """Chunks read by input rank ``input_index``."""
        lo, hi = self.ranges[input_index]
        return self.chunks[lo:hi]

    @property
    def bytes_per_row(self) -> int:
        lab = np.dtype(self.label_dtype).itemsize if self.label_dtype else 0
        return np.dtype(self.feature_dtype).itemsize * self.n_features + lab + 8

    @property
    def counted(self) -> bool:
        """Whether every chunk's row count is known (CSV chunks are counted after planning)."""
        return all(c.rows >= 0 for c in self.chunks)


def expand_paths(patterns: list[str]) -> list[str]:
    """Files matching the globs, sorted, without duplicates.

    Directories among the matches are skipped; a pattern that matches no
    regular, readable file is an error naming it, and so is a matched file
    that cannot be opened for reading.
    """
    files = set()
    for pattern in patterns:
        matched = glob.glob(pattern)
        if not matched:
            what = "no file matches" if glob.has_magic(pattern) else "input file not found:"
            raise DataError(f"input.paths: {what} {pattern}")
        found = [m for m in matched if os.path.isfile(m)]
        if not found:
            raise DataError(f"input.paths: {pattern} matches no readable file "
                            f"({_what_matched(pattern, matched)})")
        for m in found:
            _check_readable(m, pattern)
        files.update(found)
    return sorted(files)


def _what_matched(pattern: str, matched: list[str]) -> str:
    if len(matched) == 1 and os.path.isdir(matched[0]):
        return f"it is a directory: give the files in it, e.g. {os.path.join(pattern, '*.csv')}"
    if all(os.path.isdir(m) for m in matched):
        return f"only directories: {', '.join(sorted(matched)[:3])}" + (", ..." if len(matched) > 3 else "")
    return "only directories, broken links or special files"


def _check_readable(path: str, pattern: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise DataError(f"input.paths: {path} (matched by {pattern}) cannot be read: "
                        f"{e.strerror or e}") from None


def check_input_columns(cfg: dict) -> None:
    """Every ``input.categorical`` column must be encoded by a ``categorical`` step.

    Features, the label and the weight are carried to the output by the
    pipeline itself; a raw categorical column reaches it only as the features
    a ``categorical`` step makes of it, and would otherwise vanish.

    Raises
    ------
    ConfigError
        Naming the first column no step encodes, and the step that would.
    """
    encoded = set()
    for table in cfg["standardize"]:
        for step in table["steps"]:
            if step.get("op") == "categorical":
                cols = step.get("columns") or list(cfg["input"]["categorical"])
                encoded.update(cols)
    missing = [c for c in cfg["input"]["categorical"] if c not in encoded]
    if missing:
        cols = ", ".join(f'"{c}"' for c in missing)
        what = f"column {missing[0]!r}" if len(missing) == 1 else \
            "columns " + ", ".join(repr(c) for c in missing)
        it = "it" if len(missing) == 1 else "them"
        raise ConfigError(f"input.categorical: {what} would not reach the output: no step "
                          f"encodes {it}; add {{ op = \"categorical\", columns = [{cols}] }} "
                          f"to a [[standardize]] table, or remove {it} from input.categorical")


def detect_format(path: str, configured: str) -> str:
    if configured != "auto":
        return configured
    fmt = SUFFIX_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the suffix; set input.format "
                        f"(one of hdf5, npy, csv)")
    return fmt


def npy_label_path(path: str, label: str) -> str:
    """The label file paired with a features ``.npy`` file: ``<stem>.<label>.npy``."""
    return path[: -len(".npy")] + f".{label}.npy"


def _describe_hdf5(path, inp):
    name, label = inp["features"], inp["label"]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open as HDF5 ({e})") from None
    with f:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise DataError(f"{path}: no dataset {name!r} (input.features); has: {', '.join(f.keys())}")
        ds = f[name]
        names = ds.attrs.get("feature_names")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None
        lab = None
        if label:
            if label not in f:
                raise DataError(f"{path}: no dataset {label!r} (input.label)")
            lab = f[label]
            _check_label(path, label, lab.shape, lab.dtype, ds.shape[0] if ds.ndim else 0)
        return ds.shape, ds.dtype, names, (None if lab is None else lab.dtype)


def _describe_npy(path, inp):
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot open as .npy ({e})") from None
    lab = None
    if inp["label"]:
        lpath = npy_label_path(path, inp["label"])
        try:
            lab = np.load(lpath, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{lpath}: label file for {path} cannot be read ({e})") from None
        _check_label(lpath, inp["label"], lab.shape, lab.dtype, arr.shape[0] if arr.ndim else 0)
    return arr.shape, arr.dtype, None, (None if lab is None else lab.dtype)


def _check_label(path, name, shape, dtype, n):
    if len(shape) != 1 or shape[0] != n:
        raise DataError(f"{path}: label {name!r} has shape {shape}, expected ({n},)")
    if dtype.kind not in "iuf b":
        raise DataError(f"{path}: label {name!r} has dtype {dtype}; expected a numeric type")


def build_input_plan(inp: dict, n_input_ranks: int, weights=None) -> InputPlan:
    """Discover and check the input files and split them into chunks.

    Parameters
    ----------
    inp : dict
        The validated ``[input]`` table.
    n_input_ranks : int
        Number of ranks in the input layer.
    weights : sequence of float, optional
        Relative speed of each input rank (default equal): chunks are given out
        in contiguous ranges whose row totals follow these weights.

    Raises
    ------
    DataError
        Naming the file and dataset that is missing or unusable.
    """
    files = [p for p in expand_paths(inp["paths"])
             if not (inp["label"] and p.endswith(f".{inp['label']}.npy"))]
    if not files:
        raise DataError(f"input.paths: {', '.join(inp['paths'])} match only label files "
                        f"(*.{inp['label']}.npy), no feature file")
    file_rows, chunks, d, names, fdt, ldt = [], [], None, None, None, None
    first_id = 0
    for fi, path in enumerate(files):
        fmt = detect_format(path, inp["format"])
        if fmt == "csv":
            names = _plan_csv(path, fi, inp, names, chunks)
            d, fdt = len(names), np.dtype(np.float64)
            ldt = np.dtype(np.float64) if inp["label"] else None
            file_rows.append(-1)
            continue
        if isinstance(inp["features"], list):
            raise DataError(f"{path}: input.features is a list of CSV columns, but this is a "
                            f"{fmt} file; give the dataset name (e.g. \"features\")")
        for key in ("weight", "categorical"):
            if inp[key]:
                raise DataError(f"{path}: input.{key} names CSV columns, but this is a {fmt} "
                                f"file; it would not reach the output: remove input.{key}")
        shape, dtype, fnames, ldtype = (_describe_hdf5 if fmt == "hdf5" else _describe_npy)(path, inp)
        if len(shape) != 2:
            raise DataError(f"{path}: features have shape {shape}; expected a 2-D (rows, features) array")
        if dtype.kind not in "fiu" or dtype.kind == "b":
            raise DataError(f"{path}: features have dtype {dtype}; expected a numeric type "
                            f"(float or integer)")
        if d is None:
            d, names = shape[1], fnames or [f"f{i}" for i in range(shape[1])]
            fdt = np.dtype(np.float64) if dtype.itemsize > 4 else np.dtype(np.float32)
            ldt = ldtype
        elif shape[1] != d:
            raise DataError(f"{path}: {shape[1]} features, but {files[0]} has {d}")
        elif (ldt is None) != (ldtype is None) or (ldt is not None and ldtype.kind != ldt.kind):
            raise DataError(f"{path}: label dtype {ldtype} differs from {files[0]}'s {ldt}")
        n = shape[0]
        file_rows.append(n)
        for start in range(0, n, inp["chunk_rows"]):
            stop = min(n, start + inp["chunk_rows"])
            chunks.append(ChunkDesc(len(chunks), fi, path, fmt, start, stop, first_id + start,
                                    stop - start))
        first_id += n
    if d is None:
        d, names, fdt = 0, [], np.dtype(np.float32)
    label_dtype = None
    if ldt is not None:
        label_dtype = "float64" if ldt.kind == "f" else "int64"
    plan = InputPlan(files, file_rows, d, names, np.dtype(fdt).name, label_dtype, chunks,
                     weights=bool(inp["weight"]))
    if any(c.format == "csv" for c in chunks) and any(c.format != "csv" for c in chunks):
        raise DataError("input.paths: mixes CSV with HDF5/npy files; use one format per run")
    # CSV chunks are balanced by bytes until their records are counted
    sizes = [c.rows if c.rows >= 0 else c.stop - c.start for c in chunks]
    plan.ranges = balanced_contiguous(sizes, n_input_ranks, weights)
    return plan


#: Bytes of a CSV file sampled to estimate the line length (chunk_rows lines per chunk).
_CSV_SAMPLE = 1 << 16


def _plan_csv(path, fi, inp, names, chunks) -> list[str]:
    """Check a CSV file's header and cut it into byte ranges of about ``chunk_rows`` lines."""
    from .csv import read_header, split_byte_ranges

    if not isinstance(inp["features"], list):
        raise DataError(f"{path}: CSV input needs input.features = [\"col\", ...] (column names)")
    header, data_start = read_header(path, inp["delimiter"])
    wanted = list(inp["features"]) + [c for c in (inp["label"], inp["weight"]) if c] + list(inp["categorical"])
    for col in wanted:
        if col not in header:
            raise DataError(f"{path}: the header has no column {col!r}; it has: {', '.join(header)}")
    if names is not None and names != list(inp["features"]):
        raise DataError(f"{path}: features differ from the first file's")
    _probe_csv(path, header, data_start, inp)
    with open(path, "rb") as fh:
        fh.seek(data_start)
        sample = fh.read(_CSV_SAMPLE)
    line_bytes = max(1, len(sample) // max(1, sample.count(b"\n")))
    chunk_bytes = max(1, inp["chunk_rows"] * line_bytes)
    for start, stop in split_byte_ranges(path, chunk_bytes, inp["delimiter"]):
        chunks.append(ChunkDesc(len(chunks), fi, path, "csv", start, stop, -1, -1))
    return list(inp["features"])


#: Records at the start of each CSV file parsed while planning to find columns that are not numbers.
PROBE_RECORDS = 1000


def _probe_csv(path, header, data_start, inp) -> None:
    """Raise if a numeric column fails to parse in most of the file's first records."""
    from .csv import probe_numeric_columns

    failing = probe_numeric_columns(path, header, data_start, features=inp["features"],
                                    label=inp["label"] or None, weight=inp["weight"] or None,
                                    delimiter=inp["delimiter"], na_values=tuple(inp["na_values"]),
                                    max_records=PROBE_RECORDS)
    if not failing:
        return
    f = failing[0]
    others = [g["column"] for g in failing[1:]]
    also = f" (also not numbers: {', '.join(others)})" if others else ""
    role = "input.label" if f["column"] == inp["label"] else \
        "input.weight" if f["column"] == inp["weight"] else "input.features"
    raise DataError(f"{path}: column {f['column']!r} ({role}) is not a number in {f['bad']} of "
                    f"the first {f['records']} records (e.g. line {f['line']}: {f['value']!r}); "
                    f"{_how_to_read(f['column'], role, f['value'])}{also}")


_DATE = re.compile(r"\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\S*\s*")


def _how_to_read(column: str, role: str, value: str) -> str:
    """What would read a column of text (the end of the probe's error message)."""
    if _DATE.fullmatch(value):
        return ("it looks like a date: dates are not parsed; convert the column to a number "
                "(e.g. seconds since 1970) before hpcprep, or leave it out of " + role)
    categorical = (f"list it in input.categorical and encode it with "
                   f"{{ op = \"categorical\", columns = [\"{column}\"] }} in a [[standardize]] table")
    if role == "input.label":
        return ("a text label is not supported: map its classes to numbers (0, 1, ...) before "
                f"hpcprep, or, to use it as a feature instead, {categorical}")
    if role == "input.weight":
        return "a weight must be a number: fix or convert the column, or remove input.weight"
    return f"to read text categories, move it from input.features: {categorical}"


def count_csv_chunks(plan: InputPlan, comm, input_ranks: list[int], inp: dict | None = None) -> None:
    """Count the records of every CSV chunk (each input rank its own) and assign global ids.

    Collective over ``comm`` (every rank calls it; only input ranks read). Afterwards
    every chunk has ``rows``, ``first_id`` and ``first_line`` on every rank.

    Given ``inp``, each chunk is also checked: with ``on_bad_row = "error"`` it is
    parsed to find its first bad record (this parses the input once more);
    otherwise only its quoted lines are checked for a quoted newline (an error
    in any mode). The first finding of the whole input in file order is raised
    on every rank as the same :class:`~hpcprep.collective.AgreedError`, whatever
    the layout.
    """
    from dataclasses import replace

    from .csv import range_counts

    mine = {}
    rank = comm.Get_rank()
    if rank in input_ranks:
        for c in plan.chunks_of(input_ranks.index(rank)):
            mine[c.chunk_id] = range_counts(c.path, c.start, c.stop) + \
                ((_first_bad(c, inp) if inp is not None else None),)
    counts = {}
    for part in comm.allgather(mine):
        counts.update(part)
    next_id, line, file_rows, first_bad = 0, {}, [0] * len(plan.files), None
    for i, c in enumerate(plan.chunks):
        records, lines, bad = counts[c.chunk_id]
        first_line = line.get(c.file_index, 2)
        line[c.file_index] = first_line + lines
        plan.chunks[i] = replace(c, rows=records, first_id=next_id, first_line=first_line)
        file_rows[c.file_index] += records
        next_id += records
        if bad is not None and first_bad is None:
            first_bad = bad.message(c.path, first_line + bad.line)
    plan.file_rows = file_rows
    if first_bad is not None:
        from ..collective import AgreedError

        hint = "; set input.on_bad_row = \"drop\" to drop and count bad records" \
            if inp["on_bad_row"] == "error" else ""
        raise AgreedError(f"{first_bad} (the first bad record in file order{hint})")


def _first_bad(c: ChunkDesc, inp: dict):
    """The chunk's first bad record (on_bad_row = "error"), or its first quoted newline."""
    from .csv import BadRecord, QuotedNewlineError, first_bad_record, open_quote_line, raw_lines, \
        read_header

    if inp["on_bad_row"] != "error":
        line = open_quote_line(c.path, c.start, c.stop, inp["delimiter"])
        if line is None:
            return None
        return BadRecord(line, QuotedNewlineError.reason, raw_lines(c.path, c.start, c.stop, [line])[0])
    return first_bad_record(c.path, c.start, c.stop, header=read_header(c.path, inp["delimiter"])[0],
                            features=inp["features"], label=inp["label"] or None,
                            categorical=inp["categorical"], weight=inp["weight"] or None,
                            delimiter=inp["delimiter"], na_values=tuple(inp["na_values"]))
