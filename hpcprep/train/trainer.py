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
order), so adaptive batch sizes change the speed of a step, not its result.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from ..config import seed_check
from ..errors import ConfigError, DataError, HpcprepError
from ..loader import block_ranges, epoch_blocks, open_dataset
from ..mpi.agree import agreed, root_decides
from ..output.reader import read_manifest
from ..schema import Param, between, fraction, list_of, non_negative, positive, validate_table
from . import checkpoint
from .balance import Balancer, parse_slowdown
from .metrics import evaluate
from .models import MODELS, make_model
from .optim import make_optimizer
from .parallel import AdaptiveComm, DataParallel


#: Largest hidden layer width and batch size (rows per batch, an MPI count).
WIDTH_MAX, BATCH_MAX = 2**20, 2**31 - 1
_batch = between(1, BATCH_MAX, "[1, 2**31 - 1]")


def _widths(value):
    if not all(isinstance(h, int) and not isinstance(h, bool) and 0 < h <= WIDTH_MAX for h in value):
        return "every item must be an integer in [1, 2**20]"
    return None


def _shares(value):
    problem = list_of(int, float)(value)
    if problem:
        return problem
    if value and (min(value) < 0 or sum(value) <= 0):
        return "shares must be >= 0 with a positive sum"
    return None


def _slowdown(value):
    try:
        parse_slowdown(value)
    except ConfigError as e:
        return str(e).split(": ", 1)[-1] if ": " in str(e) else str(e)
    return None


TRAIN_SPEC = {
    "model": Param(str, "logreg", choices=tuple(MODELS), doc="logreg (binary), softmax, mlp"),
    "hidden": Param(list, [64], check=_widths, doc="mlp hidden layer widths"),
    "optimizer": Param(str, "sgd", choices=("sgd", "adam"), doc="sgd (with momentum) or adam"),
    "lr": Param(float, 0.1, check=positive, doc="learning rate"),
    "momentum": Param(float, 0.9, check=fraction, doc="sgd momentum"),
    "l2": Param(float, 0.0, check=non_negative, doc="L2 penalty: adds l2 * params to the mean gradient"),
    "epochs": Param(int, 10, check=positive, doc="epochs to train (in total, counting resumed ones)"),
    "batch_size": Param(int, 256, check=_batch, doc="global batch size (all ranks together)"),
    "seed": Param(int, 0, check=seed_check, doc="initial parameters and batch order"),
    "balance": Param(str, "equal", choices=("equal", "adaptive"), doc="per-rank batch sizes"),
    "rebalance_every": Param(int, 20, check=positive, doc="adaptive: steps between rebalances"),
    "shares": Param(list, [], check=_shares,
                    doc="fixed relative per-rank batch shares (default equal; adaptive start)"),
    "emulate_slowdown": Param(dict, {}, check=_slowdown,
                              doc='make ranks slower, e.g. { 1 = 2.0 } (rank 1 takes 2x as long)'),
    "split": Param(str, "train", doc="training split when DATASET is a split dataset"),
    "val": Param(str, "", doc="validation: a split name of DATASET or a dataset path; "
                              "'' = the split 'val' if any; 'none' = no validation"),
    "checkpoint_every": Param(int, 1, check=non_negative, doc="epochs between checkpoints (0: only at the end)"),
    "adaptive_comm": Param(bool, False, doc="local SGD with adaptive averaging interval"),
    "threshold": Param(float, 0.01, check=positive, doc="adaptive_comm: relative model spread that halves the interval"),
    "max_interval": Param(int, 64, check=positive, doc="adaptive_comm: longest interval between averages"),
    "device": Param(str, "auto", choices=("auto", "cpu", "gpu"), doc="auto: CuPy on a GPU when present"),
    "eval_batch_size": Param(int, 4096, check=_batch, doc="rows per evaluation batch"),
}


def validate_config(table: dict) -> dict:
    """Validate a ``[train]`` table and fill in defaults (raises ConfigError naming the key)."""
    cfg = validate_table(table, TRAIN_SPEC, "train")
    cfg["emulate_slowdown"] = {str(k): float(v) for k, v in cfg["emulate_slowdown"].items()}
    cfg["shares"] = [float(v) for v in cfg["shares"]]
    return cfg


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


