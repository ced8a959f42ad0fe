"""Which files exist, how they split into chunks, and which input rank reads which chunk.

Built on rank 0 before any work (so that a missing file or a bad dataset is
reported once) and broadcast. The plan is small: one entry per chunk.
"""

import glob
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..config import InputConfig, RunConfig
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
    (:func:`~hpcprep.io.plan_count.count_csv_chunks`), until then -1. ``first_line`` is the line
    number of the chunk's first line (CSV: header = 1; JSON lines: first = 1).
    ``compression`` is ``""`` or the codec of a compressed file; such a file is
    planned as one chunk and cut into pieces of ``chunk_rows`` lines when counted.
    ``quotes_plain``: the counting pass found every ``"`` of a CSV chunk plain
    (:func:`~hpcprep.io.csv_arrow.quotes_well_formed`), so its parse skips that check.
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
    quotes_plain: bool = False

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
    #: chunk indices of each input rank, in the order it reads them, when a plan of several
    #: tasks gave them (:func:`hpcprep.stages.tasks.assign_chunks`); else ``ranges`` hold
    assigned: list[list[int]] | None = None
    #: this process's decompressed texts kept while counting: source path -> (kept path,
    #: source size, source mtime) (:class:`hpcprep.io.compressed.KeptText`); never broadcast
    kept_text: dict = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.file_rows)

    def chunks_of(self, input_index: int) -> list[ChunkDesc]:
        """Chunks read by input rank ``input_index``, in the order it reads them."""
        if self.assigned is not None:
            return [self.chunks[k] for k in self.assigned[input_index]]
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
    """Files matching the globs, sorted, without duplicates (of a matched directory: its
    Parquet files); a pattern that matches no regular, readable file is an error naming it,
    and so is a matched file that cannot be opened for reading."""
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


def check_input_columns(cfg: RunConfig) -> None:
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
    for table in cfg.standardize:
        for step in table["steps"]:
            if step.get("op") == "categorical":
                cols = step.get("columns") or list(cfg.input.categorical)
                encoded.update(cols)
    missing = [c for c in cfg.input.categorical if c not in encoded]
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
    from .compressed import compression_of

    stem = os.path.splitext(path)[0] if compression_of(path) else path
    fmt = SUFFIX_FORMATS.get(os.path.splitext(stem)[1].lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the suffix; set input.format "
                        f"(one of hdf5, npy, csv, parquet, feather, jsonl)")
    return fmt


#: The modules that plan and read each format beyond HDF5 and ``.npy`` (:func:`import_readers`).
READER_MODULES = {"csv": ("hpcprep.io.csv_parse", "pyarrow.csv", "pyarrow.compute"),
                  "jsonl": ("hpcprep.io.lines", "pyarrow.json"), "parquet": ("hpcprep.io.arrow",),
                  "feather": ("hpcprep.io.arrow",)}


def import_readers(inp: InputConfig) -> None:
    """Import the modules that will plan and read ``inp``'s formats: every rank, before rank 0
    plans, so the others import them while they wait (a format not told: the plan reports it)."""
    import importlib

    for pattern in inp.paths:
        try:
            fmt = detect_format(pattern, inp.format)
        except DataError:
            continue
        for name in READER_MODULES.get(fmt, ()):
            importlib.import_module(name)


def npy_label_path(path: str, label: str) -> str:
    """The label file paired with a features ``.npy`` file: ``<stem>.<label>.npy``."""
    return path[: -len(".npy")] + f".{label}.npy"


