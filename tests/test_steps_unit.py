"""In-process unit tests of the standardization steps (one rank: MPI.COMM_SELF)."""

import json
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
from mpi4py import MPI

from hpcprep.chunk import Chunk
from hpcprep.errors import ConfigError, DataError
from hpcprep.steps import LayerContext, make_step
from hpcprep.steps.dedup import Dedup
from hpcprep.steps.reduce import CovState
from hpcprep.steps.rejects import RejectsWriter, merge_rejects
from hpcprep.steps.select import LabelMoments
from hpcprep.steps.sketch import ColumnSketch

CTX = LayerContext(MPI.COMM_SELF, 0, 0)
NAMES = ["a", "b", "c"]


def chunks_of(x, y=None, sizes=(7, 0, 30, 13), cats=None):
    """Split rows into chunks of the given sizes (an empty chunk included)."""
    out, lo = [], 0
    for cid, n in enumerate(sizes):
        sl = slice(lo, lo + n)
        extras = {f"cat:{k}": v[sl] for k, v in (cats or {}).items()}
        out.append(Chunk(cid, np.arange(lo, lo + n, dtype=np.int64), x[sl],
                         None if y is None else y[sl], extras, source="mem"))
        lo += n
    assert lo == len(x)
    return out


def run(spec, chunks, names=NAMES):
    step = make_step(spec, "test")
    step.bind(names)
    if step.needs_fit:
        step.fit_layer(CTX, iter(chunks))
    outs = [step.apply(c) for c in chunks]
    return step, outs


def data(seed=0, n=50):
    rng = np.random.default_rng(seed)
    x = rng.normal([1, -5, 100], [1, 3, 20], size=(n, 3))
    x[rng.integers(0, n, 6), rng.integers(0, 3, 6)] = np.nan
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.int64)
    return x, y


# ------------------------------------------------------------------- sketch
def test_sketch_exact_equals_numpy_and_ignores_order():
    rng = np.random.default_rng(1)
    v = np.round(rng.normal(size=1000), 2)  # many repeated values
    v[::17] = np.nan
    parts = np.array_split(v, 7)
    a = ColumnSketch.of(parts[0])
    for p in parts[1:]:
        a = a.merge(ColumnSketch.of(p))
    b = ColumnSketch.of(parts[-1])
    for p in parts[-2::-1]:
        b = ColumnSketch.of(p).merge(b)
    assert a.exact and np.array_equal(a.keys, b.keys) and np.array_equal(a.counts, b.counts)
    for q in (0.0, 0.01, 0.25, 0.5, 0.75, 0.999, 1.0):
        assert a.quantile(q) == pytest.approx(np.nanquantile(v, q), rel=1e-12, abs=1e-15)


def test_sketch_beyond_exact_limit_within_bound_and_order_free():
    rng = np.random.default_rng(2)
    v = rng.lognormal(0, 2, 5000) * rng.choice([-1, 1], 5000)
    v[:10] = 0.0
    err = 0.01
    parts = np.array_split(v, 5)
    a = ColumnSketch.of(parts[0], limit=300, error=err)
    for p in parts[1:]:
        a = a.merge(ColumnSketch.of(p, limit=300, error=err))
    b = ColumnSketch.of(v, limit=300, error=err)
    assert not a.exact and np.array_equal(a.keys, b.keys) and np.array_equal(a.counts, b.counts)
    s = np.sort(v)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        p = q * (len(v) - 1)
        bound = err * max(abs(s[int(p)]), abs(s[min(int(p) + 1, len(s) - 1)]))
        assert abs(a.quantile(q) - np.quantile(v, q)) <= bound + 1e-12


def test_sketch_small_pieces_stay_exact_when_union_small():
    a = ColumnSketch.of([1.0, 2.0], limit=3).merge(ColumnSketch.of([2.0, 3.0], limit=3))
    assert a.exact and a.n == 4
    assert not a.merge(ColumnSketch.of([4.0], limit=3)).exact
    assert np.isnan(ColumnSketch.of([np.nan]).quantile(0.5))


# ---------------------------------------------------------- mergeable states
def test_label_moments_merge_equals_pandas_corr():
    x, y = data(3, 200)
    yf = y.astype(float)
    yf[::11] = np.nan
    parts = [LabelMoments.of(x[i:i + 40], yf[i:i + 40]) for i in range(0, 200, 40)]
    left = parts[0]
    for p in parts[1:]:
        left = left.merge(p)
    right = parts[-1]
    for p in parts[-2::-1]:
        right = p.merge(right)
    df = pd.DataFrame(x, columns=NAMES)
    ref = [df[c].corr(pd.Series(yf)) for c in NAMES]
    np.testing.assert_allclose(left.corr, ref, rtol=1e-12)
    np.testing.assert_allclose(right.corr, ref, rtol=1e-12)


