"""High-cardinality categoricals (issue 15): hashed and vocabulary codes as an int64 dataset.

- The documented category hash (FNV-1a 64 of the UTF-8 bytes, SplitMix64 finalizer,
  mod ``buckets``) against a pure-Python reference written from docs/steps.md.
- The distributed vocabulary (partial counts routed to owner ranks, ``min_count``,
  ``min_frequency``, ``max_categories``) against the single-rank dictionary count it
  replaced, at 1 and 3 ranks with uneven data (a rank without any).
- End to end: a generated CSV whose ``item`` column has 200,000 distinct values (the
  issue asks for 1M; 200k exercises the same paths and keeps CI at a few seconds a
  run) hashed and coded at ``-n 1, 2, 3`` fused and ``-n 5`` layered: identical
  outputs, codes equal to the reference, int64 in the loader (and torch), checked
  like features (checksums, shapes).
"""

import json
import shutil
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from mpi4py import MPI

from conftest import mpirun, write_config
from hpcprep.errors import ConfigError, DataError
from hpcprep.steps import LayerContext, make_step
from hpcprep.steps.vocab import LocalCounts, build_vocabulary, global_kth, hash_codes

_MASK = (1 << 64) - 1
DISTINCT, ROWS, BUCKETS, KEY = 200_000, 260_000, 1 << 16, 12345


