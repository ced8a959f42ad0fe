"""Parquet, Feather, JSON lines and compressed CSV / JSON lines input (through pyarrow).

Every format holds the same rows, so every run must write the same dataset as
the Parquet run at one rank, and that must match a pandas reference.
"""

import bz2
import gzip
import json
import lzma
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from mpi4py import MPI

from conftest import mpirun, write_config
from hpcprep.mpi.agree import AgreedError
from hpcprep.config import parse_config
from hpcprep.errors import DataError
from hpcprep.io.plan import build_input_plan
from hpcprep.io.plan_count import count_csv_chunks
from hpcprep.io.readers import ChunkReader
from hpcprep.output.verify import read_all

N = 900
CONFIG = """\
seed = 3
[input]
paths = ["pq"]
features = ["a", "b", "c"]
label = "y"
chunk_rows = 100
[[standardize]]
steps = [{ op = "dropna" }, { op = "scale" }]
[output]
path = "out"
"""


def frame():
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"a": rng.normal(size=N), "b": rng.normal(size=N) * 4 + 1,
                       "c": rng.integers(-5, 50, N).astype("int32"),
                       "y": rng.integers(0, 3, N).astype("int64"),
                       "note": [f"n{i % 7}" for i in range(N)]})
    df.loc[::23, "b"] = np.nan
    return df


def json_text(df) -> str:
    """JSON lines with exact floats (repr) and null for NaN."""
    rows = df.to_dict(orient="records")
    return "".join(json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v)
                               for k, v in r.items()}) + "\n" for r in rows)


OPENERS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}


def write_compressed(path, text: str):
    ext = str(path).rsplit(".", 1)[1]
    if ext == "zst":
        with pa.output_stream(str(path), compression="zstd") as f:
            f.write(text.encode())
    else:
        with OPENERS[ext](path, "wb") as f:
            f.write(text.encode())


def write_all(root):
    df = frame()
    (root / "pq" / "part=1").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(df.iloc[:500], preserve_index=False), root / "pq" / "a.parquet",
                   row_group_size=130)
    pq.write_table(pa.Table.from_pandas(df.iloc[500:], preserve_index=False),
                   root / "pq" / "part=1" / "b.parquet", row_group_size=170)
    (root / "pq" / "_SUCCESS").write_text("")
    feather.write_feather(df, root / "d.feather", chunksize=250)
    cuts = [0, 200, 450, 700, N]
    for k, ext in enumerate(["gz", "bz2", "xz", "zst"]):
        write_compressed(root / f"t{k}.csv.{ext}", df.iloc[cuts[k]:cuts[k + 1]].to_csv(index=False))
    cuts = [0, 150, 300, 450, 700, N]
    (root / "j0.jsonl").write_text(json_text(df.iloc[:150]))
    for k, ext in enumerate(["gz", "bz2", "xz", "zst"], start=1):
        write_compressed(root / f"j{k}.jsonl.{ext}", json_text(df.iloc[cuts[k]:cuts[k + 1]]))
    return df


def reference(df):
    """What dropna + scale make of the frame, by global id."""
    keep = df[["a", "b", "c"]].notna().all(axis=1).to_numpy()
    x = df[["a", "b", "c"]].to_numpy(float)[keep]
    return np.flatnonzero(keep), (x - x.mean(axis=0)) / x.std(axis=0), df["y"].to_numpy(float)[keep]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("arrow")
    df = write_all(work)
    cfg = write_config(work / "cfg.toml", CONFIG)
    layered = ["layout.fused=false", "layout.input=2", "layout.standardize=[2]", "layout.sample=[1]"]
    for name, n, sets in [("pq1", 1, []), ("pq3", 3, []), ("pqlayered", 5, layered),
                          ("feather2", 2, ['input.paths=["d.feather"]']),
                          ("csvz3", 3, ['input.paths=["t*.csv.*"]']),
                          ("jsonl2", 2, ['input.paths=["j*.jsonl*"]', "input.chunk_rows=70"])]:
        mpirun(n, ["run", cfg, "--quiet", f"--set=output.path={name}"] + [f"--set={s}" for s in sets],
               cwd=work)
    return work, df