def test_cov_state_merge_equals_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 4)) @ rng.normal(size=(4, 4)) + 3
    st = CovState.of(x[:0])
    for i in range(0, 120, 25):
        st = st.merge(CovState.of(x[i:i + 25]))
    np.testing.assert_allclose(st.c / st.n, np.cov(x.T, bias=True), rtol=1e-12, atol=1e-12)
    assert st.n_missing == 0


# --------------------------------------------------------------- the steps
def test_split_into_chunks_gives_the_same_fit():
    x, y = data(5)
    specs = [{"op": "impute", "strategy": "median"}, {"op": "scale", "method": "robust"},
             {"op": "scale", "method": "minmax"}, {"op": "outliers", "method": "quantile"},
             {"op": "select", "min_abs_corr": 0.01}]
    for spec in specs:
        one, _ = run(spec, chunks_of(x, y, sizes=(50,)))
        many, _ = run(spec, chunks_of(x, y))
        for k, v in one.stats().items():
            if k == "feature_names_in":
                continue
            np.testing.assert_allclose(np.asarray(many.stats()[k], dtype=float),
                                       np.asarray(v, dtype=float), rtol=1e-12, err_msg=f"{spec} {k}")


def test_all_nan_column_and_empty_chunks():
    x, y = data(6)
    x[:, 1] = np.nan
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        imp, outs = run({"op": "impute", "fill_value": -1.0}, chunks_of(x, y))
    assert any("no value in feature(s) b" in str(m.message) for m in w)
    assert np.all(np.concatenate([c.features for c, _ in outs])[:, 1] == -1.0)
    for spec in ({"op": "scale", "method": "minmax"}, {"op": "scale", "method": "robust"}):
        _, outs = run(spec, chunks_of(x, y))
        assert np.isnan(np.concatenate([c.features for c, _ in outs])[:, 1]).all()
    sel, _ = run({"op": "select"}, chunks_of(x, y))
    assert sel.feature_names_out_ == ["a", "c"] and sel.missing_rate_[1] == 1.0
    # no rows at all: every step fits without error
    empty = chunks_of(x[:0], y[:0], sizes=(0, 0))
    with pytest.warns(RuntimeWarning, match="impute: no value in feature"):
        run({"op": "impute"}, empty)
    for spec in ({"op": "scale", "method": "robust"}, {"op": "dedup"},
                 {"op": "outliers"}, {"op": "select"}, {"op": "reduce"}):
        run(spec, empty)


def test_validate_rules_and_reasons():
    x = np.array([[0.0, 1, 1], [5, 1, 1], [-5, 1, 1], [0, np.nan, 1], [np.nan, 1, 1]])
    colors = np.array(["red", "blue", "green", "", "red"])
    ch = chunks_of(x, None, sizes=(5,), cats={"color": colors})[0]
    step = make_step({"op": "validate", "rules": {"a": {"min": -1, "max": 1}, "b": {"allow_nan": False},
                                                  "color": {"allowed": ["red", "blue"]}}}, "t")
    step.bind(NAMES)
    out, dropped, rejected = step.apply_rejects(ch)
    assert dropped == {"a > max": 1, "a < min": 1, "b missing": 1}
    assert list(out.ids) == [0, 4]  # NaN in a breaks no min/max rule; "" is not a category test
    step2 = make_step({"op": "validate", "rules": {"color": {"allowed": ["red"], "allow_nan": False}}}, "t")
    step2.bind(NAMES)
    _, d2, _ = step2.apply_rejects(ch)
    assert d2 == {"color missing": 1, "color not allowed": 2}
    with pytest.raises(ConfigError, match="min 2.0 > max 1.0"):
        make_step({"op": "validate", "rules": {"a": {"min": 2, "max": 1}}}, "t")
    with pytest.raises(ConfigError, match="unknown key"):
        make_step({"op": "validate", "rules": {"a": {"maximum": 2}}}, "t")


def test_dropna_categorical_and_label_columns():
    x = np.ones((4, 3))
    x[1, 2] = np.nan
    ch = chunks_of(x, np.array([0.0, 1, np.nan, 1]), sizes=(4,), cats={"k": np.array(["x", "y", "z", ""])})[0]
    step = make_step({"op": "dropna"}, "t")
    step.bind(NAMES)
    assert list(step.apply(ch)[0].ids) == [0]
    step = make_step({"op": "dropna", "columns": ["a", "k"], "label": False}, "t")
    step.bind(NAMES)
    assert list(step.apply(ch)[0].ids) == [0, 1, 2]


def test_dedup_keeps_smallest_id_and_compares_bytes():
    x = np.array([[1.0, 2, 3], [1, 2, 3], [-0.0, np.nan, 1], [0.0, np.nan, 1], [1, 2, 3], [1, 2, 4]])
    y = np.array([1, 1, 0, 0, 0, 1])
    step, outs = run({"op": "dedup"}, chunks_of(x, y, sizes=(3, 3)))
    kept = np.concatenate([c.ids for c, _ in outs])
    assert list(kept) == [0, 2, 4, 5]  # 1 dup of 0; 3 dup of 2 (-0.0 == 0.0, NaN == NaN); 4 differs in label
    assert step.stats()["n_duplicates"] == 2
    # equal hashes with different bytes are not duplicates
    dt = np.dtype([("h", "<u8"), ("id", "<i8"), ("w", "<u8", (2,))])
    recs = np.zeros(3, dt)
    recs["id"] = [5, 3, 9]
    recs["w"] = [[1, 2], [1, 3], [1, 2]]
    assert list(Dedup._duplicates(recs)) == [False, False, True]  # id 9 repeats id 5


