"""``Transform``: a run's value steps rebuilt from data.h5 (``Step.from_stats``) and applied
with the steps' own ``apply``.

- End to end: one run (``-n 3``, two layers, every value step, row filters between
  them, a ``--set`` override of a step) and ``Transform`` on the raw rows of the
  output reproduces its features bit for bit (float32) and its int64 codes; ±inf
  in an imputed column is filled as the step fills it.
- Per step: ``from_stats(config, names, fitted.stats())`` applies exactly as the
  fitted step and saves the same stats; a dataset written before int64 codes
  replays ``encoding = "codes"`` as one float feature.
- Errors name data.h5 (stats that are not what the config's step saves, a config
  attribute that disagrees) or the column (x of the wrong width, a missing
  categorical column).
"""

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from mpi4py import MPI

from conftest import mpirun, write_config
from hpcprep.chunk import Chunk
from hpcprep.errors import DataError
from hpcprep.schema import validate_op_table
from hpcprep.steps import STEPS, LayerContext, make_step
from hpcprep.transform import Transform

ROWS = 4000
CONFIG = """\
seed = 3
[input]
paths = ["d.csv"]
features = ["x0", "x1", "x2", "x3"]
label = "y"
categorical = ["color", "item", "shop"]
chunk_rows = 700
[[standardize]]
steps = [
  { op = "dedup" },
  { op = "impute", strategy = "median", per_column = { x2 = -1.0, x3 = "mean" } },
  { op = "scale", method = "robust" },
  { op = "outliers", method = "zscore", threshold = 2.5, action = "clip" },
  { op = "categorical", columns = ["color"], min_count = 60 },
  { op = "categorical", columns = ["item"], encoding = "codes", min_count = 5 },
  { op = "categorical", columns = ["shop"], encoding = "hash", buckets = 16, hash_key = 9 },
]
[[standardize]]
steps = [
  { op = "scale", method = "standard" },
  { op = "outliers", method = "quantile", q_lo = 0.002, q_hi = 0.998 },
  { op = "outliers", method = "quantile", q_lo = 0.05, q_hi = 0.95, action = "clip" },
  { op = "select", min_variance = 0.001 },
  { op = "scale" },
  { op = "reduce", tolerance = 0.05 },
]
[[sample]]
op = "shuffle"
[output]
path = "out"
"""
#: The file says ``scale`` standard; the run is told minmax: Transform must read the override.
SETS = ["standardize.1.steps.0.method=minmax"]


def raw_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(rows, 4)) * [1.0, 3.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]
    x[rng.uniform(size=(rows, 4)) < 0.03] = np.nan
    x[rng.uniform(size=rows) < 0.01, 0] = np.inf
    x[rng.uniform(size=rows) < 0.01, 1] = -np.inf
    df = pd.DataFrame(np.round(x, 4), columns=["x0", "x1", "x2", "x3"])
    df["color"] = rng.choice(["red", "green", "blue", "mauve", ""], rows, p=[.4, .3, .2, .05, .05])
    df["item"] = [f"i{k}" if k % 9 else "" for k in rng.zipf(1.5, rows) % 200]
    df["shop"] = rng.choice(["a", "b", "c", "é", ""], rows)
    df["y"] = rng.integers(0, 2, rows)
    df.loc[rng.integers(0, rows, 40), ["x0", "x1", "x2", "x3", "color", "item", "shop"]] = \
        df.iloc[0][["x0", "x1", "x2", "x3", "color", "item", "shop"]].values   # duplicates
    return df


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("transform")
    df = raw_frame(ROWS)
    df.to_csv(work / "d.csv", index=False)
    cfg = write_config(work / "c.toml", CONFIG)
    mpirun(3, ["run", cfg, "--quiet", *[a for s in SETS for a in ("--set", s)]], cwd=work)
    from hpcprep.output.verify import read_all

    return work, df, read_all(work / "out")


def raw_rows(df, ids):
    x = df[["x0", "x1", "x2", "x3"]].to_numpy(np.float64)[ids]
    cats = {c: df[c].fillna("").astype(str).to_numpy()[ids] for c in ("color", "item", "shop")}
    return x, cats


def test_transform_reproduces_the_dataset_bit_for_bit(run):
    work, df, got = run
    t = Transform.load(str(work / "out"))
    assert [label for label, _ in t.fitted_] == ["0.1.impute", "0.2.scale", "0.3.outliers",
                                                "0.4.categorical", "0.5.categorical",
                                                "0.6.categorical", "1.0.scale", "1.2.outliers",
                                                "1.3.select", "1.4.scale", "1.5.reduce"]
    assert t.feature_names_in_ == ["x0", "x1", "x2", "x3"]
    assert t.feature_names_out_ == [f"pc{i}" for i in range(got["features"].shape[1])]
    x, cats = raw_rows(df, got["ids"])
    assert np.isinf(x).any(axis=0)[:2].all()          # ±inf in the input: imputed as NaN is
    assert got["features"].dtype == np.float32 and len(got["ids"]) < ROWS
    y = t.transform(x, categorical=cats)     # a CSV's features are read as float64, as here
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.astype(np.float32).view(np.uint32),
                                  got["features"].view(np.uint32))
    np.testing.assert_array_equal(t.codes(cats), got["codes"])


