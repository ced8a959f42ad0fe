"""The data-parallel training loop (``hpcprep train``).

Data order. The global batch size ``B`` is fixed. Epoch ``e`` visits the rows of
the training set as a sequence of global batches: contiguous blocks of ``B``
rows of a rotated global order, in a block order drawn from ``(seed, e)``
(:func:`hpcprep.loader.epoch_blocks`). Each global batch is cut into
consecutive per-rank pieces of ``b_0, ..., b_{n-1}`` rows (``Σ b_i`` = the block's
length), so every rank reads one contiguous hyperslab per step and the union of
the pieces is the global batch whatever the number of ranks and the split. The
number of steps per epoch, ``ceil(rows / B)``, is known to every rank up front;
a rank whose piece is empty still takes part in every Allreduce.

Consequences: the parameters after any number of steps do not depend on the
number of ranks nor on the per-rank batch sizes (up to floating-point summation
order; with ``reduce = "ordered"`` bit for bit), so adaptive batch sizes change the
speed of a step, not its result.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from ..errors import ConfigError, DataError, HpcprepError
from ..loader import block_ranges, epoch_blocks
from ..mpi.agree import agreed, root_decides
from . import checkpoint
from .balance import Balancer
from .emulate import Emulation, parse_episodes, parse_slowdown, parse_step_cost
from .datasets import count_classes, open_train_val
from .log import TrainLog
from .metrics import evaluate
from .models import make_model
from .optim import make_optimizer
from .ordered import block_rows
from .parallel import AdaptiveComm, DataParallel
from .replan import ReplanSettings, replan_line
from .spec import validate_config


def select_xp(device: str, comm):
    """``numpy`` or ``cupy`` for this rank; with CuPy, GPU ``local rank % devices``. Collective."""
    if device == "cpu":
        return np
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = local.Get_rank()
    local.Free()
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - CuPy missing or no driver
        if device == "gpu":
            raise ConfigError(f"train.device = 'gpu': CuPy with a GPU is not available ({e})") from None
        return np
    if count == 0:
        if device == "gpu":
            raise ConfigError("train.device = 'gpu': no GPU found")
        return np
    cupy.cuda.Device(local_rank % count).use()
    return cupy


def _host(a):
    return a.get() if hasattr(a, "get") else a


def _make_out(out: Path) -> None:
    """Create the ``--out`` folder (rank 0)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HpcprepError(f"--out {out}: {e}") from None


def _stop_unless_finite(xp, where: str, loss: float, vector, what: str) -> None:
    """Stop training, on every rank alike, when ``loss`` or ``vector`` (reduced numbers,
    the same on every rank) is not finite: going on would train a NaN model."""
    if not math.isfinite(loss):
        bad = "the loss"
    elif not bool(xp.isfinite(vector).all()):
        bad = what
    else:
        return
    raise agreed(DataError, f"{where}: {bad} is not finite (NaN or inf): a non-finite value "
                             f"in the data or too large a learning rate; training stopped")