def test_outliers_zscore_and_clip():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    x[3, 0] = 50.0
    step, outs = run({"op": "outliers", "threshold": 4.0}, chunks_of(x, None, sizes=(100, 100)))
    assert outs[0][1] == {"|z| > 4": 1} and 3 not in outs[0][0].ids
    clip, outs = run({"op": "outliers", "method": "quantile", "q_lo": 0.1, "q_hi": 0.9,
                      "action": "clip"}, chunks_of(x, None, sizes=(200,)))
    got = outs[0][0].features
    np.testing.assert_allclose(got, np.clip(x, np.quantile(x, 0.1, axis=0), np.quantile(x, 0.9, axis=0)))
    with pytest.raises(ConfigError, match="q_lo"):
        make_step({"op": "outliers", "q_lo": 0.9, "q_hi": 0.1}, "t")


def test_categorical_vocabulary_other_bucket_and_codes():
    v = np.array(["b", "a", "b", "c", "", "b", "a", "zz"])
    x = np.zeros((8, 1))
    ch = chunks_of(x, None, sizes=(3, 5), cats={"col": v})
    step, outs = run({"op": "categorical", "min_count": 2}, ch, names=["f"])
    assert step.feature_names_out_ == ["f", "col=a", "col=b", "col=other"]
    got = np.concatenate([c.features for c, _ in outs])[:, 1:]
    ref = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(got, ref)
    step, outs = run({"op": "categorical", "encoding": "codes"}, ch, names=["f"])
    codes = np.concatenate([c.extras["codes"] for c, _ in outs])[:, 0]   # int64, not a feature
    np.testing.assert_array_equal(codes, [1, 0, 1, 2, -1, 1, 0, 3])
    with pytest.raises(DataError, match="rare bucket"):
        run({"op": "categorical", "min_count": 2, "other": "a"}, ch, names=["f"])


def test_reduce_tolerance_picks_fewest_components():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(300, 2)) * [10, 1]
    x = np.hstack([z, z[:, :1] * 0.5 + rng.normal(size=(300, 1)) * 0.01])
    step, _ = run({"op": "reduce", "tolerance": 0.05}, chunks_of(x, None, sizes=(300,)))
    assert step.n_components_ == 1 and step.reconstruction_error_ <= 0.05
    step, _ = run({"op": "reduce", "tolerance": 1e-9}, chunks_of(x, None, sizes=(300,)))
    assert step.n_components_ == 3
    xn = x.copy()
    xn[0, 0] = np.nan
    with pytest.raises(DataError, match="missing values"):
        run({"op": "reduce"}, chunks_of(xn, None, sizes=(300,)))


def test_impute_per_column_and_bad_config():
    x, y = data(9)
    step, _ = run({"op": "impute", "strategy": "mean", "per_column": {"b": "median", "c": 7}},
                  chunks_of(x, y))
    np.testing.assert_allclose(step.statistics_, [np.nanmean(x[:, 0]), np.nanmedian(x[:, 1]), 7.0])
    with pytest.raises(ConfigError, match="per_column"):
        make_step({"op": "impute", "per_column": {"b": "mode"}}, "t")
    with pytest.raises(ConfigError, match="no feature named 'zz'"):
        run({"op": "impute", "columns": ["zz"]}, chunks_of(x, y))


def test_rejects_roundtrip(tmp_path):
    x, y = data(10, 20)
    ch = chunks_of(x, y, sizes=(10, 10))
    w = RejectsWriter(str(tmp_path / "parts" / "layer-000-rank-00000.h5"))
    w.write("0.0.dropna", ch[1], [(np.array([1, 3]), "missing value")], NAMES)
    w.write("0.0.dropna", ch[0], [(np.array([2]), "missing value")], NAMES)
    w.write("0.2.outliers", ch[0], [(np.array([0]), "|z| > 3")], NAMES)
    n = merge_rejects(str(tmp_path / "parts"), str(tmp_path / "rejects.h5"), {"x": {}})
    assert n == 4
    with h5py.File(tmp_path / "rejects.h5") as f:
        assert list(f["ids"][()]) == [0, 2, 11, 13]
        assert list(f["step"].asstr()[()]) == ["0.2.outliers", "0.0.dropna", "0.0.dropna", "0.0.dropna"]
        np.testing.assert_array_equal(f["steps/0.0.dropna/features"][()], x[[2, 11, 13]])
        assert json.loads(f.attrs["counts"]) == {"x": {}}
    assert not (tmp_path / "parts").exists()