def test_parquet_matches_a_pandas_reference(runs):
    work, df = runs
    ids, x, y = reference(df)
    got = read_all(work / "pq1")
    order = np.argsort(got["ids"])
    assert np.array_equal(got["ids"][order], ids)
    np.testing.assert_allclose(got["features"][order], x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["labels"][order], y)


@pytest.mark.parametrize("name", ["pq3", "pqlayered", "feather2", "csvz3", "jsonl2"])
def test_every_format_and_layout_writes_the_same_dataset(runs, name):
    work, _ = runs
    ref, got = read_all(work / "pq1"), read_all(work / name)
    for key in ("ids", "features", "labels"):
        assert np.array_equal(got[key], ref[key]), key


def _inp(root, **over):
    """The validated [input] table of CONFIG, with ``over`` set and paths inside ``root``."""
    paths = [str(root / p) for p in over.pop("paths", ["pq"])]
    return replace(parse_config(CONFIG, "test.toml").input, paths=paths, **over)


def read_in_process(inp, n_ranks=1):
    """Plan, count (COMM_SELF) and read every chunk; return the plan and the chunks."""
    plan = build_input_plan(inp, n_ranks)
    count_csv_chunks(plan, MPI.COMM_SELF, [0], inp)
    reader = ChunkReader(inp, plan.feature_dtype, plan.label_dtype)
    try:
        return plan, [reader.read(c) for c in plan.chunks]
    finally:
        reader.close()


def test_parquet_chunks_are_row_groups_cut_to_chunk_rows_with_ids_from_the_footer(tmp_path):
    write_all(tmp_path)
    plan = build_input_plan(_inp(tmp_path), 2)
    assert plan.counted   # ids known before any data is read
    assert [c.rows for c in plan.chunks][:6] == [100, 30, 100, 30, 100, 30]
    assert plan.files[-1].endswith("part=1/b.parquet") and len(plan.files) == 2
    assert [c.first_id for c in plan.chunks] == list(np.cumsum([0] + [c.rows for c in plan.chunks])[:-1])
    assert plan.total_rows == N


@pytest.mark.parametrize("pattern", ["t*.csv.*", "j*.jsonl*"])
def test_compressed_files_become_pieces_of_chunk_rows_lines_on_the_rank_that_reads_them(tmp_path, pattern):
    df = write_all(tmp_path)
    plan, chunks = read_in_process(_inp(tmp_path, paths=[pattern], chunk_rows=64), n_ranks=1)
    pieces = [c for c in plan.chunks if c.compression]
    assert all(c.rows <= 64 for c in pieces) and len(pieces) >= 700 // 64
    ids = np.concatenate([c.ids for c in chunks])
    assert np.array_equal(ids, np.arange(N))
    x = np.concatenate([c.features for c in chunks])
    np.testing.assert_array_equal(x, df[["a", "b", "c"]].to_numpy(float))


def test_only_configured_columns_are_read_and_a_nested_one_is_an_error_naming_it(tmp_path):
    t = pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [1, 2], "y": [0, 1],
                  "tags": pa.array([[1, 2], [3]])})
    (tmp_path / "pq").mkdir()
    pq.write_table(t, tmp_path / "pq" / "x.parquet")
    _, chunks = read_in_process(_inp(tmp_path))
    assert list(chunks[0].extras) == [] and chunks[0].features.shape == (2, 3)
    with pytest.raises(DataError, match=r"x.parquet: column 'tags' \(input.features\) is a nested"):
        build_input_plan(_inp(tmp_path, features=["a", "tags"]), 1)
    pq.write_table(pa.table({"a": ["p", "q"], "b": [1.0, 2.0], "c": [1, 2], "y": [0, 1]}),
                   tmp_path / "pq" / "x.parquet")
    with pytest.raises(DataError, match=r"column 'a' \(input.features\) has type string, not a number"):
        build_input_plan(_inp(tmp_path), 1)


