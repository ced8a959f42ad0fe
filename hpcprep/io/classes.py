"""Text labels as classes: which label type a run reads, the class vocabulary, the codes.

With ``input.label_type = "class"`` (or ``"auto"`` finding text) the label
column is read as text. Before the data pass every input rank reads the label
column of its chunks only, the ranks gather their sets of classes, and the
sorted union is the vocabulary: the same for any layout and rank count. Labels
are then the index of their class in it (missing: NaN while the steps run, so
``dropna`` drops them as it drops a missing number; -1 if one reaches the
output).
"""

from __future__ import annotations

import numpy as np

from ..config import InputConfig
from .plan import LINE_FORMATS, InputPlan


def resolve_label_type(plan: InputPlan, inp: InputConfig) -> str:
    """``"class"`` or ``"numeric"``: ``input.label_type``, with ``"auto"`` decided on the files.

    ``"auto"`` is ``"class"`` when any file's label column is a string column
    (Parquet, Feather) or fails to parse as a number in most of its first
    records (CSV, JSON lines: the planning probe), else ``"numeric"``.
    """
    if not inp.label or inp.label_type == "numeric":
        return "numeric"
    if inp.label_type == "class":
        return "class"
    seen = set()
    for c in plan.chunks:
        if c.file_index not in seen:
            seen.add(c.file_index)
            if _label_is_text(c, inp):
                return "class"
    return "numeric"


def _label_is_text(c, inp: InputConfig) -> bool:
    """Whether the label column of a chunk's file holds text (see :func:`resolve_label_type`)."""
    if c.format in ("parquet", "feather"):
        from .arrow import _kind, _open_feather, _open_parquet

        schema = _open_parquet(c.path).schema_arrow if c.format == "parquet" \
            else _open_feather(c.path).schema
        return _kind(schema.field(inp.label).type) == "string"
    if c.format not in LINE_FORMATS:
        return False
    from .csv_parse import parse_buffer
    from .csv_records import QuotedNewlineError, failing_columns

    header, head = _head(c, inp)
    kw = dict(features=[], label=inp.label, na_values=tuple(inp.na_values))
    if c.format == "jsonl":
        from .lines import parse_json_lines

        block = parse_json_lines(head, c.path, first_line=1, **kw)
    else:
        try:
            block = parse_buffer(head, c.path, header=header, delimiter=inp.delimiter,
                                 first_line=2, **kw)
        except QuotedNewlineError:
            return False
    return bool(failing_columns(block, [inp.label]))


def _head(c, inp: InputConfig) -> tuple[list | None, bytes]:
    """The CSV header (None for JSON lines) and the first records of a chunk's file."""
    from .plan_formats import PROBE_RECORDS, _head_lines, _header_of

    header = _header_of(c, inp) if c.format == "csv" else None
    if not c.compression:
        from .csv_split import read_header

        start = read_header(c.path, inp.delimiter)[1] if header is not None else 0
        return header, _head_lines(c.path, start)
    from .compressed import Decompressed, pieces

    stream = Decompressed(c.path, c.compression)
    try:
        return header, next((buf for _, buf in pieces(stream, c.start, PROBE_RECORDS)), b"")
    finally:
        stream.close()


def collect_label_classes(plan: InputPlan, comm, input_ranks: list[int], inp: InputConfig) -> None:
    """Set ``plan.label_classes``: the sorted classes of the whole input's label column.

    Collective over ``comm`` (every rank calls it; input ranks read the label
    column of their chunks, nothing else). Does nothing unless
    ``plan.label_type == "class"``. Missing labels (``""``, ``na_values``,
    null) are not classes; records the reader cannot split (wrong field
    count, bad quoting or encoding, not JSON) give none either.
    """
    if plan.label_type != "class":
        return
    from .readers import ChunkReader

    mine: set[str] = set()
    rank = comm.Get_rank()
    if rank in input_ranks:
        reader = ChunkReader(inp, plan.feature_dtype, None)
        try:
            for c in plan.chunks_of(input_ranks.index(rank)):
                mine.update(np.unique(reader.label_texts(c)).tolist())
        finally:
            reader.close()
    mine.discard("")
    classes: set[str] = set()
    for part in comm.allgather(sorted(mine)):
        classes.update(part)
    plan.label_classes = sorted(classes)


def class_codes(text: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Codes (float64: the index in sorted ``classes``; NaN where ``text`` is ``""``) of text labels.

    Raises
    ------
    RuntimeError
        A label that is not in ``classes`` (the vocabulary was collected from
        other data than is read).
    """
    codes = np.full(text.shape[0], np.nan)
    present = np.flatnonzero(text != "")
    if present.size == 0:
        return codes
    values = text[present]
    k = np.searchsorted(classes, values)
    found = k < classes.shape[0]
    found[found] = classes[k[found]] == values[found]
    if not found.all():
        raise RuntimeError(f"label {values[~found][0]!r} is not in the collected classes")
    codes[present] = k
    return codes


def output_codes(chunk):
    """The chunk with its float class codes as int64 (a missing label, NaN, becomes -1)."""
    y = chunk.labels
    if y is None or y.dtype.kind != "f":
        return chunk
    chunk.labels = np.where(y == y, y, -1).astype(np.int64)   # y != y: NaN
    return chunk