def _split_names(path) -> dict:
    try:
        return read_manifest(path)["splits"]
    except HpcprepError:  # open_dataset reports it
        return {}


def _datasets(dataset, cfg) -> tuple:
    """``(train split, val folder, val split)`` to open (val folder None: no validation)."""
    splits = _split_names(dataset)
    train = cfg["split"] if splits else None
    val_name = cfg["val"]
    if val_name == "none" or (val_name == "" and "val" not in splits):
        return train, None, None
    if val_name == "":
        val_name = "val"
    if val_name in splits:
        return train, dataset, val_name
    if Path(val_name).is_dir():
        return train, val_name, "val" if _split_names(val_name) else None
    raise ConfigError(f"train.val = {val_name!r}: neither a split of {dataset} "
                      f"({', '.join(splits) or 'no splits'}) nor a dataset folder")


def _open_train_val(dataset, cfg, comm):
    # rank 0 decides, so every rank makes the same collective open_dataset calls
    train_split, val_path, val_split = root_decides(comm, _datasets, dataset, cfg)
    train = open_dataset(dataset, split=train_split, comm=comm)
    if val_path is None:
        return train, None
    try:
        return train, open_dataset(val_path, split=val_split, comm=comm)
    except HpcprepError:
        train.close()
        raise


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


