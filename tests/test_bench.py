"""The benchmark suite's pieces: the NumPy reference's semantics, JSON output, a tiny end-to-end run."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench  # noqa: E402
import ref_numpy  # noqa: E402


def _write(path, x, y):
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=x)
        f.create_dataset("labels", data=y)


def _plain_reference(x, y, seed, threshold):
    """REF-1 semantics written the slow, obvious way (for checking ref_numpy.run)."""
    ids = np.arange(len(x))
    keep = ~np.isnan(x).any(axis=1)
    seen = set()
    for i in ids[keep]:
        key = ((x[i] + np.float32(0)).tobytes(), int(y[i]))
        if key in seen:
            keep[i] = False
        seen.add(key)
    k = x[keep].astype(np.float64)
    mean, std = k.mean(axis=0), k.std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs((x.astype(np.float64) - mean) / std)
    z[:, ~(std > 0)] = 0
    keep &= ~(np.nan_to_num(z, nan=0.0) > threshold).any(axis=1)
    k = x[keep].astype(np.float64)
    mean, std = k.mean(axis=0), k.std(axis=0)
    std[~(std > 0)] = 1.0
    kept = ids[keep]
    order = kept[np.argsort(ref_numpy.shuffle_keys(seed, kept))]
    return order, ((x[order].astype(np.float64) - mean) / std).astype(np.float32), y[order]


def test_ref_numpy_semantics(tmp_path):
    rng = np.random.default_rng(3)
    n, d = 3000, 5
    x = rng.normal(10, 2, (n, d)).astype(np.float32)
    x[:, 4] = 1.0                                # constant feature: never an outlier, std -> 1
    y = rng.integers(0, 2, n).astype(np.int64)
    x[rng.choice(n, 30, replace=False), 1] = np.nan
    src = rng.choice(n, 60, replace=False)
    dst = rng.choice(n, 60, replace=False)
    x[dst], y[dst] = x[src], y[src]              # duplicates, some before their source
    x[7, 2] = 1e4                                # an outlier
    x[8] = x[9]
    y[8] = 1 - y[9]                              # same features, other label: not a duplicate
    x[10, 0], x[11] = -0.0, x[10]
    x[11, 0] = 0.0                               # -0.0 and 0.0 are equal values
    y[11] = y[10]
    files = [tmp_path / "part-00000.h5", tmp_path / "part-00001.h5"]
    _write(files[0], x[:1234], y[:1234])
    _write(files[1], x[1234:], y[1234:])
    out = tmp_path / "ref.h5"
    summary = ref_numpy.run([str(f) for f in files], str(out), seed=7,
                            steps=["dropna", "dedup", "outliers", "scale"], threshold=6.0)
    ids, feats, labels = _plain_reference(x, y, 7, 6.0)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["ids"][:], ids)
        np.testing.assert_array_equal(f["labels"][:], labels)
        np.testing.assert_allclose(f["features"][:], feats, rtol=1e-6, atol=1e-6)
    assert summary["rows_out"] == len(ids)
    assert 7 not in set(ids.tolist()) and 8 in set(ids.tolist()) and 11 not in set(ids.tolist())
    assert summary["dropped"]["outliers"] >= 1


def test_shuffle_keys_match_hpcprep():
    from hpcprep.kernels.hashing import random_keys
    from hpcprep.layers.sample import SAMPLE_STREAM

    ids = np.arange(0, 10_000, 7, dtype=np.int64)
    np.testing.assert_array_equal(ref_numpy.shuffle_keys(5, ids), random_keys(5, SAMPLE_STREAM, ids))


def test_summaries_and_json():
    s = bench.summarize([3.0, 1.0, 2.0])
    assert (s["min"], s["median"], s["max"], s["n"]) == (1.0, 2.0, 3.0, 3)
    doc = bench.jsonable({"a": np.float64(np.nan), "b": np.arange(3), "c": (np.int64(4), float("inf"))})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {"a": None, "b": [0, 1, 2], "c": [4, None]}
    result = {"files": {"clean": {"ours": {"seconds_min": 1, "seconds_median": 2, "seconds_max": 3}}},
              "cases": [{"name": "x", "t": {"min": 1, "median": 1, "max": 1}}]}
    found = dict(bench.find_summaries(result))
    assert found["files.clean.ours.seconds"]["median"] == 2
    assert found["cases[name=x].t"]["max"] == 1


def test_bench_quick_ref1_tiny(tmp_path):
    """The suite end to end on a tiny REF-1 (both rank counts, checks), valid bench.json."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--out", str(out),
                           "--cases", "ref1,gpu", "--rows", "6000",
                           "--repeats", "1", "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == bench.SCHEMA and doc["ok"] and doc["mode"] == "quick"
    for key in ("cpu_model", "cores", "memory_gib", "os"):
        assert key in doc["machine"]
    for key in ("python", "numpy", "h5py", "mpi4py", "mpi_library", "cvxpy", "hpcprep", "git_commit"):
        assert key in doc["versions"]
    ref = doc["cases"]["ref1"]
    assert ref["status"] == "ok" and all(c["ok"] for c in ref["checks"])
    assert {"hpcprep_n1", "hpcprep_n2", "numpy", "io_floor"} <= set(ref["variants"])
    assert all({"min", "median", "max"} <= set(f) for f in doc["figures"])
    assert doc["cases"]["gpu"]["status"] in ("no GPU", "ok", "not available")


def test_missing_module_is_recorded(tmp_path):
    args = bench.argparse.Namespace(quick=True, workdir=str(tmp_path), module_timeout=0, module_memory_gib=1.0)
    suite = bench.Suite(args)
    bench.MODULE_CASES["nosuch"] = ("bench_nosuch_module", "nothing")
    try:
        suite.run_case("nosuch", lambda: suite.case_module("nosuch"))
    finally:
        del bench.MODULE_CASES["nosuch"]
    assert suite.cases["nosuch"]["status"] == "not available" and not suite.failures
    suite.run_case("broken", lambda: 1 / 0)
    assert suite.cases["broken"]["status"] == "failed" and suite.failures
