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

SUFFIX_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".he5": "hdf5", ".npy": "npy", ".csv": "csv",
                  ".parquet": "parquet", ".pq": "parquet", ".feather": "feather", ".arrow": "feather",
                  ".ipc": "feather", ".jsonl": "jsonl", ".ndjson": "jsonl"}

#: Formats whose chunks are byte ranges of lines (records counted after planning).
LINE_FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class ChunkDesc:
    """One chunk of one input file.

    ``start:stop`` are rows of an HDF5, .npy, Parquet or Feather file, or byte
    offsets (at line starts) of a CSV or JSON lines file; of a compressed file,
    offsets into its decompressed text. ``rows`` is the number of records; for
    CSV and JSON lines it is counted collectively after planning
    (:func:`count_csv_chunks`), until then -1. ``first_line`` is the line
    number of the chunk's first line (CSV: header = 1; JSON lines: first = 1).
    ``compression`` is ``""`` or the codec of a compressed file; such a file is
    planned as one chunk and cut into pieces of ``chunk_rows`` lines when counted.
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
    compression: str = ""

    @property
    def by_bytes(self) -> bool:
        """Whether ``start:stop`` are byte offsets (line formats), not rows."""
        return self.format in LINE_FORMATS


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
    #: "numeric", or "class": text labels become int64 codes of ``label_classes``
    label_type: str = "numeric"
    #: the sorted class vocabulary of a "class" label (collected after planning, see
    #: :func:`hpcprep.io.classes.collect_label_classes`), else None
    label_classes: list[str] | None = None

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
        for m in sorted(m for m in matched if os.path.isdir(m)):
            from .arrow import parquet_files_in

            found += parquet_files_in(m)
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
    """The format of ``path``: ``configured`` unless "auto", else from the suffix
    (a compression suffix such as ``.gz`` is looked through: ``x.csv.gz`` is CSV)."""
    if configured != "auto":
        return configured
    from .lines import compression_of

    stem = os.path.splitext(path)[0] if compression_of(path) else path
    fmt = SUFFIX_FORMATS.get(os.path.splitext(stem)[1].lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the suffix; set input.format "
                        f"(one of hdf5, npy, csv, parquet, feather, jsonl)")
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
        compression = _compression(path, fmt)
        if fmt in ("parquet", "feather", "jsonl") or compression:
            names = _plan_columns(path, fi, fmt, compression, inp, names, chunks, first_id)
            d, fdt = len(names), np.dtype(np.float64)
            ldt = np.dtype(np.float64) if inp["label"] else None
            known = [c.rows for c in chunks if c.file_index == fi]
            file_rows.append(sum(known) if known and min(known) >= 0 else -1)
            first_id += max(0, file_rows[-1])
            continue
        if fmt == "csv":
            names = _plan_csv(path, fi, inp, names, chunks)
            d, fdt = len(names), np.dtype(np.float64)
            ldt = np.dtype(np.float64) if inp["label"] else None
            file_rows.append(-1)
            continue
        if isinstance(inp["features"], list):
            raise DataError(f"{path}: input.features is a list of CSV columns, but this is a "
                            f"{fmt} file; give the dataset name (e.g. \"features\")")
        if inp["label"] and inp["label_type"] == "class":
            raise DataError(f"{path}: input.label_type = \"class\" reads text labels of CSV, JSON "
                            f"lines, Parquet or Feather files; a {fmt} label is numeric: remove "
                            f"input.label_type")
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
    from .classes import resolve_label_type

    plan.label_type = resolve_label_type(plan, inp)
    if plan.label_type == "class":
        plan.label_dtype = "int64"
    if any(c.format == "csv" for c in chunks) and any(c.format in ("hdf5", "npy") for c in chunks):
        raise DataError("input.paths: mixes CSV with HDF5/npy files; use one format per run")
    formats = sorted({c.format for c in chunks})
    if len(formats) > 1:
        raise DataError(f"input.paths: mixes {' and '.join(formats)} files; use one format per run")
    # line chunks are balanced by bytes until their records are counted
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
    _raise_failing(path, failing, inp)


def _raise_failing(path, failing: list[dict], inp: dict) -> None:
    """Raise for the first numeric column failing in most of a file's first records (if any)."""
    if inp["label_type"] != "numeric":   # a text label is read as classes
        failing = [f for f in failing if f["column"] != inp["label"]]
    if not failing:
        return
    f = failing[0]
    others = [g["column"] for g in failing[1:]]
    also = f" (also not numbers: {', '.join(others)})" if others else ""
    role = "input.label" if f["column"] == inp["label"] else \
        "input.weight" if f["column"] == inp["weight"] else "input.features"
    raise DataError(f"{path}: column {f['column']!r} ({role}) is not a number in {f['bad']} of "
                    f"the first {f['records']} records (e.g. line {f['line']}: {f['value']!r}); "
                    f"{how_to_read(f['column'], role, f['value'])}{also}")


