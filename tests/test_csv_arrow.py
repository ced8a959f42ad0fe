"""CSV through Arrow's parser gives exactly what the hand-written parser gives.

Each block is parsed twice by :func:`~hpcprep.io.csv_parse.parse_buffer`: as
shipped (Arrow, falling back per block) and with the Arrow path switched off
(the hand-written parser alone); every array must be equal bit for bit, the
bad-record flags and notes too, and errors alike.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hpcprep.io.csv_parse as csv_parse
from hpcprep.io.csv_arrow import parse_arrow, quotes_well_formed
from hpcprep.io.csv_records import BAD_FIELD_COUNT, BAD_NUMBER, DEFAULT_NA_VALUES

HEADER = ["a", "b", "c", "d", "e"]
KW = dict(header=HEADER, features=["a", "c"], label="e", weight="b", categorical=["d"],
          first_line=2)

NUMBERS = ["1", "-2.5", "3e2", ".5", "5.", "1E+05", "+7", "-0", "inf", "-Infinity", "nan", "-nan",
           "NaN", "  9 ", "\t4", "1_000", "0x10", "1e400", "4.9e-324", "9007199254740993",
           "nan(1)", "١", "1 2", "--1", "e5", "", "NA", "null", "None", " NA", "na", "abc",
           "1.7976931348623157e308", "00012", "1e-400", "\u00a01", "\x0b1"]
TEXTS = ["red", "", "NA", "None", "café", "x y", " lead", "trail ", "5\"inch", "∑"]
QUOTED = ['"red"', '"a,b"', '"say ""hi"""', '""', '"NA"', '"1.5"', '" 2"', '"x"y', '"open',
          '"a""', 'q"', '"', '"""', '"x,"",y"']


def field():
    return st.one_of(st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.sampled_from(QUOTED))


LINE = st.one_of(
    st.lists(st.sampled_from(NUMBERS), min_size=5, max_size=5).map(",".join),
    st.lists(field(), min_size=5, max_size=5).map(",".join),
    st.lists(field(), min_size=1, max_size=7).map(",".join),
    st.sampled_from(["", "   ", "\r", "1,2,3,4,5\r", "1,2,3,4,\x00", "\ufeff1,2,3,4,5"]),
)


def both(buf: bytes, **kw):
    """(shipped result, hand-written result, whether Arrow parsed the block)."""
    taken = []

    def watched(*a, **k):
        out = parse_arrow(*a, **k)
        taken.append(out is not None)
        return out

    def run(**over):
        try:
            return csv_parse.parse_buffer(buf, "f.csv", **{**KW, **kw, **over})
        except Exception as e:   # errors must be alike too
            return (type(e).__name__, str(e))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(csv_parse, "parse_arrow", watched)
        shipped = run()
        mp.setattr(csv_parse, "parse_arrow", lambda *a, **k: None)
        hand = run()
    return shipped, hand, bool(taken and taken[0])


def assert_same(x, y):
    if isinstance(x, tuple) or isinstance(y, tuple):
        assert x == y
        return
    for name in ("features", "labels", "weights"):
        a, b = getattr(x, name), getattr(y, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape and a.dtype == b.dtype
            assert np.array_equal(a.view(np.uint64), b.view(np.uint64)), name   # bit for bit
    for name in ("lines", "bad", "bad_reason", "bad_column", "column_bad"):
        assert np.array_equal(getattr(x, name), getattr(y, name)), name
    assert x.column_example == y.column_example
    assert x.header == y.header
    assert x.categorical.keys() == y.categorical.keys()
    for k in x.categorical:
        assert x.categorical[k].tolist() == y.categorical[k].tolist(), k


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, min_size=0, max_size=12), crlf=st.booleans(), last_nl=st.booleans())
def test_arrow_block_equals_the_hand_written_parser(lines, crlf, last_nl):
    buf = ("\r\n" if crlf else "\n").join(lines).encode("utf-8")
    if last_nl and buf:
        buf += b"\n"
    shipped, hand, _ = both(buf)
    assert_same(shipped, hand)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(st.one_of(st.floats(allow_nan=False, width=64).map(repr),
                                        st.sampled_from(["", "NA", "x", '"3.5"', '"a,b"'])),
                              min_size=5, max_size=5), min_size=1, max_size=20),
       na=st.sampled_from([DEFAULT_NA_VALUES, (), ("x",), ("NA", " NA")]))
def test_arrow_numbers_and_na_values_equal_the_hand_written_parser(rows, na):
    buf = "".join(",".join(r) + "\n" for r in rows).encode()
    shipped, hand, _ = both(buf, na_values=na)
    assert_same(shipped, hand)


