"""hpcprep.train under mpiexec: exactness at 1-4 ranks, checkpoint/resume, errors that do not hang."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcprep.loader import open_dataset
from hpcprep.train.checkpoint import load_params
from hpcprep.train.models import make_model
from hpcprep.train.synth import linear_problem, make_linear_dataset, write_dataset
from hpcprep.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
N, D, STEPS, LR = 60, 4, 12, 0.5
UNEVEN = {1: [60], 2: [5, 55], 3: [20, 0, 40], 4: [0, 7, 41, 12]}
SHARES = {1: [1], 2: [1, 3], 3: [2, 0, 1], 4: [1, 2, 0, 5]}
CASES = [("logreg", 2, []), ("softmax", 3, []), ("mlp", 2, [5, 3])]
TRAIN_CFG = {"model": "mlp", "hidden": [6], "optimizer": "adam", "lr": 0.01, "epochs": 2,
             "batch_size": 32, "seed": 4, "device": "cpu", "val": "none"}


def mpirun(n, args, timeout=180):
    return subprocess.run([str(MPIEXEC), "-n", str(n), sys.executable, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


EXACT_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from mpi4py import MPI
    from hpcprep.loader import open_dataset
    from hpcprep.train.models import make_model
    from hpcprep.train.optim import SGD
    from hpcprep.train.parallel import DataParallel
    from hpcprep.train.trainer import train

    comm = MPI.COMM_WORLD
    n = comm.Get_size()
    work, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    spec = json.loads(sys.argv[4])
    out = {}
    for name, classes, hidden in spec["cases"]:
        for mode, counts in (("equal", None), ("uneven", spec["uneven"][str(n)])):
            ds = open_dataset(f"{work}/ds{classes}", comm=comm, counts=counts)
            x, y = ds.load(dtype=np.float64)
            model = make_model(name, ds.n_features, classes, hidden)
            params = model.init(0)
            opt = SGD(model.size, lr)
            dp = DataParallel(comm, model)
            for _ in range(steps):          # full-batch gradient descent
                res = dp.step(params, x, y)
                opt.step(params, res.grad)
            out[f"{name}{classes}-{mode}"] = params.tolist()
            ds.close()
    cfg = dict(spec["train"])
    replan = {"balance": "adaptive", "rebalance_every": 1, "rebalance_window": 2,
              "rebalance_patience": 1, "rebalance_threshold": 0.0, "rebalance_max_change": 4.0,
              "emulate_slowdown": {str(n - 1): 3.0}}
    fullbatch = {"model": "logreg", "optimizer": "sgd", "momentum": 0.0, "lr": lr, "epochs": steps,
                 "batch_size": spec["rows"], **replan}
    ordered = {"reduce": "ordered", "reduce_block": 4}
    for mode, extra in (("shares", {"shares": spec["shares"][str(n)]}), ("adaptive", replan),
                        ("fullbatch", fullbatch),
                        ("ordered-shares", {"shares": spec["shares"][str(n)], **ordered}),
                        ("ordered-adaptive", {**replan, **ordered})):
        res = train(f"{work}/ds2", {**cfg, **extra}, comm, stream=None)
        out[f"train-{mode}"] = res["params"].tolist()
        out[f"train-{mode}-balance"] = res["balance"]
    if comm.Get_rank() == 0:
        open(f"{work}/out{n}.json", "w").write(json.dumps(out))
""")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("exact")
    for classes in (2, 3):
        x, y = linear_problem(N, D, seed=classes, classes=classes)
        write_dataset(work / f"ds{classes}", x, y, [25, 0, 35])
    (work / "exact.py").write_text(EXACT_SCRIPT)
    return work


