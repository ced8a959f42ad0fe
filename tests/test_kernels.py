"""NumPy kernels of hpcprep.kernels against straightforward references (CPU only)."""

import math

import numpy as np
import pytest

from hpcprep.kernels import (aes_keys, det_log, destination_order, gather_rows, k_smallest,
                             k_smallest_per_class, keyed_hash, moments_of, pack_by_destination,
                             poisson1_multiplicity, random_keys, record_dtype, repeat_indices,
                             row_hash, scale_clip, unpack_columns)
from hpcprep.kernels.select import POISSON1_THRESHOLDS
from hpcprep.steps.moments import Moments

SIZES = [0, 1, 7, 1000, 40_000]


def keys_of(n, seed=3, stream=1):
    return keyed_hash(seed, stream, np.arange(n, dtype=np.int64))


# ---------------------------------------------------------------- keyed hash
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.uint32])
def test_keyed_hash_is_random_keys(dtype):
    ids = np.arange(-50, 5000).astype(dtype)
    np.testing.assert_array_equal(keyed_hash(42, 7, ids), random_keys(42, 7, ids))


def test_keyed_hash_rejects_floats():
    with pytest.raises(TypeError, match="integers"):
        keyed_hash(1, 0, np.arange(3.0))


# ------------------------------------------------------------------ packing
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("n_parts", [1, 3, 8])
def test_destination_order_is_a_stable_grouping(n, n_parts):
    dest = np.random.default_rng(n).integers(0, n_parts, n)
    order, counts = destination_order(dest, n_parts)
    ref_order, ref_counts = np.argsort(dest, kind="stable"), np.bincount(dest, minlength=n_parts)
    np.testing.assert_array_equal(order, ref_order)
    np.testing.assert_array_equal(counts, ref_counts)


def test_destination_order_rejects_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        destination_order(np.array([0, 3]), 3)


@pytest.mark.parametrize("n", SIZES)
def test_pack_unpack_roundtrip(n):
    rng = np.random.default_rng(n)
    cols = {
        "ids": np.arange(n, dtype=np.int64),
        "features": rng.normal(size=(n, 5)).astype(np.float32),
        "labels": rng.integers(0, 3, n).astype(np.int8),
        "weights": rng.random(n),
    }
    dest = rng.integers(0, 4, n)
    p = pack_by_destination(cols, dest, 4)
    assert p.buf.shape == (n, 8 + 20 + 1 + 8) and p.buf.flags.c_contiguous
    assert p.dtype == record_dtype(cols)
    np.testing.assert_array_equal(p.displs, np.concatenate(([0], np.cumsum(p.counts)[:-1])))
    out = unpack_columns(p.buf, p.dtype)
    order = np.argsort(dest, kind="stable")
    for name, col in cols.items():
        np.testing.assert_array_equal(out[name], col[order])
    # each destination's slice holds exactly its rows, in source order
    for d in range(4):
        sl = out["ids"][p.displs[d]:p.displs[d] + p.counts[d]]
        np.testing.assert_array_equal(sl, np.flatnonzero(dest == d))
    # on the host the bytes are packed structured records
    recs = p.buf.view(p.dtype)[:, 0]
    np.testing.assert_array_equal(recs["features"], cols["features"][order])


def test_pack_structured_array():
    dt = np.dtype([("a", np.int32), ("b", np.float64, (2,))])
    recs = np.zeros(6, dtype=dt)
    recs["a"] = np.arange(6)
    recs["b"] = np.arange(12.0).reshape(6, 2)
    dest = np.array([1, 0, 1, 0, 2, 2])
    p = pack_by_destination(recs, dest, 3)
    np.testing.assert_array_equal(p.counts, [2, 2, 2])
    np.testing.assert_array_equal(p.buf.view(dt)[:, 0], recs[[1, 3, 0, 2, 4, 5]])


def test_gather_rows():
    x = np.arange(20.0).reshape(10, 2)
    idx = np.array([3, 3, 0, 9])
    np.testing.assert_array_equal(gather_rows(x, idx), x[idx])


# ------------------------------------------------------------------ moments
@pytest.mark.parametrize("nan", [False, True])
def test_moments_of_is_moments(nan):
    x = np.random.default_rng(0).normal(size=(500, 4))
    if nan:
        x[::7, 1] = np.nan
    m, ref = moments_of(x), Moments.of(x)
    for a, b in [(m.n, ref.n), (m.mean, ref.mean), (m.m2, ref.m2)]:
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(m.var, np.nanvar(x, axis=0), rtol=1e-12)