CRAFTED = {
    "clean": b"1,2,3,x,5\n-1.5,2e3,.25,y,7\n" * 50,
    "quoted": b'"1","2","3","a, b","5"\n"4","5","6","say ""hi""","7"\n' * 50,
    "messy": (b"1,2,3,x,5\n1,NA,,y,\n1,2\n1,abc,3,z,4\n\n1,2,3,4,5,6\n7,8,9,w,nan\n"
              b"1, 2 ,3,,1e400\n") * 50,
    "blank lines": b"\n1,2,3,x,5\n\n\n4,5,6,y,7\n\n",
    "nan": b"1,nan(3),3,x,5\n1,nan,-nan,y,NaN\n",   # nan(3) reads in Arrow, not in float()
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_blocks_take_the_arrow_path_and_match(kind):
    shipped, hand, arrow = both(CRAFTED[kind])
    assert arrow, "this block should not fall back"
    assert_same(shipped, hand)
    if kind == "messy":
        assert {BAD_FIELD_COUNT, BAD_NUMBER} <= set(shipped.bad_reason.tolist())
        assert shipped.column_example[3] == (3, "abc")   # numeric columns: a, c, label e, weight b


@pytest.mark.parametrize("buf", [b"1,2,3,x,5\n1,\x00,3,x,5\n", b"1,2,3,x,5\r\n1,2\r3,4,5\n",
                                 b"1,2,3,\xff,5\n", b'1,2,3,5"inch,5\n', b'1,2,3,"open,5\n',
                                 b"\xef\xbb\xbf1,2,3,x,5\n"])
def test_doubtful_blocks_fall_back(buf):
    shipped, hand, arrow = both(buf)
    assert not arrow
    assert_same(shipped, hand)


@pytest.mark.parametrize("na", [DEFAULT_NA_VALUES, ()])
@pytest.mark.parametrize("buf", [b"1\n   \n2\n", b"1\n\t\n", b'1\n""\n', b"1\n,\n", b"  \n", b"1\nNA \n"])
def test_one_column_blocks_match(buf, na):
    shipped, hand, _ = both(buf, header=["a"], features=["a"], label=None, weight=None,
                            categorical=[], na_values=na)
    assert_same(shipped, hand)


def test_quotes_well_formed():
    assert quotes_well_formed(b'"a","b""c",""\n1,"x,y"\n', ",")
    assert not quotes_well_formed(b'"a\n', ",")            # quoted newline
    assert not quotes_well_formed(b'5"inch,2\n', ",")      # a quote inside an unquoted field
    assert not quotes_well_formed(b'"a"b,2\n', ",")        # text after the closing quote
    assert not quotes_well_formed(b'"a";"b"\n', ",")       # another delimiter
    assert quotes_well_formed(b'"a";"b"\n', ";")


# --------------------------------------------------------------------------- JSON lines

JSON_KEYS = dict(features=["a", "b"], label="y", categorical=["c"])
JSON_VALUES = ["1", "-0", "-0.0", "2.5e3", "12345678901234567890123", "9007199254740993", "1e400",
               "NaN", "-Infinity", "null", "true", '"1.5"', '"NA"', '"x"', "[1]", '{"q": 1}',
               '"caf\\u00e9"', '"\\ud800"', '""']


def json_line():
    value = st.sampled_from(JSON_VALUES)
    obj = st.dictionaries(st.sampled_from(["a", "b", "y", "c", "z"]), value, max_size=5).map(
        lambda d: "{" + ", ".join(f'"{k}": {v}' for k, v in d.items()) + "}")
    return st.one_of(obj, obj, obj, st.sampled_from(["", "  ", "[1, 2]", "5", "{", '{"a": 1} {"a": 2}',
                                                    ' {"a": 1}', '{"a": 1, "a": 2}']))


def json_both(buf: bytes):
    import hpcprep.io.json_arrow as json_arrow
    from hpcprep.io.lines import parse_json_lines

    kw = dict(JSON_KEYS, na_values=DEFAULT_NA_VALUES, first_line=1)
    shipped = parse_json_lines(buf, "f.jsonl", **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_arrow, "parse_json_arrow", lambda *a, **k: None)
        hand = parse_json_lines(buf, "f.jsonl", **kw)
    return shipped, hand


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(json_line(), max_size=10))
def test_arrow_json_lines_equal_the_line_by_line_parser(lines):
    shipped, hand = json_both(("\n".join(lines) + "\n").encode())
    assert_same(shipped, hand)


