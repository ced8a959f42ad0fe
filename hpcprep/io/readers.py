"""Chunk readers: one hyperslab (HDF5), memory-mapped slice (.npy), row range (Parquet,
Feather) or range of lines (CSV, JSON lines, plain or decompressed) at a time."""

import h5py
import numpy as np

from ..chunk import Chunk
from ..config import InputConfig
from .csv_records import BAD_NUMBER
from .datetimes import BAD_DATE, UNPARSABLE_DATE
from .lines import BAD_MISSING_KEY, BAD_NESTED
from .plan import ChunkDesc, npy_label_path


class ChunkReader:
    """Reads chunks of the planned input, keeping the current file open.

    Parameters
    ----------
    inp : InputConfig
        The validated ``[input]`` table.
    feature_dtype : str
        dtype the features are converted to (float32 or float64).
    label_dtype : str or None
        dtype of the labels (int64 or float64), None without a label.
    rejects : RejectsWriter, optional
        Where every dropped CSV record goes (file, line, reason, raw line).
    label_classes : list of str, optional
        The sorted classes of a text label (``InputPlan.label_classes``): labels
        are then read as text and given as float64 codes, NaN where missing
        (:func:`hpcprep.io.classes.class_codes`).
    """

    def __init__(self, inp: InputConfig, feature_dtype: str, label_dtype: str | None, rejects=None,
                 label_classes=None, kept_text: dict | None = None):
        self.inp = inp
        self.kept_text = kept_text or {}   # compressed files' text kept while counting
        self.fdt = np.dtype(feature_dtype)
        self.ldt = None if label_dtype is None else np.dtype(label_dtype)
        self.classes = None
        if label_classes is not None:
            self.classes = np.array(label_classes, dtype=str) if label_classes else np.array([], "U1")
            self.ldt = np.dtype(np.float64)
        self.rejects = rejects
        #: chunk id -> the first few bad records of each reason (see :func:`merge_bad_samples`)
        self.bad_samples: dict[int, list] = {}
        self._path = None
        self._handle = None
        self._csv_header = None
        self._stream = None   # the open Arrow file or decompressed stream (read forward)
        self._labels = None   # (path, ArrowFileReader of the label column alone)

    def read(self, desc: ChunkDesc) -> Chunk:
        """Read one chunk: features, labels and global ids."""
        if desc.by_bytes:
            return self._read_lines(desc)
        if desc.format in ("parquet", "feather"):
            return self._read_arrow(desc)
        sl = slice(desc.start, desc.stop)
        label = self.inp.label
        if desc.format == "hdf5":
            f = self._open_hdf5(desc.path)
            x = f[self.inp.features][sl]
            y = f[label][sl] if label else None
        else:
            x = np.array(np.load(desc.path, mmap_mode="r")[sl])
            y = np.array(np.load(npy_label_path(desc.path, label), mmap_mode="r")[sl]) if label else None
        ids = np.arange(desc.first_id, desc.first_id + desc.rows, dtype=np.int64)
        return Chunk(
            chunk_id=desc.chunk_id,
            ids=ids,
            features=x.astype(self.fdt, copy=False),
            labels=None if y is None else y.astype(self.ldt, copy=False),
            source=desc.path,
            source_start=desc.start,
        )

    def _open_stream(self, desc: ChunkDesc, make):
        """The reader's open stream over ``desc.path`` (one file at a time)."""
        if self._stream is None or self._stream[0] != desc.path:
            self._close_stream()
            self._stream = (desc.path, make())
        return self._stream[1]

    def _close_stream(self):
        if self._stream is not None and hasattr(self._stream[1], "close"):
            self._stream[1].close()
        self._stream = None

    def _read_arrow(self, desc: ChunkDesc) -> Chunk:
        """Rows of a Parquet or Feather file: only the configured columns are read."""
        from .arrow import ArrowFileReader, to_float, to_text, wanted_columns
        from .datetimes import date_columns, derived_names, table_dates

        inp = self.inp
        cols = wanted_columns(inp)
        table = self._open_stream(desc, lambda: ArrowFileReader(
            desc.path, desc.format, cols, min(inp.chunk_rows, 1 << 16))).read(desc.start, desc.stop)
        if table.num_rows != desc.rows:
            raise RuntimeError(f"{desc.path}: rows {desc.start}-{desc.stop} read as {table.num_rows}")
        n = table.num_rows
        nf = len(inp.features)
        x = np.empty((n, nf + len(derived_names(inp))), dtype=self.fdt)
        for j, name in enumerate(inp.features):
            x[:, j] = to_float(table.column(name))
        bad = None
        if date_columns(inp):
            x[:, nf:], bad, where = table_dates(table, inp)
        extras = {f"cat:{k}": to_text(table.column(k)) for k in inp.categorical}
        if inp.weight:
            extras["weight"] = to_float(table.column(inp.weight))
        y = None
        if self.classes is not None:
            from .classes import class_codes

            y = class_codes(to_text(table.column(inp.label)), self.classes)
        elif inp.label:
            y = to_float(table.column(inp.label)).astype(self.ldt)
        chunk = Chunk(chunk_id=desc.chunk_id,
                      ids=np.arange(desc.first_id, desc.first_id + n, dtype=np.int64),
                      features=x, labels=y, extras=extras, source=desc.path,
                      source_start=desc.start)
        if bad is not None and bad.any():
            chunk = self._drop_bad_dates(desc, table, chunk, bad, where)
        return chunk

    def _drop_bad_dates(self, desc: ChunkDesc, table, chunk: Chunk, bad, where) -> Chunk:
        """Drop and count the rows of a Parquet/Feather chunk whose date does not parse
        (or raise for the first, with on_bad_row = "error"); rows are 0-based file rows."""
        from .csv_records import SHOWN_LIMIT
        from .datetimes import date_columns, date_error

        cols = date_columns(self.inp)
        hits = np.flatnonzero(bad)
        rows = desc.start + hits
        names = [cols[int(k)] for k in where[hits]]
        values = [str(table.column(c)[int(i)].as_py()) for c, i in zip(names, hits.tolist())]
        if self.inp.on_bad_row == "error":
            raise date_error(desc.path, f"row {int(rows[0])}", names[0], values[0], hits.size - 1)
        if desc.chunk_id not in self.bad_samples:   # not when read again in a later pass
            self.bad_samples[desc.chunk_id] = [
                {"file_index": desc.file_index, "file": desc.path, "line": int(r),
                 "reason": UNPARSABLE_DATE, "column": c, "text": v[:SHOWN_LIMIT]}
                for r, c, v in list(zip(rows.tolist(), names, values))[:SAMPLES_PER_REASON]]
            if self.rejects is not None:
                self.rejects.write_records(chunk.ids[hits], rows, [UNPARSABLE_DATE] * hits.size,
                                           names, desc.path, values)
        chunk = chunk.take(~bad)
        chunk.dropped = {UNPARSABLE_DATE: int(hits.size)}
        return chunk

    def _raw_lines(self, desc: ChunkDesc) -> bytes:
        """The bytes of a line chunk: a range of the file, or of its decompressed text."""
        if not desc.compression:
            from .csv_split import _read_range

            return _read_range(desc.path, desc.start, desc.stop)
        from .compressed import Decompressed, kept_range

        kept = kept_range(self.kept_text, desc.path, desc.start, desc.stop)   # decompressed while counted
        if kept is not None:
            return kept
        return self._open_stream(desc, lambda: Decompressed(desc.path, desc.compression)) \
            .range(desc.start, desc.stop)

    def _header(self, desc: ChunkDesc) -> list[str]:
        if self._csv_header is None or self._csv_header[0] != desc.path:
            from .plan_formats import _header_of

            self._csv_header = (desc.path, _header_of(desc, self.inp))
        return self._csv_header[1]

    def label_texts(self, desc: ChunkDesc) -> np.ndarray:
        """The label column of a chunk as text (``""`` where missing), read alone.

        Records the reader cannot split (wrong field count, bad quoting or
        encoding, not JSON) are left out.
        """
        label = self.inp.label
        if desc.format in ("parquet", "feather"):
            from .arrow import ArrowFileReader, to_text

            if self._labels is None or self._labels[0] != desc.path:   # chunks in order: read on
                self._labels = (desc.path, ArrowFileReader(desc.path, desc.format, [label], 1 << 16))
            return to_text(self._labels[1].read(desc.start, desc.stop).column(label))
        block = self._parse(desc, self._raw_lines(desc), label_only=True)
        return block.categorical[label][~block.bad]

    def _parse(self, desc: ChunkDesc, raw: bytes, label_only: bool = False):
        inp = self.inp
        kw = dict(features=inp.features, label=inp.label or None,
                  categorical=inp.categorical, weight=inp.weight or None,
                  na_values=tuple(inp.na_values), first_line=desc.first_line)
        if label_only:
            kw.update(features=[], label=None, categorical=[inp.label], weight=None)
            return self._parse_with(desc, raw, kw)
        text = [*inp.categorical, *inp.datetime]   # dates: parsed from text
        if self.classes is not None:   # a text label: read as a category, coded below
            kw.update(label=None)
            text.append(inp.label)
        kw.update(categorical=list(dict.fromkeys(text)))
        return self._parse_with(desc, raw, kw)

    def _parse_with(self, desc: ChunkDesc, raw: bytes, kw: dict):
        if desc.format == "jsonl":
            from .lines import parse_json_lines

            return parse_json_lines(raw, desc.path, **kw)
        from .csv_parse import parse_buffer

        return parse_buffer(raw, desc.path, header=self._header(desc), delimiter=self.inp.delimiter,
                            quotes_plain=desc.quotes_plain, **kw)

    def _read_lines(self, desc: ChunkDesc) -> Chunk:
        """Parse a CSV or JSON lines chunk; bad records are dropped and counted, or raise (on_bad_row)."""
        from .csv_records import first_bad_error

        inp = self.inp
        raw = self._raw_lines(desc)
        block = self._parse(desc, raw)
        ids = np.arange(desc.first_id, desc.first_id + desc.rows, dtype=np.int64)
        if len(block.lines) != desc.rows:
            raise RuntimeError(f"{desc.path}: bytes {desc.start}-{desc.stop} parsed to "
                               f"{len(block.lines)} records, counted {desc.rows}")
        features = block.features
        if inp.datetime:
            from .datetimes import block_dates

            features = np.hstack([features, block_dates(block, inp)])
        extras = {f"cat:{k}": v for k, v in block.categorical.items() if k in inp.categorical}
        if block.weights is not None:
            extras["weight"] = block.weights
        labels = block.labels
        if self.classes is not None:
            from .classes import class_codes

            text = block.categorical[inp.label]   # bad records give no class (they are dropped)
            labels = class_codes(np.where(block.bad, "", text) if block.bad.any() else text,
                                 self.classes)
        chunk = Chunk(chunk_id=desc.chunk_id, ids=ids, features=features.astype(self.fdt, copy=False),
                      labels=None if labels is None else labels.astype(self.ldt, copy=False),
                      extras=extras, source=desc.path, source_start=desc.first_line,
                      source_rows=block.lines)
        if block.bad.any():
            if inp.on_bad_row == "error":
                from .datetimes import block_date_error

                raise block_date_error(block, desc.path) or first_bad_error(block, desc.path)
            codes, n = np.unique(block.bad_reason[block.bad], return_counts=True)
            self._note_bad(desc, block, ids, raw)
            chunk = chunk.take(~block.bad)
            chunk.dropped = {drop_reason(int(c)): int(k) for c, k in zip(codes, n)}
        return chunk

    def _note_bad(self, desc: ChunkDesc, block, ids, raw: bytes) -> None:
        """Keep the first bad records of each reason and send all to the rejects file, once per chunk."""
        from .csv_records import SHOWN_LIMIT, buffer_lines, line_text

        if desc.chunk_id in self.bad_samples:   # read again in a later pass
            return
        bad = np.flatnonzero(block.bad)
        codes = block.bad_reason[bad]
        sampled = np.concatenate([bad[codes == c][:SAMPLES_PER_REASON] for c in np.unique(codes)])
        sampled.sort()
        wanted = bad if self.rejects is not None else sampled
        raws = dict(zip(wanted.tolist(), buffer_lines(raw, block.lines[wanted] - desc.first_line)))

        def column(i):
            j = int(block.bad_column[i])
            return block.header[j] if block.bad_reason[i] in COLUMN_REASONS and j >= 0 else ""

        self.bad_samples[desc.chunk_id] = [
            {"file_index": desc.file_index, "file": desc.path, "line": int(block.lines[i]),
             "reason": drop_reason(int(block.bad_reason[i])), "column": column(i),
             "text": line_text(raws[i], SHOWN_LIMIT)} for i in sampled.tolist()]
        if self.rejects is not None:
            self.rejects.write_records(
                ids[bad], block.lines[bad], [drop_reason(int(c)) for c in codes],
                [column(i) for i in bad.tolist()], desc.path,
                [line_text(raws[i]) for i in bad.tolist()])

    def _open_hdf5(self, path):
        if self._path != path:
            self.close()
            self._handle = h5py.File(path, "r")
            self._path = path
        return self._handle

    def close(self):
        self._close_stream()
        self._labels = None
        if self._handle is not None:
            self._handle.close()
        self._handle, self._path = None, None


