"""``dedup``: the hash-then-bytes algorithm against a brute-force reference.

Collisions are forced by injecting a weak row hash (``Dedup._hash``): the result
must not change, since equal hashes alone never make a duplicate.
"""

import textwrap

import numpy as np
import pytest
from mpi4py import MPI

from hpcprep.chunk import Chunk
from hpcprep.steps import LayerContext, make_step
from hpcprep.steps.dedup import Dedup, _repeated

from conftest import mpirun

CTX = LayerContext(MPI.COMM_SELF, 0, 0)
NAMES = ["a", "b", "c"]
REAL_HASH = Dedup._hash

#: Injected hashes: the real one, and weak ones that make most rows collide.
HASHES = {
    "real": REAL_HASH,
    "2 bits": lambda x, y: REAL_HASH(x, y) & np.uint64(3),
    "constant": lambda x, y: np.full(len(x), 12345, dtype=np.uint64),
    "first column": lambda x, y: first_column_hash(x),
}


def first_column_hash(x):
    """A valid but weak hash: the canonical bits of the first key column only."""
    if x.shape[1] == 0:
        return np.zeros(len(x), np.uint64)
    c = canonical(np.ascontiguousarray(x[:, 0], dtype=np.float32))
    return c.view(np.uint32).astype(np.uint64)


def canonical(k):
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(k), np.float32(np.nan), k + np.float32(0))


def nan32(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def messy(seed=0, n=400):
    """Rows with many duplicates, -0.0/+0.0, NaNs of several bit patterns and label-only differences."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 4, size=(n, 3)).astype(np.float32)
    x = base.copy()
    x[rng.uniform(size=(n, 3)) < 0.1] = -0.0
    x[rng.uniform(size=(n, 3)) < 0.1] = 0.0
    nans = [np.float32(np.nan), nan32(0x7FC00001), nan32(0xFFC00000), nan32(0x7F800001), nan32(0xFFFFFFFF)]
    m = rng.uniform(size=(n, 3)) < 0.15
    x[m] = np.array(nans, dtype=np.float32)[rng.integers(0, len(nans), int(m.sum()))]
    y = rng.integers(0, 2, n).astype(np.int64)
    return x, y


def reference(x, y, ids, columns=None, label=True):
    """Ids dropped: rows whose canonical key equals one of a smaller id (brute force)."""
    k = x if columns is None else x[:, columns]
    k = canonical(k)
    seen, drop = set(), set()
    for i in np.argsort(ids, kind="stable"):
        key = (k[i].tobytes(), y[i] if label else None)
        if key in seen:
            drop.add(int(ids[i]))
        seen.add(key)
    return drop


def split(x, y, ids, sizes):
    out, lo = [], 0
    for cid, n in enumerate(sizes):
        out.append(Chunk(cid, ids[lo:lo + n], x[lo:lo + n], y[lo:lo + n], {}, source="mem"))
        lo += n
    assert lo == len(x)
    return out


@pytest.mark.parametrize("hash_name", list(HASHES))
@pytest.mark.parametrize("spec", [{"op": "dedup"}, {"op": "dedup", "columns": ["a", "c"], "label": False},
                                  {"op": "dedup", "columns": ["b"]}])
def test_dedup_equals_reference_with_forced_collisions(monkeypatch, hash_name, spec):
    monkeypatch.setattr(Dedup, "_hash", staticmethod(HASHES[hash_name]))
    x, y = messy()
    ids = np.random.default_rng(3).permutation(len(x)).astype(np.int64) * 3 + 7  # ids out of order
    cols = None if "columns" not in spec else [NAMES.index(c) for c in spec["columns"]]
    want = reference(x, y, ids, cols, spec.get("label", True))
    assert len(want) > 50
    step = make_step(spec, "t")
    step.bind(NAMES)
    chunks = split(x, y, ids, (100, 0, 1, 250, 49))
    step.fit_layer(CTX, iter(chunks))
    assert set(step.drop_ids_.tolist()) == want
    assert step.stats()["n_duplicates"] == len(want)
    kept = np.concatenate([step.apply(c)[0].ids for c in chunks])
    assert set(kept.tolist()) == set(ids.tolist()) - want


def test_dedup_signed_zero_and_nan_payloads_are_equal_values():
    z, nz = np.float32(0.0), np.float32(-0.0)
    x = np.array([[z, nan32(0x7FC00000), 1], [nz, nan32(0xFFC00000), 1], [z, nan32(0x7F800001), 1],
                  [nz, nan32(0x7FC00000), 2]], dtype=np.float32)
    y = np.zeros(4, np.int64)
    step = make_step({"op": "dedup"}, "t")
    step.bind(NAMES)
    step.fit_layer(CTX, iter(split(x, y, np.arange(4, dtype=np.int64), (1, 3))))
    assert step.drop_ids_.tolist() == [1, 2]


def test_dedup_no_rows_and_no_duplicates():
    step = make_step({"op": "dedup"}, "t")
    step.bind(NAMES)
    step.fit_layer(CTX, iter([]))
    assert step.stats()["n_duplicates"] == 0
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    step.fit_layer(CTX, iter(split(x, np.zeros(10, np.int64), np.arange(10, dtype=np.int64), (10,))))
    assert step.stats()["n_duplicates"] == 0 and len(step.drop_ids_) == 0


def test_repeated():
    h = np.array([5, 3, 9, 3, 5, 5, 1, 2**64 - 1, 2**64 - 1], dtype=np.uint64)
    assert _repeated(h).tolist() == [True, True, False, True, True, True, False, True, True]
    assert _repeated(h[:1]).tolist() == [False]
    assert _repeated(np.arange(10, dtype=np.uint64)).sum() == 0


SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from mpi4py import MPI
    sys.path.insert(0, {tests!r})
    from test_dedup import HASHES, NAMES, messy, reference, split
    from hpcprep.steps import LayerContext, make_step
    from hpcprep.steps.dedup import Dedup

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    x, y = messy(seed=1, n=2000)
    ids = np.arange(len(x), dtype=np.int64)
    for name, fn in HASHES.items():
        Dedup._hash = staticmethod(fn)
        want = reference(x, y, ids)
        chunks = split(x, y, ids, [137] * 14 + [82])
        # an uneven spread of the chunks; at -n 4 rank 3 holds no rows
        where = [(c.chunk_id * 7) % (size + 1) % size if size < 4 else c.chunk_id * 7 % 3 for c in chunks]
        mine = [c for c, r in zip(chunks, where) if r == rank]
        step = make_step({{"op": "dedup"}}, "t")
        step.bind(NAMES)
        step.fit_layer(LayerContext(comm, 0, 0), iter(mine))
        got = set(np.concatenate(comm.allgather(step.drop_ids_)).tolist())
        assert got == want, (name, len(got), len(want))
        assert step.stats()["n_duplicates"] == len(want)
        for c in mine:
            assert set(step.apply(c)[0].ids.tolist()) == set(c.ids.tolist()) - want
    sys.stdout.write(f"OK {{rank}}\\n")
""")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_dedup_mpi_forced_collisions(tmp_path, n):
    from pathlib import Path

    script = tmp_path / "dedup_mpi.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = mpirun(n, [str(script)], cwd=tmp_path, module=False, timeout=300)
    assert sorted(proc.stdout.split()) == sorted(sum([["OK", str(r)] for r in range(n)], []))