class _Run:
    """The state of one training run on this rank: what :func:`train`'s phases share."""

    def __init__(self, comm, cfg: dict, emulation: Emulation, out, stream):
        self.comm, self.cfg, self.out = comm, cfg, out
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.xp = select_xp(cfg["device"], comm)
        self.emulation, self.stream = emulation, stream
        self.start_epoch, self.step, self.history = 0, 0, []

    def build(self, dataset) -> None:
        """Open the data, make the model (the same parameters on every rank) and its helpers."""
        cfg, comm, xp = self.cfg, self.comm, self.xp
        self.ds, self.val = open_train_val(dataset, cfg, comm)
        n_classes = count_classes(self.ds, comm)
        try:  # n_classes is agreed (Allreduce), so a model error is the same on every rank
            self.model = make_model(cfg["model"], self.ds.n_features, n_classes, cfg["hidden"])
        except ConfigError as e:
            raise agreed(ConfigError, str(e)) from None
        self.params = self.model.init(cfg["seed"], xp)
        host = np.ascontiguousarray(_host(self.params))
        comm.Bcast(host, root=0)
        self.params[...] = xp.asarray(host) if xp is not np else host
        self.opt = make_optimizer(cfg["optimizer"], self.model.size, cfg["lr"], cfg["momentum"], xp)
        granule = block_rows(cfg["reduce_block"], cfg["batch_size"]) if cfg["reduce"] == "ordered" else None
        self.balancer = Balancer(comm, cfg["batch_size"], cfg["balance"],
                                 ReplanSettings.from_config(cfg), cfg["shares"], granule or 1)
        self.dp = DataParallel(comm, self.model, xp, granule=granule)
        self.ac = AdaptiveComm(comm, self.model.size, cfg["threshold"], cfg["max_interval"], xp) \
            if cfg["adaptive_comm"] else None
        self.rng = np.random.default_rng(cfg["seed"])

    def resume(self, path) -> None:
        """Continue from the checkpoint ``path``: parameters, optimizer, epoch, step, batches."""
        ck = checkpoint.load(path, self.comm)
        xp, model, opt, ac = self.xp, self.model, self.opt, self.ac
        if ck["model"] != model.spec() or ck["optimizer_name"] != opt.name:
            raise agreed(ConfigError, f"--resume {path}: checkpoint of model {ck['model']} with "
                                       f"{ck['optimizer_name']}, the config asks for {model.spec()} "
                                       f"with {opt.name}")
        self.params[...] = xp.asarray(ck["params"]) if xp is not np else ck["params"]
        state = ck["optimizer"]
        per_rank = ck["optimizer_per_rank"]
        if ac is not None and per_rank is not None and per_rank.shape[0] == self.size:
            state = per_rank[self.rank]
        opt.load_state_vector(xp.asarray(state) if xp is not np else state)
        self.start_epoch, self.step = ck["epoch"], ck["step"]
        if len(ck["batch_sizes"]) == self.size and sum(ck["batch_sizes"]) == self.cfg["batch_size"]:
            self.balancer.set_sizes(ck["batch_sizes"])
        if ac is not None and ck["adaptive_comm"]:
            ac.load_state(ck["adaptive_comm"])
        self.rng.bit_generator.state = ck["rng_state"]

    def start_log(self, resumed: bool) -> None:
        self.log = TrainLog(self.comm, self.out, self.stream, append=resumed)
        self.pref = self.ds.prefetcher(self.xp, np.float64)

    def piece(self, blocks, rot, k):
        """This rank's row ranges of global batch ``k``, and every rank's number of rows."""
        start, length = blocks[k]
        sizes = self.balancer.block(length)
        lo = sum(sizes[:self.rank])
        return block_ranges(start + lo, sizes[self.rank], rot, self.ds.rows), sizes

    def checkpoint(self, path, epoch: int) -> None:
        checkpoint.save(path, self.comm, model=self.model, params=self.params, optimizer=self.opt,
                        epoch=epoch, step=self.step, config=self.cfg,
                        rng_state=self.rng.bit_generator.state, batch_sizes=self.balancer.sizes,
                        adaptive=None if self.ac is None else self.ac.state())

    def allreduce_s(self) -> float:
        return self.dp.allreduce_s + (self.ac.allreduce_s if self.ac else 0.0)

    def close(self) -> None:
        self.log.close()
        self.ds.close()
        if self.val is not None:
            self.val.close()

    def result(self) -> dict:
        ac = self.ac
        return {"params": np.array(_host(self.params)), "model": self.model.spec(),
                "history": self.history, "balance": self.balancer.report(),
                "adaptive_comm": None if ac is None else ac.report(),
                "prefetch": {"hits": self.pref.hits, "misses": self.pref.misses}}


def _where(run: _Run, epoch: int, step: int) -> str:
    return f"{run.ds.path}: epoch {epoch + 1}, step {step}"


def _apply_gradient(run: _Run, g) -> None:
    """One optimizer step with gradient ``g`` (plus the L2 term)."""
    if run.cfg["l2"]:
        g += run.cfg["l2"] * run.params
    run.opt.step(run.params, g)


