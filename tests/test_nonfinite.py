"""Non-finite values (±inf) and runs that drop most of their rows (issue 12, items 1 and 2).

The policy (docs/steps.md "Non-finite values"): ±inf is a missing value to
dropna / validate / impute, fitted statistics never see it, a fitted statistic
that is not finite is an error naming the step and the column, the writer
refuses non-finite features unless ``output.nonfinite`` allows them, and a run
that drops more than ``output.max_drop_fraction`` of its rows fails.
"""

import json
import os
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest
from mpi4py import MPI

from conftest import mpirun, write_config
from hpcprep.chunk import Chunk
from hpcprep.config import parse_config
from hpcprep.errors import ConfigError, DataError
from hpcprep.output.verify import read_all
from hpcprep.output.checks import output_problem
from hpcprep.steps import LayerContext, Moments, make_step
from hpcprep.steps.moments import _BLOCK_BYTES

CTX = LayerContext(MPI.COMM_SELF, 0, 0)
NAMES = ["a", "b", "c"]


def chunks_of(x, y=None, sizes=(7, 0, 30, 13)):
    out, lo = [], 0
    for cid, n in enumerate(sizes):
        out.append(Chunk(cid, np.arange(lo, lo + n, dtype=np.int64), x[lo:lo + n],
                         None if y is None else y[lo:lo + n], {}, source="mem"))
        lo += n
    return out


def fitted(spec, chunks, names=NAMES, where="standardize[0].steps[1]"):
    step = make_step(spec, where)
    step.bind(names)
    if step.needs_fit:
        step.fit_layer(CTX, iter(chunks))
    return step


def with_inf(seed=0, n=50):
    """Data with NaN, +inf and -inf (a row with both NaN and inf too); and the same with NaN for ±inf."""
    rng = np.random.default_rng(seed)
    x = rng.normal([1, -5, 100], [1, 3, 20], size=(n, 3))
    x[3, 0] = np.nan
    x[5, 1] = np.inf
    x[8, 2] = -np.inf
    x[9, 0], x[9, 1] = np.nan, np.inf
    return x, np.where(np.isfinite(x), x, np.nan)


# ------------------------------------------------------------------ steps, in-process
def test_dropna_counts_nonfinite_apart_from_missing():
    x, _ = with_inf()
    y = np.zeros(50)
    y[20], y[21] = np.inf, np.nan
    step = fitted({"op": "dropna"}, [])
    out, dropped = step.apply(chunks_of(x, y, sizes=(50,))[0])
    assert dropped == {"missing value": 3, "non-finite value": 3}   # rows 3, 9, 21 / 5, 8, 20
    assert np.isfinite(out.features).all() and len(out) == 44
    _, _, rejected = step.apply_rejects(chunks_of(x, y, sizes=(50,))[0])
    assert {r: sorted(p.tolist()) for p, r in rejected} == {"missing value": [3, 9, 21],
                                                             "non-finite value": [5, 8, 20]}


def test_validate_rejects_inf_under_allow_nan_and_bounds():
    x, _ = with_inf()
    x[30, 0] = -np.inf
    step = fitted({"op": "validate", "rules": {"a": {"allow_nan": False},
                                               "b": {"min": -1e9},      # +inf: no bound would catch it
                                               "c": {"max": 1e9}}}, [])  # -inf: likewise
    _, dropped = step.apply(chunks_of(x, sizes=(50,))[0])
    assert dropped == {"a missing": 2, "a non-finite": 1, "b non-finite": 1, "c non-finite": 1}
    step = fitted({"op": "validate", "rules": {"a": {}}}, [])            # no check: nothing dropped
    assert step.apply(chunks_of(x, sizes=(50,))[0])[1] == {}


def test_impute_fills_inf_and_fits_on_finite_values():
    x, x_nan = with_inf()
    for strategy, ref in (("mean", np.nanmean(x_nan, axis=0)), ("median", np.nanmedian(x_nan, axis=0))):
        chunks = chunks_of(x)
        step = fitted({"op": "impute", "strategy": strategy}, chunks)
        np.testing.assert_allclose(step.statistics_, ref, rtol=1e-12)
        out = np.concatenate([step.apply(c)[0].features for c in chunks])
        assert np.isfinite(out).all()
        bad = ~np.isfinite(x)
        np.testing.assert_allclose(out[bad], np.broadcast_to(ref, x.shape)[bad], rtol=1e-12)


