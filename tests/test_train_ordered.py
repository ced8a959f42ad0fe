"""The ordered reduction (``train.reduce = "ordered"``): one fixed tree over the blocks of a
global batch, whatever the ranks, the batch sizes and the MPI library's Allreduce order.

In-process tests check the tree (any split folds to the bits of one range); one pair of
``mpiexec -n 4`` runs changes the order of MPICH's Allreduce (the ring algorithm instead
of the default, as a multi-node layout does) and checks that the ordered trainer still
gives the one-process bits while the Allreduce trainer does not. Bit-identity at 1..4
ranks with uneven, empty and re-planned sizes: tests/test_train_mpi.py.
"""

import json
import math
import re
import textwrap

import numpy as np
import pytest
from mpi4py import MPI

from conftest import mpirun
from hpcprep.errors import ConfigError
from hpcprep.train.ordered import aligned, block_rows, fold, rank_nodes, to_rows, to_units
from hpcprep.train.spec import validate_config
from hpcprep.train.synth import linear_problem, write_dataset
from hpcprep.train.trainer import train


def tree_sum(leaves):
    """The tree of hpcprep.train.ordered written as a recursion: node (l, j) = its left child
    plus its right child, or the left child alone where the right one starts past the end."""
    n = len(leaves)

    def node(level, j):
        if level == 0:
            return leaves[j]
        left = node(level - 1, 2 * j)
        return left + node(level - 1, 2 * j + 1) if (2 * j + 1) << (level - 1) < n else left
    return node(math.ceil(math.log2(n)) if n > 1 else 0, 0)


def split_fold(leaves, cuts):
    """Fold each rank's blocks ``[cuts[r], cuts[r+1])`` alone, then rank 0 folds their nodes."""
    n, add = len(leaves), (lambda a, b: a + b)
    sent = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        nodes = fold([(0, c, leaves[c]) for c in range(a, b)], n, add)
        assert [nd[:2] for nd in nodes] == rank_nodes(a, b, n)
        assert len(nodes) <= 2 * max(1, math.ceil(math.log2(n)))
        sent += nodes
    (root,) = fold(sent, n, add)
    return root[2]


def test_any_split_folds_to_the_bits_of_one_range():
    rng = np.random.default_rng(0)
    differs = 0
    for n in list(range(1, 34)) + [64, 100]:
        # magnitudes 1e-8..1e8: any other order of the additions changes the bits
        leaves = [rng.normal(size=5) * 10.0 ** rng.integers(-8, 9, 5) for _ in range(n)]
        ref = tree_sum(leaves)
        sequential = leaves[0].copy()
        for leaf in leaves[1:]:
            sequential = sequential + leaf
        differs += not np.array_equal(ref, sequential)
        for ranks in (1, 2, 3, 4, 7):
            inner = np.sort(rng.integers(0, n + 1, ranks - 1))   # empty ranges allowed
            cuts = [0, *inner.tolist(), n]
            np.testing.assert_array_equal(split_fold(leaves, cuts), ref, err_msg=f"{n} blocks {cuts}")
    assert differs > 20          # the order matters: the tree is not just any sum


def test_blocks_rows_and_cuts():
    assert block_rows(0, 2048) == 32 and block_rows(0, 8192) == 128 and block_rows(5, 2048) == 5
    assert block_rows(0, 256) == 32 and block_rows(0, 10) == 10
    assert to_units([8, 4, 0, 11], 4) == [2, 1, 0, 3]            # 23 rows, 6 blocks (last of 3)
    assert to_rows([2, 1, 0, 3], 23, 4) == [8, 4, 0, 11]
    assert aligned([8, 4, 0, 11], 4) and not aligned([7, 5, 11], 4)
    assert to_units([7, 5, 11], 4) == [2, 1, 3]                  # cuts rounded up to a block


@pytest.mark.parametrize("extra, message", [
    ({"reduce": "ordered", "adaptive_comm": True}, "train.reduce = 'ordered' is for the synchronous step"),
    ({"reduce": "tree"}, "train.reduce"),
    ({"reduce_block": -1}, "train.reduce_block = -1"),
    ({"emulate_step_cost": {"1": -0.5}}, "train.emulate_step_cost = {'1': -0.5}: expected seconds >= 0"),
    ({"rebalance_model": "linear"}, "train.rebalance_model"),
])
def test_config_errors_name_the_key(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(extra)


# ------------------------------------------------------------------ another Allreduce order, real ranks
SCRIPT = textwrap.dedent("""
    import json, sys
    from mpi4py import MPI
    from hpcprep.train.trainer import train

    cfg, out = json.loads(sys.argv[1]), sys.argv[2]
    res = {mode: train(sys.argv[3], {**cfg, "reduce": mode}, MPI.COMM_WORLD, stream=None)["params"].tolist()
           for mode in ("allreduce", "ordered")}
    if MPI.COMM_WORLD.Get_rank() == 0:
        open(out, "w").write(json.dumps(res))
""")
CFG = {"model": "mlp", "hidden": [6], "optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 32,
       "seed": 4, "device": "cpu", "val": "none", "reduce_block": 4, "shares": [1, 2, 0, 5]}


def test_ordered_is_the_same_bits_under_another_allreduce_order(tmp_path, monkeypatch):
    x, y = linear_problem(60, 4, seed=2, classes=2)
    write_dataset(tmp_path / "ds", x, y, [25, 0, 35])
    (tmp_path / "run.py").write_text(SCRIPT)
    got = {}
    for name, algorithm in (("default", None), ("ring", "ring")):
        if algorithm:   # what a multi-node layout does to MPICH's Allreduce: another order
            monkeypatch.setenv("MPIR_CVAR_DEVICE_COLLECTIVES", "none")
            monkeypatch.setenv("MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM", algorithm)
        mpirun(4, [tmp_path / "run.py", json.dumps(CFG), tmp_path / f"{name}.json", tmp_path / "ds"],
               cwd=tmp_path, module=False)
        got[name] = {k: np.array(v) for k, v in json.loads((tmp_path / f"{name}.json").read_text()).items()}
    assert not np.array_equal(got["default"]["allreduce"], got["ring"]["allreduce"])   # the order moved
    one = train(tmp_path / "ds", {**CFG, "reduce": "ordered", "shares": []}, MPI.COMM_SELF, stream=None)
    for name in got:
        np.testing.assert_array_equal(got[name]["ordered"], one["params"], err_msg=name)