def _sync_step(run: _Run, epoch: int, x, y, sizes) -> tuple[float, float, int]:
    """A step with one gradient reduction: ``(busy seconds, loss sum, rows)``."""
    res = run.dp.step(run.params, x, y, sizes)
    if res.total > 0:
        _stop_unless_finite(run.xp, _where(run, epoch, run.step + 1), res.loss_sum, res.grad,
                            "the gradient")
        _apply_gradient(run, res.grad)
    return res.busy_s, res.loss_sum, res.total


def _local_step(run: _Run, epoch: int, x, y, b: int, loss_sum) -> float:
    """A local step of adaptive_comm (averaged when due): its compute seconds."""
    dp, P = run.dp, run.model.size
    compute = dp.local(run.params, x, y)
    dp.compute_s += compute
    if b > 0:
        _apply_gradient(run, dp.buf[:P] / b)
    loss_sum += (float(dp.buf[P + 1]), b)
    if run.ac.after_step(run.params, b):  # averaged: the same parameters on every rank
        _stop_unless_finite(run.xp, _where(run, epoch, run.step + 1), 0.0, run.params,
                            "the averaged model (a local loss or gradient since the last average)")
    return compute


def _epoch_steps(run: _Run, epoch: int, rot, blocks) -> tuple[float, float]:
    """Every step of ``epoch``: the training loss sum and the rows it was summed over."""
    xp, ac = run.xp, run.ac
    loss_sum = np.zeros(2)  # adaptive_comm: local loss sum and samples
    epoch_loss, epoch_seen = 0.0, 0
    for k in range(len(blocks)):
        ranges, sizes = run.piece(blocks, rot, k)
        b = sizes[run.rank]
        x, y = run.pref.get(ranges)
        if k + 1 < len(blocks):
            run.pref.want(run.piece(blocks, rot, k + 1)[0])
        if y is not None:
            y = y.astype(np.int64, copy=False) if xp is np else y.astype(xp.int64)
        run.dp.slowdown, run.dp.step_cost = run.emulation.factor(run.step), run.emulation.step_cost
        if ac is None:
            seconds, loss, seen = _sync_step(run, epoch, x, y, sizes)
            epoch_loss += loss
            epoch_seen += seen
        else:
            seconds = _local_step(run, epoch, x, y, b, loss_sum)
        run.balancer.record(b, seconds)
        run.step += 1
        rec = run.balancer.after_step(run.step)
        if rec is not None:
            run.log.line(replan_line(rec))
    if ac is not None:
        if ac.since:
            ac.average(run.params)
        run.comm.Allreduce(MPI.IN_PLACE, loss_sum, op=MPI.SUM)
        epoch_loss, epoch_seen = loss_sum
        _stop_unless_finite(xp, _where(run, epoch, run.step), float(epoch_loss), run.params,
                            "the averaged model")
    return epoch_loss, epoch_seen


def _epoch_record(run: _Run, epoch: int, n_blocks: int, loss: float, seen, ranks, ev) -> dict:
    """The log record of an epoch (rank 0), from every rank's seconds and the evaluation."""
    secs = max(r["seconds"] for r in ranks)
    # the Allreduce share on the rank that computes longest: its Allreduce
    # time is the communication itself, not waiting for others
    slowest = max(range(run.size), key=lambda r: ranks[r]["compute"])
    rec = {
        "epoch": epoch + 1, "step": run.step, "steps_per_epoch": n_blocks,
        "train_loss": loss / seen if seen else float("nan"),
        "val_loss": ev["loss"] if ev else None,
        "val_accuracy": ev["accuracy"] if ev else None,
        "val_auc": ev["auc"] if ev else None,
        "epoch_seconds": secs,
        "compute_seconds": [r["compute"] for r in ranks],
        "allreduce_seconds": [r["allreduce"] for r in ranks],
        "allreduce_share": ranks[slowest]["allreduce"] / secs if secs > 0 else 0.0,
        "batch_sizes": list(run.balancer.sizes), "balance_method": run.balancer.method,
        "replans": [r for r in run.balancer.replans if r["step"] > run.step - n_blocks],
    }
    if run.ac is not None:
        rec["adaptive_comm"] = run.ac.report()
    return rec


