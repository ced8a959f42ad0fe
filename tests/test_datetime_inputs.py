"""Dates and timestamps (``input.datetime``): derived features from CSV, JSON lines, .csv.gz
and Parquet, equal to a pandas reference in every layout; bad dates dropped or an error."""

import gzip
import json
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from mpi4py import MPI

from conftest import mpirun, write_config
from hpcprep.config import parse_config
from hpcprep.errors import ConfigError, DataError, HpcprepError
from hpcprep.io.datetimes import PARTS, derive, from_arrow, parse_text
from hpcprep.io.plan import build_input_plan
from hpcprep.io.plan_count import count_csv_chunks
from hpcprep.io.readers import ChunkReader
from hpcprep.output.verify import read_all

N = 600
BAD = {17: "2024-02-30T10:00:00", 333: "03/01/2024"}   # rows whose "s" does not parse
PARTS_OF = {"ts": list(PARTS), "d": ["year", "weekday", "dayofyear", "epoch"],
            "s": ["epoch", "hour", "minute", "second", "day", "month"]}
CONFIG = """\
seed = 5
[input]
paths = ["x.csv"]
features = ["a"]
label = "y"
chunk_rows = 70
datetime = { ts = %s, d = %s, s = %s }
[output]
path = "out"
dtype = "float64"
""" % tuple(json.dumps(PARTS_OF[c]) for c in ("ts", "d", "s"))


def instants():
    """The true values: ts (whole seconds, UTC), d (dates), s (UTC, with fractions); NaT missing."""
    rng = np.random.default_rng(3)
    base = pd.Timestamp("1965-01-01", tz="UTC")
    ts = base + pd.to_timedelta(rng.integers(0, 2 * 10**9, N), unit="s")
    d = (base + pd.to_timedelta(rng.integers(0, 30000, N), unit="D")).normalize()
    s = base + pd.to_timedelta(rng.integers(0, 2 * 10**18, N), unit="ns").round("ms")
    ts, d, s = pd.Series(ts), pd.Series(d), pd.Series(s)
    ts[11] = pd.NaT
    d[5] = pd.NaT
    s[9] = pd.NaT
    return ts, d, s


def s_text(s: pd.Series) -> list:
    """ISO 8601 texts of many shapes: Z, offsets, a space for T, fractions, dates only."""
    out = []
    for i, v in enumerate(s):
        if pd.isna(v):
            out.append(None)
            continue
        shape = i % 5
        if shape == 0:
            out.append(v.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
        elif shape == 1:
            out.append(v.tz_convert("Asia/Kolkata").isoformat())          # +05:30, fraction
        elif shape == 2:
            out.append(v.tz_convert("America/New_York").strftime("%Y-%m-%d %H:%M:%S.%f%z"))
        elif shape == 3:
            out.append(v.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3])           # naive = UTC
        else:
            out.append(v.tz_convert("Etc/GMT+3").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "-03:00")
    for i, text in BAD.items():
        out[i] = text
    return out


def frame():
    ts, d, s = instants()
    rng = np.random.default_rng(4)
    return pd.DataFrame({
        "a": rng.normal(size=N), "y": rng.integers(0, 3, N),
        "ts": [None if pd.isna(v) else v.tz_convert("Europe/Berlin").isoformat() for v in ts],
        "d": [None if pd.isna(v) else v.strftime("%Y-%m-%d") for v in d],
        "s": s_text(s)}), (ts, d, s)


def json_text(df) -> str:
    """JSON lines, null where pandas holds a missing value."""
    rows = df.to_dict(orient="records")
    return "".join(json.dumps({k: None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                               for k, v in r.items()}) + "\n" for r in rows)


