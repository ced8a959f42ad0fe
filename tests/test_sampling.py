"""Sampling modes in-process: statistical properties of the pure mode functions, exact counts,
edge cases, and the out-of-core store.

Statistical tests are seeded and deterministic (the same seeds give the same numbers on every
run, so they cannot flake); each uses significance level ALPHA = 1e-3: a correct implementation
fails a given test for one seed set in 1 of 1000 choices of seeds, and these seeds pass.
"""

import numpy as np
import pytest
from mpi4py import MPI
from scipy import stats

from hpcprep.errors import ConfigError
from hpcprep.kernels.hashing import random_keys
from hpcprep.kernels.select import poisson1_multiplicity
from hpcprep.layers.sample import SampleLayer, record_dtype
from hpcprep.layers.spill import BlockSeq, RowStore, sort_order
from hpcprep.sampling import check_chain, check_mode, make_mode, round_half_up
from hpcprep.sampling.bootstrap import copy_tags, draw_positions
from hpcprep.sampling.split import split_bounds
from hpcprep.sampling.stratified import class_quotas

ALPHA = 1e-3
DT = record_dtype(2, "float32", "int64", copies=True)


def records(n, labels=None, x0=None):
    rec = np.zeros(n, DT)
    rec["id"] = np.arange(n)
    rec["x"][:, 0] = 1.0 if x0 is None else x0
    rec["y"] = 0 if labels is None else labels
    return rec


def order_of(table, seed, rec):
    """Global order of the rows under a mode's keys (what every layout reproduces)."""
    mode = make_mode(check_mode(table, "t"))
    mode.bind(["f0", "f1"], rec.dtype)
    keys = mode.keys(seed, 0, rec["id"], rec)
    return rec["id"][sort_order(keys, rec)]


def run_layer(table, rec, seed=1, budget=1 << 30, tmp=None):
    """One sampling layer on COMM_SELF: route, receive, finish; returns the kept rows and layer."""
    layer = SampleLayer(0, check_mode(table, "t"), MPI.COMM_SELF, seed, budget, str(tmp or "spill"))
    layer.bind(["f0", "f1"], rec.dtype)
    routed, _ = layer.route(rec, 1)
    layer.receive(routed)
    layer.exchange_done(MPI.COMM_SELF)
    layer.finish()
    return [np.concatenate(list(o.blocks()) or [np.empty(0, rec.dtype)]) for o in layer.outputs], layer


def test_shuffle_tagged_row_position_is_uniform():
    n, seeds = 20, 4000
    rec = records(n)
    pos = [int(np.flatnonzero(order_of({"op": "shuffle"}, s, rec) == 0)[0]) for s in range(seeds)]
    assert stats.chisquare(np.bincount(pos, minlength=n)).pvalue > ALPHA


def test_sample_inclusion_is_uniform_and_exact():
    n, k, seeds = 50, 10, 3000
    rec = records(n)
    hits = np.zeros(n)
    for s in range(seeds):
        kept = order_of({"op": "sample", "n": k}, s, rec)[:k]
        hits[kept] += 1
    assert hits.sum() == k * seeds
    assert stats.chisquare(hits).pvalue > ALPHA


def aes_inclusion(w, k=2):
    """Exact inclusion probabilities of successive weighted sampling of 2 without replacement."""
    w = np.asarray(w, float)
    W = w.sum()
    p = w / W
    for i in range(len(w)):
        p[i] += sum(w[j] / W * w[i] / (W - w[j]) for j in range(len(w)) if j != i)
    return p


def test_weighted_inclusion_follows_aes_probabilities():
    w = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    seeds = 20000
    rec = records(len(w), x0=w)
    hits = np.zeros(len(w))
    for s in range(seeds):
        hits[order_of({"op": "weighted", "n": 2, "weight": "f0"}, s, rec)[:2]] += 1
    expected = aes_inclusion(w) * seeds
    # each count is Binomial(seeds, p_i); Bonferroni over the rows
    z = np.abs(hits - expected) / np.sqrt(expected * (1 - expected / seeds))
    assert (2 * stats.norm.sf(z) > ALPHA / len(w)).all(), (hits, expected)