def _classes(ds, comm) -> int:
    """Number of classes: max label + 1 over the whole training set (labels must be ints >= 0)."""
    if not ds.has_labels:
        raise agreed(DataError, f"{ds.path}: the dataset has no labels to train on")
    lo, hi, bad = math.inf, -math.inf, 0
    for a in range(ds.start, ds.stop, 1 << 20):
        y = ds.read_labels(a, min(a + (1 << 20), ds.stop))
        if y.size:
            lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
            bad += int(np.count_nonzero(y != np.floor(y)))
    buf = np.array([hi, -lo, bad], dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
    hi, lo, bad = buf[0], -buf[1], buf[2]
    if bad or lo < 0 or not math.isfinite(hi):
        raise agreed(DataError, f"{ds.path}: labels must be class numbers 0, 1, ... "
                                 f"(found min {lo}, max {hi})")
    return int(hi) + 1


class _Log:
    """JSON-lines log and a short table, on rank 0 only, each line one write call."""

    COLUMNS = [("epoch", 5, "d"), ("step", 7, "d"), ("train_loss", 10, ".4f"), ("val_loss", 9, ".4f"),
               ("val_acc", 8, ".4f"), ("val_auc", 8, ".4f"), ("sec/epoch", 9, ".3f"),
               ("allreduce%", 10, ".1f")]

    def __init__(self, comm, out: Path | None, stream, append: bool):
        self.rank0 = comm.Get_rank() == 0
        self.stream = stream
        self.file = None
        if self.rank0 and out is not None:
            self.file = open(out / "train_log.jsonl", "a" if append else "w")
        self.header_done = False

    def line(self, text: str) -> None:
        if self.rank0 and self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def record(self, rec: dict) -> None:
        if not self.rank0:
            return
        if self.file is not None:
            self.file.write(json.dumps(rec) + "\n")
            self.file.flush()
        if not self.header_done:
            self.line(" ".join(f"{name:>{w}}" for name, w, _ in self.COLUMNS))
            self.header_done = True
        values = [rec["epoch"], rec["step"], rec["train_loss"], rec.get("val_loss"),
                  rec.get("val_accuracy"), rec.get("val_auc"), rec["epoch_seconds"],
                  100.0 * rec["allreduce_share"]]
        cells = []
        for (name, w, fmt), v in zip(self.COLUMNS, values):
            ok = v is not None and not (isinstance(v, float) and math.isnan(v))
            cells.append(f"{v:>{w}{fmt}}" if ok else f"{'-':>{w}}")
        self.line(" ".join(cells))

    def close(self):
        if self.file is not None:
            self.file.close()


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
        per-epoch log records), ``balance`` (rebalance history), ``adaptive_comm``.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    try:  # the same config on every rank: the same error on every rank
        cfg = validate_config(config)
        slow = parse_slowdown(cfg["emulate_slowdown"], size)
        if cfg["shares"] and len(cfg["shares"]) != size:
            raise ConfigError(f"train.shares has {len(cfg['shares'])} entries for {size} ranks")
    except ConfigError as e:
        raise agreed(ConfigError, str(e)) from None
    out = Path(out) if out is not None else None
    if out is not None:
        root_decides(comm, _make_out, out)

    xp = select_xp(cfg["device"], comm)
    ds, val = _open_train_val(dataset, cfg, comm)
    n_classes = _classes(ds, comm)
    try:  # n_classes is agreed (Allreduce), so a model error is the same on every rank
        model = make_model(cfg["model"], ds.n_features, n_classes, cfg["hidden"])
    except ConfigError as e:
        raise agreed(ConfigError, str(e)) from None
    params = model.init(cfg["seed"], xp)
    host = np.ascontiguousarray(_host(params))
    comm.Bcast(host, root=0)
    params[...] = xp.asarray(host) if xp is not np else host
    opt = make_optimizer(cfg["optimizer"], model.size, cfg["lr"], cfg["momentum"], xp)
    balancer = Balancer(comm, cfg["batch_size"], cfg["balance"], cfg["rebalance_every"], cfg["shares"])
    dp = DataParallel(comm, model, xp, slow.get(rank, 1.0))
    ac = AdaptiveComm(comm, model.size, cfg["threshold"], cfg["max_interval"], xp) \
        if cfg["adaptive_comm"] else None
    rng = np.random.default_rng(cfg["seed"])
    start_epoch, step = 0, 0

    if resume is not None:
        ck = checkpoint.load(resume, comm)
        if ck["model"] != model.spec() or ck["optimizer_name"] != opt.name:
            raise agreed(ConfigError, f"--resume {resume}: checkpoint of model {ck['model']} with "
                                       f"{ck['optimizer_name']}, the config asks for {model.spec()} "
                                       f"with {opt.name}")
        params[...] = xp.asarray(ck["params"]) if xp is not np else ck["params"]
        state = ck["optimizer"]
        if ac is not None and ck["optimizer_per_rank"] is not None and ck["optimizer_per_rank"].shape[0] == size:
            state = ck["optimizer_per_rank"][rank]
        opt.load_state_vector(xp.asarray(state) if xp is not np else state)
        start_epoch, step = ck["epoch"], ck["step"]
        if len(ck["batch_sizes"]) == size and sum(ck["batch_sizes"]) == cfg["batch_size"]:
            balancer.sizes = list(ck["batch_sizes"])
        if ac is not None and ck["adaptive_comm"]:
            ac.load_state(ck["adaptive_comm"])
        rng.bit_generator.state = ck["rng_state"]

    log = _Log(comm, out, stream, append=resume is not None)
    history = []
    n, batch = ds.rows, cfg["batch_size"]
    pref = ds.prefetcher(xp, np.float64)
    P = model.size

    def piece(blocks, rot, k):
        start, length = blocks[k]
        sizes = balancer.block(length)
        lo = sum(sizes[:rank])
        return block_ranges(start + lo, sizes[rank], rot, n), sizes[rank]

    def ckpt(path, epoch):
        checkpoint.save(path, comm, model=model, params=params, optimizer=opt, epoch=epoch, step=step,
                        config=cfg, rng_state=rng.bit_generator.state, batch_sizes=balancer.sizes,
                        adaptive=None if ac is None else ac.state())

    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            rot, blocks = epoch_blocks(n, batch, cfg["seed"], epoch)
            t0 = time.perf_counter()
            c0, a0 = dp.compute_s, dp.allreduce_s + (ac.allreduce_s if ac else 0.0)
            loss_sum = np.zeros(2)  # adaptive_comm: local loss sum and samples
            epoch_loss, epoch_seen = 0.0, 0
            for k in range(len(blocks)):
                ranges, b = piece(blocks, rot, k)
                x, y = pref.get(ranges)
                if k + 1 < len(blocks):
                    pref.want(piece(blocks, rot, k + 1)[0])
                if y is not None:
                    y = y.astype(np.int64, copy=False) if xp is np else y.astype(xp.int64)
                if ac is None:
                    res = dp.step(params, x, y)
                    compute = res.compute_s
                    if res.total > 0:
                        _stop_unless_finite(xp, f"{ds.path}: epoch {epoch + 1}, step {step + 1}",
                                            res.loss_sum, res.grad, "the gradient")
                        g = res.grad
                        if cfg["l2"]:
                            g += cfg["l2"] * params
                        opt.step(params, g)
                    epoch_loss += res.loss_sum
                    epoch_seen += res.total
                else:
                    compute = dp.local(params, x, y)
                    dp.compute_s += compute
                    if b > 0:
                        g = dp.buf[:P] / b
                        if cfg["l2"]:
                            g += cfg["l2"] * params
                        opt.step(params, g)
                    loss_sum += (float(dp.buf[P + 1]), b)
                    if ac.after_step(params, b):  # averaged: the same parameters on every rank
                        _stop_unless_finite(xp, f"{ds.path}: epoch {epoch + 1}, step {step + 1}",
                                            0.0, params, "the averaged model (a local loss or "
                                            "gradient since the last average)")
                balancer.record(b, compute)
                step += 1
                balancer.after_step(step)
            if ac is not None:
                if ac.since:
                    ac.average(params)
                comm.Allreduce(MPI.IN_PLACE, loss_sum, op=MPI.SUM)
                epoch_loss, epoch_seen = loss_sum
                _stop_unless_finite(xp, f"{ds.path}: epoch {epoch + 1}, step {step}",
                                    float(epoch_loss), params, "the averaged model")
            seconds = time.perf_counter() - t0
            mine = {"compute": dp.compute_s - c0,
                    "allreduce": dp.allreduce_s + (ac.allreduce_s if ac else 0.0) - a0,
                    "seconds": seconds}
            ranks = comm.gather(mine, root=0)
            ev = evaluate(model, params, val, comm, xp, cfg["eval_batch_size"]) if val is not None else None
            if rank == 0:
                secs = max(r["seconds"] for r in ranks)
                # the Allreduce share on the rank that computes longest: its Allreduce
                # time is the communication itself, not waiting for others
                slowest = max(range(size), key=lambda r: ranks[r]["compute"])
                rec = {
                    "epoch": epoch + 1, "step": step, "steps_per_epoch": len(blocks),
                    "train_loss": epoch_loss / epoch_seen if epoch_seen else float("nan"),
                    "val_loss": ev["loss"] if ev else None,
                    "val_accuracy": ev["accuracy"] if ev else None,
                    "val_auc": ev["auc"] if ev else None,
                    "epoch_seconds": secs,
                    "compute_seconds": [r["compute"] for r in ranks],
                    "allreduce_seconds": [r["allreduce"] for r in ranks],
                    "allreduce_share": ranks[slowest]["allreduce"] / secs if secs > 0 else 0.0,
                    "batch_sizes": list(balancer.sizes), "balance_method": balancer.method,
                }
                if ac is not None:
                    rec["adaptive_comm"] = ac.report()
                history.append(rec)
                log.record(rec)
            every = cfg["checkpoint_every"]
            if out is not None and ((every and (epoch + 1) % every == 0) or epoch + 1 == cfg["epochs"]):
                ckpt(out / "checkpoint.h5", epoch + 1)
        if out is not None:
            ckpt(out / "model.h5", max(cfg["epochs"], start_epoch))
            if rank == 0:
                summary = {"model": model.spec(), "config": cfg, "ranks": size, "epochs": history,
                           "balance": balancer.history,
                           "adaptive_comm": None if ac is None else ac.report(),
                           "prefetch": {"hits": pref.hits, "misses": pref.misses}}
                (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    finally:
        log.close()
        ds.close()
        if val is not None:
            val.close()
    return {"params": np.array(_host(params)), "model": model.spec(), "history": history,
            "balance": balancer.history, "adaptive_comm": None if ac is None else ac.report(),
            "prefetch": {"hits": pref.hits, "misses": pref.misses}}