# ---------------------------------------------------------------- transform
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_scale_clip(dtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 3)) * 10).astype(dtype)
    if np.dtype(dtype).kind == "f":
        x[0, 0] = np.nan
    mean, std = np.array([0.5, -1.0, 2.0]), np.array([3.0, 0.25, 7.0])
    y = scale_clip(x, mean, std)
    assert y.dtype == np.float32
    ref = ((x.astype(np.float64) - mean) / std).astype(np.float32)
    np.testing.assert_array_equal(y, ref)
    yc = scale_clip(x, mean, std, lo=-2.0, hi=2.0)
    np.testing.assert_array_equal(yc, np.clip(ref, -2, 2))
    if np.dtype(dtype).kind == "f":
        assert np.isnan(yc[0, 0])
    assert np.nanmax(scale_clip(x, mean, std, hi=1.0)) <= 1.0
    assert scale_clip(x, mean, std, dtype=np.float64).dtype == np.float64


# ----------------------------------------------------------------- row hash
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16, np.uint8, np.bool_])
@pytest.mark.parametrize("d", [1, 3, 5])
def test_row_hash_equal_rows_equal_hash(dtype, d):
    rng = np.random.default_rng(d)
    base = (rng.normal(size=(200, d)) * 50).astype(dtype)
    rows = base[rng.integers(0, 200, 1000)]
    h = row_hash(rows)
    assert h.dtype == np.uint64 and h.shape == (1000,)
    _, inv = np.unique(rows, axis=0, return_inverse=True)
    _, hinv = np.unique(h, return_inverse=True)
    # same partition into groups: equal rows <-> equal hashes
    pairs = set(zip(inv.ravel().tolist(), hinv.ravel().tolist()))
    assert len(pairs) == len(set(inv.ravel().tolist())) == len(set(hinv.ravel().tolist()))


def test_row_hash_reference_fold():
    from hpcprep.kernels.hashing import splitmix64
    x = np.array([[1.5, -2.0, 3.25]])
    words = x.view(np.uint64)[0]
    h = splitmix64(np.array([0 ^ 24], dtype=np.uint64))
    for w in words:
        h = splitmix64(h ^ w)
    np.testing.assert_array_equal(row_hash(x), h)


def test_row_hash_canonical_floats():
    a = np.array([[0.0, np.nan], [-0.0, -np.nan], [0.0, np.float64("nan")]])
    a[2, 1] = np.frombuffer(np.uint64(0x7FF0000000000001).tobytes(), np.float64)[0]  # other NaN
    h = row_hash(a)
    assert h[0] == h[1] == h[2]
    assert row_hash(a, canonical=False)[0] != row_hash(a, canonical=False)[1]


def test_row_hash_chaining_and_seed():
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    lab = np.array([0, 1, 0, 1, 0, 1])
    h = row_hash(lab, seed=row_hash(x))
    assert len(set(h.tolist())) == 6
    assert (row_hash(x, seed=1) != row_hash(x, seed=2)).all()
    assert row_hash(np.zeros((0, 3))).shape == (0,)


# ----------------------------------------------------------------- selection
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", [0, 1, 5, 999, 10**6])
def test_k_smallest_is_sorted_prefix(n, k):
    keys = keys_of(n)
    np.testing.assert_array_equal(k_smallest(keys, k), np.argsort(keys, kind="stable")[:k])


def test_k_smallest_ties_by_position():
    keys = np.array([5, 1, 5, 1, 5, 0, 5, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9], dtype=np.uint64)
    np.testing.assert_array_equal(k_smallest(keys, 4), [5, 1, 3, 0])
    np.testing.assert_array_equal(k_smallest(keys, 5), [5, 1, 3, 0, 2])


@pytest.mark.parametrize("n", [0, 1, 50, 5000])
def test_k_smallest_per_class(n):
    rng = np.random.default_rng(n)
    keys = keys_of(n)
    classes = rng.integers(0, 4, n)
    kpc = np.array([3, 0, 10, 10**6])
    got = k_smallest_per_class(keys, classes, kpc)
    ref = []
    for c in range(4):
        idx = np.flatnonzero(classes == c)
        ref.extend(idx[np.argsort(keys[idx], kind="stable")[:kpc[c]]])
    ref = np.array(ref, dtype=np.int64)
    ref = ref[np.lexsort((ref, keys[ref]))] if len(ref) else ref
    np.testing.assert_array_equal(got, ref)
    assert len(k_smallest_per_class(keys, classes, 2)) == sum(min(2, (classes == c).sum()) for c in range(4))