def test_bootstrap_multiplicities_mean_one_variance_one():
    n = 200_000
    m = poisson1_multiplicity(random_keys(3, 9, np.arange(n, dtype=np.int64)))
    z_mean = (m.mean() - 1) / np.sqrt(1 / n)
    z_var = (m.var() - 1) / np.sqrt(3 / n)        # Var of the sample variance of Poisson(1): (mu4 - 1)/n
    bound = stats.norm.isf(ALPHA / 4)
    assert abs(z_mean) < bound and abs(z_var) < bound
    observed = np.bincount(m, minlength=7)[:6]
    expected = stats.poisson.pmf(np.arange(6), 1) * n
    expected[-1] = n - expected[:-1].sum()
    observed[-1] = n - observed[:-1].sum()
    assert stats.chisquare(observed, expected).pvalue > ALPHA


def test_bootstrap_exact_draws_are_uniform_and_copies_distinct():
    pos = draw_positions(5, 0, 0, 100_000, 10)
    assert stats.chisquare(np.bincount(pos, minlength=10)).pvalue > ALPHA
    tags = copy_tags(np.zeros(4, np.uint64), 7, np.arange(4))
    assert tags[0] == 0 and len(set(tags.tolist())) == 4
    kept, layer = run_layer({"op": "bootstrap", "n": 25}, records(10))
    assert len(kept[0]) == 25
    assert len(np.unique(kept[0][["id", "c"]])) == 25      # every copy has its own tag


def test_stratified_counts_are_exact():
    labels = np.repeat([0, 1, 2], [50, 30, 5])
    rec = records(len(labels), labels)
    for table, want in [({"n_per_class": 10}, [10, 10, 5]), ({"fraction": 0.5}, [25, 15, 3]),
                        ({"balance": True}, [5, 5, 5])]:
        kept, layer = run_layer({"op": "stratified", **table}, rec)
        assert list(np.bincount(kept[0]["y"], minlength=3)) == want, table
    kept, layer = run_layer({"op": "stratified", "n_per_class": 10}, rec)
    assert layer.mode.warnings and "2 has 5" in layer.mode.warnings[0]
    assert list(class_quotas([4, 0, 7], balance=True)) == [4, 0, 4]


def test_sizes_rounding_and_edges():
    assert round_half_up(0.25, 10) == 3 and round_half_up(0.0, 10) == 0 and round_half_up(1.0, 7) == 7
    assert list(split_bounds(10, [0.8, 0.1, 0.1])) == [8, 9, 10]
    assert list(split_bounds(3, [0.5, 0.25])) == [2, 2]          # the rest (1 row) is dropped
    kept, _ = run_layer({"op": "sample", "fraction": 0.0}, records(20))
    assert len(kept[0]) == 0
    kept, layer = run_layer({"op": "sample", "n": 30}, records(20))
    assert len(kept[0]) == 20 and "keeping all 20" in layer.mode.warnings[0]
    with pytest.raises(Exception, match="only 20 rows"):
        run_layer({"op": "sample", "n": 30, "if_short": "error"}, records(20))
    kept, _ = run_layer({"op": "split", "splits": {"a": 0.5, "b": 0.5}, "stratify": True},
                        records(3, np.array([0, 0, 1])))
    assert sorted(kept[1]["y"].tolist() + kept[0]["y"].tolist()) == [0, 0, 1]
    assert (kept[0]["y"] == 1).sum() + (kept[1]["y"] == 1).sum() == 1   # class 1 absent from a split
    for n in (0, 1):
        for op in ({"op": "shuffle"}, {"op": "weighted", "n": 1, "weight": "f0"},
                   {"op": "stratified", "balance": True}, {"op": "bootstrap"}):
            kept, _ = run_layer(op, records(n))
            assert len(kept[0]) <= max(n, 5)


def test_weighted_nonpositive_weights():
    w = np.array([1.0, 0.0, -2.0, 3.0])
    with pytest.raises(Exception, match="row id 1 has weight 0.0"):
        run_layer({"op": "weighted", "n": 2, "weight": "f0"}, records(4, x0=w))
    kept, layer = run_layer({"op": "weighted", "n": 5, "weight": "f0", "nonpositive": "exclude"},
                            records(4, x0=w))
    assert sorted(kept[0]["id"].tolist()) == [0, 3] and layer.excluded_total == 2


