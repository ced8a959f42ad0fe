"""The fast paths for quoted and messy CSV give what the slower ones they replace gave.

- ``quotes_well_formed`` checks a block in pieces of whole lines: the answer is
  the same for every piece size, and is the conjunction of its lines.
- The counting pass streams a range with quotes (``_scan_range``): counts and
  the first quoted newline equal those of a whole read, for every buffer size.
- Arrow's skipped rows (a wrong field count) are numbered by their text when a
  threaded read leaves them unnumbered (``_number_skipped``), as a read in one
  thread numbers them.
- A numeric column read as text casts plain-looking values in Arrow: any mix
  of plain float bytes converts as the hand-written parser converts it.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_csv_arrow import QUOTED, TEXTS, assert_same, both

import hpcprep.io.csv_arrow as csv_arrow
import hpcprep.io.csv_split as csv_split
from hpcprep.io.csv_records import BAD_FIELD_COUNT, BAD_NUMBER
from hpcprep.io.csv_split import _normalize, _read_range, buffer_counts, split_byte_ranges
from hpcprep.io.plan_count import _open_quote, _scan_range

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LINES = st.lists(st.sampled_from(QUOTED + TEXTS + ["1", ""]), min_size=1, max_size=4).map(",".join)


@settings(max_examples=300, **SETTINGS)
@given(lines=st.lists(LINES, min_size=1, max_size=10), delimiter=st.sampled_from([",", ";"]))
def test_quotes_well_formed_is_the_same_in_pieces_of_any_size(lines, delimiter):
    buf = "".join(line + "\n" for line in lines).replace(",", delimiter).encode()
    each = all(csv_arrow.quotes_well_formed((line + "\n").replace(",", delimiter).encode(),
                                            delimiter) for line in lines)
    with pytest.MonkeyPatch.context() as mp:
        for piece in (1, 5, 1 << 16):
            mp.setattr(csv_arrow, "_QUOTE_PIECE", piece)
            assert csv_arrow.quotes_well_formed(buf, delimiter) == each, piece
            assert csv_arrow.quotes_well_formed(buf + b"tail", delimiter, stop=len(buf)) == each


def _quoted_file(tmp_path, open_at=None, last_newline=True):
    rows = ["" if i % 5 == 3 or i % 11 == 4 else f'"{i}","x, {i}",{i * 0.5}' for i in range(400)]
    rows[100] = '"' + "w" * 3000 + '",1,2'   # longer than some buffers
    if open_at is not None:
        rows[open_at] = '"open,1,2'
    path = tmp_path / "q.csv"
    path.write_text("a,b,c\n" + "\n".join(rows) + ("\n" if last_newline else ""))
    return path


@pytest.mark.parametrize("open_at,last_newline", [(None, True), (None, False), (250, True),
                                                  (399, False)])
def test_streamed_quote_check_counts_and_finds_what_a_whole_read_does(tmp_path, open_at,
                                                                     last_newline):
    path = _quoted_file(tmp_path, open_at, last_newline)
    with pytest.MonkeyPatch.context() as mp:
        for piece in (64, 1000, 5000, 1 << 22):   # buffers shorter than a line, too
            mp.setattr(csv_split, "_SCAN_PIECE", piece)
            for start, end in split_byte_ranges(path, 3000) + split_byte_ranges(path, 10 ** 6):
                raw = _read_range(path, start, end)
                found = _scan_range(path, start, end, ",")
                assert found[:2] == buffer_counts(raw)
                assert found[3] == csv_arrow.quotes_well_formed(_normalize(raw), ",")
                want = _open_quote(raw, ",")
                assert (found[2] is None) == (want is None)
                if want is not None:
                    assert (found[2].line, found[2].reason, found[2].raw) == \
                        (want.line, want.reason, want.raw)
    assert open_at is None or _scan_range(path, *split_byte_ranges(path, 10 ** 6)[0], ",")[2]


def test_a_stray_quote_makes_the_chunk_not_plain_and_the_parse_checks_it(tmp_path):
    from hpcprep.io.csv_parse import parse_buffer

    path = tmp_path / "stray.csv"
    path.write_text('a,b\n"1",2\nx"y,3\n')
    start, end = split_byte_ranges(path, 100)[0]
    records, lines, bad, plain = _scan_range(path, start, end, ",")
    assert (records, lines, bad, plain) == (2, 2, None, False)
    raw = _read_range(path, start, end)
    block = parse_buffer(raw, path, header=["a", "b"], features=["b"], categorical=["a"],
                         first_line=2, quotes_plain=plain)
    assert block.categorical["a"].tolist() == ["1", 'x"y'] and not block.bad.any()


def test_streamed_quote_check_leaves_crlf_to_a_whole_read(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b'a,b\r\n"1","2"\r\n')
    assert _scan_range(path, *split_byte_ranges(path, 100)[0], ",") is None


def _skipped_in_one_thread(buf):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rows = []
    pacsv.read_csv(pa.BufferReader(buf), read_options=pacsv.ReadOptions(
        column_names=list("abc"), use_threads=False), parse_options=pacsv.ParseOptions(
        ignore_empty_lines=True, invalid_row_handler=lambda r: rows.append(r) or "skip"))
    return [r.number for r in rows], [r.text for r in rows]


def test_skipped_rows_are_numbered_by_their_text():
    buf = b'\n1,2,3\n1,2\n\n"a,b",2,3\n1,2\n7\n"x,y",1\n\n\n4,5,6\n7\n'
    numbers, texts = _skipped_in_one_thread(buf)
    assert numbers == [2, 4, 5, 6, 8]
    assert csv_arrow._number_skipped(buf, texts) == numbers
    assert csv_arrow._number_skipped(buf, texts[:-1]) is None    # a line more than reported
    assert csv_arrow._number_skipped(buf, texts + ["9"]) is None  # a text not found


def test_a_big_messy_block_read_in_threads_matches_the_hand_written_parser():
    # Several Arrow blocks (1 MiB each), so rows come back in chunks and unnumbered.
    rng = np.random.default_rng(5)
    lines = [f"{a!r},{b!r},{c!r},k,{d!r}" for a, b, c, d in rng.normal(size=(60000, 4)).tolist()]
    for i in range(3, len(lines), 997):
        lines[i] = ["1,2", "", "1,n/a?,3,k,4", "1,2,3,k,1-2", "1,2,3,k,5,6", "1,NA,e,k,."][i % 6]
    shipped, hand, arrow = both(("\n".join(lines) + "\n").encode())
    assert arrow
    assert_same(shipped, hand)
    assert {BAD_FIELD_COUNT, BAD_NUMBER} <= set(shipped.bad_reason.tolist())


PLAIN = st.text(alphabet="0123456789.eE+-", max_size=7)


@settings(max_examples=300, **SETTINGS)
@given(rows=st.lists(st.lists(st.one_of(PLAIN, st.sampled_from(["1.5", "NA", "nan", "x", " 2"])),
                              min_size=5, max_size=5), min_size=1, max_size=12))
def test_plain_looking_numbers_convert_as_in_the_hand_written_parser(rows):
    shipped, hand, _ = both("".join(",".join(r) + "\n" for r in rows).encode())
    assert_same(shipped, hand)


@pytest.mark.parametrize("read_bytes", [1, 7, 64, 1 << 22])
def test_pieces_of_a_compressed_file_hold_chunk_lines_lines_each(tmp_path, read_bytes):
    import gzip

    import hpcprep.io.compressed as compressed

    rng = np.random.default_rng(read_bytes)
    parts = [b"1,2\n", b"\n", b"x", b"3\r\n", b"44,5\n"]
    text = b"a,b\n" + b"".join(parts[i] for i in rng.integers(0, len(parts), 300)) + b"9,9"
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress(text))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compressed, "_READ", read_bytes)
        for chunk_lines in (1, 3, 50, 10_000):
            stream = compressed.Decompressed(str(path), compressed.compression_of(str(path)))
            got = list(compressed.pieces(stream, 4, chunk_lines))
            stream.close()
            assert b"".join(body for _, body in got) == text[4:]
            for p, body in got:
                assert text[p.start:p.stop] == body
                assert (p.records, p.lines) == buffer_counts(body)
            assert all(body.count(b"\n") == chunk_lines for _, body in got[:-1])