# -- the documented hash, written out ------------------------------------------------------------
def ref_hash(text: str, key: int = 0) -> int:
    """docs/steps.md: splitmix64(fnv1a64(utf8(text)) ^ key)."""
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & _MASK
    z = ((h ^ key) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def ref_codes(values, buckets, key):
    memo = {}
    return np.array([-1 if v == "" else memo.setdefault(v, ref_hash(v, key) % buckets)
                     for v in values], dtype=np.int64)


def test_hash_is_the_documented_function():
    v = np.array(["a", "", "é", "€uro", "😀x", "a\x00b", "ascii", "ü" * 20,
                  "\u07ff\u0800\uffff\U00010000\U0010ffff", "x" * 300])
    for key in (0, 1, KEY):
        np.testing.assert_array_equal(hash_codes(v, 1000003, key), ref_codes(v, 1000003, key))
    # chunk boundaries and neighbours do not matter (one value alone or in a wide array)
    alone = np.concatenate([hash_codes(v[i:i + 1], 97, 5) for i in range(len(v))])
    np.testing.assert_array_equal(alone, hash_codes(v, 97, 5))


def test_hash_config_errors():
    with pytest.raises(ConfigError, match="buckets"):
        make_step({"op": "categorical", "encoding": "hash"}, "t")
    with pytest.raises(ConfigError, match="buckets"):
        make_step({"op": "categorical", "encoding": "codes", "buckets": 8}, "t")
    with pytest.raises(ConfigError, match="max_categories"):
        make_step({"op": "categorical", "encoding": "hash", "buckets": 8, "max_categories": 3}, "t")
    step = make_step({"op": "categorical", "encoding": "hash", "buckets": 8}, "t")
    assert not step.needs_fit   # no vocabulary: no fit pass


# -- the distributed vocabulary ------------------------------------------------------------------
def old_vocabulary(values, min_count, min_frequency, max_categories):
    """The single-rank algorithm this replaced (a dict of counts, sorted keys), plus the top-M rule."""
    counts = {}
    for v in values:
        if v != "":
            counts[v] = counts.get(v, 0) + 1
    total = sum(counts.values())
    kept = [k for k in sorted(counts) if counts[k] >= min_count and counts[k] >= min_frequency * total]
    if max_categories:
        kept = sorted(sorted(kept, key=lambda k: (-counts[k], k))[:max_categories])
    return kept, [counts[k] for k in kept], total


CASES = [(1, 0.0, 0), (2, 0.0, 0), (1, 0.004, 0), (1, 0.0, 37), (2, 0.0, 5), (1, 0.0, 1),
         (1, 0.0, 10**6), (3, 0.001, 11)]


def _vocab_check(comm):
    """Every case at this communicator's size; rank 0 compares with :func:`old_vocabulary`."""
    rng = np.random.default_rng(4)
    pool = np.array([f"c{k}" + ("é€😀"[k % 3] * (k % 4)) for k in range(400)] + ["", "Z", "a", "ä"])
    values = pool[(rng.zipf(1.4, 3000) - 1) % len(pool)]
    # uneven pieces: rank r takes pieces r, r + size, ...; the last rank of 3 gets none
    cuts = [0, 5, 900, 1700, 3000] if comm.Get_size() != 3 else [0, 5, 1900, 3000, 3000, 3000]
    pieces = [values[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    for min_count, min_frequency, max_categories in CASES:
        local = LocalCounts()
        for p in pieces[comm.Get_rank()::comm.Get_size()]:
            local.add(p)
        kept, counts, total = build_vocabulary(comm, *local.result(), min_count, min_frequency,
                                               max_categories)
        want = old_vocabulary(values, min_count, min_frequency, max_categories)
        assert (kept.tolist(), counts.tolist(), total) == want, (min_count, min_frequency,
                                                                 max_categories)
    for a in (np.sort(rng.integers(0, 5, 50 * (comm.Get_rank() + 1))), np.zeros(0, np.int64)):
        everything = np.sort(np.concatenate(comm.allgather(a)))
        for k in (0, 7, len(everything) // 2, len(everything) - 1):
            if len(everything):
                assert global_kth(comm, a, k) == everything[k]
    if comm.Get_rank() == 0:
        print("vocab OK", flush=True)


def test_vocabulary_one_rank_equals_old_count():
    _vocab_check(MPI.COMM_SELF)


def test_vocabulary_three_ranks_equals_old_count(tmp_path):
    proc = mpirun(3, [__file__, "vocab"], cwd=tmp_path, module=False, timeout=120)
    assert "vocab OK" in proc.stdout


def test_codes_go_to_extras_not_features():
    from hpcprep.chunk import Chunk

    v = np.array(["b", "a", "b", "c", "", "b", "a", "zz"])
    ch = Chunk(0, np.arange(8, dtype=np.int64), np.zeros((8, 1)), None, {"cat:col": v}, source="m")
    ctx = LayerContext(MPI.COMM_SELF, 0, 0)
    step = make_step({"op": "categorical", "encoding": "codes", "min_count": 2}, "t")
    step.bind(["f"])
    step.fit_layer(ctx, iter([ch]))
    out, _ = step.apply(ch)
    assert step.feature_names_out_ == ["f"] and out.features.shape == (8, 1)
    np.testing.assert_array_equal(out.extras["codes"][:, 0], [1, 0, 1, 2, -1, 1, 0, 2])
    hashed = make_step({"op": "categorical", "encoding": "hash", "buckets": 5}, "t")
    hashed.bind(["f"])
    both, _ = hashed.apply(out)   # appended after the earlier step's column
    np.testing.assert_array_equal(both.extras["codes"][:, 1], ref_codes(v, 5, 0))


# -- end to end ----------------------------------------------------------------------------------
CONFIG = f"""\
seed = 7
[input]
paths = ["d.csv"]
features = ["x"]
label = "y"
categorical = ["item", "shop"]
chunk_rows = 40000
[[standardize]]
steps = [
  {{ op = "categorical", columns = ["item"], encoding = "hash", buckets = {BUCKETS}, hash_key = {KEY} }},
  {{ op = "categorical", columns = ["item"], encoding = "codes", min_count = 2, max_categories = 3000 }},
  {{ op = "categorical", columns = ["shop"] }},
  {{ op = "scale" }},
]
[[sample]]
op = "shuffle"
[output]
path = "out"
"""
LAYOUTS = {"n1": (1, []), "n2": (2, []), "n3": (3, []),
           "layered5": (5, ["layout.fused=false", "layout.input=2", "layout.standardize=[2]",
                            "layout.sample=[1]"])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("catcodes")
    rng = np.random.default_rng(1)
    pool = np.array([f"item-{k:06d}" + ("-ü€😀" if k % 7 == 0 else "") for k in range(DISTINCT)])
    idx = np.concatenate([rng.permutation(DISTINCT), (rng.zipf(1.3, ROWS - DISTINCT) - 1) % DISTINCT])
    item = pool[idx]
    item[rng.uniform(size=ROWS) < 0.02] = ""
    df = pd.DataFrame({"x": np.round(rng.normal(size=ROWS), 3), "item": item,
                       "shop": rng.choice(["a", "b", "c"], ROWS), "y": rng.integers(0, 2, ROWS)})
    df.to_csv(work / "d.csv", index=False)
    cfg = write_config(work / "c.toml", CONFIG)
    for name, (n, sets) in LAYOUTS.items():
        args = ["run", cfg, "--quiet", "--set", f"output.path={name}"]
        mpirun(n, args + [a for s in sets for a in ("--set", s)], cwd=work, timeout=240)
    return work, df


def _read(path):
    from hpcprep.output.verify import read_all

    return read_all(path)


def test_every_layout_writes_the_same_dataset(runs):
    work, _ = runs
    base = _read(work / "n1")
    assert base["codes"].dtype == np.int64 and base["codes"].shape == (ROWS, 2)
    for name in LAYOUTS:
        got = _read(work / name)
        for key in base:
            assert np.array_equal(got[key], base[key]), (name, key)
        man = json.loads((work / name / "manifest.json").read_text())
        assert man["code_names"] == ["item", "item"] and man["feature_names"][1:] == \
            ["shop=a", "shop=b", "shop=c"]


def test_hashed_and_vocabulary_codes_equal_the_reference(runs):
    work, df = runs
    got = _read(work / "n3")
    item = df["item"].fillna("").astype(str).to_numpy()[got["ids"]]
    np.testing.assert_array_equal(got["codes"][:, 0], ref_codes(item, BUCKETS, KEY))
    kept, counts, total = old_vocabulary(df["item"].fillna("").astype(str), 2, 0.0, 3000)
    with h5py.File(work / "n3" / "data.h5") as f:
        st = f["stats/0.1.categorical"]
        assert st["categories/item"].asstr()[()].tolist() == kept
        assert st["counts/item"][()].tolist() == counts + [total - sum(counts)]
        assert st["encoding"].asstr()[()] == "codes"
        assert f["codes"].attrs["code_names"].tolist() == ["item", "item"]
    index = {k: i for i, k in enumerate(kept)}
    want = [-1 if v == "" else index.get(v, len(kept)) for v in item]
    np.testing.assert_array_equal(got["codes"][:, 1], want)


def test_codes_reach_the_loader_as_int64(runs):
    import hpcprep
    from hpcprep.transform import Transform

    work, df = runs
    ref = _read(work / "n2")
    with hpcprep.open_dataset(work / "n2") as ds:
        assert ds.code_names == ["item", "item"]
        batches = list(ds.batches(50000, prefetch=True))
        assert all(len(b) == 3 and b[2].dtype == np.int64 for b in batches)
        np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), ref["codes"])
        x, y, codes = ds.read_ranges([(10, 20), (0, 3)])
        np.testing.assert_array_equal(codes, np.concatenate([ref["codes"][10:20], ref["codes"][:3]]))
        raw = {c: df[c].fillna("").astype(str).to_numpy()[ref["ids"][:1000]] for c in ("item", "shop")}
        np.testing.assert_array_equal(Transform.load(str(work / "n2")).codes(raw), ref["codes"][:1000])
        torch = pytest.importorskip("torch")
        xt, yt, ct = next(iter(ds.torch(256)))
        assert ct.dtype == torch.int64 and ct.shape == (256, 2)
        np.testing.assert_array_equal(ct.numpy(), ref["codes"][:256])


def test_codes_are_verified_like_features(runs, tmp_path):
    import hpcprep

    work, _ = runs
    for damage, match in ((lambda f: f["codes"].__setitem__((5, 0), 1), "crc32"),
                          (lambda f: (f.__delitem__("codes"),
                                      f.create_dataset("codes", data=np.zeros((0, 2), np.int64))),
                           "'codes' has 0 rows"),
                          (lambda f: (f.__delitem__("codes"),
                                      f.create_dataset("codes", data=np.zeros(ROWS // 2, np.int64))),
                           "'codes' has shape")):
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(work / "n2", copy)
        with h5py.File(copy / "shards" / "part-00000.h5", "r+") as f:
            damage(f)
        with pytest.raises(DataError, match=match):
            hpcprep.open_dataset(copy).close()


if __name__ == "__main__" and sys.argv[1:] == ["vocab"]:
    _vocab_check(MPI.COMM_WORLD)


def test_train_refuses_a_dataset_with_codes_naming_the_way_out(runs):
    work, _ = runs
    proc = mpirun(2, ["train", str(work / "n1"), "--out", str(work / "model")], cwd=work, check=False)
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert out.count("int64 categorical codes") == 1 and "Dataset.torch" in out
