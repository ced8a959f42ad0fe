"""hpcprep.loader: manifest checks, per-rank rows, batches, prefetch (in-process and under mpiexec)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from hpcprep.errors import ConfigError, DataError
from hpcprep.loader import block_ranges, epoch_blocks, open_dataset
from hpcprep.partition import equal_counts
from hpcprep.train.synth import shard_crc32, write_dataset, write_split_root

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
SHARDS = [0, 7, 3, 0, 10, 5]          # uneven, with empty shards
N = sum(SHARDS)


def data(n=N, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 2, n).astype(np.int64)
    return x, y


@pytest.fixture
def ds_path(tmp_path):
    x, y = data()
    return write_dataset(tmp_path / "ds", x, y, SHARDS, ids=np.arange(N) * 10)


def mpirun(n, script, *args, timeout=180):
    return subprocess.run([str(MPIEXEC), "-n", str(n), sys.executable, str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------------ format written by the helper
def test_fixture_writes_the_documented_layout(ds_path):
    m = json.loads((ds_path / "manifest.json").read_text())
    assert m["rows"] == N and [s["rows"] for s in m["shards"]] == SHARDS
    assert [s["start"] for s in m["shards"]] == list(np.cumsum([0] + SHARDS[:-1]))
    x, y = data()
    with h5py.File(ds_path / "data.h5", "r") as f:       # virtual datasets over the shards
        assert f["features"].is_virtual
        np.testing.assert_array_equal(f["features"][()], x)
        np.testing.assert_array_equal(f["labels"][()], y)
        np.testing.assert_array_equal(f["ids"][()], np.arange(N) * 10)
        for vs in f["features"].virtual_sources():
            assert not Path(vs.file_name).is_absolute()
    s = m["shards"][1]
    assert s["crc32"] == shard_crc32(np.arange(0, 7) * 10, x[:7], y[:7])


# ------------------------------------------------------------------ reading
def test_read_matches_the_data_across_shard_boundaries(ds_path):
    x, y = data()
    with open_dataset(ds_path, verify=True) as ds:
        assert (ds.rows, ds.n_features, len(ds), ds.start, ds.stop) == (N, 3, N, 0, N)
        for a, b in [(0, N), (0, 0), (6, 8), (7, 10), (9, 21), (N - 1, N), (3, 3)]:
            xa, ya = ds.read(a, b)
            np.testing.assert_array_equal(xa, x[a:b])
            np.testing.assert_array_equal(ya, y[a:b])
            np.testing.assert_array_equal(ds.read_labels(a, b), y[a:b])
        xa, ya = ds.read_ranges([(20, N), (0, 4)])
        np.testing.assert_array_equal(xa, np.concatenate([x[20:], x[:4]]))
        xa, _ = ds.load(dtype=np.float64)
        assert xa.dtype == np.float64
        with pytest.raises(IndexError):
            ds.read(0, N + 1)


@pytest.mark.parametrize("batch", [1, 4, 7, N, N + 3])
def test_batches_in_order_cover_the_rows(ds_path, batch):
    x, y = data()
    with open_dataset(ds_path) as ds:
        got = list(ds.batches(batch))
        assert [len(b[1]) for b in got] == [min(batch, N - k) for k in range(0, N, batch)]
        np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x)
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)
        dropped = list(ds.batches(batch, drop_last=True, prefetch=False))
        assert len(dropped) == N // batch


def test_shuffled_batches_are_a_permutation_per_epoch(ds_path):
    x, _ = data()
    with open_dataset(ds_path) as ds:
        orders = []
        for epoch in range(3):
            xs = np.concatenate([b[0] for b in ds.batches(4, shuffle_seed=5, epoch=epoch)])
            rows = [int(np.flatnonzero((x == r).all(axis=1))[0]) for r in xs]
            assert sorted(rows) == list(range(N))
            orders.append(rows)
        assert orders[0] != orders[1] != orders[2]
        again = np.concatenate([b[0] for b in ds.batches(4, shuffle_seed=5, epoch=1)])
        np.testing.assert_array_equal(again, x[orders[1]])


def test_breaking_out_of_batches_is_clean(ds_path):
    with open_dataset(ds_path) as ds:
        for k, _ in enumerate(ds.batches(2)):
            if k == 1:
                break
        assert sum(len(b[1]) for b in ds.batches(5)) == N   # the prefetch thread still works


def test_prefetcher_hits_and_misses(ds_path):
    x, _ = data()
    with open_dataset(ds_path) as ds:
        pf = ds.prefetcher(dtype=np.float64)
        pf.want([(2, 9)])
        np.testing.assert_array_equal(pf.get([(2, 9)])[0], x[2:9])
        pf.want([(0, 3)])
        np.testing.assert_array_equal(pf.get([(1, 3)])[0], x[1:3])   # different ranges: read now
        assert (pf.hits, pf.misses) == (1, 1)


def test_epoch_blocks_properties():
    for n, b in [(0, 3), (1, 1), (10, 3), (12, 4), (7, 100)]:
        for seed in (None, 1):
            rot, blocks = epoch_blocks(n, b, seed, epoch=2)
            assert sum(m for _, m in blocks) == n
            pos = sorted(p for s, m in blocks for a, c in block_ranges(s, m, rot, n, base=100)
                         for p in range(a, c))
            assert pos == list(range(100, 100 + n))
            assert all(len(block_ranges(s, m, rot, n)) <= 2 for s, m in blocks)
    assert epoch_blocks(10, 3, 1, 0) == epoch_blocks(10, 3, 1, 0)
    assert epoch_blocks(10, 3, 1, 0) != epoch_blocks(10, 3, 1, 1)
    with pytest.raises(ConfigError):
        epoch_blocks(10, 0)


# ------------------------------------------------------------------ errors
def test_missing_shard_is_a_clear_error(ds_path):
    (ds_path / "shards/part-00004.h5").unlink()
    with pytest.raises(DataError, match=r"part-00004\.h5.*missing"):
        open_dataset(ds_path)


def test_row_count_and_crc_mismatch(ds_path):
    with h5py.File(ds_path / "shards/part-00002.h5", "a") as f:
        f["features"][0, 0] = 99.0
    open_dataset(ds_path, verify=False).close()        # rows still match, checksum not read
    with pytest.raises(DataError, match=r"part-00002\.h5: crc32"):
        open_dataset(ds_path, verify=True)
    with h5py.File(ds_path / "shards/part-00002.h5", "a") as f:
        del f["labels"]
        f["labels"] = np.zeros(2, np.int64)
    with pytest.raises(DataError, match=r"'labels' has 2 rows, the manifest says 3"):
        open_dataset(ds_path)


def test_no_manifest_and_splits(tmp_path, ds_path):
    with pytest.raises(DataError, match="no manifest.json"):
        open_dataset(tmp_path / "nothing")
    x, y = data()
    write_dataset(tmp_path / "root/train", x[:15], y[:15], [15])
    write_dataset(tmp_path / "root/val", x[15:], y[15:], [4, 0, 6])
    write_split_root(tmp_path / "root", {"train": "train", "val": "val"})
    with pytest.raises(DataError, match="a split dataset; name a split"):
        open_dataset(tmp_path / "root")
    with pytest.raises(DataError, match="no split 'test'"):
        open_dataset(tmp_path / "root", split="test")
    with open_dataset(tmp_path / "root", split="val") as ds:
        np.testing.assert_array_equal(ds.load()[0], x[15:])


def test_bad_counts(ds_path):
    with pytest.raises(ConfigError, match="counts"):
        open_dataset(ds_path, comm=MPI.COMM_SELF, counts=[N - 1])
    with open_dataset(ds_path, comm=MPI.COMM_SELF, counts=[N]) as ds:
        assert (ds.start, ds.stop) == (0, N)


# ------------------------------------------------------------------ under mpiexec
RANKS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from mpi4py import MPI
    from hpcprep.errors import DataError
    from hpcprep.loader import open_dataset
    comm = MPI.COMM_WORLD
    path, missing, out = sys.argv[1], sys.argv[2], sys.argv[3]
    n = comm.Get_size()
    counts = {1: [25], 2: [0, 25], 3: [20, 0, 5], 4: [1, 10, 0, 14]}[n]
    res = {}
    for name, c in (("equal", None), ("counts", counts)):
        ds = open_dataset(path, comm=comm, counts=c)
        x, y = ds.load()
        xs = np.concatenate([b[0] for b in ds.batches(3)]) if len(ds) else x
        assert np.array_equal(xs, x)
        res[name] = comm.gather((ds.start, ds.stop, x.tolist(), y.tolist()), root=0)
        ds.close()
    try:                       # a shard missing: every rank gets the error, none hangs
        open_dataset(missing, comm=comm)
        res["error"] = None
    except DataError as e:
        res["error"] = comm.gather(str(e), root=0)
    if comm.Get_rank() == 0:
        open(out, "w").write(json.dumps(res))
""")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_each_rank_gets_its_contiguous_rows(tmp_path, ds_path, n):
    x, y = data()
    bad = write_dataset(tmp_path / "bad", x, y, SHARDS)
    (bad / "shards/part-00005.h5").unlink()
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    out = tmp_path / "out.json"
    proc = mpirun(n, script, ds_path, bad, out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    counts = {1: [25], 2: [0, 25], 3: [20, 0, 5], 4: [1, 10, 0, 14]}[n]
    for name, c in (("equal", equal_counts(N, n).tolist()), ("counts", counts)):
        starts = np.cumsum([0] + c)
        for r, (start, stop, xr, yr) in enumerate(res[name]):
            assert (start, stop) == (starts[r], starts[r + 1])
            np.testing.assert_array_equal(np.array(xr, np.float32).reshape(-1, 3), x[start:stop])
            np.testing.assert_array_equal(np.array(yr, np.int64), y[start:stop])
    assert len(res["error"]) == n
    assert all("part-00005.h5" in e and "missing" in e for e in res["error"])