@pytest.mark.parametrize("spec, attrs", [
    ({"op": "scale"}, ("mean_", "scale_")),
    ({"op": "scale", "method": "minmax"}, ("data_min_", "data_max_", "scale_", "min_")),
    ({"op": "scale", "method": "robust"}, ("center_", "scale_")),
    ({"op": "outliers", "method": "zscore"}, ("mean_", "std_", "lo_", "hi_")),
    ({"op": "outliers", "method": "quantile"}, ("lo_", "hi_")),
    ({"op": "select"}, ("variance_", "missing_rate_")),
])
def test_fitted_statistics_ignore_inf(spec, attrs):
    """A step fitted on data with ±inf equals the step fitted with NaN in their place."""
    x, x_nan = with_inf()
    a, b = fitted(spec, chunks_of(x)), fitted(spec, chunks_of(x_nan))
    for attr in attrs:
        assert np.isfinite(getattr(a, attr)[a.columns_ if attr in ("lo_", "hi_") else slice(None)]).all()
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)


def test_scale_matches_pandas_on_finite_values():
    x, x_nan = with_inf()
    step = fitted({"op": "scale"}, chunks_of(x))
    df = pd.DataFrame(x_nan)
    np.testing.assert_allclose(step.mean_, df.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(step.scale_, df.std(ddof=0).to_numpy(), rtol=1e-12)


def test_moments_fast_path_ignores_inf_bit_for_bit():
    """The blocked path (large C-ordered arrays) gives the same bits as NaN in place of ±inf."""
    rng = np.random.default_rng(3)
    n = 3 * _BLOCK_BYTES // (8 * 4) + 11
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[[5, n - 2], 1] = np.inf
    x[n // 2, 3] = -np.inf
    x[7, 0] = np.nan
    x_nan = np.where(np.isfinite(x), x, np.nan).astype(np.float32)
    a, b = Moments.of(x), Moments.of(x_nan)
    for f in ("n", "mean", "m2"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.n.tolist() == [n - 1, n - 2, n, n - 1]
    clean = np.nan_to_num(x_nan, nan=0.5)   # finite data: the same bits as before the change
    ref = clean.astype(np.float64)
    c = Moments.of(clean)
    np.testing.assert_array_equal(c.mean, ref.sum(axis=0) / n)
    np.testing.assert_array_equal(c.m2, ((ref - c.mean) ** 2).sum(axis=0))


@pytest.mark.parametrize("spec, what", [
    ({"op": "scale"}, "std"),
    ({"op": "outliers"}, "std"),
    ({"op": "select"}, "variance"),
    ({"op": "impute"}, "fill"),
    ({"op": "scale", "method": "minmax"}, "range"),
    ({"op": "scale", "method": "robust"}, "quantile range"),
])
def test_fitted_statistic_that_is_not_finite_is_an_error(spec, what):
    """Values near 1e308 overflow float64 statistics: an error naming the step and the column."""
    x = np.ones((40, 3))
    x[:, 1] = np.where(np.arange(40) % 2, 1.7e308, -1.7e308)
    if what == "fill":
        x[:, 1] = 1.7e308    # the sum overflows, so the mean does
    with pytest.raises(DataError) as e:
        fitted(spec, chunks_of(x, sizes=(40,)), where="standardize[0].steps[3]")
    msg = str(e.value)
    assert msg.startswith(f"standardize[0].steps[3] {spec['op']}: the fitted {what} of feature 'b' "
                          f"is not finite"), msg


# ------------------------------------------------------------------ the verdict, in-process
def parse(*sets):
    return parse_config('[input]\npaths = ["raw/*.h5"]\n', "t.toml", sets, 1, base_dir="/data")


OUT = parse().output   # the defaults: max_drop_fraction = 0.5, nonfinite = "nan"


def test_output_keys_are_validated():
    assert (OUT.max_drop_fraction, OUT.nonfinite) == (0.5, "nan")
    assert parse("output.max_drop_fraction=1").output.max_drop_fraction == 1.0
    with pytest.raises(ConfigError, match="output.max_drop_fraction = 1.5: must lie in"):
        parse("output.max_drop_fraction=1.5")
    with pytest.raises(ConfigError, match="output.max_drop_fraction = nan"):
        parse("output.max_drop_fraction=nan")
    with pytest.raises(ConfigError, match="output.nonfinite = 'inf': expected one of 'nan', 'none', 'any'"):
        parse('output.nonfinite="inf"')


def test_output_problem_drop_fraction():
    drops = {"input": {"malformed row": 100}, "0.0.dropna": {"missing value": 300},
             "0.1.validate": {"a < min": 250, "a > max": 10}}
    msg = output_problem(OUT, 1000, drops, [])
    assert "660 of 1,000 input rows (66.0%)" in msg
    assert "standardize[0].steps[0] dropna: 'missing value' (300 rows)" in msg
    assert output_problem(OUT, 1320, drops, []) is None                       # exactly a half
    assert output_problem(replace(OUT, max_drop_fraction=1.0), 660, drops, []) is None
    assert "the reader (input): 'malformed row'" in output_problem(OUT, 100, {"input": {"malformed row": 100}}, [])


def test_output_problem_nonfinite_policies():
    shards = [((0, 50), "shards/part-00001.h5", {"a": 2}, {}),
              ((0, 0), "shards/part-00000.h5", {"a": 1}, {"b": 3, "c": 1})]
    msg = output_problem(OUT, 100, {}, shards)
    assert "shard shards/part-00000.h5 would hold 4 non-finite value(s) (±inf) in feature(s) " \
           "'b' (3), 'c' (1)." in msg, msg
    assert 'op = "dropna"' in msg and 'output.nonfinite = "any"' in msg
    msg = output_problem(replace(OUT, nonfinite="none"), 100, {}, shards)
    assert "part-00000.h5 would hold 5" in msg and "1 more shard(s)" in msg
    assert output_problem(replace(OUT, nonfinite="any"), 100, {}, shards) is None
    assert output_problem(OUT, 100, {}, shards[:1]) is None                    # NaN only


# ------------------------------------------------------------------ whole runs under mpiexec
H5_CONFIG = """\
seed = 3
[input]
paths = ["raw/*.h5"]
label = "labels"
chunk_rows = 40
[[standardize]]
steps = [{steps}]
[[sample]]
op = "shuffle"
[output]
path = "out"
"""


def write_h5(folder, x, files=2):
    (folder / "raw").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(x)), files)):
        with h5py.File(folder / "raw" / f"part-{i}.h5", "w") as f:
            f["features"] = x[part]
            f["labels"] = (part % 2).astype(np.int64)


