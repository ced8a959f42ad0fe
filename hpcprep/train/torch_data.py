"""PyTorch interface: DDP-safe, resumable batches of an hpcprep dataset (docs/train.md,
"Training with PyTorch").

:class:`TorchBatches` (made by :meth:`hpcprep.loader.Dataset.torch`) is a
``torch.utils.data.IterableDataset`` of ``(x, y)`` tensor batches with the guarantees
``DistributedSampler`` gives, without giving up contiguous reads:

* **One order per epoch.** :func:`epoch_order` is the order of all rows in epoch ``e``:
  blocks of ``block_rows`` consecutive stored rows, rotated by a random offset and
  visited in a random order, drawn from ``(seed, epoch)`` only: the same for any world size.
* **Global batches.** Step k of an epoch takes positions ``[k*B, (k+1)*B)`` of that order,
  ``B = batch_size * world_size``; rank r reads its ``batch_size`` consecutive positions
  of them (one to three hyperslab reads). Every rank yields the same number of batches;
  the last partial global batch is padded with the first rows of the epoch order
  (``remainder="pad"``), dropped (``"drop"``), or split as evenly as it goes
  (``"uneven"``: batches of unequal size, some possibly empty; for weighted trainers).
* **Resume.** ``state_dict()`` / ``load_state_dict()`` (torchdata's ``StatefulDataLoader``
  protocol) hold the epoch and the batches consumed; a resumed epoch yields exactly
  the batches not yet consumed. :meth:`TorchBatches.loader` gives a ``DataLoader``
  whose ``state_dict()`` is exact with any ``num_workers``.
* **Zero-copy.** NumPy batches become tensors with ``torch.from_numpy``; CuPy arrays
  (``xp=cupy``) with ``torch.from_dlpack``.

Rank and world size come from, in this order: explicit ``rank``/``world_size``; an MPI
communicator (``comm``, else the dataset's); an initialized ``torch.distributed``
process group; the ``RANK``/``WORLD_SIZE`` environment (``torchrun``); else 0 of 1.
"""

import os
import socket
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import ConfigError
from ..loader import block_ranges, epoch_blocks
from ..output.pinned import PROC_FD
from ..partition import equal_counts

__all__ = ["TorchBatches", "BatchLoader", "epoch_order", "dist_info", "init_distributed",
           "to_torch", "REMAINDERS"]

#: What happens to the last global batch when the rows do not fill it.
REMAINDERS = ("pad", "drop", "uneven")
_STATE_KEYS = ("rows", "batch_size", "world_size", "shuffle_seed", "block_rows", "remainder")


# -- where this process stands ------------------------------------------------------------------
def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer") from None