F32_CONFIG = """\
seed = 5
[input]
paths = ["{raw}/*.h5"]
label = "labels"
chunk_rows = 300
[[standardize]]
steps = [
  {{ op = "impute", strategy = "median" }},
  {{ op = "scale", method = "minmax" }},
  {{ op = "outliers", threshold = 2.0, action = "clip" }},
  {{ op = "select", max_missing = 0.5 }},
  {{ op = "scale" }},
  {{ op = "reduce", tolerance = 0.2 }},
]
[[sample]]
op = "shuffle"
[output]
path = "out"
"""


def test_float32_input_reproduced_bit_for_bit_with_dtype(small_raw, tmp_path):
    """HDF5 float32 features: the pipeline works in float32, as ``dtype=np.float32`` does."""
    from hpcprep.output.verify import read_all

    cfg = write_config(tmp_path / "c.toml", F32_CONFIG.format(raw=small_raw))
    mpirun(2, ["run", cfg, "--quiet"], cwd=tmp_path)
    got = read_all(tmp_path / "out")
    x = np.concatenate([h5py.File(p)["features"][()] for p in sorted(small_raw.glob("*.h5"))])
    assert x.dtype == np.float32 and np.isnan(x).any()
    t = Transform.load(str(tmp_path / "out"))
    y = t.transform(x[got["ids"]], dtype=np.float32)
    assert y.dtype == np.float32 and t.feature_names_out_[0] == "pc0"
    np.testing.assert_array_equal(y.view(np.uint32), got["features"].view(np.uint32))


def test_steps_and_codes_as_saved(run):
    work, df, _ = run
    t = Transform.load(str(work / "out"))
    with h5py.File(work / "out" / "data.h5") as f:
        saved = {k: f["stats"][k]["fill"][()] for k in f["stats"] if k.endswith("impute")}
    assert [(label, op) for label, op, _ in t.steps_][:2] == [("0.1.impute", "impute"),
                                                             ("0.2.scale", "scale")]
    np.testing.assert_array_equal(t.steps_[0][2]["fill"], saved["0.1.impute"])
    codes = t.codes({"item": np.array(["", "i1", "never-seen"]), "shop": [None, "a", ""]})
    assert codes.dtype == np.int64 and codes.shape == (3, 2)
    assert codes[0, 0] == -1 and codes[[0, 2], 1].tolist() == [-1, -1]   # None and "": missing


def test_errors_name_the_column_or_the_file(run, tmp_path):
    work, df, got = run
    t = Transform.load(str(work / "out"))
    x, cats = raw_rows(df, got["ids"][:5])
    with pytest.raises(DataError, match=r"4 features: x0, x1, x2, x3"):
        t.transform(x[:, :3], categorical=cats)
    with pytest.raises(DataError, match="needs categorical column 'color'"):
        t.transform(x, categorical={"item": cats["item"]})
    with pytest.raises(DataError, match="'shop' has shape"):
        t.transform(x, categorical=dict(cats, shop=cats["shop"][:2]))
    copy = tmp_path / "copy"
    for damage, match in (
            (lambda f: f.attrs.__setitem__("config", f.attrs["config"].rsplit("\n# --set", 1)[0]),
             r"data.h5: /stats/1.0.scale has no 'mean'"),
            (lambda f: f.attrs.__setitem__("config", f.attrs["config"].replace(
                "q_hi = 0.998 }", 'q_hi = 0.998, action = "clip" }')),
             r"data.h5: /stats/1.1.outliers: outliers: stats say clip = False"),
            (lambda f: f.attrs.__setitem__("config", f.attrs["config"].replace(
                '{ op = "select", min_variance = 0.001 }', '{ op = "scale" }')),
             r"/stats/1.3.select is a select step, the config's standardize\[1\].steps\[3\] is scale"),
            (lambda f: f["stats/1.3.select/keep"].__setitem__(0, not f["stats/1.3.select/keep"][0]),
             "the replayed steps give features"),
            (lambda f: f.attrs.__delitem__("config"), "no config attribute")):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(work / "out", copy)
        with h5py.File(copy / "data.h5", "r+") as f:
            damage(f)
        with pytest.raises(DataError, match=match):
            Transform.load(str(copy))


