"""Every sampling mode under mpiexec: identical output for -n 1..4, fused and layered, in memory
and spilled; exact sizes; split datasets; shard sizes by plan; edge cases.

All configs of one layout run in one mpiexec launch (tests/sampling_runs.py) to keep the
suite short on 2 cores.
"""

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import mpirun
from hpcprep.output.verify import read_all, read_manifest, verify_dataset

HERE = Path(__file__).resolve().parent
CASES = ["shuffle", "sample", "sample_frac", "sample_zero", "sample_big", "stratified", "balance",
         "weighted", "weighted_excl", "bootstrap", "bootstrap_n", "split", "split_strat", "chain",
         "chain_boot", "chain_split", "empty"]
ONE = ["one_sample", "one_split", "one_bootstrap", "one_weighted"]
SPILL = [c + "+spill" for c in CASES if c != "empty"]
#: (folder name, ranks, cases)
LAUNCHES = [
    ("n1", 1, CASES + ONE),
    ("n2", 2, CASES + SPILL + ["sample+shards", "split+shards", "sample+spill,shards",
                               "split+spill,shards"]),
    ("n3", 3, CASES + ONE),
    ("n4", 4, CASES + SPILL + ONE),
    ("layered3", 3, CASES + SPILL),
    ("layered4", 4, CASES + ONE),
]
CLASS_P = [0.5, 0.3, 0.15, 0.05]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Inputs (2400 rows in 3 files, 4 skewed classes, feature f0 > 0), then every launch."""
    work = tmp_path_factory.mktemp("sampling")
    rng = np.random.default_rng(3)
    for d in ("raw", "empty", "one"):
        (work / d).mkdir()
    for i, n in enumerate([700, 1100, 600]):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        x[:, 0] = rng.uniform(0.1, 3.0, n)
        y = rng.choice(4, size=n, p=CLASS_P).astype(np.int64)
        with h5py.File(work / "raw" / f"part-{i}.h5", "w") as f:
            f["features"], f["labels"] = x, y
        x[:, 2] = np.nan
        with h5py.File(work / "empty" / f"part-{i}.h5", "w") as f:
            f["features"], f["labels"] = x[:50], y[:50]
    with h5py.File(work / "one" / "part-0.h5", "w") as f:
        f["features"] = np.array([[1.5, 0.0, 1.0, 2.0]], dtype=np.float32)
        f["labels"] = np.array([2], dtype=np.int64)
    for name, n, cases in LAUNCHES:
        proc = mpirun(n, [str(HERE / "sampling_runs.py"), str(work), name, *cases], cwd=work,
                      timeout=180, module=False)
        assert "DONE" in proc.stdout
    return work


def load(path):
    """``{split name or "": {"ids", "features", "labels"}}`` of a dataset, after verifying it."""
    man = read_manifest(path)
    assert verify_dataset(path)["problems"] == [], path
    if man["splits"]:
        return {k: read_all(os.path.join(path, v)) for k, v in man["splits"].items()}
    return {"": read_all(path)}


def test_identical_for_every_layout_in_memory_and_spilled(runs):
    for case in CASES + ONE:
        ref = load(runs / "n1" / case) if (runs / "n1" / case).exists() else None
        for name, _, cases in LAUNCHES:
            for c in (case, case + "+spill"):
                if c not in cases:
                    continue
                got = load(runs / name / c)
                assert got.keys() == ref.keys(), (name, c)
                for split in ref:
                    for key in ref[split]:
                        assert np.array_equal(got[split][key], ref[split][key]), \
                            f"{name}/{c}: {split} {key} differs from -n 1"


def test_spilled_runs_really_spilled(runs):
    for name in ("n2", "n4", "layered3"):
        rep = json.loads((runs / name / "shuffle+spill" / "report.json").read_text())
        spilled = [r["sample"]["0"]["bytes_spilled"] for r in rep["ranks"] if "0" in r["sample"]]
        assert spilled and all(s > 0 for s in spilled), (name, spilled)
        rep = json.loads((runs / name / "shuffle" / "report.json").read_text())
        assert all(r["sample"]["0"]["bytes_spilled"] == 0 for r in rep["ranks"] if "0" in r["sample"])


def _input(runs):
    ys = []
    for p in sorted((runs / "raw").glob("*.h5")):
        with h5py.File(p) as f:
            ys.append(f["labels"][()])
    return np.concatenate(ys)


def test_sizes_and_class_counts(runs):
    y = _input(runs)
    n_c = np.bincount(y, minlength=4)
    n = len(y)
    size = {c: len(load(runs / "n1" / c)[""]["ids"]) for c in
            ("shuffle", "sample", "sample_frac", "sample_zero", "sample_big", "weighted", "bootstrap_n")}
    assert size == {"shuffle": n, "sample": 333, "sample_frac": 600, "sample_zero": 0,
                    "sample_big": n, "weighted": 300, "bootstrap_n": 1500}
    strat = load(runs / "n1" / "stratified")[""]
    assert np.array_equal(np.bincount(strat["labels"], minlength=4), np.minimum(n_c, 40))
    bal = load(runs / "n1" / "balance")[""]
    assert np.array_equal(np.bincount(bal["labels"], minlength=4), np.full(4, n_c.min()))
    for c in ("sample", "stratified", "weighted"):
        ids = load(runs / "n1" / c)[""]["ids"]
        assert len(np.unique(ids)) == len(ids)        # without replacement
    rep = json.loads((runs / "n1" / "sample_big" / "report.json").read_text())
    assert "keeping all" in rep["sampling"]["0"]["warnings"][0]
    rep = json.loads((runs / "n1" / "stratified" / "report.json").read_text())["sampling"]["0"]
    assert rep["classes_in"] == {str(i): int(v) for i, v in enumerate(n_c)}
    assert rep["classes_out"] == {str(i): int(min(v, 40)) for i, v in enumerate(n_c)}


def test_weighted_exclusion_and_bootstrap(runs):
    rep = json.loads((runs / "n1" / "weighted_excl" / "report.json").read_text())["sampling"]["0"]
    got = load(runs / "n1" / "weighted_excl")[""]
    assert rep["excluded"] + rep["rows_sorted"] == 2400
    assert len(got["ids"]) == round(0.5 * rep["rows_sorted"] + 1e-9) and (got["features"][:, 1] > 0).all()
    boot = load(runs / "n1" / "bootstrap")[""]["ids"]
    assert len(np.unique(boot)) < len(boot)             # with replacement: copies exist
    assert abs(len(boot) - 2400) < 5 * np.sqrt(2400)    # Poisson(1) total, mean N, sd sqrt(N)


def test_splits(runs):
    y = _input(runs)
    n_c = np.bincount(y, minlength=4)
    split = load(runs / "n1" / "split")
    assert {k: len(v["ids"]) for k, v in split.items()} == {"train": 1680, "val": 480, "test": 240}
    allids = np.concatenate([v["ids"] for v in split.values()])
    assert np.array_equal(np.sort(allids), np.arange(2400))
    man = read_manifest(runs / "n1" / "split")
    assert man["splits"] == {"train": "train", "val": "val", "test": "test"} and man["shards"] == []
    strat = load(runs / "n1" / "split_strat")
    cum = np.array([0.0, 0.5, 0.8, 1.0])
    for i, name in enumerate(("train", "val", "test")):
        counts = np.bincount(strat[name]["labels"], minlength=4)
        lo, hi = np.floor(cum[i] * n_c + 0.5), np.floor(cum[i + 1] * n_c + 0.5)
        assert np.array_equal(counts, (hi - lo).astype(int)), name
    one = load(runs / "n1" / "one_split")    # one row of one class: absent from one split
    assert sorted(len(v["ids"]) for v in one.values()) == [0, 1]


def test_shard_sizes_by_plan(runs):
    for c in ("sample+shards", "sample+spill,shards"):
        man = read_manifest(runs / "n2" / c)
        assert [s["rows"] for s in man["shards"]] == [100, 233]
        assert np.array_equal(load(runs / "n2" / c)[""]["ids"], load(runs / "n1" / "sample")[""]["ids"])
    for c in ("split+shards", "split+spill,shards"):
        for name, rows in (("train", 1680), ("val", 480), ("test", 240)):
            man = read_manifest(runs / "n2" / c / name)
            assert [s["rows"] for s in man["shards"]] == [rows // 4, rows - rows // 4]
        ref = load(runs / "n1" / "split")
        got = load(runs / "n2" / c)
        assert all(np.array_equal(got[k]["ids"], ref[k]["ids"]) for k in ref)


def test_edge_cases(runs):
    empty = runs / "n4" / "empty"
    assert read_manifest(empty)["rows"] == 0 and load(empty)[""]["ids"].shape == (0,)
    for name in ("n1", "n3", "n4"):        # a single row, fewer rows than ranks
        assert list(load(runs / name / "one_sample")[""]["ids"]) == [0]
        assert list(load(runs / name / "one_bootstrap")[""]["ids"]) == [0, 0, 0]
        assert list(load(runs / name / "one_weighted")[""]["ids"]) == [0]