def write_all(root):
    df, true = frame()
    df.to_csv(root / "x.csv", index=False, na_rep="NA")
    (root / "x.jsonl").write_text(json_text(df))
    (root / "x.csv.gz").write_bytes(gzip.compress(df.to_csv(index=False).encode()))
    ts, d, _ = true
    table = pa.table({"a": df["a"], "y": df["y"],
                      "ts": pa.array(ts.dt.tz_convert("America/New_York")).cast(
                          pa.timestamp("ms", "America/New_York")),
                      "d": pa.array([None if pd.isna(v) else v.date() for v in d], pa.date32()),
                      "s": pa.array(df["s"], pa.string())})
    pq.write_table(table, root / "x.parquet", row_group_size=128)
    return df, true


def reference(df, true):
    """Features of the rows kept (bad "s" dropped), as pandas computes them, by global id."""
    cols = [df["a"].to_numpy(float)]
    for name, series in zip(("ts", "d", "s"), true):
        for part in PARTS_OF[name]:
            if part == "epoch":
                v = (series - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)
            else:
                v = getattr(series.dt, {"weekday": "day_of_week", "dayofyear": "day_of_year"}
                            .get(part, part))
            cols.append(v.to_numpy(float, na_value=np.nan))
    keep = np.ones(N, bool)
    keep[list(BAD)] = False
    return np.flatnonzero(keep), np.column_stack(cols)[keep], df["y"].to_numpy(float)[keep]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("dates")
    df, true = write_all(work)
    cfg = write_config(work / "cfg.toml", CONFIG)
    layered = ["layout.fused=false", "layout.input=2", "layout.sample=[2]"]
    for name, n, sets in [("csv1", 1, []), ("csv3", 3, ["input.rejects=true"]),
                          ("jsonl2", 2, ['input.paths=["x.jsonl"]']),
                          ("gz4", 4, ['input.paths=["x.csv.gz"]'] + layered),
                          ("pq3", 3, ['input.paths=["x.parquet"]', "input.rejects=true"]),
                          ("pqlayered", 4, ['input.paths=["x.parquet"]'] + layered)]:
        mpirun(n, ["run", cfg, "--quiet", f"--set=output.path={name}"] + [f"--set={s}" for s in sets],
               cwd=work)
    return work, df, true


def test_date_features_match_a_pandas_reference(runs):
    work, df, true = runs
    ids, x, y = reference(df, true)
    got = read_all(work / "csv1")
    order = np.argsort(got["ids"])
    assert np.array_equal(got["ids"][order], ids)
    np.testing.assert_array_equal(got["labels"][order], y)
    gx = got["features"][order]
    s_epoch = 1 + len(PARTS_OF["ts"]) + len(PARTS_OF["d"])
    exact = [j for j in range(x.shape[1]) if j != s_epoch]   # every part but s.epoch is exact
    np.testing.assert_array_equal(gx[:, exact], x[:, exact])
    np.testing.assert_allclose(gx[:, s_epoch], x[:, s_epoch], rtol=0, atol=1e-6)
    missing = {11: "ts", 5: "d", 9: "s"}   # a missing date is NaN in each of its parts
    for row, col in missing.items():
        at = int(np.searchsorted(ids, row))
        lo = 1 + sum(len(PARTS_OF[c]) for c in ("ts", "d", "s")[:("ts", "d", "s").index(col)])
        assert np.isnan(gx[at, lo:lo + len(PARTS_OF[col])]).all()
        assert np.isfinite(np.delete(gx[at], range(lo, lo + len(PARTS_OF[col])))).all()


@pytest.mark.parametrize("name", ["csv3", "jsonl2", "gz4", "pq3", "pqlayered"])
def test_every_format_and_layout_writes_the_same_dataset(runs, name):
    work, _, _ = runs
    ref, got = read_all(work / "csv1"), read_all(work / name)
    for key in ("ids", "features", "labels"):
        assert np.array_equal(got[key], ref[key], equal_nan=key == "features"), key


