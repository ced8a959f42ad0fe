"""The CSV reader: edge cases, a line-by-line csv-module reference, pandas, and byte-range splits."""

import csv
import io

import numpy as np
import pytest

from hpcprep.errors import DataError
from hpcprep.io.csv_parse import parse_range
from hpcprep.io.csv_records import (BAD_ENCODING, BAD_FIELD_COUNT, BAD_NONE, BAD_NUMBER, BAD_QUOTING,
                                    DEFAULT_NA_VALUES, first_bad_error)
from hpcprep.io.csv_split import (count_lines, count_newlines, count_records, range_counts, read_header,
                                  split_byte_ranges)
from hpcprep.io.plan_count import _scan_range


def write(tmp_path, data: bytes, name="f.csv"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def parse_all(path, **kw):
    header, start = read_header(path, kw.get("delimiter", ","))
    size = path.stat().st_size
    kw.setdefault("features", [])
    return parse_range(path, start, size, header=header, first_line=2, **kw)


def parse_split(path, chunk_bytes, **kw):
    """Parse every range of a split and concatenate, as the input layer will."""
    header, _ = read_header(path, kw.get("delimiter", ","))
    blocks, line = [], 2
    for s, e in split_byte_ranges(path, chunk_bytes, kw.get("delimiter", ",")):
        b = parse_range(path, s, e, header=header, first_line=line, **kw)
        recs, nlines = range_counts(path, s, e)
        assert recs == len(b) == count_records(path, s, e)
        assert nlines == count_lines(path, s, e)
        scan = _scan_range(path, s, e, None)
        if scan is not None:   # None: a \r, counted from a whole read
            assert scan[:2] == (recs, nlines)
        blocks.append(b)
        line += nlines
    return blocks


def assert_same(a, b):
    np.testing.assert_array_equal(a.features, b.features)
    for name in ("labels", "weights"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert a.categorical.keys() == b.categorical.keys()
    for k in a.categorical:
        assert a.categorical[k].tolist() == b.categorical[k].tolist()
    for name in ("lines", "bad", "bad_reason", "bad_column"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def concat(blocks):
    from hpcprep.io.csv_records import CsvBlock
    cat = lambda name: np.concatenate([getattr(b, name) for b in blocks])  # noqa: E731
    first = blocks[0]
    return CsvBlock(
        features=np.concatenate([b.features for b in blocks]),
        labels=None if first.labels is None else cat("labels"),
        weights=None if first.weights is None else cat("weights"),
        categorical={k: np.concatenate([b.categorical[k] for b in blocks]).astype(str)
                     for k in first.categorical},
        lines=cat("lines"), bad=cat("bad"), bad_reason=cat("bad_reason"),
        bad_column=cat("bad_column"), header=first.header)


# --------------------------------------------------------------------------- edge cases

def test_quoted_delimiters_and_doubled_quotes(tmp_path):
    p = write(tmp_path, b'a,c,b\n1,"x, ""y"", z",2\n"3","",4\n5,plain,6\n')
    b = parse_all(p, features=["a", "b"], categorical=["c"])
    np.testing.assert_array_equal(b.features, [[1, 2], [3, 4], [5, 6]])
    assert b.categorical["c"].tolist() == ['x, "y", z', "", "plain"]
    assert not b.bad.any()
    np.testing.assert_array_equal(b.lines, [2, 3, 4])


def test_crlf_and_missing_trailing_newline(tmp_path):
    p = write(tmp_path, b"a,b,c\r\n1,2,x\r\n3,4,y\r\n5,6,z")
    b = parse_all(p, features=["a"], label="b", categorical=["c"])
    np.testing.assert_array_equal(b.features[:, 0], [1, 3, 5])
    np.testing.assert_array_equal(b.labels, [2, 4, 6])
    assert b.categorical["c"].tolist() == ["x", "y", "z"]
    assert read_header(p) == (["a", "b", "c"], 7)


def test_empty_file_names_the_file(tmp_path):
    p = write(tmp_path, b"", "empty.csv")
    with pytest.raises(DataError, match=r"empty\.csv.*no header"):
        read_header(p)
    with pytest.raises(DataError, match=r"empty\.csv"):
        split_byte_ranges(p, 100)


@pytest.mark.parametrize("data", [b"a,b", b"a,b\n", b"a,b\r\n"])
def test_header_only_has_no_ranges(tmp_path, data):
    p = write(tmp_path, data)
    assert split_byte_ranges(p, 1) == []
    names, start = read_header(p)
    assert names == ["a", "b"] and start == len(data)
    b = parse_range(p, start, start, header=names, features=["a"], label="b", first_line=2)
    assert len(b) == 0 and b.features.shape == (0, 1) and b.labels.shape == (0,)


def test_missing_column_names_file_and_column(tmp_path):
    p = write(tmp_path, b"a,b\n1,2\n", "data.csv")
    header, start = read_header(p)
    with pytest.raises(DataError, match=r"data\.csv.*'zz'"):
        parse_range(p, start, 8, header=header, features=["a"], label="zz", first_line=2)
    with pytest.raises(DataError, match=r"data\.csv.*'q'"):
        parse_range(p, start, 8, header=header, features=["a"], categorical=["q"], first_line=2)


def test_all_missing_column(tmp_path):
    p = write(tmp_path, b"a,b,c\n1,,\n2,NA,None\n3,null,NaN\n")
    b = parse_all(p, features=["a", "b"], categorical=["c"])
    assert np.isnan(b.features[:, 1]).all()
    np.testing.assert_array_equal(b.features[:, 0], [1, 2, 3])
    assert b.categorical["c"].tolist() == ["", "", ""]
    assert not b.bad.any()


def test_non_utf8_line_is_flagged_and_named(tmp_path):
    p = write(tmp_path, b"a,c\n1,ok\n2,caf\xe9\n3,caf\xc3\xa9\n", "latin.csv")
    b = parse_all(p, features=["a"], categorical=["c"])
    assert b.bad.tolist() == [False, True, False]
    assert b.bad_reason[1] == BAD_ENCODING
    assert b.categorical["c"].tolist() == ["ok", "", "café"]
    err = first_bad_error(b, p)
    assert isinstance(err, DataError)
    assert "latin.csv" in str(err) and "line 3" in str(err) and "UTF-8" in str(err)


def test_non_utf8_header_is_an_error(tmp_path):
    p = write(tmp_path, b"a,\xff\n1,2\n", "h.csv")
    with pytest.raises(DataError, match=r"h\.csv, line 1.*UTF-8"):
        read_header(p)


def test_quoted_newline_is_an_error_naming_the_line(tmp_path):
    p = write(tmp_path, b'a,c\n1,x\n2,"multi\nline"\n3,y\n', "q.csv")
    with pytest.raises(DataError, match=r"q\.csv, line 3.*quoted newlines are not supported"):
        parse_all(p, features=["a"], categorical=["c"])
    # However the file is cut, some range containing the open quote reports it.
    header, _ = read_header(p)
    for chunk in range(1, 30):
        errors = []
        for s, e in split_byte_ranges(p, chunk):
            try:
                parse_range(p, s, e, header=header, features=["a"], categorical=["c"], first_line=2)
            except DataError as exc:
                errors.append(str(exc))
        assert any("quoted newlines" in m for m in errors), chunk


def test_bad_rows_are_flagged_with_reason_line_and_column(tmp_path):
    p = write(tmp_path, b"a,b,y\n1,2,3\n1,2\n4,x1,5\n6,7,8,9\n\"1\",\"zz\",2\n7,8,9\n", "bad.csv")
    b = parse_all(p, features=["a", "b"], label="y")
    assert b.bad_reason.tolist() == [BAD_NONE, BAD_FIELD_COUNT, BAD_NUMBER, BAD_FIELD_COUNT,
                                     BAD_NUMBER, BAD_NONE]
    assert b.bad_column.tolist() == [-1, -1, 1, -1, 1, -1]
    assert b.lines.tolist() == [2, 3, 4, 5, 6, 7]
    assert b.reason_text(2) == "unparsable number in column 'b'"
    np.testing.assert_array_equal(b.features[2], [4, np.nan])
    np.testing.assert_array_equal(b.labels, [3, np.nan, 5, np.nan, 2, 9])
    err = str(first_bad_error(b, p))
    assert "bad.csv, line 3" in err and "wrong number of fields" in err
    assert first_bad_error(parse_all(p, features=["a"], label="y"), p) is not None
    good = write(tmp_path, b"a\n1\n")
    assert first_bad_error(parse_all(good, features=["a"]), good) is None


def test_first_unparsable_column_in_header_order(tmp_path):
    p = write(tmp_path, b"a,b,c\nx,1,y\n")
    b = parse_all(p, features=["c", "a"])
    assert b.bad_reason[0] == BAD_NUMBER and b.header[b.bad_column[0]] == "a"
    assert "column 'a'" in str(first_bad_error(b, p))


def test_blank_lines_are_skipped_but_numbered(tmp_path):
    p = write(tmp_path, b"a,b\n\n1,2\r\n\r\n\n3,4\n\n")
    b = parse_all(p, features=["a", "b"])
    assert b.lines.tolist() == [3, 6]
    assert count_records(p, 4, p.stat().st_size) == 2
    assert count_lines(p, 4, p.stat().st_size) == 6


def test_other_delimiter_and_na_values(tmp_path):
    p = write(tmp_path, b"a;b;c\n1,5;-;x\n2;3;-\n")
    b = parse_all(p, features=["b"], categorical=["c"], delimiter=";", na_values=["-"])
    assert not b.bad.any()
    assert np.isnan(b.features[0, 0]) and b.features[1, 0] == 3
    assert b.categorical["c"].tolist() == ["x", ""]
    b = parse_all(p, features=["a", "b"], delimiter=";", na_values=["-"])
    assert b.bad_reason.tolist() == [BAD_NUMBER, BAD_NONE] and b.bad_column[0] == 0
    assert "c" not in b.categorical
    # "" is not in na_values here: an empty numeric field is then unparsable.
    p2 = write(tmp_path, b"a;b\n;1\n", "p2.csv")
    b2 = parse_all(p2, features=["a"], delimiter=";", na_values=["-"])
    assert b2.bad_reason.tolist() == [BAD_NUMBER]


def test_stray_quote_in_unquoted_field_is_literal(tmp_path):
    p = write(tmp_path, b'a,c\n1,5"inch\n2,"ok"\n')
    b = parse_all(p, features=["a"], categorical=["c"])
    assert b.categorical["c"].tolist() == ['5"inch', "ok"]


def test_bare_cr_in_quoted_line_is_malformed(tmp_path):
    p = write(tmp_path, b'a,c\n1,"x"\r2\n3,y\n')
    b = parse_all(p, features=["a"], categorical=["c"])
    assert b.bad_reason.tolist() == [BAD_QUOTING, BAD_NONE]


def test_range_must_start_at_a_line_start(tmp_path):
    p = write(tmp_path, b"a\n12\n3\n")
    with pytest.raises(ValueError, match="line start"):
        parse_range(p, 3, 7, header=["a"], features=["a"], first_line=2)
    with pytest.raises(ValueError, match="line start"):
        _scan_range(p, 3, 7, None)


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 1 << 22])
def test_streamed_counts_match_the_whole_range_counts(tmp_path, piece):
    import hpcprep.io.csv_split as csv_split

    rng = np.random.default_rng(piece)
    parts = [b"1,2\n", b"\n", b"x", b'"q",1\n', b"\r\n", b",\n"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(csv_split, "_SCAN_PIECE", piece)   # buffers shorter than a line, too
        for trial in range(200):
            data = b"".join(parts[i] for i in rng.integers(0, len(parts), rng.integers(0, 14)))
            p = write(tmp_path, b"a,b\n" + data)
            scan = _scan_range(p, 4, 4 + len(data), None)
            assert count_newlines(data) == data.count(b"\n")
            assert (scan is None) == (b"\r" in data)
            if scan is not None:
                assert scan[:2] == range_counts(p, 4, 4 + len(data)), data
                assert scan[2:] == (None, True)   # no delimiter: quotes not checked


def test_long_lines_and_wide_fields(tmp_path):
    long_cat = "w" * 10_000
    rows = [f"{i},{long_cat if i % 3 == 0 else 'c'}" for i in range(20)]
    p = write(tmp_path, ("a,c\n" + "\n".join(rows) + "\n").encode())
    b = parse_all(p, features=["a"], categorical=["c"])
    assert b.categorical["c"].tolist() == [long_cat if i % 3 == 0 else "c" for i in range(20)]
    for chunk in (1, 100, 5000, 20_000):
        assert_same(concat(parse_split(p, chunk, features=["a"], categorical=["c"])), b)


# --------------------------------------------------------------------------- reference

NUMS = ["1", "-2.5", "3e2", "+0.125", ".5", "7.", "1e-300", "-0", "inf", " 4 ", "12345678901234567890",
        "0.1234567890123456789"]
BADNUM = ["abc", "1.2.3", "--1", "0x10", "1,5"]
CATS = ["red", "green", "blue, dark", 'say "hi"', "café", "naïve", ""]


def messy_file(rng, n, crlf, trailing_newline):
    """A CSV with NAs, quotes, bad numbers, wrong field counts, blank lines."""
    header = ["id", "x1", "cat", "x2", "y", "w", "junk"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for i in range(n):
        def num():
            r = rng.random()
            if r < 0.1:
                return str(rng.choice(DEFAULT_NA_VALUES))
            if r < 0.13:
                return str(rng.choice(BADNUM))
            if r < 0.3:
                return str(rng.choice(NUMS))
            return repr(float(rng.normal() * 10.0 ** rng.integers(-3, 5)))
        row = [str(i), num(), str(rng.choice(CATS)), num(), num(), num(), "j"]
        r = rng.random()
        if r < 0.03:
            row = row[:-1]
        elif r < 0.05:
            row = row + ["extra"]
        if rng.random() < 0.1:
            out.write(",".join(f'"{v}"' if '"' not in v else v for v in row) + "\n")
        else:
            w.writerow(row)
        if rng.random() < 0.02:
            out.write("\n")
    text = out.getvalue()
    if crlf:
        text = text.replace("\n", "\r\n")
    if not trailing_newline:
        text = text.rstrip("\r\n")
    return text.encode("utf-8")


def reference(data: bytes, features, label, weight, categorical, na_values):
    """Line-by-line reference built on the csv module and float()."""
    lines = data.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    header = next(csv.reader([lines[0]]))
    num_cols = list(features) + [c for c in (label, weight) if c is not None]
    rows = []
    for lineno, text in enumerate(lines[1:], start=2):
        if text == "":
            continue
        fields = next(csv.reader([text]))
        rec = {"line": lineno, "reason": BAD_NONE, "col": -1,
               "num": [np.nan] * len(num_cols), "cat": [""] * len(categorical)}
        if len(fields) != len(header):
            rec["reason"] = BAD_FIELD_COUNT
        else:
            bad_cols = []
            for j, c in enumerate(num_cols):
                v = fields[header.index(c)]
                if v in na_values:
                    continue
                try:
                    rec["num"][j] = float(v)
                except ValueError:
                    bad_cols.append(header.index(c))
            if bad_cols:
                rec["reason"], rec["col"] = BAD_NUMBER, min(bad_cols)
            rec["cat"] = ["" if fields[header.index(c)] in na_values else fields[header.index(c)]
                          for c in categorical]
        rows.append(rec)
    return rows


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("trailing_newline", [False, True])
def test_messy_file_matches_csv_module_reference(tmp_path, crlf, trailing_newline):
    rng = np.random.default_rng(1 + 2 * crlf + trailing_newline)
    data = messy_file(rng, 600, crlf, trailing_newline)
    p = write(tmp_path, data)
    kw = dict(features=["x1", "x2"], label="y", weight="w", categorical=["cat"])
    b = parse_all(p, **kw)
    ref = reference(data, kw["features"], "y", "w", ["cat"], DEFAULT_NA_VALUES)
    assert len(b) == len(ref)
    assert b.lines.tolist() == [r["line"] for r in ref]
    assert b.bad_reason.tolist() == [r["reason"] for r in ref]
    assert b.bad_column.tolist() == [r["col"] for r in ref]
    num = np.array([r["num"] for r in ref])
    np.testing.assert_array_equal(b.features, num[:, :2])
    np.testing.assert_array_equal(b.labels, num[:, 2])
    np.testing.assert_array_equal(b.weights, num[:, 3])
    assert b.categorical["cat"].tolist() == [r["cat"][0] for r in ref]
    assert {BAD_NONE, BAD_FIELD_COUNT, BAD_NUMBER} <= set(b.bad_reason.tolist())
    for chunk in (1, 7, 64, 333, 4096, 1 << 20):
        assert_same(concat(parse_split(p, chunk, **kw)), b)


def test_matches_pandas_on_a_file_without_bad_rows(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(7)
    n = 2000
    x = rng.normal(size=(n, 3)) * 1000
    text = ["a,b,c,cat,y"]
    for i in range(n):
        vals = [repr(float(v)) for v in x[i]]
        if rng.random() < 0.1:
            vals[rng.integers(0, 3)] = str(rng.choice(["", "NA", "null"]))
        cat = str(rng.choice(["u", "v, w", 'q"q', "NA"]))
        cat = '"' + cat.replace('"', '""') + '"' if ("," in cat or '"' in cat) else cat
        text.append(",".join(vals + [cat, str(i % 2)]))
        if rng.random() < 0.01:
            text.append("")
    p = write(tmp_path, ("\r\n".join(text)).encode())
    b = parse_all(p, features=["a", "b", "c"], label="y", categorical=["cat"])
    df = pd.read_csv(p, na_values=list(DEFAULT_NA_VALUES), keep_default_na=False,
                     skip_blank_lines=True)
    np.testing.assert_array_equal(b.features, df[["a", "b", "c"]].to_numpy(np.float64))
    np.testing.assert_array_equal(b.labels, df["y"].to_numpy(np.float64))
    assert b.categorical["cat"].tolist() == df["cat"].fillna("").tolist()
    assert not b.bad.any()


def test_split_ranges_cover_data_and_start_at_lines(tmp_path):
    rng = np.random.default_rng(3)
    data = messy_file(rng, 300, crlf=True, trailing_newline=False)
    p = write(tmp_path, data)
    _, start = read_header(p)
    for chunk in (1, 2, 3, 50, 999, 10 ** 6):
        ranges = split_byte_ranges(p, chunk)
        assert ranges[0][0] == start and ranges[-1][1] == len(data)
        for (s0, e0), (s1, _) in zip(ranges, ranges[1:]):
            assert e0 == s1 and s0 < e0
            assert data[s1 - 1:s1] == b"\n"
        for s, e in ranges[:-1]:
            assert e - s >= chunk
        assert sum(count_records(p, s, e) for s, e in ranges) == \
            len(parse_all(p, features=["x1"]))


def test_range_larger_than_a_parse_piece(tmp_path):
    # parse_range works on 4 MiB pieces of a range; records across pieces must match.
    from hpcprep.io import csv_parse as mod
    rng = np.random.default_rng(11)
    small = messy_file(rng, 400, crlf=True, trailing_newline=True)
    head, body = small.split(b"\n", 1)
    reps = mod._PIECE // len(body) + 2
    data = head + b"\n" + body * reps
    p = write(tmp_path, data)
    kw = dict(features=["x1", "x2"], label="y", categorical=["cat"])
    b = parse_all(p, **kw)
    one = parse_all(write(tmp_path, small, "small.csv"), **kw)
    assert len(b) == reps * len(one)
    per = b.features.reshape(reps, len(one), 2)
    for r in (0, reps // 2, reps - 1):
        np.testing.assert_array_equal(per[r], one.features)
    step = small.count(b"\n") - 1
    np.testing.assert_array_equal(b.lines.reshape(reps, -1) - np.arange(reps)[:, None] * step,
                                  np.broadcast_to(one.lines, (reps, len(one))))
    assert_same(concat(parse_split(p, 1 << 20, **kw)), b)