def reference(work, name, classes, hidden):
    """Full-batch gradient descent in this process, no MPI."""
    with open_dataset(work / f"ds{classes}") as ds:
        x, y = ds.load(dtype=np.float64)
    model = make_model(name, D, classes, hidden)
    params = model.init(0)
    grad = np.empty(model.size)
    for _ in range(STEPS):
        model.loss_grad(params, x, y, grad)
        params = params - LR * grad / len(y)
    return params


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_full_batch_gd_is_exact_at_any_rank_count(work, n):
    spec = {"cases": CASES, "uneven": UNEVEN, "shares": SHARES, "train": TRAIN_CFG, "rows": N}
    proc = mpirun(n, [work / "exact.py", work, STEPS, LR, json.dumps(spec)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((work / f"out{n}.json").read_text())
    for name, classes, hidden in CASES:
        ref = reference(work, name, classes, hidden)
        assert np.abs(ref).max() > 0.05                 # the parameters moved
        for mode in ("equal", "uneven"):
            p = np.array(got[f"{name}{classes}-{mode}"])
            np.testing.assert_allclose(p, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max(),
                                       err_msg=f"{name} {mode} at {n} ranks")
    # the whole trainer (minibatches, Adam, uneven or adaptive per-rank batch sizes, a rank
    # with empty batches) gives the parameters of the same training in one process
    ref = train(work / "ds2", TRAIN_CFG, MPI.COMM_SELF, stream=None)["params"]
    for mode in ("shares", "adaptive"):
        np.testing.assert_allclose(np.array(got[f"train-{mode}"]), ref, rtol=1e-10,
                                   atol=1e-10 * np.abs(ref).max(), err_msg=f"trainer {mode} at {n} ranks")
    # the ordered reduction: the same bits as one process, whatever the ranks and batch sizes
    ref = train(work / "ds2", {**TRAIN_CFG, "reduce": "ordered", "reduce_block": 4}, MPI.COMM_SELF,
                stream=None)["params"]
    for mode in ("ordered-shares", "ordered-adaptive"):
        np.testing.assert_array_equal(np.array(got[f"train-{mode}"]), ref, err_msg=f"{mode} at {n} ranks")
    assert (n == 1) == (not got["train-ordered-adaptive-balance"]["replans"])
    # full-batch gradient descent through the trainer, re-planning the batch sizes after each step
    ref = reference(work, "logreg", 2, [])
    np.testing.assert_allclose(np.array(got["train-fullbatch"]), ref, rtol=1e-10,
                               atol=1e-10 * np.abs(ref).max(), err_msg=f"full-batch GD at {n} ranks")
    assert (n == 1) == (not got["train-fullbatch-balance"]["replans"])
    # re-planning after every step (no threshold, no patience): the sizes moved, the gradient did not
    bal = got["train-adaptive-balance"]
    assert bal["checks"] == 2 * -(-N // TRAIN_CFG["batch_size"])       # one check per step
    for rec in bal["replans"]:
        assert sum(rec["new_sizes"]) == TRAIN_CFG["batch_size"] and len(rec["new_sizes"]) == n
        assert all(o / 4 <= b <= max(4 * o, 1) for o, b in zip(rec["old_sizes"], rec["new_sizes"]))
    assert (n == 1) == (not bal["replans"])


# ------------------------------------------------------------------ checkpoint / resume via the CLI
@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "ds"
    return make_linear_dataset(path, n=1200, d=6, seed=5, shards=3)


def cli(n, dataset, out, *sets, resume=None):
    args = ["-m", "hpcprep.train", dataset, "--out", out]
    for s in sets:
        args += ["--set", s]
    if resume:
        args += ["--resume", resume]
    return mpirun(n, args)


@pytest.mark.parametrize("sets", [
    ("model=mlp", "hidden=[8]", "optimizer=adam", "lr=0.01"),
    ("model=logreg", "optimizer=sgd", "momentum=0.9", "lr=0.05", "adaptive_comm=true", "threshold=0.05"),
], ids=["mlp-adam", "logreg-sgd-adaptive-comm"])
def test_resume_gives_the_uninterrupted_result(learn, tmp_path, sets):
    common = ("batch_size=64", "seed=2", "device=cpu") + sets
    full = cli(2, learn, tmp_path / "full", "epochs=3", *common)
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stdout.count("\n") == 4 and "val_auc" in full.stdout.splitlines()[0]   # table, rank 0
    first = cli(2, learn, tmp_path / "part", "epochs=1", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    rest = cli(2, learn, tmp_path / "part", "epochs=3", *common, resume=tmp_path / "part/checkpoint.h5")
    assert rest.returncode == 0, rest.stderr[-3000:]
    np.testing.assert_array_equal(load_params(tmp_path / "part/model.h5"),
                                  load_params(tmp_path / "full/model.h5"))
    log = [json.loads(line) for line in (tmp_path / "part/train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    summary = json.loads((tmp_path / "full/summary.json").read_text())
    assert summary["epochs"][-1]["val_accuracy"] > 0.7
    if "adaptive_comm=true" in sets:
        ac = summary["adaptive_comm"]
        assert ac["steps"] == 3 * 15 and 3 <= ac["averages"] < ac["steps"]


def test_resume_with_another_model_is_an_error(learn, tmp_path):
    assert cli(1, learn, tmp_path / "a", "epochs=1", "device=cpu").returncode == 0
    proc = cli(2, learn, tmp_path / "a", "epochs=2", "model=mlp", "device=cpu",
               resume=tmp_path / "a/checkpoint.h5")
    assert proc.returncode != 0 and proc.stderr.count("--resume") == 1


# ------------------------------------------------------------------ errors end every rank, reported once
def test_config_error_is_reported_once_and_no_rank_hangs(learn, tmp_path):
    proc = cli(3, learn, tmp_path / "o", "bogus=1")
    assert proc.returncode != 0
    assert proc.stderr.count("unknown key train.bogus") == 1, proc.stderr
    proc = cli(2, learn, tmp_path / "o", "emulate_slowdown={5=2.0}")
    assert proc.returncode != 0 and proc.stderr.count("no rank 5") == 1, proc.stderr


def test_missing_shard_ends_every_rank(learn, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(learn, bad)
    (bad / "train/shards/part-00001.h5").unlink()
    proc = cli(3, bad, tmp_path / "o", "epochs=1")
    assert proc.returncode != 0
    assert proc.stderr.count("part-00001.h5: missing") == 1, proc.stderr