JSON_BAD = [
    '{"a": 1, "b": 2, "c": 3, "y": 0}',
    'not json',                                   # line 2
    '{"a": 1, "b": 2, "y": 0}',                   # line 3: missing key c
    '',
    '{"a": "x", "b": 2, "c": 3, "y": 1}',         # line 5: not a number
    '[1, 2]',                                     # line 6: not an object
    '{"a": "1.5", "b": null, "c": "NA", "y": 1}',  # numbers as text, missing values
]


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz"])
def test_bad_json_records_are_dropped_and_counted_with_file_and_line(tmp_path, suffix):
    text = "\n".join(JSON_BAD * 3) + "\n"
    path = tmp_path / f"in.{suffix}"
    if suffix.endswith("gz"):
        write_compressed(path, text)
    else:
        path.write_text(text)
    inp = _inp(tmp_path, paths=[f"in.{suffix}"], chunk_rows=4)
    _, chunks = read_in_process(inp)
    assert sum(len(c) for c in chunks) == 6
    dropped = {}
    for c in chunks:
        for k, v in c.dropped.items():
            dropped[k] = dropped.get(k, 0) + v
    assert dropped == {"malformed line: not valid JSON": 3, "malformed line: missing key": 3,
                       "malformed line: unparsable number": 3,
                       "malformed line: not a JSON object": 3}
    good = np.concatenate([c.features for c in chunks])
    np.testing.assert_array_equal(good[1], [1.5, np.nan, np.nan])
    lines = np.concatenate([c.rows_in_source() for c in chunks])
    assert lines.tolist() == [1, 7, 8, 14, 15, 21]
    with pytest.raises(AgreedError, match=rf"in.{suffix}, line 2: not valid JSON: 'not json'"):
        read_in_process(replace(inp, on_bad_row="error"))


def test_compressed_csv_bad_records_follow_the_csv_rules(tmp_path):
    text = "a,b,c,y\n" + "1,2,3,0\n1,2\nx,2,3,1\n" * 4
    (tmp_path / "plain.csv").write_text(text)
    write_compressed(tmp_path / "z.csv.bz2", text)
    for name in ("plain.csv", "z.csv.bz2"):
        _, chunks = read_in_process(_inp(tmp_path, paths=[name], chunk_rows=5))
        dropped = {}
        for c in chunks:
            for k, v in c.dropped.items():
                dropped[k] = dropped.get(k, 0) + v
        assert dropped == {"malformed line: wrong number of fields": 4,
                           "malformed line: unparsable number": 4}, name
    with pytest.raises(AgreedError, match=r"z.csv.bz2, line 3: wrong number of fields"):
        read_in_process(_inp(tmp_path, paths=["z.csv.bz2"], chunk_rows=5, on_bad_row="error"))


def test_json_column_of_text_or_lists_is_an_error_naming_it(tmp_path):
    rows = [{"a": f"t{i}", "b": 1, "c": 2, "y": 0} for i in range(10)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"t.jsonl: column 'a' \(input.features\) is not a number in 10"):
        build_input_plan(_inp(tmp_path, paths=["t.jsonl"]), 1)
    rows[3]["b"] = [1, 2]
    (tmp_path / "t.ndjson.gz").write_bytes(gzip.compress(
        "".join(json.dumps(dict(r, a=1)) + "\n" for r in rows).encode()))
    with pytest.raises(DataError, match=r"t.ndjson.gz, line 4: key 'b' holds a list or object"):
        build_input_plan(_inp(tmp_path, paths=["t.ndjson.gz"]), 1)


def test_corrupt_compressed_file_is_an_error_naming_it(tmp_path):
    good = gzip.compress(("a,b,c,y\n" + "1,2,3,0\n" * 20000).encode())
    (tmp_path / "x.csv.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises((DataError, AgreedError), match=r"x.csv.gz: corrupt or truncated gzip"):
        read_in_process(_inp(tmp_path, paths=["x.csv.gz"]))
