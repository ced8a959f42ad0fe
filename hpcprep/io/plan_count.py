"""The counting pass over line chunks: records, lines and global ids, and the first bad record.

After planning, CSV and JSON lines chunks are counted collectively
(:func:`count_csv_chunks`); each input rank counts its own chunks, and the
first bad record of the whole input in file order is raised on every rank.
"""

import numpy as np

from ..config import InputConfig
from .csv_records import BadRecord
from .plan import ChunkDesc, InputPlan
from .plan_formats import PROBE_RECORDS, _header_of

def count_csv_chunks(plan: InputPlan, comm, input_ranks: list[int], inp: InputConfig | None = None,
                     keep_dir: str | None = None) -> None:
    """Count the records of every line chunk (each input rank its own) and assign global ids.

    Line chunks are those of CSV and JSON lines files. Collective over ``comm``
    (every rank calls it; only input ranks read). Afterwards every chunk has
    ``rows``, ``first_id`` and ``first_line`` on every rank. A compressed file,
    planned as one chunk, is decompressed by the rank that has it and becomes
    the pieces of ``chunk_rows`` lines it found (:func:`hpcprep.io.compressed.pieces`),
    all kept by that rank: ``plan.chunks`` and ``plan.ranges`` are renumbered.

    Given ``inp``, each chunk is also checked: with ``on_bad_row = "error"`` it is
    parsed to find its first bad record (this parses the input once more);
    otherwise only its quoted lines are checked for a quoted newline (an error
    in any mode). The first finding of the whole input in file order is raised
    on every rank as the same :class:`~hpcprep.mpi.agree.AgreedError`, whatever
    the layout.

    Given ``keep_dir`` (a folder of this rank's that the run removes, e.g. its
    spill folder), the decompressed text of each compressed file is kept there
    as it is counted (:class:`hpcprep.io.compressed.KeptText`), so that the reader
    reads it back instead of decompressing the file a second time.
    """
    from dataclasses import replace

    mine = {}
    rank = comm.Get_rank()
    if rank in input_ranks:
        for c in plan.chunks_of(input_ranks.index(rank)):
            if c.rows < 0:
                mine[c.chunk_id], kept = _count_chunk(c, inp, keep_dir)
                if kept is not None:
                    plan.kept_text[c.path] = kept
    counts = {}
    for part in comm.allgather(mine):
        counts.update(part)
    next_id, line, file_rows, first_bad = 0, {}, [0] * len(plan.files), None
    chunks, ends = [], []
    for c in plan.chunks:
        for start, stop, records, lines, bad, plain in counts.get(
                c.chunk_id, [(c.start, c.stop, c.rows, 0, None, c.quotes_plain)]):
            first_line = line.get(c.file_index, 2 if c.format == "csv" else 1)
            line[c.file_index] = first_line + lines
            chunks.append(replace(c, chunk_id=len(chunks), start=start, stop=stop, rows=records,
                                  first_id=next_id, first_line=first_line if c.by_bytes else 0,
                                  quotes_plain=plain))
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
            if inp.on_bad_row == "error" else ""
        raise AgreedError(f"{first_bad} (the first bad record in file order{hint})")


def _count_chunk(c: ChunkDesc, inp: InputConfig | None, keep_dir: str | None = None) -> tuple[list, tuple | None]:
    """``[(start, stop, records, lines, first bad record or None, quotes plain)]`` of one line
    chunk: itself, or the pieces of a compressed file; and the entry of its kept text (or None).
    "quotes plain": every ``"`` of the range was found plain while counting (then the
    parse need not check them again); False where unknown."""
    from .csv_split import _read_range, buffer_counts

    if not c.compression:
        if inp is None or inp.on_bad_row != "error":   # only quoted lines need a check
            quoted = c.format == "csv" and inp is not None
            found = _scan_range(c.path, c.start, c.stop, inp.delimiter if quoted else None)
            if found is not None:
                return [(c.start, c.stop, *found)], None
        raw = _read_range(c.path, c.start, c.stop)   # read once: counted, and checked
        records, lines = buffer_counts(raw)
        return [(c.start, c.stop, records, lines, _check(raw, c, inp), False)], None
    from .compressed import Decompressed, KeptText, pieces

    out, stream = [], Decompressed(c.path, c.compression)
    keep = KeptText(keep_dir, c.path, c.file_index, c.start) if keep_dir else None
    try:
        for p, buf in pieces(stream, c.start, inp.chunk_rows if inp else PROBE_RECORDS):
            if keep is not None:
                keep.write(buf)
            out.append((p.start, p.stop, p.records, p.lines, _check(buf, c, inp), False))
    except BaseException:
        if keep is not None:
            keep.discard()
        raise
    finally:
        stream.close()
    return out, (keep.done() if keep is not None else None)