_DATE = re.compile(r"\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\S*\s*")


def how_to_read(column: str, role: str, value: str) -> str:
    """What would read a column of text (the end of the probe's error message)."""
    if _DATE.fullmatch(value):
        return ("it looks like a date: dates are not parsed; convert the column to a number "
                "(e.g. seconds since 1970) before hpcprep, or leave it out of " + role)
    categorical = (f"list it in input.categorical and encode it with "
                   f"{{ op = \"categorical\", columns = [\"{column}\"] }} in a [[standardize]] table")
    if role == "input.label":
        return ("a text label is not supported as a number: set input.label_type = \"class\" "
                "to read its classes as codes 0, 1, ... of their sorted names, or, to use it "
                f"as a feature instead, {categorical}")
    if role == "input.weight":
        return "a weight must be a number: fix or convert the column, or remove input.weight"
    return f"to read text categories, move it from input.features: {categorical}"


def count_csv_chunks(plan: InputPlan, comm, input_ranks: list[int], inp: dict | None = None) -> None:
    """Count the records of every line chunk (each input rank its own) and assign global ids.

    Line chunks are those of CSV and JSON lines files. Collective over ``comm``
    (every rank calls it; only input ranks read). Afterwards every chunk has
    ``rows``, ``first_id`` and ``first_line`` on every rank. A compressed file,
    planned as one chunk, is decompressed by the rank that has it and becomes
    the pieces of ``chunk_rows`` lines it found (:func:`hpcprep.io.lines.pieces`),
    all kept by that rank: ``plan.chunks`` and ``plan.ranges`` are renumbered.

    Given ``inp``, each chunk is also checked: with ``on_bad_row = "error"`` it is
    parsed to find its first bad record (this parses the input once more);
    otherwise only its quoted lines are checked for a quoted newline (an error
    in any mode). The first finding of the whole input in file order is raised
    on every rank as the same :class:`~hpcprep.mpi.agree.AgreedError`, whatever
    the layout.
    """
    from dataclasses import replace

    mine = {}
    rank = comm.Get_rank()
    if rank in input_ranks:
        for c in plan.chunks_of(input_ranks.index(rank)):
            if c.rows < 0:
                mine[c.chunk_id] = _count_chunk(c, inp)
    counts = {}
    for part in comm.allgather(mine):
        counts.update(part)
    next_id, line, file_rows, first_bad = 0, {}, [0] * len(plan.files), None
    chunks, ends = [], []
    for c in plan.chunks:
        for start, stop, records, lines, bad in counts.get(c.chunk_id, [(c.start, c.stop, c.rows, 0, None)]):
            first_line = line.get(c.file_index, 2 if c.format == "csv" else 1)
            line[c.file_index] = first_line + lines
            chunks.append(replace(c, chunk_id=len(chunks), start=start, stop=stop, rows=records,
                                  first_id=next_id, first_line=first_line if c.by_bytes else 0))
            file_rows[c.file_index] += records
            next_id += records
            if bad is not None and first_bad is None:
                first_bad = bad.message(c.path, first_line + bad.line)
        ends.append(len(chunks))
    plan.ranges = [(ends[lo - 1] if lo else 0, ends[hi - 1] if hi else 0) for lo, hi in plan.ranges]
    plan.chunks = chunks
    plan.file_rows = file_rows
    if first_bad is not None:
        from ..mpi.agree import AgreedError

        hint = "; set input.on_bad_row = \"drop\" to drop and count bad records" \
            if inp["on_bad_row"] == "error" else ""
        raise AgreedError(f"{first_bad} (the first bad record in file order{hint})")