def h5_with_inf(folder, n=300):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3)) * [1, 5, 10] + [0, 3, -2]
    x[[7, 150], 1] = np.inf
    x[222, 2] = -np.inf
    x[40, 0] = np.nan
    write_h5(folder, x)
    return x


def assert_failed_once(proc, needle, folder):
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert needle in text, text
    assert text.count(needle) == 1, f"printed more than once:\n{text}"
    assert not (folder / "out").exists()
    assert not [p for p in os.listdir(folder) if p.startswith(".out.tmp")], "temporary output left"


@pytest.mark.parametrize("ranks", [1, 3])
def test_hdf5_inf_dropped_and_scale_finite(tmp_path, ranks):
    x = h5_with_inf(tmp_path)
    cfg = write_config(tmp_path / "cfg.toml", H5_CONFIG.format(steps='{ op = "dropna" }, { op = "scale" }'))
    mpirun(ranks, ["run", cfg, "--quiet"], cwd=tmp_path)
    ok = np.isfinite(x).all(axis=1)
    got = read_all(tmp_path / "out")
    assert np.array_equal(np.sort(got["ids"]), np.flatnonzero(ok))
    assert np.isfinite(got["features"]).all()
    with h5py.File(tmp_path / "out" / "data.h5") as f:
        counts = json.loads(f.attrs["counts"])
        assert counts["0.0.dropna"] == {"missing value": 1, "non-finite value": 3}
        np.testing.assert_allclose(f["stats/0.1.scale/mean"][()], x[ok].mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(f["stats/0.1.scale/std"][()], x[ok].std(axis=0), rtol=1e-12)


CSV_CONFIG = """\
seed = 1
[input]
paths = ["in.csv"]
features = ["a", "b"]
label = "y"
chunk_rows = 7
[[standardize]]
steps = [{ op = "dropna" }, { op = "scale" }]
[output]
path = "out"
"""


def test_csv_1e400_inf_minus_inf_dropped(tmp_path):
    rng = np.random.default_rng(2)
    rows = [[f"{v:.6f}" for v in rng.normal(size=2)] for _ in range(30)]
    rows[4][0], rows[11][1], rows[25][0], rows[17][1] = "1e400", "inf", "-inf", "NA"
    (tmp_path / "in.csv").write_text("a,b,y\n" + "".join(f"{a},{b},{i % 2}\n"
                                                         for i, (a, b) in enumerate(rows)))
    cfg = write_config(tmp_path / "cfg.toml", CSV_CONFIG)
    mpirun(3, ["run", cfg, "--quiet"], cwd=tmp_path)
    ref = pd.read_csv(tmp_path / "in.csv").drop(index=[4, 11, 17, 25])
    got = read_all(tmp_path / "out")
    assert np.array_equal(np.sort(got["ids"]), ref.index.to_numpy())
    with h5py.File(tmp_path / "out" / "data.h5") as f:
        assert json.loads(f.attrs["counts"])["0.0.dropna"] == {"missing value": 1,
                                                               "non-finite value": 3}
        np.testing.assert_allclose(f["stats/0.1.scale/mean"][()], ref[["a", "b"]].mean(), rtol=1e-12)
        np.testing.assert_allclose(f["stats/0.1.scale/std"][()], ref[["a", "b"]].std(ddof=0),
                                   rtol=1e-12)


@pytest.mark.parametrize("ranks", [1, 3])
def test_inf_without_dropna_is_refused_before_commit(tmp_path, ranks):
    h5_with_inf(tmp_path)
    cfg = write_config(tmp_path / "cfg.toml", H5_CONFIG.format(steps='{ op = "scale" }'))
    proc = mpirun(ranks, ["run", cfg, "--quiet"], cwd=tmp_path, check=False, timeout=60)
    assert_failed_once(proc, 'output.nonfinite = "nan": shard shards/part-0000', tmp_path)
    assert "non-finite value(s) (±inf) in feature(s) 'f" in proc.stderr
    assert 'op = "dropna"' in proc.stderr


def test_output_nonfinite_any_lets_inf_through(tmp_path):
    x = h5_with_inf(tmp_path)
    cfg = write_config(tmp_path / "cfg.toml", H5_CONFIG.format(steps='{ op = "scale" }'))
    mpirun(3, ["run", cfg, "--quiet", "--set", 'output.nonfinite="any"'], cwd=tmp_path)
    got = read_all(tmp_path / "out")
    f = got["features"][np.argsort(got["ids"])]
    assert np.array_equal(np.isposinf(f), np.isposinf(x)) and np.array_equal(np.isneginf(f), np.isneginf(x))
    assert np.isfinite(f[np.isfinite(x)]).all()   # the other values of those columns are fine


@pytest.mark.parametrize("ranks", [1, 3])
def test_huge_column_is_an_error_naming_step_and_column(tmp_path, ranks):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 3))
    x[:, 2] = np.where(np.arange(200) % 2, 1.7e308, -1.7e308)   # mean 0, variance beyond float64
    write_h5(tmp_path, x)
    cfg = write_config(tmp_path / "cfg.toml", H5_CONFIG.format(steps='{ op = "dropna" }, { op = "scale" }'))
    proc = mpirun(ranks, ["run", cfg, "--quiet"], cwd=tmp_path, check=False, timeout=60)
    assert_failed_once(proc, "standardize[0].steps[1] scale: the fitted std of feature 'f2' is "
                             "not finite", tmp_path)


