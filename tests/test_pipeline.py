"""End to end under mpiexec: same output for every layout, equal to a NumPy reference."""

import json
import os

import h5py
import numpy as np
import pytest

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.output.verify import read_all, verify_dataset

LAYOUTS = [
    ("n1", 1, []),
    ("n2", 2, []),
    ("n3", 3, []),
    ("n4", 4, []),
    ("layered3", 3, ["layout.fused=false", "layout.input=1", "layout.standardize=[1]", "layout.sample=[1]"]),
    ("layered4", 4, ["layout.fused=false", "layout.input=1", "layout.standardize=[1]", "layout.sample=[2]"]),
]


@pytest.fixture(scope="module")
def layout_runs(small_raw, tmp_path_factory):
    """Run the same config and seed at every layout (chunks of 250 rows: 12 chunks)."""
    work = tmp_path_factory.mktemp("layouts")
    os.symlink(small_raw, work / "raw")
    cfg = write_config(work / "cfg.toml", BASE_CONFIG.format(chunk_rows=250))
    outs = {}
    for name, n, sets in LAYOUTS:
        args = ["run", cfg, "--quiet", f"--set=output.path={name}"] + [f"--set={s}" for s in sets]
        mpirun(n, args, cwd=work)
        outs[name] = work / name
    return outs


def reference(raw_dir):
    """Single-process NumPy reference: dropna, then population mean/std scaling."""
    xs, ys = [], []
    for path in sorted(raw_dir.glob("*.h5")):
        with h5py.File(path) as f:
            xs.append(f["features"][()])
            ys.append(f["labels"][()])
    x, y = np.concatenate(xs), np.concatenate(ys)
    ids = np.arange(len(x))
    keep = ~np.isnan(x).any(axis=1)
    x, y, ids = x[keep].astype(np.float64), y[keep], ids[keep]
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    return ids, ((x - mean) / std).astype(np.float32), y, mean, std


def test_identical_for_every_layout(layout_runs):
    ref = read_all(layout_runs["n1"])
    for name, out in layout_runs.items():
        got = read_all(out)
        for key in ("ids", "features", "labels"):
            assert got[key].dtype == ref[key].dtype, (name, key)
            assert np.array_equal(got[key], ref[key]), f"{name}: {key} differs from -n 1"


def test_equals_numpy_reference(layout_runs, small_raw):
    ids, x, y, mean, std = reference(small_raw)
    got = read_all(layout_runs["n3"])
    order = np.argsort(got["ids"])
    assert np.array_equal(got["ids"][order], ids), "kept rows differ from the reference"
    np.testing.assert_allclose(got["features"][order], x, rtol=1e-6, atol=1e-6)
    assert np.array_equal(got["labels"][order], y)
    with h5py.File(layout_runs["n3"] / "data.h5") as f:
        np.testing.assert_allclose(f["stats/0.1.scale/mean"][()], mean, rtol=1e-6)
        np.testing.assert_allclose(f["stats/0.1.scale/std"][()], std, rtol=1e-6)
        counts = json.loads(f.attrs["counts"])
        assert counts["0.0.dropna"]["missing value"] == 3000 - len(ids)


def test_shuffle_is_a_permutation_not_the_identity(layout_runs):
    got = read_all(layout_runs["n4"])["ids"]
    assert len(np.unique(got)) == len(got)
    assert not np.array_equal(got, np.sort(got))
    # roughly uniform: the first half of the output holds about half of the low ids
    low = got[: len(got) // 2] < np.median(got)
    assert 0.4 < low.mean() < 0.6


def test_shards_equal_sizes_and_verified(layout_runs):
    for name, out in layout_runs.items():
        man = verify_dataset(out)
        assert man["problems"] == [], name
        sizes = [s["rows"] for s in man["shards"]]
        assert max(sizes) - min(sizes) <= 1, (name, sizes)
    assert len(verify_dataset(layout_runs["n4"])["shards"]) == 4
    assert len(verify_dataset(layout_runs["layered4"])["shards"]) == 2


def test_report_and_provenance(layout_runs):
    out = layout_runs["layered4"]
    report = json.loads((out / "report.json").read_text())
    assert report["rows_in"] == 3000 and report["world_size"] == 4
    roles = [r["roles"] for r in report["ranks"]]
    assert roles == [["input"], ["standardize[0]"], ["sample[0]"], ["sample[0]"]]
    std = report["ranks"][1]["standardize"]["0"]
    assert std["passes"] == 2 and std["pass_reasons"] == ["fit 0.1.scale", "apply"]
    assert all(r["peak_rss_mb"] > 0 for r in report["ranks"])
    with h5py.File(out / "data.h5") as f:
        assert f.attrs["seed"] == 11
        assert "op = \"scale\"" in f.attrs["config"]
        assert list(f["stats/feature_names"].asstr()[()]) == [f"f{i}" for i in range(6)]
    # the virtual datasets use relative paths: the folder can be moved
    moved = out.parent / "moved"
    os.rename(out, moved)
    try:
        assert np.array_equal(read_all(moved)["ids"], read_all(layout_runs["n1"])["ids"])
    finally:
        os.rename(moved, out)


def test_report_seconds_are_per_stage(layout_runs):
    """Every rank's seconds are charged to the stage doing the work (not to the one pulling it)."""
    fused = json.loads((layout_runs["n2"] / "report.json").read_text())
    for rank in fused["ranks"]:
        assert set(rank["seconds"]) == {"read", "standardize", "exchange", "sample", "write"}, rank
        assert rank["seconds"]["standardize"] > 0 and rank["seconds"]["read"] > 0
        assert rank["standardize"]["0"]["seconds"]["apply"] > 0
    layered = json.loads((layout_runs["layered4"] / "report.json").read_text())
    by_role = {r["roles"][0]: r for r in layered["ranks"]}
    assert set(by_role["input"]["seconds"]) == {"read", "exchange"}
    # the producer of sample[0] also routes and packs its rows for the exchange: sample
    assert set(by_role["standardize[0]"]["seconds"]) == {"standardize", "exchange", "sample"}
    assert set(layered["ranks"][2]["seconds"]) == {"exchange", "sample", "write"}


def test_missing_shard_is_detected(layout_runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(layout_runs["n2"], copy)
    os.remove(copy / "shards" / "part-00001.h5")
    problems = verify_dataset(copy)["problems"]
    assert problems == ["shards/part-00001.h5: missing"]
