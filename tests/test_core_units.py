"""Pure logic, in-process: partitions, keys, routing, moments, streams."""

import numpy as np
import pytest
from mpi4py import MPI

from hpcprep.chunk import Chunk
from hpcprep.mpi.exchange import alltoallv_records
from hpcprep.kernels.hashing import key_to_unit, random_keys
from hpcprep.kernels.route import contiguous_targets, destination_order, key_range_owner
from hpcprep.layers.sample import chunk_to_records, record_dtype
from hpcprep.partition import balanced_contiguous, equal_counts, offsets
from hpcprep.steps import Moments, merge_by_chunk


def test_equal_counts_and_offsets():
    assert equal_counts(10, 3).tolist() == [4, 3, 3]
    assert equal_counts(2, 4).tolist() == [1, 1, 0, 0]
    assert offsets([4, 3, 3]).tolist() == [0, 4, 7, 10]


@pytest.mark.parametrize("sizes, parts", [([5] * 12, 4), ([1, 100, 1, 1], 2), ([], 3), ([7], 3),
                                          ([3, 3, 3], 5)])
def test_balanced_contiguous_covers_in_order(sizes, parts):
    ranges = balanced_contiguous(sizes, parts)
    assert len(ranges) == parts
    flat = [i for lo, hi in ranges for i in range(lo, hi)]
    assert flat == list(range(len(sizes)))
    if sizes == [5] * 12:
        assert [hi - lo for lo, hi in ranges] == [3, 3, 3, 3]


def test_weighted_contiguous_follows_speeds():
    ranges = balanced_contiguous([10] * 30, 2, weights=[2, 1])
    assert [hi - lo for lo, hi in ranges] == [20, 10]


def test_keys_depend_on_seed_stream_and_id_only():
    ids = np.arange(1000, dtype=np.int64)
    k = random_keys(3, 1, ids)
    assert np.array_equal(k[500:], random_keys(3, 1, ids[500:]))
    assert len(np.unique(k)) == 1000
    assert not np.array_equal(k, random_keys(4, 1, ids))
    assert not np.array_equal(k, random_keys(3, 2, ids))
    u = key_to_unit(random_keys(0, 0, np.arange(200_000)))
    assert 0 <= u.min() and u.max() < 1
    # uniformity: chi-square over 20 bins, critical value at alpha = 1e-3 (19 dof) is 43.8
    counts = np.bincount((u * 20).astype(int), minlength=20)
    chi2 = ((counts - 10_000) ** 2 / 10_000).sum()
    assert chi2 < 43.8


def test_key_range_owner_is_monotone_and_balanced():
    keys = np.sort(random_keys(1, 1, np.arange(50_000)))
    owner = key_range_owner(keys, 3)
    assert np.all(np.diff(owner) >= 0)
    assert set(owner.tolist()) == {0, 1, 2}
    assert abs(np.bincount(owner) - 50_000 / 3).max() < 600
    order, counts = destination_order(np.array([2, 0, 2, 1, 0]), 3)
    assert order.tolist() == [1, 4, 3, 0, 2] and counts.tolist() == [2, 1, 2]


def test_contiguous_targets():
    offs = offsets([4, 3, 3])
    assert contiguous_targets(0, 5, offs).tolist() == [4, 1, 0]
    assert contiguous_targets(5, 5, offs).tolist() == [0, 2, 3]
    assert contiguous_targets(3, 0, offs).tolist() == [0, 0, 0]


def test_moments_merge_equals_whole():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 3, (1000, 4))
    x[rng.uniform(size=x.shape) < 0.05] = np.nan
    parts = [Moments.of(x[a:b]) for a, b in [(0, 1), (1, 400), (400, 400), (400, 1000)]]
    m = parts[0]
    for p in parts[1:]:
        m = m.merge(p)
    np.testing.assert_allclose(m.mean, np.nanmean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.var, np.nanvar(x, axis=0), rtol=1e-12)
    np.testing.assert_array_equal(m.n, (~np.isnan(x)).sum(axis=0))


def test_merge_by_chunk_orders_by_chunk_id():
    comm = MPI.COMM_SELF
    merged = merge_by_chunk(comm, {3: "c", 1: "a", 2: "b"}, lambda a, b: a + b)
    assert merged == "abc"
    assert merge_by_chunk(comm, {}, lambda a, b: a + b) is None


def test_records_roundtrip_through_alltoallv_self():
    rdt = record_dtype(3, "float32", "int64")
    chunk = Chunk(0, np.arange(5, dtype=np.int64), np.arange(15, dtype=np.float32).reshape(5, 3),
                  np.arange(5, dtype=np.int64) * 10)
    rec = chunk_to_records(chunk, rdt)
    got, counts, sent = alltoallv_records(MPI.COMM_SELF, rec, [5], rdt, max_bytes=rdt.itemsize * 2)
    assert counts.tolist() == [5]
    assert sent == 0
    assert np.array_equal(got, rec)


@pytest.mark.parametrize("n_parts", [1, 3, 5])
def test_route_chunk_packs_what_route_would(n_parts):
    """The packed send buffer of a chunk (one gather per row) equals ``route(chunk_to_records(chunk))``
    and the reference: rows grouped by fine key range, stable, with the rows per member."""
    from hpcprep.layers.sample import FINE_PER_RANK, SAMPLE_STREAM, SampleLayer
    from hpcprep.sampling import check_mode
    from hpcprep.steps._columns import CODES

    rng = np.random.default_rng(n_parts)
    n = 40_000
    rdt = record_dtype(3, "float32", "int16", weights=True, copies=True, codes=2)
    chunk = Chunk(0, rng.permutation(10 * n)[:n].astype(np.int64), rng.normal(size=(n, 3)),
                  rng.integers(0, 9, n), extras={"weight": rng.random(n),
                                                 CODES: rng.integers(0, 4, (n, 2))})

    def layer():
        sl = SampleLayer(0, check_mode({"op": "shuffle"}, "t"), None, seed=5)
        sl.bind(["a", "b", "c"], rdt)
        return sl

    packed, counts, own = layer().route_chunk(chunk, n_parts)
    assert own is None
    routed, counts2 = layer().route(chunk_to_records(chunk, rdt), n_parts)
    assert packed.dtype == rdt and np.array_equal(packed, routed)
    assert counts.tolist() == counts2.tolist() and counts.dtype == np.int64
    fine = key_range_owner(random_keys(5, SAMPLE_STREAM, chunk.ids), n_parts * FINE_PER_RANK)
    order = np.argsort(fine, kind="stable")
    assert np.array_equal(packed["id"], chunk.ids[order])
    assert np.array_equal(packed["x"], chunk.features[order].astype(np.float32))
    assert np.array_equal(packed["k"], chunk.extras[CODES][order]) and (packed["c"] == 0).all()
    assert counts.tolist() == np.bincount(fine // FINE_PER_RANK, minlength=n_parts).tolist()
    # this rank's own rows packed apart, one array per fine range: its section cut out of the send buffer
    own_part = n_parts // 2
    others, counts3, own = layer().route_chunk(chunk, n_parts, own_part)
    lo = int(counts[:own_part].sum())
    hi = lo + int(counts[own_part])
    assert counts3.tolist() == counts.tolist() and all(p.base is None for p in own)
    mine = fine[(fine // FINE_PER_RANK) == own_part]
    assert [len(p) for p in own] == [c for c in np.bincount(mine).tolist() if c]
    assert np.array_equal(np.concatenate(own), packed[lo:hi])
    assert np.array_equal(others, np.concatenate((packed[:lo], packed[hi:])))