def _describe_hdf5(path, inp):
    name, label = inp.features, inp.label
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
    if inp.label:
        lpath = npy_label_path(path, inp.label)
        try:
            lab = np.load(lpath, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{lpath}: label file for {path} cannot be read ({e})") from None
        _check_label(lpath, inp.label, lab.shape, lab.dtype, arr.shape[0] if arr.ndim else 0)
    return arr.shape, arr.dtype, None, (None if lab is None else lab.dtype)


def _check_label(path, name, shape, dtype, n):
    if len(shape) != 1 or shape[0] != n:
        raise DataError(f"{path}: label {name!r} has shape {shape}, expected ({n},)")
    if dtype.kind not in "iuf b":
        raise DataError(f"{path}: label {name!r} has dtype {dtype}; expected a numeric type")


def build_input_plan(inp: InputConfig, n_input_ranks: int, weights=None) -> InputPlan:
    """Discover and check the input files and split them into chunks.

    Parameters
    ----------
    inp : InputConfig
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
    from .plan_formats import _plan_columns, _plan_csv

    files = _feature_files(inp)
    file_rows, chunks, layout = [], [], (None, None, None, None)   # d, names, fdt, ldt
    first_id = 0
    for fi, path in enumerate(files):
        fmt = detect_format(path, inp.format)
        compression = _compression(path, fmt)
        if fmt in ("parquet", "feather", "jsonl") or compression:
            names = _plan_columns(path, fi, fmt, compression, inp, layout[1], chunks, first_id)
            layout = _column_layout(names, inp)
            known = [c.rows for c in chunks if c.file_index == fi]
            file_rows.append(sum(known) if known and min(known) >= 0 else -1)
            first_id += max(0, file_rows[-1])
        elif fmt == "csv":
            layout = _column_layout(_plan_csv(path, fi, inp, layout[1], chunks), inp)
            file_rows.append(-1)
        else:
            n, layout = _plan_array(path, fi, fmt, inp, chunks, first_id, files[0], layout)
            file_rows.append(n)
            first_id += n
    return _finish_plan(files, file_rows, chunks, layout, inp, n_input_ranks, weights)


def _feature_files(inp: InputConfig) -> list[str]:
    """The input files, label files of .npy features left out."""
    files = [p for p in expand_paths(inp.paths)
             if not (inp.label and p.endswith(f".{inp.label}.npy"))]
    if not files:
        raise DataError(f"input.paths: {', '.join(inp.paths)} match only label files "
                        f"(*.{inp.label}.npy), no feature file")
    return files


def _column_layout(names: list[str], inp: InputConfig) -> tuple:
    """``(d, names, feature dtype, label dtype)`` of a format read by column name (float64)."""
    return len(names), names, np.dtype(np.float64), np.dtype(np.float64) if inp.label else None


def _plan_array(path, fi, fmt, inp, chunks, first_id, first_file, layout) -> tuple[int, tuple]:
    """Check an HDF5 or .npy file against ``layout`` (that of ``first_file``) and append its chunks.

    Returns its number of rows and the layout (set by the first such file).
    """
    _check_array_input(path, fmt, inp)
    shape, dtype, fnames, ldtype = (_describe_hdf5 if fmt == "hdf5" else _describe_npy)(path, inp)
    if len(shape) != 2:
        raise DataError(f"{path}: features have shape {shape}; expected a 2-D (rows, features) array")
    if dtype.kind not in "fiu" or dtype.kind == "b":
        raise DataError(f"{path}: features have dtype {dtype}; expected a numeric type "
                        f"(float or integer)")
    d, names, fdt, ldt = layout
    if d is None:
        d, names = shape[1], fnames or [f"f{i}" for i in range(shape[1])]
        fdt = np.dtype(np.float64) if dtype.itemsize > 4 else np.dtype(np.float32)
        ldt = ldtype
    elif shape[1] != d:
        raise DataError(f"{path}: {shape[1]} features, but {first_file} has {d}")
    elif (ldt is None) != (ldtype is None) or (ldt is not None and ldtype.kind != ldt.kind):
        raise DataError(f"{path}: label dtype {ldtype} differs from {first_file}'s {ldt}")
    n = shape[0]
    for start in range(0, n, inp.chunk_rows):
        stop = min(n, start + inp.chunk_rows)
        chunks.append(ChunkDesc(len(chunks), fi, path, fmt, start, stop, first_id + start,
                                stop - start))
    return n, (d, names, fdt, ldt)


def _check_array_input(path, fmt, inp) -> None:
    """Raise for settings of column formats given with an HDF5 or .npy file."""
    if inp.datetime:
        raise ConfigError(f"input.datetime: {path} is a {fmt} file, whose features are numbers "
                          f"already; dates are read from CSV, JSON lines, Parquet or Feather "
                          f"columns: remove input.datetime")
    if isinstance(inp.features, list):
        raise DataError(f"{path}: input.features is a list of CSV columns, but this is a "
                        f"{fmt} file; give the dataset name (e.g. \"features\")")
    if inp.label and inp.label_type == "class":
        raise DataError(f"{path}: input.label_type = \"class\" reads text labels of CSV, JSON "
                        f"lines, Parquet or Feather files; a {fmt} label is numeric: remove "
                        f"input.label_type")
    for key in ("weight", "categorical"):
        if getattr(inp, key):
            raise DataError(f"{path}: input.{key} names CSV columns, but this is a {fmt} "
                            f"file; it would not reach the output: remove input.{key}")


def _finish_plan(files, file_rows, chunks, layout, inp, n_input_ranks, weights) -> InputPlan:
    """The plan of the chunks of every file: dtypes, label type, one format, ranges of input ranks."""
    d, names, fdt, ldt = layout
    if d is None:
        d, names, fdt = 0, [], np.dtype(np.float32)
    label_dtype = None
    if ldt is not None:
        label_dtype = "float64" if ldt.kind == "f" else "int64"
    plan = InputPlan(files, file_rows, d, names, np.dtype(fdt).name, label_dtype, chunks,
                     weights=bool(inp.weight))
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


def _compression(path: str, fmt: str) -> str:
    from .compressed import compression_of

    compression = compression_of(path)
    if compression and fmt not in LINE_FORMATS:
        raise DataError(f"{path}: a compressed {fmt} file; only CSV and JSON lines are read "
                        f"compressed ({fmt} compresses inside the file)")
    return compression