def test_k_smallest_per_class_rejects_bad_codes():
    with pytest.raises(ValueError, match="class codes"):
        k_smallest_per_class(keys_of(3), np.array([0, 1, 5]), [1, 1])


def test_det_log_close_to_log():
    rng = np.random.default_rng(0)
    u = np.concatenate([rng.random(100_000), [1.0, 2.0 ** -53, 0.5, 5e-324, 1e300, 0.7071067811865476]])
    u = u[u > 0]
    np.testing.assert_array_max_ulp(det_log(u), np.log(u), maxulp=4)
    assert det_log(np.array([1.0]))[0] == 0.0


def test_aes_keys():
    keys = keys_of(10_000)
    w = np.random.default_rng(2).random(10_000) * 5
    w[:10] = 0.0
    w[10] = np.nan
    a = aes_keys(keys, w)
    from hpcprep.kernels import key_to_unit
    u = key_to_unit(keys, open_left=True)
    good = w > 0
    np.testing.assert_allclose(a[good], -np.log(u[good]) / w[good], rtol=1e-14, atol=1e-300)
    assert np.isinf(a[~good]).all()


def test_aes_selection_follows_weights():
    # weight 3 rows are ~3x as likely as weight 1 rows to be in a small sample
    n, k = 200_000, 2000
    w = np.where(np.arange(n) % 2 == 0, 1.0, 3.0)
    sel = k_smallest(aes_keys(keys_of(n, seed=9), w), k)
    heavy = (w[sel] == 3.0).mean()
    assert abs(heavy - 0.75) < 0.05


def test_poisson_thresholds_are_the_cdf():
    cdf = np.cumsum([math.exp(-1) / math.factorial(j) for j in range(len(POISSON1_THRESHOLDS))])
    np.testing.assert_allclose(POISSON1_THRESHOLDS.astype(np.float64) / 2.0 ** 64, cdf, rtol=1e-15)
    assert (np.diff(POISSON1_THRESHOLDS.astype(object)) > 0).all()


def test_poisson1_multiplicity_mean_and_variance():
    """Seeded statistical test at significance level 1e-6 per statistic.

    For X ~ Poisson(1): E X = 1, Var X = 1, and the sample variance has variance
    (mu4 - sigma**4) / n = (4 - 1) / n. Each |z| must stay below 4.89, the
    two-sided normal quantile for alpha = 1e-6; with a fixed seed and ids the
    test is deterministic, the level says how unlikely a false failure would be.
    A chi-square goodness-of-fit on the counts of 0..5 and >= 6 checks the shape.
    """
    n = 400_000
    m = poisson1_multiplicity(keys_of(n, seed=2024, stream=5))
    assert m.dtype == np.int64 and m.min() >= 0
    z_mean = (m.mean() - 1.0) / math.sqrt(1.0 / n)
    z_var = (m.var() - 1.0) / math.sqrt(3.0 / n)
    assert abs(z_mean) < 4.89, z_mean
    assert abs(z_var) < 4.89, z_var
    p = np.array([math.exp(-1) / math.factorial(j) for j in range(6)])
    p = np.append(p, 1 - p.sum())
    obs = np.bincount(np.minimum(m, 6), minlength=7)
    chi2 = (((obs - n * p) ** 2) / (n * p)).sum()
    assert chi2 < 38.26         # upper 1e-6 quantile of chi-square with 6 degrees of freedom


def test_poisson_multiplicity_is_independent_of_key_order():
    keys = keys_of(100_000, seed=1)
    m = poisson1_multiplicity(keys)
    first = m[np.argsort(keys)][:20_000]      # rows with the smallest keys
    assert abs(first.mean() - 1.0) < 5 * math.sqrt(1 / 20_000)


@pytest.mark.parametrize("mult", [[], [0, 0], [0, 2, 1, 0, 3], [1] * 5])
def test_repeat_indices(mult):
    mult = np.array(mult, dtype=np.int64)
    np.testing.assert_array_equal(repeat_indices(mult), np.repeat(np.arange(len(mult)), mult))