def _count_chunk(c: ChunkDesc, inp: dict | None) -> list[tuple]:
    """``[(start, stop, records, lines, first bad record or None)]`` of one line chunk:
    itself, or the pieces of a compressed file."""
    from .csv import range_counts

    if not c.compression:
        records, lines = range_counts(c.path, c.start, c.stop)
        bad = None
        if inp is not None:
            if c.format == "csv":
                bad = _first_bad(c, inp)
            elif inp["on_bad_row"] == "error":
                from .csv import _read_range

                bad = _first_bad_in(_read_range(c.path, c.start, c.stop), c, inp)
        return [(c.start, c.stop, records, lines, bad)]
    from .lines import Decompressed, pieces

    out, stream = [], Decompressed(c.path, c.compression)
    try:
        for p, buf in pieces(stream, c.start, inp["chunk_rows"] if inp else PROBE_RECORDS):
            bad = _first_bad_in(buf, c, inp) if inp is not None else None
            out.append((p.start, p.stop, p.records, p.lines, bad))
    finally:
        stream.close()
    return out


def _first_bad_in(buf: bytes, c: ChunkDesc, inp: dict):
    """The first bad record of whole lines ``buf`` (``line`` relative: 0 = its first line),
    as :func:`_first_bad` finds it: any bad record with on_bad_row = "error", else only a
    quoted newline of CSV."""
    from .csv import BadRecord, QuotedNewlineError, block_first_bad, buffer_lines, parse_buffer

    if c.format == "jsonl":
        if inp["on_bad_row"] != "error":
            return None
        from .lines import parse_json_lines

        block = parse_json_lines(buf, c.path, features=inp["features"], label=inp["label"] or None,
                                 categorical=inp["categorical"], weight=inp["weight"] or None,
                                 na_values=tuple(inp["na_values"]), first_line=0)
    else:
        if inp["on_bad_row"] != "error" and b'"' not in buf:
            return None
        try:
            block = parse_buffer(buf, c.path, header=_header_of(c, inp), features=inp["features"],
                                 label=inp["label"] or None, categorical=inp["categorical"],
                                 weight=inp["weight"] or None, delimiter=inp["delimiter"],
                                 na_values=tuple(inp["na_values"]), first_line=0)
        except QuotedNewlineError as e:
            cut = _line_offset(buf, e.line)
            earlier = _first_bad_in(buf[:cut], c, inp) if cut and inp["on_bad_row"] == "error" else None
            return earlier or BadRecord(e.line, e.reason, buffer_lines(buf, [e.line])[0])
        if inp["on_bad_row"] != "error":
            return None
    return block_first_bad(block, lambda line: buffer_lines(buf, [line])[0])


def _line_offset(buf: bytes, line: int) -> int:
    """Byte offset where line ``line`` (0 = first) of ``buf`` starts."""
    if line == 0:
        return 0
    return int(np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)[line - 1]) + 1


def _header_of(c: ChunkDesc, inp: dict) -> list[str]:
    """The CSV header of a chunk's file (decompressing its first line if compressed)."""
    from .csv import header_from_line, read_header

    if not c.compression:
        return read_header(c.path, inp["delimiter"])[0]
    from .lines import Decompressed, first_line

    stream = Decompressed(c.path, c.compression)
    try:
        return header_from_line(first_line(stream), c.path, inp["delimiter"])
    finally:
        stream.close()


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


# --------------------------------------------------------------------------- Arrow, JSON lines, compressed

