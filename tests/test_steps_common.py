"""The common test of every standardization step (issue 3).

Every step (alone or in a chain, one or two standardization layers) runs on a
generated messy dataset at ``mpiexec -n 1, 2, 3, 4`` fused and layered at 3
ranks (input 1, standardize [1], sample [1]), 4 ranks (1, [1], [2]; two
layers: 1, [1, 1], [1]) and 5 ranks (2, [2], [1]: a standardization layer of
two ranks). Each run is compared with a single-process pandas /
scikit-learn reference: same rows kept, every value within 1e-6 relative,
drop counts per step and reason equal, counts adding up to rows in - rows out,
the rejects file naming exactly the dropped rows, ``Transform`` reproducing
the output from the raw rows; and the output is identical for every layout.

One ``mpiexec`` per layout runs all configs (this file is its own driver:
``python test_steps_common.py spec.json``), so the suite stays small on 2 cores.

The pipeline keeps features in the input's dtype (float32 here) between
steps, so the reference rounds to float32 after each value-changing step too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

ROWS, FEATURES, FILES = 3000, 6, 3
NAMES = [f"f{i}" for i in range(FEATURES)]

HEAD = """\
seed = 11
[input]
paths = ["raw/*.h5"]
label = "labels"
chunk_rows = 256
[[sample]]
op = "shuffle"
[output]
overwrite = true
dtype = "float64"
"""

#: name -> list of standardization layers, each (steps as TOML inline tables, rejects)
CONFIGS = {
    "filters": [(['{ op = "validate", rules = { f0 = { min = -25.0, max = 25.0 }, '
                  'f1 = { allow_nan = false } } }', '{ op = "dropna", columns = ["f2"] }'], True)],
    "standard": [(['{ op = "dropna" }', '{ op = "scale", method = "standard" }'], False)],
    "minmax": [(['{ op = "impute", strategy = "mean" }', '{ op = "scale", method = "minmax" }'], False)],
    "robust": [(['{ op = "impute", strategy = "median", per_column = { f3 = 1.5 } }',
                 '{ op = "scale", method = "robust" }'], False)],
    "dedup_z": [(['{ op = "dropna" }', '{ op = "dedup" }',
                  '{ op = "outliers", method = "zscore", threshold = 5.0 }'], True)],
    "dedup_cols": [(['{ op = "dedup", columns = ["f0", "f1"], label = false }'], False)],
    "qclip": [(['{ op = "dropna" }',
                '{ op = "outliers", method = "quantile", q_lo = 0.05, q_hi = 0.95, action = "clip" }'],
               False)],
    "select": [(['{ op = "select", max_missing = 0.002 }', '{ op = "dropna" }',
                 '{ op = "outliers", method = "quantile", q_lo = 0.002, q_hi = 0.998 }',
                 '{ op = "select", min_abs_corr = 0.05 }', '{ op = "scale" }'], False)],
    "reduce": [(['{ op = "dropna" }', '{ op = "scale" }', '{ op = "reduce", tolerance = 0.2 }'], False)],
    "two_layers": [(['{ op = "validate", rules = { f2 = { max = 40.0 } } }', '{ op = "dedup" }',
                     '{ op = "outliers", threshold = 4.0, action = "clip" }'], True),
                   (['{ op = "impute", strategy = "median" }', '{ op = "scale", method = "minmax" }',
                     '{ op = "select", min_abs_corr = 0.02 }', '{ op = "reduce", tolerance = 0.1 }'],
                    True)],
}


def config_text(layers) -> str:
    text = HEAD
    for steps, rejects in layers:
        text += f"[[standardize]]\nrejects = {'true' if rejects else 'false'}\nsteps = [\n"
        text += ",\n".join(f"  {s}" for s in steps) + "\n]\n"
    return text


def layered(n_std, sample):
    return ["layout.fused=false", "layout.input=1", f"layout.standardize={[1] * n_std}",
            f"layout.sample=[{sample}]"]


#: name -> (ranks, overrides for one-layer configs or None to skip, for two-layer configs or None)
LAYOUTS = {
    "n1": (1, [], []),
    "n2": (2, [], []),
    "n3": (3, [], []),
    "n4": (4, [], []),
    "layered3": (3, layered(1, 1), None),
    "layered4": (4, layered(1, 2), layered(2, 1)),
    "layered5": (5, ["layout.fused=false", "layout.input=2", "layout.standardize=[2]",
                     "layout.sample=[1]"], None),
}


# ---------------------------------------------------------------- MPI driver
def _driver(spec_path):
    """Run every job of a spec on COMM_WORLD (executed under mpiexec)."""
    from mpi4py import MPI

    from hpcprep.mpi.agree import root_decides
    from hpcprep.config import parse_config
    from hpcprep.pipeline import run_pipeline
    from hpcprep.progress import Progress

    comm = MPI.COMM_WORLD
    spec = json.loads(Path(spec_path).read_text())
    cleanups = []
    try:
        for job in spec["jobs"]:
            cfg = root_decides(comm, lambda: parse_config(job["text"], job["name"], job["sets"],
                                                          comm.Get_size(), base_dir=spec["work"]))
            run_pipeline(cfg, comm, Progress(False, quiet=True), cleanups)
        if spec.get("categorical"):
            _categorical_layer(comm, spec["work"], spec["categorical"])
    except BaseException as e:  # noqa: BLE001 - end every rank, as the CLI does
        from hpcprep.mpi.agree import fail_hard

        fail_hard(comm, e, debug=True, cleanups=cleanups)


def raw_arrays(raw_dir):
    xs, ys = [], []
    for path in sorted(Path(raw_dir).glob("*.h5")):
        with h5py.File(path) as f:
            xs.append(f["features"][()])
            ys.append(f["labels"][()])
    return np.concatenate(xs), np.concatenate(ys)


def categories(n):
    """Two raw categorical columns for rows 0..n-1 (a pure function of the row id)."""
    rng = np.random.default_rng(99)
    color = rng.choice(np.array(["red", "green", "blue", "teal", "mauve", "ochre", ""]), n,
                       p=[0.4, 0.25, 0.2, 0.1, 0.02, 0.01, 0.02])
    size = rng.choice(np.array(["S", "M", "L", "XL"]), n, p=[0.3, 0.4, 0.25, 0.05])
    return {"color": color, "size": size}


CAT_TABLE = {"steps": [
    {"op": "validate", "rules": {"color": {"allowed": ["red", "green", "blue", "teal", "ochre"]}}},
    {"op": "categorical", "columns": ["color"], "min_count": 40},
    {"op": "categorical", "columns": ["size"], "encoding": "codes"},
    {"op": "scale"}], "rejects": False}


def _categorical_layer(comm, work, out_name):
    """The categorical step has no file input yet (CSV wiring): run its layer on in-memory chunks."""
    from hpcprep.chunk import Chunk
    from hpcprep.layers.standardize import StandardizeLayer
    from hpcprep.layers.streams import ChunkStream
    from hpcprep.partition import balanced_contiguous

    x, y = raw_arrays(Path(work) / "raw")
    cats = categories(len(x))
    starts = list(range(0, len(x), 256))
    lo, hi = balanced_contiguous([min(256, len(x) - s) for s in starts], comm.Get_size())[comm.Get_rank()]
    mine = [Chunk(i, np.arange(s, min(s + 256, len(x)), dtype=np.int64), x[s:s + 256], y[s:s + 256],
                  {f"cat:{k}": v[s:s + 256] for k, v in cats.items()}, source="mem")
            for i, s in list(enumerate(starts))[lo:hi]]

    class Listed(ChunkStream):
        def iterate(self, final):
            yield from mine

    layer = StandardizeLayer(0, CAT_TABLE, NAMES, comm, 11, lambda m: None)
    layer.fit(Listed())
    outs = [layer.apply_all(c, count=True) for c in Listed().iterate(True)]
    ids = np.concatenate([c.ids for c in outs])
    feats = np.concatenate([c.features for c in outs])
    codes = np.concatenate([c.extras["codes"] for c in outs])   # encoding = "codes": int64
    got = comm.gather((ids, feats, layer.counts, codes), root=0)
    if comm.Get_rank() == 0:
        counts = {}
        for _, _, c, _ in got:
            for label, reasons in c.items():
                for r, n in reasons.items():
                    counts.setdefault(label, {}).setdefault(r, 0)
                    counts[label][r] += n
        np.savez(Path(work) / out_name, ids=np.concatenate([g[0] for g in got]),
                 features=np.concatenate([g[1] for g in got]), codes=np.concatenate([g[3] for g in got]),
                 names=np.array(layer.feature_names_out), counts=json.dumps(counts))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _driver(sys.argv[1])
    sys.exit(0)


# ------------------------------------------------------------------- reference
class Ref:
    """Single-process reference: ids, float32 features, labels, names, drops per step label."""

    def __init__(self, x, y):
        self.ids = np.arange(len(x), dtype=np.int64)
        self.x = x.astype(np.float32)
        self.y = y
        self.names = list(NAMES)
        self.counts = {}
        self.rejected = {}  # id -> step label

    def df(self):
        return pd.DataFrame(self.x.astype(np.float64), columns=self.names)

    def drop(self, label, masks):
        taken = np.zeros(len(self.ids), dtype=bool)
        bucket = self.counts.setdefault(label, {})
        for reason, m in masks:
            mine = np.asarray(m) & ~taken
            if mine.sum():
                bucket[reason] = bucket.get(reason, 0) + int(mine.sum())
                self.rejected.update({int(i): label for i in self.ids[mine]})
            taken |= mine
        keep = ~taken
        self.ids, self.x, self.y = self.ids[keep], self.x[keep], self.y[keep]

    def set_x(self, x, names=None):
        self.x = np.asarray(x, dtype=np.float64).astype(np.float32)
        if names is not None:
            self.names = list(names)


def parse_step(text):
    import tomllib

    return tomllib.loads(f"s = {text}")["s"]


def reference(x, y, layers):
    """Apply every step with pandas / scikit-learn, in order."""
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    r = Ref(x, y)
    for li, (steps, _) in enumerate(layers):
        for j, text in enumerate(steps):
            s = parse_step(text)
            op, label = s["op"], f"{li}.{j}.{s['op']}"
            df = r.df()
            r.counts.setdefault(label, {})
            if op == "validate":
                masks = []
                for col, rule in s["rules"].items():
                    v = df[col]
                    if not rule.get("allow_nan", True):
                        masks.append((f"{col} missing", v.isna().to_numpy()))
                    if "min" in rule:
                        masks.append((f"{col} < min", (v < rule["min"]).to_numpy()))
                    if "max" in rule:
                        masks.append((f"{col} > max", (v > rule["max"]).to_numpy()))
                r.drop(label, masks)
            elif op == "dropna":
                cols = s.get("columns") or r.names
                r.drop(label, [("missing value", df[cols].isna().any(axis=1).to_numpy())])
            elif op == "dedup":
                cols = s.get("columns") or r.names
                key = df[cols].copy()
                if s.get("label", True):
                    key["__y"] = r.y
                r.drop(label, [("duplicate", key.duplicated(keep="first").to_numpy())])
            elif op == "outliers":
                x64 = df.to_numpy()
                if s.get("method", "zscore") == "zscore":
                    t = s.get("threshold", 3.0)
                    mean, std = df.mean(), df.std(ddof=0)
                    if s.get("action", "drop") == "clip":
                        ok = (std > 0).to_numpy()
                        lo = np.where(ok, mean - t * std, -np.inf)
                        hi = np.where(ok, mean + t * std, np.inf)
                        r.set_x(np.clip(x64, lo, hi))
                        continue
                    bad = ((df - mean) / std).abs().gt(t).any(axis=1).to_numpy()
                    r.drop(label, [(f"|z| > {t:g}", bad)])
                else:
                    ql, qh = s["q_lo"], s["q_hi"]
                    lo, hi = np.nanquantile(x64, ql, axis=0), np.nanquantile(x64, qh, axis=0)
                    if s.get("action", "drop") == "clip":
                        r.set_x(np.clip(x64, lo, hi))
                        continue
                    with np.errstate(invalid="ignore"):
                        bad = ((x64 < lo) | (x64 > hi)).any(axis=1)
                    r.drop(label, [(f"outside [q{ql:g}, q{qh:g}]", bad)])
            elif op == "impute":
                out = SimpleImputer(strategy=s.get("strategy", "mean")).fit_transform(df.to_numpy())
                for col, v in s.get("per_column", {}).items():
                    j2 = r.names.index(col)
                    out[:, j2] = df[col].fillna(v).to_numpy()
                r.set_x(out)
            elif op == "scale":
                cls = {"standard": StandardScaler, "minmax": MinMaxScaler,
                       "robust": RobustScaler}[s.get("method", "standard")]
                r.set_x(cls().fit(df.to_numpy()).transform(df.to_numpy()))
            elif op == "select":
                keep = df.isna().mean().to_numpy() <= s.get("max_missing", 0.5)
                keep &= df.var(ddof=0).to_numpy() > s.get("min_variance", 0.0)
                if s.get("min_abs_corr", 0.0) > 0:
                    corr = df.corrwith(pd.Series(r.y.astype(float))).to_numpy()
                    keep &= np.abs(corr) >= s["min_abs_corr"]
                r.set_x(df.to_numpy()[:, keep], [n for n, k in zip(r.names, keep) if k])
            elif op == "reduce":
                x64 = df.to_numpy()
                ratio = PCA(n_components=x64.shape[1], svd_solver="full").fit(x64).explained_variance_ratio_
                rest = np.array([ratio[k:].sum() for k in range(len(ratio))] + [0.0])
                k = max(1, int(np.flatnonzero(rest <= s["tolerance"])[0]))
                pca = PCA(n_components=k, svd_solver="full").fit(x64)
                r.set_x(pca.transform(x64), [f"pc{i}" for i in range(k)])
                r.pca = pca
            else:
                raise AssertionError(op)
    r.counts = {k: v for k, v in r.counts.items()}
    return r


# ----------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def runs(small_raw, tmp_path_factory):
    """Every config at every layout: {layout: {config: output folder}}, plus categorical outputs."""
    work = tmp_path_factory.mktemp("steps_common")
    os.symlink(small_raw, work / "raw")
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    outs = {}
    for lname, (n, one, two) in LAYOUTS.items():
        jobs = []
        for cname, layers in CONFIGS.items():
            sets = one if len(layers) == 1 else two
            if sets is None:
                continue
            jobs.append({"name": cname, "text": config_text(layers),
                         "sets": sets + [f"output.path={lname}-{cname}"]})
            outs.setdefault(lname, {})[cname] = work / f"{lname}-{cname}"
        spec = {"work": str(work), "jobs": jobs,
                "categorical": f"cat-{lname}.npz" if not LAYOUTS[lname][1] else None}
        (work / f"spec-{lname}.json").write_text(json.dumps(spec))
        cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(n), sys.executable,
               str(Path(__file__).resolve()), str(work / f"spec-{lname}.json")]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=180, env=env)
        assert proc.returncode == 0, f"{lname}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return work, outs


def read_out(path):
    from hpcprep.output.verify import read_all

    got = read_all(path)
    o = np.argsort(got["ids"], kind="stable")
    with h5py.File(Path(path) / "data.h5") as f:
        counts = json.loads(f.attrs["counts"])
        names = list(f["features"].attrs["feature_names"].astype(str))
        stats = {}
        f["stats"].visititems(lambda k, v: stats.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset)
                              else None)
    return {"ids": got["ids"][o], "x": got["features"][o], "y": got["labels"][o], "counts": counts,
            "names": names, "stats": stats, "raw": got}


@pytest.mark.parametrize("cname", list(CONFIGS))
def test_step_matches_reference(runs, small_raw, cname):
    work, outs = runs
    x, y = raw_arrays(small_raw)
    layers = CONFIGS[cname]
    ref = reference(x, y, layers)
    got = read_out(outs["n3"][cname])
    assert np.array_equal(got["ids"], ref.ids), f"{cname}: kept rows differ from the reference"
    assert np.array_equal(got["y"], ref.y)
    assert got["names"] == ref.names
    want = ref.x.astype(np.float64)
    if cname in ("reduce", "two_layers"):  # components are defined up to sign
        sign = np.sign((got["x"] * want).sum(axis=0))
        want = want * sign
    np.testing.assert_allclose(got["x"], want, rtol=1e-6, atol=1e-6, err_msg=cname)
    # drop counts: equal to the reference per step and reason, adding up to rows in - rows out
    counts = {k: v for k, v in got["counts"].items() if v}
    assert counts == {k: v for k, v in ref.counts.items() if v}
    assert sum(n for r in got["counts"].values() for n in r.values()) == ROWS - len(got["ids"])


def test_fitted_stats_match_sklearn(runs, small_raw):
    from sklearn.preprocessing import MinMaxScaler, RobustScaler

    work, outs = runs
    x, y = raw_arrays(small_raw)
    st = read_out(outs["n2"]["minmax"])["stats"]
    ref = reference(x, y, [(CONFIGS["minmax"][0][0][:1], False)])
    mm = MinMaxScaler().fit(ref.x.astype(np.float64))
    np.testing.assert_allclose(st["0.1.scale/scale"], mm.scale_, rtol=1e-6)
    np.testing.assert_allclose(st["0.1.scale/min"], mm.min_, rtol=1e-6, atol=1e-12)
    st = read_out(outs["n4"]["robust"])["stats"]
    ref = reference(x, y, [(CONFIGS["robust"][0][0][:1], False)])
    rs = RobustScaler().fit(ref.x.astype(np.float64))
    np.testing.assert_allclose(st["0.1.scale/center"], rs.center_, rtol=1e-6)
    np.testing.assert_allclose(st["0.1.scale/scale"], rs.scale_, rtol=1e-6)
    assert st["0.1.scale/exact"].all() and st["0.0.impute/exact"].all()
    st = read_out(outs["n4"]["reduce"])["stats"]
    ref = reference(x, y, CONFIGS["reduce"])
    comp = st["0.2.reduce/components"]
    assert comp.shape == ref.pca.components_.shape
    np.testing.assert_allclose(np.abs((comp * ref.pca.components_).sum(axis=1)), 1.0, rtol=1e-6)


@pytest.mark.parametrize("cname", list(CONFIGS))
def test_identical_for_every_layout(runs, cname):
    work, outs = runs
    base = read_out(outs["n1"][cname])
    for lname, by_config in outs.items():
        if cname not in by_config:
            continue
        got = read_out(by_config[cname])
        for key in ("ids", "features", "labels"):
            assert np.array_equal(got["raw"][key], base["raw"][key], equal_nan=key == "features"), \
                f"{lname}/{cname}: {key} differs"
        assert got["counts"] == base["counts"], lname
        assert set(got["stats"]) == set(base["stats"]), lname
        for k, v in base["stats"].items():
            if k in ("mean", "std"):  # the writer's summary of the output, merged per shard
                np.testing.assert_allclose(got["stats"][k], v, rtol=1e-9, atol=1e-12)
                continue
            same = (np.array_equal(got["stats"][k], v, equal_nan=True) if np.asarray(v).dtype.kind == "f"
                    else np.array_equal(got["stats"][k], v))
            assert same, f"{lname}/{cname}: stats {k} differs"


@pytest.mark.parametrize("cname", [c for c, layers in CONFIGS.items() if any(r for _, r in layers)])
def test_rejects_file_names_every_dropped_row(runs, small_raw, cname):
    work, outs = runs
    x, y = raw_arrays(small_raw)
    ref = reference(x, y, CONFIGS[cname])
    for lname, by_config in outs.items():
        if cname not in by_config:
            continue
        with h5py.File(by_config[cname] / "rejects.h5") as f:
            ids = f["ids"][()]
            steps = f["step"].asstr()[()]
            files = f["file"].asstr()[()]
            rows = f["row"][()]
            assert list(ids) == sorted(ref.rejected), lname
            assert [ref.rejected[int(i)] for i in ids] == list(steps), lname
            # file and row point back to the raw row: 1000 rows per file
            assert [os.path.basename(p) for p in files] == [f"part-{i // 1000:05d}.h5" for i in ids]
            assert np.array_equal(rows, ids % 1000)
            for label in f["steps"]:
                g = f["steps"][label]
                if label.startswith("0.0."):  # first step: features as read
                    np.testing.assert_array_equal(g["features"][()], x[g["ids"][()]])


@pytest.mark.parametrize("cname", list(CONFIGS))
def test_transform_reproduces_output(runs, small_raw, cname):
    from hpcprep.transform import Transform

    work, outs = runs
    x, _ = raw_arrays(small_raw)
    got = read_out(outs["n2"][cname])
    t = Transform.load(str(outs["n2"][cname]))
    assert t.feature_names_out_ == got["names"]
    # the steps' own apply, from float32 input: the output bits exactly (docs/steps.md, "Inference")
    np.testing.assert_array_equal(t.transform(x[got["ids"]], dtype=np.float32), got["x"])


def test_drops_match_generator_counts(runs, small_raw):
    """dropna, dedup and a 5-sigma z-score drop what the generator put in, within tolerance."""
    work, outs = runs
    truth = json.loads((Path(small_raw) / "truth.json").read_text())
    counts = read_out(outs["n4"]["dedup_z"])["counts"]
    assert counts["0.0.dropna"]["missing value"] == truth["nan_rows"]
    assert abs(counts["0.1.dedup"]["duplicate"] - truth["duplicate_rows"]) <= max(2, 0.05 * truth["duplicate_rows"])
    assert abs(counts["0.2.outliers"]["|z| > 5"] - truth["outlier_rows"]) <= max(2, 0.1 * truth["outlier_rows"])
    # and the generator's counts are near its rates (binomial, 5 sigma)
    from hpcprep.generate import DUPLICATE_RATE, NAN_RATE, OUTLIER_RATE

    for key, rate in (("nan_rows", NAN_RATE), ("duplicate_rows", DUPLICATE_RATE), ("outlier_rows", OUTLIER_RATE)):
        assert abs(truth[key] - ROWS * rate) <= 5 * np.sqrt(ROWS * rate * (1 - rate)) + 1, key


def test_multi_layer_report_states_passes(runs):
    work, outs = runs
    for lname in ("n3", "layered4"):
        rep = json.loads((outs[lname]["two_layers"] / "report.json").read_text())
        layers = {}
        for r in rep["ranks"]:
            layers.update(r.get("standardize", {}))
        assert layers["0"]["pass_reasons"] == ["fit 0.1.dedup", "fit 0.2.outliers", "apply"], lname
        assert layers["1"]["pass_reasons"] == ["fit 1.0.impute", "fit 1.1.scale", "fit 1.2.select",
                                               "fit 1.3.reduce", "apply"], lname


def test_categorical_layer_matches_pandas(runs, small_raw):
    work, outs = runs
    x, y = raw_arrays(small_raw)
    cats = categories(len(x))
    base = None
    for lname in ("n1", "n2", "n3", "n4"):
        z = np.load(work / f"cat-{lname}.npz")
        o = np.argsort(z["ids"])
        got = {"ids": z["ids"][o], "x": z["features"][o], "names": list(z["names"]),
               "counts": json.loads(str(z["counts"])), "codes": z["codes"][o]}
        if base is None:
            base = got
            continue
        assert np.array_equal(got["ids"], base["ids"]), lname
        assert np.array_equal(got["x"], base["x"], equal_nan=True), lname
        assert np.array_equal(got["codes"], base["codes"]), lname
        assert got["names"] == base["names"] and got["counts"] == base["counts"], lname
    # pandas reference
    allowed = ["red", "green", "blue", "teal", "ochre"]
    color, size = pd.Series(cats["color"]), pd.Series(cats["size"])
    keep = ~((color != "") & ~color.isin(allowed))
    assert base["counts"]["0.0.validate"] == {"color not allowed": int((~keep).sum())}
    assert np.array_equal(base["ids"], np.flatnonzero(keep))
    color, size, xk = color[keep], size[keep], x[keep.to_numpy()].astype(np.float64)
    vc = color[color != ""].value_counts()
    vocab = sorted(vc[vc >= 40].index)
    rare = (vc < 40).any()
    onehot = pd.DataFrame({f"color={v}": (color == v).astype(float) for v in vocab})
    if rare:
        onehot["color=other"] = ((color != "") & ~color.isin(vocab)).astype(float)
    codes = size.map({v: i for i, v in enumerate(sorted(size.unique()))}).astype(np.int64)
    assert base["codes"].dtype == np.int64 and np.array_equal(base["codes"][:, 0], codes.to_numpy())
    full = np.hstack([xk.astype(np.float32).astype(np.float64), onehot.to_numpy()])
    full = full.astype(np.float32).astype(np.float64)
    from sklearn.preprocessing import StandardScaler

    want = StandardScaler().fit_transform(full).astype(np.float32)
    assert base["names"] == NAMES + list(onehot.columns)   # codes are not features
    np.testing.assert_allclose(base["x"], want, rtol=1e-6, atol=1e-6)