DROP_STEPS = '{ op = "validate", rules = { f0 = { min = 0.8 } } }, { op = "dropna" }'


@pytest.mark.parametrize("ranks", [1, 3])
def test_dropping_most_rows_fails_naming_step_and_reason(tmp_path, ranks):
    h5_with_inf(tmp_path)
    cfg = write_config(tmp_path / "cfg.toml", H5_CONFIG.format(steps=DROP_STEPS))
    proc = mpirun(ranks, ["run", cfg, "--quiet"], cwd=tmp_path, check=False, timeout=60)
    assert_failed_once(proc, "more than output.max_drop_fraction = 0.5; most by "
                             "standardize[0].steps[0] validate: 'f0 < min'", tmp_path)


def test_max_drop_fraction_one_turns_the_check_off(tmp_path):
    x = h5_with_inf(tmp_path)
    cfg = write_config(tmp_path / "cfg.toml", H5_CONFIG.format(steps=DROP_STEPS))
    mpirun(3, ["run", cfg, "--quiet", "--set", "output.max_drop_fraction=1.0"], cwd=tmp_path)
    with np.errstate(invalid="ignore"):
        kept = np.flatnonzero((x[:, 0] >= 0.8) & np.isfinite(x).all(axis=1))
    assert np.array_equal(np.sort(read_all(tmp_path / "out")["ids"]), kept)


def test_sampling_few_rows_is_not_a_drop(tmp_path):
    rng = np.random.default_rng(5)
    write_h5(tmp_path, rng.normal(size=(1000, 2)))
    cfg = write_config(tmp_path / "cfg.toml", H5_CONFIG.format(steps='{ op = "dropna" }').replace(
        'op = "shuffle"', 'op = "sample"\nfraction = 0.01'))
    mpirun(3, ["run", cfg, "--quiet"], cwd=tmp_path)
    assert len(read_all(tmp_path / "out")["ids"]) == 10