def test_hash_is_row_hash_of_canonical_key():
    from hpcprep.kernels.hashing import stream_base
    from hpcprep.kernels.rowhash import row_hash
    from hpcprep.steps.dedup import DEDUP_STREAM, _BLOCK

    x, y = messy(seed=4, n=2 * _BLOCK + 17)
    want = row_hash(y, seed=row_hash(x, seed=stream_base(0, DEDUP_STREAM)))
    assert np.array_equal(REAL_HASH(x, y), want)
    with np.errstate(invalid="ignore"):  # casting a signaling NaN
        x64 = x[:, :1].astype(np.float64)
    assert np.array_equal(REAL_HASH(x64, None), row_hash(x64, seed=stream_base(0, DEDUP_STREAM)))
    assert REAL_HASH(x[:0], y[:0]).shape == (0,)


def test_isin_sorted():
    from hpcprep.steps.dedup import _isin_sorted

    rng = np.random.default_rng(0)
    drop = np.sort(rng.choice(10**6, 500, replace=False)).astype(np.int64)
    for ids in (np.arange(1000, 9000, dtype=np.int64), rng.permutation(10**6)[:3000].astype(np.int64),
                np.array([drop[3], 5 * 10**6], dtype=np.int64)):
        assert np.array_equal(_isin_sorted(ids, drop), np.isin(ids, drop))


def test_owner_is_splitmix_mod_size():
    from hpcprep.kernels.hashing import splitmix64
    from hpcprep.steps.dedup import _BLOCK, _owner

    h = np.random.default_rng(1).integers(0, 2**63, 3 * _BLOCK + 5, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    for size in (1, 2, 3, 7):
        assert np.array_equal(_owner(h, size), splitmix64(h) % np.uint64(size))
    assert _owner(h[:0], 3).shape == (0,)