def dist_info(comm=None, rank=None, world_size=None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process (see the module docstring for the order).

    Raises
    ------
    ConfigError
        Only one of ``rank``/``world_size`` given, or a rank outside ``[0, world_size)``.
    """
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ConfigError("rank and world_size: give both or neither")
        rank, world_size, source = int(rank), int(world_size), "rank/world_size arguments"
    elif comm is not None:
        rank, world_size, source = comm.Get_rank(), comm.Get_size(), "the MPI communicator"
    elif dist.is_available() and dist.is_initialized():
        rank, world_size, source = dist.get_rank(), dist.get_world_size(), "torch.distributed"
    elif "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise ConfigError("environment: RANK and WORLD_SIZE must be set together")
        rank, world_size, source = _env_int("RANK"), _env_int("WORLD_SIZE"), "RANK/WORLD_SIZE"
    else:
        return 0, 1
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} of world size {world_size} (from {source}): need "
                          f"0 <= rank < world_size")
    return rank, world_size


def init_distributed(comm=None, backend=None):
    """Initialize the default ``torch.distributed`` process group, once; return ``(rank, world)``.

    Under ``torchrun`` (``MASTER_ADDR``, ``RANK``, ``WORLD_SIZE`` set) from the environment.
    Under ``mpiexec``/``srun`` give ``comm``: rank 0 picks a free TCP port on its host
    (``MASTER_ADDR``, default its host name; ``MASTER_PORT`` if set) and broadcasts it.
    ``backend`` defaults to ``nccl`` where CUDA is available, else ``gloo``.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    env = os.environ
    if comm is None:
        if all(k in env for k in ("MASTER_ADDR", "RANK", "WORLD_SIZE")):
            dist.init_process_group(backend)
            return dist.get_rank(), dist.get_world_size()
        rank, size, url = 0, 1, f"tcp://127.0.0.1:{_free_port()}"
    else:
        rank, size = comm.Get_rank(), comm.Get_size()
        url = None
        if rank == 0:
            host = env.get("MASTER_ADDR") or socket.gethostname()
            url = f"tcp://{host}:{env.get('MASTER_PORT') or _free_port()}"
        url = comm.bcast(url, root=0)
    dist.init_process_group(backend, init_method=url, rank=rank, world_size=size)
    return rank, size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# -- the order of an epoch ------------------------------------------------------------------------
def epoch_order(n: int, shuffle_seed=None, epoch: int = 0, block_rows: int = 1):
    """The order of all ``n`` rows in one epoch, as contiguous global row ranges ``[(a, b), ...]``.

    Without a seed, the stored order. With one, blocks of ``block_rows`` consecutive
    positions, rotated and visited in a random order, both drawn from
    ``(shuffle_seed, epoch)`` only (:func:`hpcprep.loader.epoch_blocks`).
    """
    if shuffle_seed is None:
        return [(0, n)] if n else []
    rot, blocks = epoch_blocks(n, block_rows, shuffle_seed, epoch)
    return [r for s, m in blocks for r in block_ranges(s, m, rot, n)]


class _Order:
    """Positions of an epoch order -> global row ranges; positions >= n wrap around (padding)."""

    def __init__(self, ranges):
        self.ranges = ranges
        self.ends = np.cumsum([b - a for a, b in ranges], dtype=np.int64)
        self.n = int(self.ends[-1]) if len(ranges) else 0

    def take(self, p: int, q: int):
        out = []
        while p < q:
            pos = p % self.n
            k = int(np.searchsorted(self.ends, pos, side="right"))
            a, b = self.ranges[k]
            lo = a + pos - (int(self.ends[k]) - (b - a))
            hi = min(b, lo + q - p)
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
            p += hi - lo
        return out


class _Plan(Sequence):
    """The batches ``steps`` of one rank in one epoch, computed when read (lazy)."""

    def __init__(self, order: _Order, steps, batch_size, rank, world, remainder):
        self.order, self.steps = order, steps
        self.bs, self.rank, self.world, self.remainder = batch_size, rank, world, remainder

    def __len__(self):
        return len(self.steps)

    def __getitem__(self, i):
        k = self.steps[i]
        big = self.bs * self.world
        base = k * big
        if self.remainder == "uneven" and base + big > self.order.n:
            sizes = equal_counts(self.order.n - base, self.world)
            lo = base + int(sizes[:self.rank].sum())
            return self.order.take(lo, lo + int(sizes[self.rank]))
        lo = base + self.rank * self.bs
        return self.order.take(lo, lo + self.bs)


def to_torch(a):
    """A tensor sharing memory with ``a``: NumPy by ``torch.from_numpy``, CuPy (any DLPack
    producer) by ``torch.from_dlpack``; None stays None."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


# -- the iterable ---------------------------------------------------------------------------------
class TorchBatches(IterableDataset):
    """``(x, y)`` tensor batches of one rank, the same number on every rank. Made by
    :meth:`hpcprep.loader.Dataset.torch`; see the module docstring.

    Parameters
    ----------
    dataset : hpcprep.loader.Dataset
        Read through its pinned shards; all of its rows are dealt (its ``counts`` do not apply).
    batch_size : int
        Rows per batch of each rank (the global batch is ``batch_size * world_size``).
    shuffle_seed : int, optional
        Without it, every epoch reads the stored order (rows of an hpcprep dataset are
        already shuffled). With it, a new block order per ``(shuffle_seed, epoch)``.
    remainder : {"pad", "drop", "uneven"}
        The last partial global batch: padded with the epoch's first rows, dropped, or
        split as evenly as it goes (unequal, possibly empty batches: not for DDP).
    block_rows : int, optional
        Rows per shuffled block (default: the global batch, ``batch_size * world_size``,
        so the order is the same for any world size at the same global batch): larger
        blocks mean longer sequential reads and less mixing (docs/train.md).
    dtype : dtype, optional
        Cast the features (e.g. ``numpy.float64``).
    comm, rank, world_size :
        Where this process stands (:func:`dist_info`).
    xp : module
        ``numpy`` (default) or ``cupy``: batches are moved to the GPU on the prefetch
        thread and handed over by DLPack (``num_workers = 0`` only).
    prefetch : bool
        Read the next batch on a background thread (without DataLoader workers).
    """

    def __init__(self, dataset, batch_size: int, *, shuffle_seed=None, remainder: str = "pad",
                 block_rows=None, dtype=None, comm=None, rank=None, world_size=None, xp=np,
                 prefetch: bool = True):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size <= 0:
            raise ConfigError(f"batch_size = {batch_size!r}: must be an integer > 0")
        if remainder not in REMAINDERS:
            raise ConfigError(f"remainder = {remainder!r}: must be one of {', '.join(REMAINDERS)}")
        self.rank, self.world_size = dist_info(comm if comm is not None else dataset.comm,
                                               rank, world_size)
        block_rows = batch_size * self.world_size if block_rows is None else block_rows
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) \
                or block_rows <= 0:
            raise ConfigError(f"block_rows = {block_rows!r}: must be an integer > 0")
        self.dataset = dataset
        self.batch_size, self.block_rows = int(batch_size), int(block_rows)
        self.shuffle_seed, self.remainder, self.dtype, self.xp = shuffle_seed, remainder, dtype, xp
        self.prefetch = prefetch
        self.epoch = 0
        self.offset = 0      # batches of this epoch consumed (in the main process)
        self.skip = 0        # batches of its share a DataLoader worker yielded (torchdata)
        self._done = False   # a pass over the epoch ended here: the next pass replays it

    def __getstate__(self):
        raise ConfigError("TorchBatches cannot be pickled (it holds open shard files): start "
                          "DataLoader workers by fork (multiprocessing_context='fork', the "
                          "default on Linux), not spawn or forkserver")

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        big = self.batch_size * self.world_size
        rows = self.dataset.rows
        return rows // big if self.remainder == "drop" else -(-rows // big)

    def batch_ranges(self, epoch=None, steps=None) -> Sequence:
        """This rank's batches of ``epoch`` (default the current one) as lists of global
        row ranges; ``steps`` (a range) selects some of them."""
        epoch = self.epoch if epoch is None else epoch
        order = _Order(epoch_order(self.dataset.rows, self.shuffle_seed, epoch, self.block_rows))
        steps = range(len(self)) if steps is None else steps
        return _Plan(order, steps, self.batch_size, self.rank, self.world_size, self.remainder)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order. A new epoch starts at its first batch; the current
        epoch keeps its position (so a loop calling ``set_epoch`` resumes where a loaded
        state left off)."""
        if int(epoch) != self.epoch:
            self.epoch, self.offset, self.skip, self._done = int(epoch), 0, 0, False

    def state_dict(self) -> dict:
        """The position: epoch and batches consumed, with the settings it is valid for."""
        state = {"epoch": self.epoch, "offset": self.offset, "skip": self.skip}
        return state | {k: v for k, v in zip(_STATE_KEYS, self._settings())}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`: the next pass yields the batches not yet consumed.

        Raises
        ------
        ConfigError
            The state was saved with other settings (rows, batch size, world size, seed,
            block size, remainder): it would not resume the same order.
        """
        for key, mine in zip(_STATE_KEYS, self._settings()):
            if key in state and state[key] != mine:
                raise ConfigError(f"load_state_dict: the state has {key} = {state[key]!r}, this "
                                  f"loader {mine!r}; resume with the same settings")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self.skip, self._done = int(state.get("skip", 0)), False

    def _settings(self):
        return (self.dataset.rows, self.batch_size, self.world_size, self.shuffle_seed,
                self.block_rows, self.remainder)

    def _start_pass(self) -> None:
        if self._done:  # the epoch was consumed here and no set_epoch came: replay it
            self.offset, self.skip, self._done = 0, 0, False

    def __iter__(self):
        info = get_worker_info()
        self._start_pass()   # in a worker: on its copy, as the parent's was at fork
        steps = range(len(self))[self.offset:]
        if info is not None:
            steps = steps[info.id::info.num_workers]
        steps = steps[self.skip:]
        if info is not None and self.xp is not np:
            raise ConfigError("xp=cupy needs num_workers = 0 (CUDA does not survive fork)")
        plan = self.batch_ranges(steps=steps)
        reader = self.dataset.read_plan(plan, self.xp, self.dtype,
                                        prefetch=self.prefetch and info is None)
        try:
            for k, batch in zip(steps, reader):
                if info is None:
                    self.offset, self.skip = k + 1, 0
                else:
                    self.skip += 1
                yield tuple(map(to_torch, batch))   # (x, y), or (x, y, int64 codes)
        finally:
            reader.close()
        if info is None:
            self._done = True

    def loader(self, num_workers: int = 0, pin_memory: bool = False, **kwargs) -> "BatchLoader":
        """A ``DataLoader`` over these batches whose ``state_dict()`` is exact for any
        ``num_workers`` (:class:`BatchLoader`). ``kwargs`` go to ``DataLoader``."""
        return BatchLoader(self, num_workers, pin_memory, **kwargs)


class BatchLoader:
    """``torch.utils.data.DataLoader(batches, batch_size=None, ...)`` that counts the batches
    it hands out, so that :meth:`state_dict` is exact with DataLoader workers too.

    Workers are started by fork on Linux (the shard files are inherited, not pickled);
    worker w reads batches ``w, w + num_workers, ...`` of the rest of the epoch and the
    DataLoader returns them in order, so every row is read once per epoch.
    """

    def __init__(self, batches: TorchBatches, num_workers: int = 0, pin_memory: bool = False,
                 **kwargs):
        if num_workers and PROC_FD:
            kwargs.setdefault("multiprocessing_context", "fork")
        self.batches = batches
        self.dataloader = DataLoader(batches, batch_size=None, num_workers=num_workers,
                                     pin_memory=pin_memory, **kwargs)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        b = self.batches
        if self.dataloader.num_workers == 0:   # the iterable keeps its own position
            yield from self.dataloader
            return
        b._start_pass()
        base = b.offset
        for k, batch in enumerate(self.dataloader, 1):
            b.offset, b.skip = base + k, 0
            yield batch
        b._done = True

    @property
    def epoch(self) -> int:
        return self.batches.epoch

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)
