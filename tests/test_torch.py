"""hpcprep.train.torch_data with real PyTorch: DDP-safe batch counts, epoch order, resume,
DataLoader workers, torchrun and mpiexec (docs/train.md, "Training with PyTorch")."""

import json
import os
import pickle
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hpcprep.errors import ConfigError
from hpcprep.loader import open_dataset
from hpcprep.train.synth import write_dataset
from hpcprep.train.torch_data import dist_info, epoch_order, to_torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARDS = [0, 7, 3, 0, 10, 5]          # uneven, with empty shards
N = sum(SHARDS)
SCALE = 64.0                           # feature 0 = row / 64, exact in float32


def data(n=N, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[:, 0] = np.arange(n) / SCALE
    y = (x[:, 1] + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    return x, y


def rows_of(xb) -> list[int]:
    return [int(round(v * SCALE)) for v in xb[:, 0].tolist()]


@pytest.fixture
def ds(tmp_path):
    x, y = data()
    with open_dataset(write_dataset(tmp_path / "ds", x, y, SHARDS)) as d:
        yield d


def epoch_rows(batches) -> list[list[int]]:
    return [rows_of(xb) for xb, _ in batches]


# ------------------------------------------------------------------ DDP-safe batch counts
@pytest.mark.parametrize("remainder", ["pad", "drop", "uneven"])
def test_every_rank_yields_the_same_number_of_batches(ds, remainder):
    """At world sizes 1..4, uneven shards, many batch sizes: equal counts on every rank
    (the old adapter gave 242, 242, 241, 241 batches at -n 4)."""
    order = [r for a, b in epoch_order(N, 5, 2, 4) for r in range(a, b)]
    for world in (1, 2, 3, 4):
        for bs in (1, 3, 4, 7, 30):
            per_rank = []
            for r in range(world):
                it = ds.torch(bs, shuffle_seed=5, remainder=remainder, rank=r, world_size=world,
                              block_rows=4, prefetch=r % 2 == 0)
                it.set_epoch(2)
                per_rank.append(epoch_rows(it))
                assert len(per_rank[-1]) == len(it)
            steps = {len(p) for p in per_rank}
            assert len(steps) == 1, (world, bs, [len(p) for p in per_rank])
            big = bs * world
            want = N // big if remainder == "drop" else -(-N // big)
            assert steps == {want}
            # step-major, rank-minor: the epoch's order, whatever the world size
            seq = [r for k in range(want) for p in per_rank for r in p[k]]
            if remainder == "pad":
                assert all(len(b) == bs for p in per_rank for b in p)
                assert seq == [order[i % N] for i in range(want * big)]
            elif remainder == "drop":
                assert all(len(b) == bs for p in per_rank for b in p)
                assert seq == order[:want * big]
            else:
                assert seq == order


def test_rank_and_world_come_from_args_comm_env(ds, monkeypatch):
    from mpi4py import MPI
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist_info() == (0, 1)
    assert dist_info(MPI.COMM_SELF) == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dist_info() == (2, 3)
    it = ds.torch(4, remainder="drop")              # torchrun's environment, no MPI needed
    assert (it.rank, it.world_size) == (2, 3)
    assert dist_info(rank=1, world_size=4) == (1, 4)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ConfigError, match="rank 3 of world size 3"):
        dist_info()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x'"):
        dist_info()
    with pytest.raises(ConfigError, match="remainder"):
        ds.torch(4, remainder="wrap", rank=0, world_size=1)
    with pytest.raises(ConfigError, match="batch_size"):
        ds.torch(0, rank=0, world_size=1)


def test_epochs_reshuffle_by_seed_and_epoch_with_blockwise_reads(ds):
    it = ds.torch(5, shuffle_seed=9, remainder="uneven", rank=0, world_size=1, block_rows=5)
    orders = []
    for epoch in range(3):
        it.set_epoch(epoch)
        rows = [r for b in epoch_rows(it) for r in b]
        assert sorted(rows) == list(range(N))
        orders.append(rows)
    assert orders[0] != orders[1] != orders[2]
    it.set_epoch(1)
    assert [r for b in epoch_rows(it) for r in b] == orders[1]
    # a block of 5 is at most 2 contiguous reads (rotation wraps once), a batch <= 3
    assert all(len(ranges) <= 3 for ranges in it.batch_ranges())
    plain = ds.torch(5, remainder="uneven", rank=0, world_size=1)
    assert [r for b in epoch_rows(plain) for r in b] == list(range(N))


def test_iterating_again_without_set_epoch_replays_the_epoch(ds):
    it = ds.torch(4, shuffle_seed=1, remainder="uneven", rank=0, world_size=1)
    assert epoch_rows(it) == epoch_rows(it)


# ------------------------------------------------------------------ resume
def test_resume_mid_epoch_sees_exactly_the_remaining_rows(ds, tmp_path):
    x, y = data()
    make = dict(shuffle_seed=3, remainder="pad", rank=1, world_size=2, block_rows=3)
    it = ds.torch(3, **make)
    it.set_epoch(4)
    full = epoch_rows(it)
    it.set_epoch(4)
    taken = []
    for k, (xb, yb) in enumerate(DataLoader(it, batch_size=None)):
        taken.append(rows_of(xb))
        np.testing.assert_array_equal(yb.numpy(), y[rows_of(xb)])
        if k == 2:
            state = it.state_dict()
            break
    state = pickle.loads(pickle.dumps(state))        # what a checkpoint holds
    with open_dataset(ds.path) as again:             # a new process's loader
        resumed = again.torch(3, **make)
        resumed.load_state_dict(state)
        resumed.set_epoch(4)                          # a training loop's call keeps the position
        rest = epoch_rows(DataLoader(resumed, batch_size=None))
        assert taken + rest == full
        assert resumed.state_dict()["offset"] == len(full)
        # saved at the end of the epoch: nothing left of it, the next epoch whole
        end = again.torch(3, **make)
        end.load_state_dict(resumed.state_dict())
        assert epoch_rows(end) == []
        end.set_epoch(5)
        it.set_epoch(5)
        assert epoch_rows(end) == epoch_rows(it)
        with pytest.raises(ConfigError, match="batch_size = 3"):
            again.torch(4, **make).load_state_dict(state)


def test_workers_read_every_row_once_and_resume_exactly(ds):
    it = ds.torch(2, shuffle_seed=7, remainder="uneven", rank=0, world_size=1, block_rows=2)
    it.set_epoch(1)
    want = epoch_rows(it)
    it.set_epoch(1)
    loader = it.loader(num_workers=2)
    got = epoch_rows(loader)
    assert got == want and sorted(r for b in got for r in b) == list(range(N))
    # a plain DataLoader with workers: every row once too (order per worker round-robin)
    plain = DataLoader(it, batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert sorted(r for b in epoch_rows(plain) for r in b) == list(range(N))
    # interrupted with workers, resumed with workers and without
    it.set_epoch(2)
    it.set_epoch(1)
    taken = []
    for k, (xb, _) in enumerate(loader):
        taken.append(rows_of(xb))
        if k == 4:
            state = loader.state_dict()
            break
    assert state["offset"] == 5
    for workers in (2, 0):
        resumed = ds.torch(2, shuffle_seed=7, remainder="uneven", rank=0, world_size=1,
                           block_rows=2).loader(num_workers=workers)
        resumed.load_state_dict(state)
        assert taken + epoch_rows(resumed) == want


def test_spawned_workers_are_refused_clearly(ds):
    it = ds.torch(4, rank=0, world_size=1)
    with pytest.raises(ConfigError, match="fork"):
        next(iter(DataLoader(it, batch_size=None, num_workers=1, multiprocessing_context="spawn")))


def test_tensors_share_memory_with_numpy(ds):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    t = to_torch(a)
    assert np.shares_memory(t.numpy(), a) and to_torch(None) is None
    xb, yb = next(iter(ds.torch(4, rank=0, world_size=1, dtype=np.float64)))
    assert xb.dtype == torch.float64 and yb.dtype == torch.int64 and xb.shape == (4, 3)


def test_torch_adapter_in_a_dataloader(ds):
    """Moved from test_loader.py (it skipped without torch): a plain DataLoader over ds.torch()."""
    it = ds.torch(4, shuffle_seed=1, remainder="uneven")
    batches = list(DataLoader(it, batch_size=None))
    assert sum(len(xb) for xb, _ in batches) == N and len(it) == len(batches)


def test_reading_under_torchrun_env_needs_no_mpi(ds):
    """RANK/WORLD_SIZE as torchrun sets them: batches are read without importing mpi4py."""
    code = textwrap.dedent(f"""
        import sys
        from hpcprep.loader import open_dataset
        with open_dataset({str(ds.path)!r}) as ds:
            n = sum(len(x) for x, _ in ds.torch(8, remainder="drop"))
        assert "mpi4py" not in sys.modules, "mpi4py was imported"
        print(n)
    """)
    env = dict(os.environ, RANK="1", WORLD_SIZE="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == N // 16 * 8   # rank 1 of 2: half of the whole global batches


# ------------------------------------------------------------------ real DDP: torchrun and mpiexec
DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    from hpcprep.loader import open_dataset
    from hpcprep.train.torch_data import init_distributed
    path, out, launcher, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    comm = None
    if launcher == "mpi":
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    rank, world = init_distributed(comm) if launcher != "none" else (0, 1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    if world > 1:
        model = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    with open_dataset(path, comm=comm) as ds:
        batches = ds.torch(ds.rows // world, shuffle_seed=3, remainder="drop", dtype=np.float64)
        for epoch in range(epochs):                     # full-batch gradient descent
            batches.set_epoch(epoch)
            for x, y in batches.loader():
                seen.append([int(round(v * 64)) for v in x[:, 0].tolist()])
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(x)[:, 0], y.double())
                loss.backward()
                opt.step()
    params = [p.detach().reshape(-1).tolist() for p in model.parameters()]
    open(f"{out}.{rank}", "w").write(json.dumps({"rank": rank, "world": world, "seen": seen,
                                                  "params": params}))
""")


def _run(cmd, cwd):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PYTHONUNBUFFERED")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"


def test_ddp_under_torchrun_and_mpiexec_equals_one_process(tmp_path):
    n, epochs = 60, 6
    x, y = data(n)
    path = write_dataset(tmp_path / "ds", x, y, [11, 0, 23, 26])
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    with pytest.MonkeyPatch.context() as mp:                 # one process: here, no DDP
        mp.setattr(sys, "argv", [str(script), str(path), str(tmp_path / "one"), "none", str(epochs)])
        runpy.run_path(str(script), run_name="__main__")
    _run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(script), path,
          tmp_path / "trun", "torchrun", str(epochs)], tmp_path)
    _run([str(BIN / "mpiexec"), "-n", "2", sys.executable, str(script), path, tmp_path / "mpi",
          "mpi", str(epochs)], tmp_path)
    one = json.loads((tmp_path / "one.0").read_text())
    runs = {name: [json.loads((tmp_path / f"{name}.{r}").read_text()) for r in range(2)]
            for name in ("trun", "mpi")}
    for name, ranks in runs.items():
        assert [r["world"] for r in ranks] == [2, 2]
        for k in range(epochs):                          # the ranks' halves make up the full batch
            assert ranks[0]["seen"][k] + ranks[1]["seen"][k] == one["seen"][k]
        for r in ranks:
            for p, q in zip(r["params"], one["params"]):
                np.testing.assert_allclose(p, q, rtol=0, atol=1e-6)
    assert runs["trun"][0]["seen"] == runs["mpi"][0]["seen"]   # no MPI: the same rows
    assert runs["trun"][1]["seen"] == runs["mpi"][1]["seen"]
    assert one["seen"][0] != one["seen"][1]                    # and they are reshuffled


def test_example_trains_and_resumes(tmp_path, monkeypatch):
    """examples/torch_ddp.py in this process (one rank; the launchers are tested above)."""
    from mpi4py import MPI
    x, y = data(200, d=4)
    path = write_dataset(tmp_path / "ds", x, y, [70, 0, 130])
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    example = runpy.run_path(str(ROOT / "examples/torch_ddp.py"))
    args = [str(path), "--batch-size", "16", "--checkpoint", str(tmp_path / "ck.pt"),
            "--history", str(tmp_path / "log.jsonl")]
    try:
        example["main"](args + ["--epochs", "1"])
        example["main"](args + ["--epochs", "2"])            # resumes at epoch 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert MPI.COMM_WORLD.Get_size() == 1
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [0, 1] and all(np.isfinite(e["loss"]) for e in log)
    assert [e["batches_per_rank"] for e in log] == [[13], [13]]   # 200 rows / 16, padded
    ck = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert ck["loader"][0]["epoch"] == 2 and ck["loader"][0]["offset"] == 0