def _scan_range(path, start: int, end: int, delimiter: str | None):
    """``(records, lines, first quoted newline or None, quotes plain)`` of the range ``[start, end)``,
    as :func:`_count_chunk` finds them in a whole read, but streamed: pieces of whole
    lines go through one reused buffer (fresh pages of a whole read cost more than
    the count), each counted and, with a CSV ``delimiter`` (None: no quotes to
    check), its quotes checked. None if the range holds a ``\\r`` (line ends may be
    CRLF: the caller reads it whole)."""
    from .csv_split import _SCAN_PIECE, _seek_line_start, newline_counts

    buf = bytearray(min(_SCAN_PIECE, end - start) + 1)   # + 1: a final newline the range lacks
    is_nl, pair = np.empty(len(buf), bool), np.empty(len(buf), bool)
    have = lines = blank = 0      # have: bytes of an unfinished line at the front of buf
    bad, plain = None, True
    with open(path, "rb", buffering=0) as f:
        _seek_line_start(f, path, start)
        pos = start
        while pos < end:
            if have == len(buf) - 1:   # a line longer than the buffer
                buf = buf + bytearray(len(buf))
                is_nl, pair = np.empty(len(buf), bool), np.empty(len(buf), bool)
            k = f.readinto(memoryview(buf)[have:min(len(buf) - 1, have + end - pos)])
            if k <= 0:
                raise ValueError(f"{path}: range [{start}, {end}) is past the end of the file")
            pos, n = pos + k, have + k
            if pos == end and buf[n - 1] != 10:
                buf[n], n = 10, n + 1
            cut = n if pos == end else buf.rfind(b"\n", 0, n) + 1
            if cut and buf.find(b"\r", 0, cut) >= 0:
                return None
            if cut:
                if bad is None and delimiter is not None:
                    bad, ok = _open_quote_piece(buf, cut, delimiter, lines)
                    plain = plain and ok
                got = newline_counts(memoryview(buf)[:cut], (is_nl, pair))   # cut: a line start
                lines, blank = lines + got[0], blank + got[1]
                buf[:n - cut] = buf[cut:n]
            have = n - cut
    return lines - blank, lines, bad, plain


def _open_quote_piece(buf: bytearray, cut: int, delimiter: str, before: int):
    """The first quoted newline of the whole lines ``buf[:cut]`` as a BadRecord whose line
    counts the ``before`` lines ahead of them (or None), and whether every quote there
    is plain (:func:`~hpcprep.io.csv_arrow.quotes_well_formed`)."""
    from .csv_arrow import quotes_well_formed

    if buf.find(b'"', 0, cut) < 0 or quotes_well_formed(buf, delimiter, stop=cut):
        return None, True
    found = _open_quote(bytes(buf[:cut]), delimiter)
    return (None if found is None else BadRecord(before + found.line, found.reason, found.raw)), False


def _check(raw: bytes, c: ChunkDesc, inp: InputConfig | None):
    """The first bad record of the lines ``raw`` to report while counting (see
    :func:`count_csv_chunks`), or None."""
    if inp is None:
        return None
    if c.format == "csv" and inp.on_bad_row != "error":
        return _open_quote(raw, inp.delimiter)
    return _first_bad_in(raw, c, inp)


def _first_bad_in(buf: bytes, c: ChunkDesc, inp: InputConfig):
    """The first bad record of whole lines ``buf`` (``line`` relative: 0 = its first line),
    as :func:`_first_bad` finds it: any bad record with on_bad_row = "error", else only a
    quoted newline of CSV."""
    from .csv_parse import parse_buffer
    from .csv_records import BadRecord, QuotedNewlineError, block_first_bad, buffer_lines
    from .datetimes import block_dates, date_columns

    text = list(dict.fromkeys([*inp.categorical, *date_columns(inp)]))   # dates: as text
    if c.format == "jsonl":
        if inp.on_bad_row != "error":
            return None
        from .lines import parse_json_lines

        block = parse_json_lines(buf, c.path, features=inp.features, label=inp.label or None,
                                 categorical=text, weight=inp.weight or None,
                                 na_values=tuple(inp.na_values), first_line=0)
    else:
        if inp.on_bad_row != "error" and b'"' not in buf:
            return None
        try:
            block = parse_buffer(buf, c.path, header=_header_of(c, inp), features=inp.features,
                                 label=inp.label or None, categorical=text,
                                 weight=inp.weight or None, delimiter=inp.delimiter,
                                 na_values=tuple(inp.na_values), first_line=0)
        except QuotedNewlineError as e:
            cut = _line_offset(buf, e.line)
            earlier = _first_bad_in(buf[:cut], c, inp) if cut and inp.on_bad_row == "error" else None
            return earlier or BadRecord(e.line, e.reason, buffer_lines(buf, [e.line])[0])
        if inp.on_bad_row != "error":
            return None
    if date_columns(inp):
        block_dates(block, inp)   # flags the records whose date does not parse
        date = _first_bad_date(block)
        if date is not None:
            return date
    return block_first_bad(block, lambda line: buffer_lines(buf, [line])[0])


def _first_bad_date(block):
    """The first bad record of ``block`` if it is a date that does not parse, shown by its value."""
    from .csv_records import BAD_DATE, BadRecord

    hits = np.flatnonzero(block.bad)
    if hits.size == 0 or block.bad_reason[hits[0]] != BAD_DATE:
        return None
    i = int(hits[0])
    value = str(block.categorical[block.header[int(block.bad_column[i])]][i])
    return BadRecord(int(block.lines[i]), block.reason_text(i), value.encode())


def _line_offset(buf: bytes, line: int) -> int:
    """Byte offset where line ``line`` (0 = first) of ``buf`` starts."""
    if line == 0:
        return 0
    return int(np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)[line - 1]) + 1


def _open_quote(raw: bytes, delimiter: str):
    """The first quoted newline of the CSV lines ``raw`` as a BadRecord (relative line), or None."""
    from .csv_parse import open_quote_in
    from .csv_records import QuotedNewlineError, buffer_lines

    line = open_quote_in(raw, delimiter)
    if line is None:
        return None
    return BadRecord(line, QuotedNewlineError.reason, buffer_lines(raw, [line])[0])