def test_clean_json_lines_take_the_arrow_path():
    from hpcprep.io.json_arrow import parse_json_arrow

    buf = b'{"a": 1, "b": 2.5, "y": 0, "c": "red", "z": [1]}\n\n{"a": -3, "b": 1e3, "y": 1, "c": "NA"}\n'
    assert parse_json_arrow(buf, ["a", "b", "y", "c"], 3, frozenset(DEFAULT_NA_VALUES)) is not None
    shipped, hand = json_both(buf + b'{"a": null, "b": 1, "y": 0, "c": "x"}\n{"b": 1, "y": 0, "c": "x"}\n')
    assert_same(shipped, hand)
    assert shipped.lines.tolist() == [1, 3, 4, 5]
    assert shipped.categorical["c"].tolist() == ["red", "", "x", "x"]
    assert shipped.bad_reason.tolist()[3] != 0   # the missing key "a", as line by line


# --------------------------------------------------------------------------- end to end

def _write_inputs(folder):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(3000, 3)) * [1, 100, 1e-3]).tolist()
    clean = "a,b,c,d,e\n" + "".join(f"{r[0]!r},{r[1]!r},{r[2]!r},k{i % 7},{i % 2}\n"
                                     for i, r in enumerate(x))
    quoted = "a,b,c,d,e\n" + "".join(f'"{r[0]!r}","{r[1]!r}",{r[2]!r},"k, {i % 7}",{i % 2}\n'
                                     for i, r in enumerate(x))
    lines = clean.splitlines()
    for i in range(1, len(lines), 37):
        lines[i] = ["1,2", "x,NA,3,k,1", "", "1,,2,NA,0", "4,5,6,7,8,9", "1e400,nan,-0,k,1"][i % 6]
    paths = {}
    for name, text in (("clean", clean), ("quoted", quoted), ("messy", "\r\n".join(lines) + "\r\n")):
        paths[name] = folder / f"{name}.csv"
        paths[name].write_text(text)
    return paths


def _read_all(path, chunk_rows, keep_dir=None):
    from mpi4py import MPI

    from hpcprep.config import INPUT, InputConfig
    from hpcprep.io.plan import build_input_plan
    from hpcprep.io.plan_count import count_csv_chunks
    from hpcprep.io.readers import ChunkReader
    from hpcprep.schema import validate_table

    table = InputConfig(**validate_table(
        {"paths": [str(path)], "format": "csv", "features": ["a", "b", "c"], "label": "e",
         "categorical": ["d"], "chunk_rows": chunk_rows}, INPUT, "input"))
    plan = build_input_plan(table, 1)
    count_csv_chunks(plan, MPI.COMM_SELF, [0], table, keep_dir=keep_dir)
    reader = ChunkReader(table, plan.feature_dtype, plan.label_dtype, kept_text=plan.kept_text)
    chunks = [reader.read(d) for d in plan.chunks_of(0)]
    reader.close()
    return ([c.ids for c in chunks], [c.features for c in chunks], [c.labels for c in chunks],
            [c.extras["cat:d"].tolist() for c in chunks], [c.dropped for c in chunks],
            sorted(reader.bad_samples.items()))


@pytest.mark.parametrize("chunk_rows", [100000, 700])
def test_reading_csv_files_through_arrow_equals_the_hand_written_parser(tmp_path, chunk_rows):
    paths = _write_inputs(tmp_path)
    for name, path in paths.items():
        shipped = _read_all(path, chunk_rows)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(csv_parse, "parse_arrow", lambda *a, **k: None)
            hand = _read_all(path, chunk_rows)
        for a, b in zip(shipped[:3], hand[:3]):
            assert all(np.array_equal(x.view(np.uint8), y.view(np.uint8)) for x, y in zip(a, b)), name
        assert shipped[3:] == hand[3:], name
        if name == "messy":
            assert sum(sum(d.values()) for d in shipped[4]) > 0


@pytest.mark.parametrize("codec", ["gz", "bz2"])
def test_a_compressed_file_is_decompressed_once_with_a_keep_dir(tmp_path, codec):
    import bz2
    import gzip

    import hpcprep.io.compressed as compressed

    text = _write_inputs(tmp_path)["messy"].read_bytes()
    path = tmp_path / f"messy.csv.{codec}"
    path.write_bytes((gzip if codec == "gz" else bz2).compress(text))
    opened = []
    real = compressed.open_stream

    def counted(*a):
        opened.append(a)
        return real(*a)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compressed, "open_stream", counted)
        twice = _read_all(path, 700)
        n_twice = len(opened)
        opened.clear()
        once = _read_all(path, 700, keep_dir=str(tmp_path / "keep"))
    assert len(opened) == n_twice - 1   # planning reads the first lines; the read pass is gone
    for a, b in zip(once[:3], twice[:3]):
        assert all(np.array_equal(x.view(np.uint8), y.view(np.uint8)) for x, y in zip(a, b))
    assert once[3:] == twice[3:]
    assert sum(len(i) for i in once[0]) > 2000