def test_config_checks():
    for bad in ({"op": "sample"}, {"op": "sample", "n": 3, "fraction": 0.5},
                {"op": "stratified"}, {"op": "split", "splits": {"a": 0.7, "b": 0.7}},
                {"op": "split", "splits": {"a/b": 0.5}}, {"op": "weighted", "fraction": 2.0}):
        with pytest.raises(ConfigError):
            check_mode(bad, "sample[0]")
    with pytest.raises(ConfigError, match="must be the last"):
        check_chain([check_mode({"op": "split", "splits": {"a": 1.0}}, "s"), {"op": "shuffle"}], "int64")
    with pytest.raises(ConfigError, match="integer class label"):
        check_chain([check_mode({"op": "stratified", "balance": True}, "s")], None)


@pytest.mark.parametrize("limit", [1 << 30, 300])
def test_row_store_buckets_give_the_sorted_sequence(tmp_path, limit):
    rng = np.random.default_rng(0)
    rec = records(5000)
    keys = random_keys(1, 2, rec["id"])
    keys[100:200] = keys[50]                 # ties: ordered by id
    store = RowStore(DT, limit, str(tmp_path), "t")
    for piece in np.array_split(rng.permutation(5000), 37):
        store.add(rec[piece], keys[piece])
    assert store.spilled == (limit == 300)
    blocks = list(store.buckets(4000))
    got = np.concatenate([b[0]["id"] for b in blocks])
    assert np.array_equal(got, rec["id"][sort_order(keys, rec)])
    if limit == 300:
        assert len(blocks) > 3 and max(len(b[0]) for b in blocks) < 400
    assert list(tmp_path.iterdir()) == []
    seq = BlockSeq(DT, 1000, str(tmp_path), "o")
    for b in blocks:
        seq.append(b[0])
    assert np.array_equal(np.concatenate(list(seq.blocks()))["id"], got)
    assert list(tmp_path.iterdir()) == []



@pytest.mark.parametrize("limit", [1 << 30, 20_000])
def test_row_store_keeps_handed_over_buffers_as_views(tmp_path, limit):
    """``owned`` pieces are cut by slicing, not copied, and sort exactly as copied pieces do."""
    rec = records(6000)
    keys = np.sort(random_keys(1, 2, rec["id"]))        # grouped by fine key range, as routed

    def fine(k):
        return (k >> np.uint64(61)).astype(np.int64)    # 8 fine ranges, non-decreasing in the key

    got = []
    for owned in (False, True):
        store = RowStore(DT, limit, str(tmp_path / str(owned)), "t", fine=fine, n_fine=8)
        pieces = [(rec[lo:lo + 1000].copy(), keys[lo:lo + 1000].copy()) for lo in range(0, 6000, 1000)]
        for r, k in pieces:
            store.add(r, k, owned=owned)
        if limit > 6000 * 100:
            held = [p[0] for p in store._buf]
            assert all(any(np.shares_memory(h, r) for r, _ in pieces) for h in held) == owned
        assert store.spilled == (limit == 20_000)
        got.append(np.concatenate([b[0] for b in store.buckets(1 << 20)]))
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[1]["id"], rec["id"][sort_order(keys, rec)])

def test_spilled_layer_equals_in_memory(tmp_path):
    labels = np.arange(3000) % 3
    for table in ({"op": "shuffle"}, {"op": "weighted", "n": 700, "weight": "f0"},
                  {"op": "stratified", "fraction": 0.3}, {"op": "bootstrap", "n": 999}):
        rec = records(3000, labels, x0=np.linspace(0.5, 2.0, 3000))
        mem, _ = run_layer(table, rec, tmp=tmp_path / "a")
        spilled, layer = run_layer(table, rec, budget=40_000, tmp=tmp_path / "b")
        assert layer.bytes_spilled > 0
        assert np.array_equal(mem[0], spilled[0]), table