@pytest.mark.parametrize("name,where", [("csv3", [19, 335]), ("pq3", [17, 333])])
def test_unparsable_dates_are_dropped_and_counted_with_file_line_and_column(runs, name, where):
    work, _, _ = runs
    report = json.loads((work / name / "report.json").read_text())
    assert report["dropped"]["input"] == {"unparsable date": 2}
    bad = report["input"]["bad_records"]
    assert [(r["line"], r["column"], r["reason"]) for r in bad] == \
        [(w, "s", "unparsable date") for w in where]
    assert BAD[17] in bad[0]["text"] and BAD[333] in bad[1]["text"]
    with h5py.File(work / name / "rejects.h5") as f:
        g = f["input"]
        assert g["ids"][:].tolist() == sorted(BAD) and g["line"][:].tolist() == where
        assert [r.decode() if isinstance(r, bytes) else r for r in g["reason"][:]] == \
            ["unparsable date"] * 2


def _inp(root, **over):
    paths = [str(root / p) for p in over.pop("paths", ["x.csv"])]
    return replace(parse_config(CONFIG, "test.toml").input, paths=paths, **over)


def read_in_process(inp):
    """Plan, count (COMM_SELF) and read every chunk."""
    plan = build_input_plan(inp, 1)
    count_csv_chunks(plan, MPI.COMM_SELF, [0], inp)
    reader = ChunkReader(inp, plan.feature_dtype, plan.label_dtype)
    try:
        return plan, [reader.read(c) for c in plan.chunks]
    finally:
        reader.close()


@pytest.mark.parametrize("path,where", [("x.csv", "line 19"), ("x.jsonl", "line 18"),
                                        ("x.csv.gz", "line 19"), ("x.parquet", "row 17")])
def test_on_bad_row_error_names_file_line_column_and_value(tmp_path, path, where):
    write_all(tmp_path)
    inp = _inp(tmp_path, paths=[path], on_bad_row="error")
    # text formats: found by the counting pass (agreed, the first in file order); Parquet: by the reader
    with pytest.raises(HpcprepError, match=rf"{path}, {where}: unparsable date in column 's': "
                                           rf"'2024-02-30T10:00:00'"):
        read_in_process(inp)
    plan, chunks = read_in_process(replace(inp, on_bad_row="drop"))
    assert plan.feature_names == ["a"] + [f"{c}.{p}" for c in ("ts", "d", "s") for p in PARTS_OF[c]]
    assert sum(len(c) for c in chunks) == N - 2
    assert all(c.features.dtype == np.float64 for c in chunks)