# -- per step, in process -------------------------------------------------------------------------
TABLES = [
    {"op": "impute", "strategy": "median", "per_column": {"b": 2.5}},
    {"op": "impute", "strategy": "mean", "columns": ["a"]},
    {"op": "scale"}, {"op": "scale", "method": "minmax", "feature_range": [-1.0, 2.0]},
    {"op": "scale", "method": "robust", "quantile_range": [10.0, 80.0]},
    {"op": "outliers", "threshold": 1.5, "action": "clip"},
    {"op": "outliers", "method": "quantile", "q_lo": 0.1, "q_hi": 0.8, "action": "clip",
     "columns": ["b"]},
    {"op": "categorical", "min_count": 30},
    {"op": "categorical", "columns": ["k"], "encoding": "codes", "max_categories": 3},
    {"op": "categorical", "encoding": "hash", "buckets": 7, "hash_key": 3},
    {"op": "select", "max_missing": 0.05},
    {"op": "reduce", "tolerance": 0.3},
]


def unit_chunks(dtype):
    rng = np.random.default_rng(4)
    out = []
    for i in range(3):
        x = (rng.normal(size=(300, 3)) * [1.0, 4.0, 0.01]).astype(dtype)
        x[rng.uniform(size=(300, 3)) < [0.02, 0.1, 0.0]] = np.nan
        x[5 * i, 0] = np.inf
        cats = {"cat:k": rng.choice(["p", "q", "r", "s", "t", ""], 300, p=[.3, .3, .2, .1, .05, .05]),
                "cat:m": rng.choice(["u", "v", "w"], 300, p=[.6, .35, .05])}
        out.append(Chunk(i, np.arange(300 * i, 300 * (i + 1)), x, rng.normal(size=300), cats))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("table", TABLES, ids=lambda t: f"{t['op']}-{len(t)}")
def test_from_stats_applies_as_the_fitted_step(table, dtype):
    chunks = unit_chunks(dtype)
    if table["op"] == "reduce":   # reduce takes no missing values
        chunks = [c.with_features(np.nan_to_num(c.features, posinf=0.0)) for c in chunks]
    fitted = make_step(table, "t")
    assert type(fitted).replayed(fitted.config)
    names = fitted.bind(["a", "b", "c"])
    if fitted.needs_fit:
        fitted.fit_layer(LayerContext(MPI.COMM_SELF, 1, 0), chunks)
    cls, config = validate_op_table(table, STEPS, "t", "step")
    again = cls.from_stats(config, names, fitted.stats())
    assert again.feature_names_out_ == fitted.feature_names_out_
    for c in chunks:
        want, got = fitted.apply(c)[0], again.apply(c)[0]
        assert got.features.dtype == want.features.dtype == dtype
        np.testing.assert_array_equal(got.features, want.features)
        np.testing.assert_array_equal(got.extras.get("codes"), want.extras.get("codes"))
    for key, value in fitted.stats().items():
        np.testing.assert_array_equal(again.stats()[key], value, err_msg=key)


def test_every_value_step_is_rebuilt_from_its_stats():
    """A new step that changes values must be replayed by Transform: it implements set_stats."""
    from hpcprep.steps.base import Step

    value_ops = {op for op, cls in STEPS.items() if cls.changes_values}
    assert value_ops == {t["op"] for t in TABLES}
    assert all(STEPS[op].set_stats is not Step.set_stats for op in value_ops)


def test_row_filters_are_not_replayed():
    for table in ({"op": "dropna"}, {"op": "dedup"}, {"op": "outliers"},
                  {"op": "validate", "rules": {"a": {"min": 0.0}}}):
        cls, config = validate_op_table(table, STEPS, "t", "step")
        assert not cls.replayed(config), table
    with pytest.raises(TypeError, match="changes no values"):
        make_step({"op": "dropna"}, "t").set_stats({})


def test_codes_of_datasets_before_int64_codes_are_one_float_feature():
    chunks = unit_chunks(np.float32)
    table = {"op": "categorical", "columns": ["k"], "encoding": "codes", "min_count": 40}
    fitted = make_step(table, "t")
    fitted.bind(["a", "b", "c"])
    fitted.fit_layer(LayerContext(MPI.COMM_SELF, 1, 0), chunks)
    stats = fitted.stats()
    del stats["encoding"]              # as datasets written before int64 codes
    cls, config = validate_op_table(table, STEPS, "t", "step")
    old = cls.from_stats(config, ["a", "b", "c"], stats)
    assert not old.writes_codes and old.feature_names_out_ == ["a", "b", "c", "k"]
    out = old.apply(chunks[0])[0]
    assert "codes" not in out.extras and out.features.dtype == np.float32
    want = fitted.apply(chunks[0])[0].extras["codes"][:, 0].astype(np.float32)
    want[want < 0] = np.nan
    np.testing.assert_array_equal(out.features[:, 3], want)
