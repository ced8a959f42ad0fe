"""Typed input columns: text labels read as class codes with a stored vocabulary.

The files are generated here (CSV with pandas, Parquet with pyarrow); every run
must write the same dataset for any layout, with the codes of a pandas
reference (``pd.Categorical`` over the sorted classes) and a vocabulary that
``open_dataset(...).label_classes`` maps back.
"""

import json

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hpcprep
from conftest import mpirun, write_config
from hpcprep.chunk import Chunk
from hpcprep.errors import DataError
from hpcprep.io.classes import class_codes, output_codes
from hpcprep.output.verify import read_all

N = 400
CLASSES = ["emu", "cat", "dog", "ant", "Zebra"]   # "Zebra" sorts first (code points)

CONFIG = """\
seed = 5
[input]
paths = ["{paths}"]
features = ["a", "b"]
label = "kind"
label_type = "{label_type}"
chunk_rows = 50
[[standardize]]
steps = [{{ op = "dropna" }}, {{ op = "scale" }}]
[output]
path = "out"
"""


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    kind = np.array(CLASSES, dtype=object)[rng.integers(0, len(CLASSES), N)]
    kind[::37] = None                 # missing labels: dropped by dropna
    return pd.DataFrame({"a": rng.normal(size=N), "b": rng.normal(size=N) * 3 + 2, "kind": kind})


def run(work, n, paths, name, label_type="class", sets=()):
    cfg = write_config(work / f"{name}.toml", CONFIG.format(paths=paths, label_type=label_type))
    mpirun(n, ["run", cfg, "--quiet", f"--set=output.path={name}", *[f"--set={s}" for s in sets]],
           cwd=work)
    return read_all(work / name)


def reference_codes(df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Codes of the rows dropna keeps, in id order, and the sorted vocabulary (pandas)."""
    classes = sorted(df["kind"].dropna().unique())
    codes = pd.Categorical(df["kind"], categories=classes).codes.astype(np.int64)
    return codes[df["kind"].notna().to_numpy()], classes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("typed")
    df = frame()
    df.to_csv(work / "d.csv", index=False)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), work / "d.parquet",
                   row_group_size=90)
    out = {"csv1": run(work, 1, "d.csv", "csv1"),
           "csv3": run(work, 3, "d.csv", "csv3",
                       sets=["layout.fused=false", "layout.input=1", "layout.standardize=[1]",
                             "layout.sample=[1]"]),
           "pq3": run(work, 3, "d.parquet", "pq3", label_type="auto")}
    return work, df, out


def test_text_label_codes_match_pandas_and_every_layout(runs):
    work, df, out = runs
    want, classes = reference_codes(df)
    ref = out["csv1"]
    order = np.argsort(ref["ids"])
    assert ref["labels"].dtype == np.int64
    np.testing.assert_array_equal(ref["labels"][order], want)
    np.testing.assert_array_equal(ref["ids"][order], np.flatnonzero(df["kind"].notna()))
    for name in ("csv3", "pq3"):
        for key in ("ids", "labels", "features"):
            np.testing.assert_array_equal(out[name][key], ref[key], err_msg=f"{name} {key}")
    for name in ("csv1", "csv3", "pq3"):
        man = json.loads((work / name / "manifest.json").read_text())
        assert man["label_classes"] == classes and man["label_dtype"] == "int64"
        with h5py.File(work / name / "data.h5", "r") as f:
            assert [c.decode() for c in f["stats/label_classes"][()]] == classes


def test_loader_maps_codes_back_to_class_names(runs):
    work, df, _ = runs
    with hpcprep.open_dataset(work / "csv3") as ds:
        assert ds.label_classes == sorted(df["kind"].dropna().unique())
        x, y = ds.read(0, len(ds))
        ids = read_all(work / "csv3")["ids"]
    names = np.array(ds.label_classes, dtype=object)[y]
    np.testing.assert_array_equal(names, df["kind"].to_numpy()[ids])


def test_numeric_labels_have_no_vocabulary(tmp_path):
    df = frame().assign(kind=lambda d: d["kind"].notna().astype(int))
    df.to_csv(tmp_path / "d.csv", index=False)
    got = run(tmp_path, 1, "d.csv", "num", label_type="auto")
    man = json.loads((tmp_path / "num" / "manifest.json").read_text())
    assert "label_classes" not in man and man["label_dtype"] == "float64"
    with hpcprep.open_dataset(tmp_path / "num") as ds:
        assert ds.label_classes is None
    assert sorted(set(got["labels"].tolist())) == [0.0, 1.0]


def test_a_text_label_stays_an_error_unless_read_as_classes(tmp_path):
    frame().to_csv(tmp_path / "d.csv", index=False)
    cfg = write_config(tmp_path / "c.toml", CONFIG.format(paths="d.csv", label_type="numeric"))
    proc = mpirun(1, ["run", cfg, "--quiet"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and not (tmp_path / "out").exists()
    assert 'input.label_type = "class"' in proc.stdout + proc.stderr


def test_class_codes_and_missing_labels():
    classes = np.array(["Zebra", "ant", "cat"])
    codes = class_codes(np.array(["cat", "", "Zebra", "ant"]), classes)
    np.testing.assert_array_equal(codes, [2, np.nan, 0, 1])
    with pytest.raises(RuntimeError, match="'dog'"):
        class_codes(np.array(["dog"]), classes)
    chunk = output_codes(Chunk(0, np.arange(4), np.zeros((4, 1)), labels=codes))
    assert chunk.labels.dtype == np.int64 and chunk.labels.tolist() == [2, -1, 0, 1]


def test_class_labels_need_a_text_format(tmp_path):
    from hpcprep.config import parse_config
    from hpcprep.io.plan import build_input_plan

    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["features"] = np.zeros((4, 2))
        f["y"] = np.arange(4)
    cfg = parse_config('[input]\npaths = ["d.h5"]\nlabel = "y"\nlabel_type = "class"\n', "t",
                       base_dir=tmp_path)
    with pytest.raises(DataError, match="label_type"):
        build_input_plan(cfg.input, 1)