def test_text_dates_of_every_shape_equal_pandas_and_bad_ones_are_flagged():
    rng = np.random.default_rng(0)
    v = pd.Timestamp("1950-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 3 * 10**18, 9000), "ns")
    shapes = [v.strftime("%Y-%m-%d"), v.strftime("%Y-%m-%d %H:%M"), v.strftime("%Y-%m-%dT%H"),
              v.strftime("%Y-%m-%dT%H:%M:%S.%f"), v.strftime("%Y-%m-%dT%H:%M:%S%z"),
              v.tz_convert("Asia/Kathmandu").strftime("%Y-%m-%dT%H:%M:%S.%f%z")]
    # one shape per block of 9000 (Arrow's cast), then all mixed (the regex); a bad value in each
    for text in [np.concatenate(shapes), np.array(shapes).T.ravel()]:
        text = text.astype(object)
        text[[5, 20000, 40000]] = ["2023-02-29", "2024-01-01T12:60", "1/2/2024"]
        text[7] = ""
        inst = parse_text(np.array(text, dtype=str))
        assert np.flatnonzero(inst.bad).tolist() == [5, 20000, 40000]
        assert np.flatnonzero(inst.missing).tolist() == [7]
        ok = ~inst.bad & ~inst.missing
        ref = pd.to_datetime(pd.Series(text[ok]), utc=True, format="ISO8601")
        got = derive(inst, list(PARTS))[ok]
        for j, part in enumerate(PARTS[1:], start=1):
            name = {"weekday": "day_of_week", "dayofyear": "day_of_year"}.get(part, part)
            np.testing.assert_array_equal(got[:, j], getattr(ref.dt, name).to_numpy(float), part)
        epoch = (ref - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)
        np.testing.assert_allclose(got[:, 0], epoch.to_numpy(), rtol=0, atol=1e-6)


def test_arrow_date_and_timestamp_columns_of_any_unit_are_utc():
    ns = np.array([0, 1709296496123456789, -1, 86399 * 10**9])
    want = derive(from_arrow(pa.array(ns, pa.timestamp("ns", "UTC"))), list(PARTS))
    assert want[1].tolist() == [1709296496.1234567, 2024, 3, 1, 12, 34, 56, 4, 61]
    assert want[2, 1:].tolist() == [1969, 12, 31, 23, 59, 59, 2, 365]
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        v = np.floor_divide(ns, scale)
        got = derive(from_arrow(pa.array(v, pa.timestamp(unit, "Asia/Tokyo"))), list(PARTS))
        np.testing.assert_array_equal(got[:, 1:], want[:, 1:])   # the zone only labels UTC values
        np.testing.assert_allclose(got[:, 0], v / (10**9 // scale), rtol=1e-15, atol=1e-12)
    days = pa.array([0, 19783, None], pa.date32())
    got = derive(from_arrow(days), ["year", "month", "day", "weekday", "epoch"])
    assert got[1].tolist() == [2024, 3, 1, 4, 19783 * 86400] and np.isnan(got[2]).all()
    got64 = derive(from_arrow(pa.array([0, 19783 * 86400000, None], pa.date64())), ["epoch"])
    assert got64[1, 0] == 19783 * 86400


@pytest.mark.parametrize("table,match", [
    ('{ ts = ["year", "fortnight"] }', r"input.datetime.ts: unknown part 'fortnight'"),
    ('{ ts = [] }', r"input.datetime.ts = \[\]: expected a non-empty list"),
    ('{ ts = "year" }', r"input.datetime.ts = 'year': expected a non-empty list"),
    ('{ ts = [1] }', r"input.datetime.ts = \[1\]: expected a non-empty list"),
    ('{ ts = ["year", "year"] }', r"input.datetime.ts: part 'year' is listed twice"),
    ('{ a = ["year"] }', r"input.datetime.a: column 'a' is also in input.features"),
    ('{ y = ["year"] }', r"input.datetime.y: column 'y' is also in input.label"),
    ('{ c = ["year"] }', r"input.datetime.c: column 'c' is also in input.categorical"),
    ('"ts"', r"input.datetime = 'ts': expected a table"),
])
def test_config_errors_name_the_key(table, match):
    text = CONFIG.replace("datetime = {", "categorical = [\"c\"]\n#").replace(
        'features = ["a"]', f'features = ["a"]\ndatetime = {table}')
    with pytest.raises(ConfigError, match=match):
        parse_config(text, "t.toml")


def test_dates_with_hdf5_or_npy_inputs_are_a_config_error(tmp_path):
    text = CONFIG.replace('features = ["a"]', 'features = "features"').replace('label = "y"', "")
    with pytest.raises(ConfigError, match=r"input.datetime: .*HDF5/.npy"):
        parse_config(text, "t.toml")
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    inp = replace(parse_config(CONFIG, "t.toml").input, paths=[str(tmp_path / "x.npy")],
                  features="features", label="")
    with pytest.raises(ConfigError, match=r"input.datetime: .*x.npy is a npy file"):
        build_input_plan(inp, 1)


def test_a_derived_name_clashing_with_a_feature_is_a_config_error():
    text = CONFIG.replace('features = ["a"]', 'features = ["a", "ts.year"]')
    with pytest.raises(ConfigError, match=r"derived feature 'ts.year' is also a name in input.features"):
        parse_config(text, "t.toml")


def test_planning_errors_name_file_and_column(tmp_path):
    df, _ = write_all(tmp_path)
    bad = df.assign(s=["01/03/2024"] * N)
    bad.to_csv(tmp_path / "us.csv", index=False)
    with pytest.raises(DataError, match=r"us.csv: column 's' \(input.datetime\) is not an ISO 8601 "
                                        r"date in 600 of the first 600 records \(e.g. line 2"):
        build_input_plan(_inp(tmp_path, paths=["us.csv"]), 1)
    t = pa.table({"a": [1.0], "y": [0], "ts": [1], "d": pa.array([None], pa.date32()),
                  "s": ["2024-01-01"]})
    pq.write_table(t, tmp_path / "int.parquet")
    with pytest.raises(DataError, match=r"int.parquet: column 'ts' \(input.datetime\) has type int64"):
        build_input_plan(_inp(tmp_path, paths=["int.parquet"]), 1)
    t = t.set_column(2, "ts", pa.array([["2024-01-01"]]))
    pq.write_table(t, tmp_path / "list.parquet")
    with pytest.raises(DataError, match=r"list.parquet: column 'ts' \(input.datetime\) is a nested"):
        build_input_plan(_inp(tmp_path, paths=["list.parquet"]), 1)
    feather.write_feather(t.set_column(2, "ts", pa.array([{"t": "2024-01-01"}])), tmp_path / "s.feather")
    with pytest.raises(DataError, match=r"s.feather: column 'ts' \(input.datetime\) is a nested "
                                        r"column of type struct"):
        build_input_plan(_inp(tmp_path, paths=["s.feather"]), 1)
    lines = json_text(df.head(5)).splitlines()
    lines[2] = json.dumps(dict(json.loads(lines[2]), ts=["2024-01-01"]))
    (tmp_path / "n.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"n.jsonl, line 3: key 'ts' holds a list or object "
                                        r"\(a nested column, input.datetime\)"):
        build_input_plan(_inp(tmp_path, paths=["n.jsonl"]), 1)


def test_a_timestamp_given_as_a_feature_points_to_input_datetime(tmp_path):
    pq.write_table(pa.table({"a": pa.array([0], pa.timestamp("s")), "y": [0]}), tmp_path / "t.parquet")
    inp = _inp(tmp_path, paths=["t.parquet"], datetime={})
    with pytest.raises(DataError, match=r"column 'a' \(input.features\) has type timestamp\[\w+\].*"
                                        r"input.datetime = \{ a = "):
        build_input_plan(inp, 1)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_on_bad_row_error_names_the_first_bad_date_in_file_order_at_any_layout(tmp_path, suffix):
    """Two bad dates in different chunks: the counting pass finds the first in file order, so
    every layout prints the same one (was: whichever rank's reader met one first)."""
    n = 3000
    dates = pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%S").tolist()
    dates[1234], dates[2500] = "2024-02-30", "not a date"
    df = pd.DataFrame({"a": np.arange(n, dtype=float), "ts": dates})
    path = tmp_path / f"d.{suffix}"
    if suffix == "csv":
        df.to_csv(path, index=False)
    else:
        path.write_text(json_text(df))
    write_config(tmp_path / "cfg.toml", f"""[input]
paths = ["d.{suffix}"]
features = ["a"]
datetime = {{ ts = ["year"] }}
on_bad_row = "error"
chunk_rows = 400
[output]
path = "out"
""")
    messages = set()
    for k in (1, 3):
        proc = mpirun(k, ["run", "cfg.toml", "--quiet"], cwd=tmp_path, check=False)
        assert proc.returncode == 2, proc.stderr
        messages.add(proc.stdout.strip() + proc.stderr.strip())
    (message,) = messages
    line = 1234 + (2 if suffix == "csv" else 1)
    assert f"line {line}" in message and "unparsable date" in message and "2024-02-30" in message