def _compression(path: str, fmt: str) -> str:
    from .lines import compression_of

    compression = compression_of(path)
    if compression and fmt not in LINE_FORMATS:
        raise DataError(f"{path}: a compressed {fmt} file; only CSV and JSON lines are read "
                        f"compressed ({fmt} compresses inside the file)")
    return compression


def _plan_columns(path, fi, fmt, compression, inp, names, chunks, first_id) -> list[str]:
    """Plan a Parquet, Feather, JSON lines or compressed CSV file; append its chunks."""
    if not isinstance(inp["features"], list):
        raise DataError(f"{path}: {fmt} input needs input.features = [\"col\", ...] (column names)")
    if names is not None and names != list(inp["features"]):
        raise DataError(f"{path}: features differ from the first file's")
    if fmt in ("parquet", "feather"):
        from .arrow import chunk_ranges, describe

        at = first_id
        for start, stop in chunk_ranges(describe(path, fmt, inp), inp["chunk_rows"]):
            chunks.append(ChunkDesc(len(chunks), fi, path, fmt, start, stop, at, stop - start))
            at += stop - start
        return list(inp["features"])
    if compression:
        data_start = _probe_compressed(path, fmt, compression, inp)
        size = os.path.getsize(path)   # only to balance files over ranks until counted
        chunks.append(ChunkDesc(len(chunks), fi, path, fmt, data_start, data_start + max(1, size),
                                -1, -1, compression=compression))
        return list(inp["features"])
    _probe_json(path, _head_lines(path, 0), inp)
    from .csv import _next_line_start

    size = os.path.getsize(path)
    chunk_bytes = max(1, inp["chunk_rows"] * _line_bytes(_head_lines(path, 0)))
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
    return list(inp["features"])


def _line_bytes(sample: bytes) -> int:
    return max(1, len(sample) // max(1, sample.count(b"\n")))


def _head_lines(path, data_start: int) -> bytes:
    """Whole lines at the start of a plain file's data: PROBE_RECORDS lines, at most 1 MiB."""
    from .csv import _end_of_records, _read_range

    return _read_range(path, data_start, _end_of_records(path, data_start, PROBE_RECORDS, 1 << 20))


def _numeric_names(inp) -> list[str]:
    return list(inp["features"]) + [c for c in (inp["label"], inp["weight"]) if c]


def _probe_json(path, head: bytes, inp) -> None:
    """Raise if a key of the first JSON records is nested, or not a number in most records."""
    from .lines import nested_column, parse_json_lines

    block = parse_json_lines(head, path, features=inp["features"], label=inp["label"] or None,
                             categorical=inp["categorical"], weight=inp["weight"] or None,
                             na_values=tuple(inp["na_values"]), first_line=1)
    nested = nested_column(block)
    if nested is not None:
        raise DataError(f"{path}, line {nested[1]}: key {nested[0]!r} holds a list or object; "
                        f"only flat values (numbers, strings, null) are read: flatten it before "
                        f"hpcprep, or leave it out of the input columns")
    from .csv import failing_columns

    _raise_failing(path, failing_columns(block, _numeric_names(inp)), inp)


def _probe_compressed(path, fmt, compression, inp) -> int:
    """Check a compressed file's header (CSV) and first records; return where its data starts."""
    from .lines import Decompressed, first_line, pieces

    stream = Decompressed(path, compression)
    try:
        data_start = 0
        if fmt == "csv":
            from .csv import header_from_line

            line = first_line(stream)
            header = header_from_line(line, path, inp["delimiter"])
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
    from .csv import QuotedNewlineError, failing_columns, parse_buffer

    try:
        block = parse_buffer(head, path, header=header, features=inp["features"],
                             label=inp["label"] or None, weight=inp["weight"] or None,
                             delimiter=inp["delimiter"], na_values=tuple(inp["na_values"]),
                             first_line=2)
    except QuotedNewlineError:
        return data_start   # reported in file order when the file is counted
    _raise_failing(path, failing_columns(block, _numeric_names(inp)), inp)
    return data_start