def _epoch(run: _Run, epoch: int) -> None:
    """Train one epoch, evaluate, log it (rank 0) and write a checkpoint when due."""
    cfg = run.cfg
    rot, blocks = epoch_blocks(run.ds.rows, cfg["batch_size"], cfg["seed"], epoch)
    t0 = time.perf_counter()
    c0, a0 = run.dp.compute_s, run.allreduce_s()
    run.dp.restart_clock()
    loss, seen = _epoch_steps(run, epoch, rot, blocks)
    seconds = time.perf_counter() - t0
    mine = {"compute": run.dp.compute_s - c0, "allreduce": run.allreduce_s() - a0,
            "seconds": seconds}
    ranks = run.comm.gather(mine, root=0)
    ev = None
    if run.val is not None:
        ev = evaluate(run.model, run.params, run.val, run.comm, run.xp, cfg["eval_batch_size"])
    if run.rank == 0:
        rec = _epoch_record(run, epoch, len(blocks), loss, seen, ranks, ev)
        run.history.append(rec)
        run.log.record(rec)
    every = cfg["checkpoint_every"]
    if run.out is not None and ((every and (epoch + 1) % every == 0) or epoch + 1 == cfg["epochs"]):
        run.checkpoint(run.out / "checkpoint.h5", epoch + 1)


def _finish(run: _Run) -> None:
    """Write ``model.h5`` and (rank 0) ``summary.json`` into ``--out``."""
    if run.out is None:
        return
    run.checkpoint(run.out / "model.h5", max(run.cfg["epochs"], run.start_epoch))
    if run.rank == 0:
        ac = run.ac
        summary = {"model": run.model.spec(), "config": run.cfg, "ranks": run.size,
                   "epochs": run.history, "balance": run.balancer.report(),
                   "adaptive_comm": None if ac is None else ac.report(),
                   "prefetch": {"hits": run.pref.hits, "misses": run.pref.misses}}
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def _checked_config(config: dict, comm) -> tuple[dict, Emulation]:
    """The validated ``[train]`` table and this rank's emulated slowdowns, or an agreed ConfigError."""
    size = comm.Get_size()
    try:  # the same config on every rank: the same error on every rank
        cfg = validate_config(config)
        slow = Emulation(comm.Get_rank(), parse_slowdown(cfg["emulate_slowdown"], size),
                         parse_episodes(cfg["emulate_episodes"], size),
                         parse_step_cost(cfg["emulate_step_cost"], size))
        if cfg["shares"] and len(cfg["shares"]) != size:
            raise ConfigError(f"train.shares has {len(cfg['shares'])} entries for {size} ranks")
    except ConfigError as e:
        raise agreed(ConfigError, str(e)) from None
    return cfg, slow



def train(dataset, config: dict, comm, out=None, resume=None, stream=sys.stdout) -> dict:
    """Train a model data-parallel on ``dataset`` over the ranks of ``comm``.

    Parameters
    ----------
    dataset : path-like
        An hpcprep dataset folder (a split dataset uses ``train.split`` to train).
    config : dict
        The ``[train]`` table (validated here with :data:`TRAIN_SPEC`).
    comm : mpi4py communicator
        Collective: every rank calls ``train``.
    out : path-like, optional
        Folder for ``train_log.jsonl``, ``checkpoint.h5``, ``model.h5``, ``summary.json``
        (rank 0 writes). None: write nothing.
    resume : path-like, optional
        A checkpoint to continue from.
    stream : file, optional
        Where rank 0 prints the table (None: silent).

    Returns
    -------
    dict
        ``params`` (flat NumPy float64 vector), ``model`` (spec), ``history`` (the
        per-epoch log records), ``balance`` (the batch sizes: mode, sizes, the last plan,
        every re-plan; on rank 0 also predicted vs measured step seconds per rank),
        ``adaptive_comm``.
    """
    cfg, slow = _checked_config(config, comm)
    out = Path(out) if out is not None else None
    if out is not None:
        root_decides(comm, _make_out, out)
    run = _Run(comm, cfg, slow, out, stream)
    run.build(dataset)
    if resume is not None:
        run.resume(resume)
    run.start_log(resumed=resume is not None)
    try:
        for epoch in range(run.start_epoch, cfg["epochs"]):
            _epoch(run, epoch)
        run.balancer.finish()
        _finish(run)
    finally:
        run.close()
    return run.result()