#: Reason codes whose bad records name a column (unparsable number or date; JSON: missing key,
#: nested value).
COLUMN_REASONS = (BAD_NUMBER, BAD_MISSING_KEY, BAD_NESTED, BAD_DATE)

#: Bad records of each file and reason listed in report.json (the first ones in file order).
SAMPLES_PER_REASON = 5


def drop_reason(code: int) -> str:
    """The reason under which the reader counts a dropped CSV or JSON lines record of ``code``."""
    from .csv_records import BAD_REASONS
    from .lines import JSON_BAD_REASONS

    if code == BAD_DATE:
        return UNPARSABLE_DATE
    return f"malformed line: {JSON_BAD_REASONS.get(code) or BAD_REASONS[code]}"


def merge_bad_samples(parts, per_reason: int = SAMPLES_PER_REASON) -> list[dict]:
    """The first ``per_reason`` bad records of each file and reason, in file order.

    Parameters
    ----------
    parts : iterable of dict
        :attr:`ChunkReader.bad_samples` of every input rank. Each chunk holds
        its own first records of each reason, so the first of the whole input
        are among them whatever the layout.

    Returns
    -------
    list of dict
        ``file``, ``line``, ``reason``, ``column`` ("" unless a number did not
        parse) and ``text`` (the raw line, cut to 200 characters).
    """
    records = [r for part in parts for recs in part.values() for r in recs]
    records.sort(key=lambda r: (r["file_index"], r["line"]))
    taken, out = {}, []
    for r in records:
        key = (r["file_index"], r["reason"])
        if taken.get(key, 0) < per_reason:
            taken[key] = taken.get(key, 0) + 1
            out.append({k: v for k, v in r.items() if k != "file_index"})
    return out
