"""Read an hpcprep dataset (docs/FORMAT.md) on one or many ranks.

:func:`open_dataset` opens a dataset through :mod:`hpcprep.output.reader`, the one
safe reader (manifest checked, every path confined to the dataset folder, shards
plain and matching the manifest, CRC-32 verified by default, master's virtual
sources exactly the shards), pins the shard files it opened, and gives each rank
of a communicator its rows: contiguous ranges of the global order, equal by
default or by a plan of per-rank ``counts``. Rows are read from the pinned shards
with contiguous hyperslab reads (never through the virtual datasets, which HDF5
fills silently where a source file is missing, and never row by row).

Examples
--------
>>> ds = open_dataset("out", split="train", comm=MPI.COMM_WORLD)   # doctest: +SKIP
>>> for x, y in ds.batches(256, shuffle_seed=1, epoch=0):           # doctest: +SKIP
...     ...

A dataset with category codes (``categorical`` with ``encoding = "codes"`` or
``"hash"``, docs/FORMAT.md) gives ``(x, y, codes)`` wherever others give
``(x, y)``: ``codes`` is int64 of shape (rows, ``len(ds.code_names)``), -1 for a
missing value, ready for embedding tables.
"""

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError, HpcprepError
from .output.integrity import open_shards
from .output.pinned import ShardFiles
from .output.reader import describe, in_folder, resolve

from .mpi.agree import agreed
from .partition import equal_counts
from .prefetch import Prefetcher, to_xp

__all__ = ["open_dataset", "Dataset", "epoch_blocks", "block_ranges"]


def epoch_blocks(n: int, batch_size: int, seed=None, epoch: int = 0, drop_last: bool = False):
    """The batch order of one epoch over ``n`` positions: ``(rotation, [(start, length), ...])``.

    Without a seed: ``rotation = 0`` and blocks in order. With a seed the positions
    are rotated by a random offset and the blocks visited in a random order, both
    drawn from ``(seed, epoch)`` only, so every rank computes the same plan. Rows of
    an hpcprep dataset are already randomly shuffled; this makes the batches differ
    from epoch to epoch while every read stays a contiguous hyperslab (at most two
    per block, where a block wraps around the end).

    The last block holds ``n % batch_size`` rows (dropped with ``drop_last``).
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size = {batch_size}: must be > 0")
    full, rest = divmod(n, batch_size)
    blocks = [(k * batch_size, batch_size) for k in range(full)]
    if rest and not drop_last:
        blocks.append((full * batch_size, rest))
    if seed is None or n == 0:
        return 0, blocks
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x10AD, int(epoch)])
    rotation = int(rng.integers(n))
    order = rng.permutation(len(blocks))
    return rotation, [blocks[k] for k in order]


def block_ranges(start: int, length: int, rotation: int, n: int, base: int = 0):
    """Positions ``[start, start + length)`` of a rotated order over ``n`` rows starting at
    ``base`` as at most two contiguous ``(a, b)`` ranges of the global order."""
    if length == 0:
        return []
    a = (start + rotation) % n
    if a + length <= n:
        return [(base + a, base + a + length)]
    return [(base + a, base + n), (base, base + a + length - n)]


class Dataset:
    """One rank's view of an hpcprep dataset. Made by :func:`open_dataset`.

    Attributes
    ----------
    path : Path
        The dataset folder (the split's folder for a split).
    manifest : dict
    rows : int
        Rows in the whole dataset.
    n_features : int
    feature_names : list of str
    has_labels : bool
    code_names : list of str
        Columns of the int64 ``codes`` (empty without codes: rows are ``(x, y)``,
        else ``(x, y, codes)``).
    counts : tuple of int
        Rows of each rank of the communicator.
    start, stop : int
        This rank's rows ``[start, stop)`` of the global order.
    """

    def __init__(self, path: Path, manifest: dict, files: ShardFiles, comm=None, counts=None):
        self.path = Path(path)
        self.manifest = manifest
        self.rows = int(manifest["rows"])
        self.n_features = int(manifest["n_features"])
        self.feature_names = list(manifest.get("feature_names") or [])
        self.has_labels = bool(manifest.get("label"))
        self.code_names = list(manifest.get("code_names") or [])
        self._has_codes = "code_names" in manifest
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.counts = tuple(counts if counts is not None else equal_counts(self.rows, self.size).tolist())
        self.start = int(sum(self.counts[:self.rank]))
        self.stop = self.start + int(self.counts[self.rank])
        shards = manifest["shards"]
        self._shards = files
        self._shard_start = np.array([s["start"] for s in shards], dtype=np.int64)
        self._shard_rows = np.array([s["rows"] for s in shards], dtype=np.int64)
        self._pool = None

    @property
    def label_classes(self) -> list[str] | None:
        """Class names of a dataset whose labels are class codes: label ``k`` is
        ``label_classes[k]`` (-1: missing); None for numeric labels."""
        classes = self.manifest.get("label_classes")
        return None if classes is None else [str(c) for c in classes]

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}, rows={self.rows}, n_features={self.n_features}, "
                f"rank {self.rank}/{self.size}: [{self.start}, {self.stop}))")

    # -- reading -------------------------------------------------------------------------------
    def read_ranges(self, ranges, dtype=None):
        """Read global row ranges ``[(a, b), ...]`` and concatenate them: ``(x, y)`` NumPy
        arrays, or ``(x, y, codes)`` for a dataset with codes (int64, one column per
        ``code_names``).

        ``y`` is None for a dataset without labels. Each overlap of a range with a shard
        is one hyperslab read straight into the output array.
        """
        total = sum(b - a for a, b in ranges)
        fdtype = np.dtype(self.manifest.get("feature_dtype") or "float32")
        out = {"features": np.empty((total, self.n_features), dtype=fdtype)}
        if self.has_labels:
            out["labels"] = np.empty(total, dtype=np.dtype(self.manifest.get("label_dtype") or "int64"))
        if self._has_codes:
            out["codes"] = np.empty((total, len(self.code_names)), dtype=np.int64)
        self._read_into(ranges, out)
        x, y, codes = out["features"], out.get("labels"), out.get("codes")
        if dtype is not None:
            x = x.astype(dtype, copy=False)
        return (x, y) if codes is None else (x, y, codes)

    def _read_into(self, ranges, arrays: dict) -> None:
        """Read the ranges of each shard dataset ``name`` into ``arrays[name]``, one after another."""
        out = 0
        ends = self._shard_start + self._shard_rows
        for a, b in ranges:
            if not (0 <= a <= b <= self.rows):
                raise IndexError(f"rows [{a}, {b}) outside the dataset's {self.rows} rows")
            k = int(np.searchsorted(ends, a, side="right"))
            while a < b:
                while self._shard_rows[k] == 0 or ends[k] <= a:
                    k += 1
                lo = a - int(self._shard_start[k])
                hi = min(b, int(ends[k])) - int(self._shard_start[k])
                dest = np.s_[out:out + hi - lo]
                if hi > lo:
                    for name, arr in arrays.items():
                        self._shards.dataset(k, name).read_direct(arr, np.s_[lo:hi], dest)
                out += hi - lo
                a += hi - lo

    def read_labels(self, start: int, stop: int):
        """Only the labels of global rows ``[start, stop)`` (hyperslab reads per shard)."""
        if not self.has_labels:
            raise DataError(f"{self.path}: the dataset has no labels")
        y = np.empty(stop - start, dtype=np.dtype(self.manifest.get("label_dtype") or "int64"))
        ends = self._shard_start + self._shard_rows
        for k in range(len(self._shard_rows)):
            lo, hi = max(start, int(self._shard_start[k])), min(stop, int(ends[k]))
            if hi > lo:
                off = int(self._shard_start[k])
                self._shards.dataset(k, "labels").read_direct(y, np.s_[lo - off:hi - off],
                                                              np.s_[lo - start:hi - start])
        return y

    def read(self, start: int, stop: int, dtype=None):
        """Read global rows ``[start, stop)``: ``(x, y)`` (``(x, y, codes)`` with codes)."""
        return self.read_ranges([(start, stop)], dtype)

    def load(self, xp=np, dtype=None):
        """All of this rank's rows at once: ``(x, y)`` (``(x, y, codes)``) as ``xp`` arrays."""
        return to_xp(xp, *self.read(self.start, self.stop, dtype))

    # -- batches ------------------------------------------------------------------------------
    def _executor(self):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcprep-prefetch")
        return self._pool

    def batch_ranges(self, batch_size: int, shuffle_seed=None, epoch: int = 0, drop_last=False):
        """The global row ranges of each of this rank's batches in one epoch (a list of lists)."""
        n = len(self)
        rot, blocks = epoch_blocks(n, batch_size, shuffle_seed, epoch, drop_last)
        return [block_ranges(s, m, rot, n, self.start) for s, m in blocks]

    def batches(self, batch_size: int, xp=np, shuffle_seed=None, epoch: int = 0,
                drop_last: bool = False, dtype=None, prefetch: bool = True):
        """Yield ``(x, y)`` batches (``(x, y, codes)`` with codes) of this rank's rows as ``xp``
        (NumPy or CuPy) arrays.

        Parameters
        ----------
        batch_size : int
        xp : module
            ``numpy`` or ``cupy``; CuPy arrays are made on the current device.
        shuffle_seed : int, optional
            Without it, batches in order. With it, a random rotation and batch order
            per ``(shuffle_seed, epoch)`` (see :func:`epoch_blocks`).
        epoch : int
        drop_last : bool
            Drop the last, smaller batch.
        dtype : dtype, optional
            Cast the features (e.g. ``float64``).
        prefetch : bool
            Read the next batch on a background thread while the caller works.
        """
        plan = self.batch_ranges(batch_size, shuffle_seed, epoch, drop_last)
        yield from self._iterate(plan, xp, dtype, prefetch)

    def _iterate(self, plan, xp, dtype, prefetch):
        def load(ranges):
            return to_xp(xp, *self.read_ranges(ranges, dtype))

        if not prefetch:
            for ranges in plan:
                yield load(ranges)
            return
        pool = self._executor()
        pending = pool.submit(load, plan[0]) if plan else None
        try:
            for k in range(len(plan)):
                batch = pending.result()
                pending = pool.submit(load, plan[k + 1]) if k + 1 < len(plan) else None
                yield batch
        finally:
            if pending is not None:
                pending.cancel() or pending.exception()

    def prefetcher(self, xp=np, dtype=None):
        """A :class:`Prefetcher` reading global row ranges on this dataset's background thread."""
        return Prefetcher(self, xp, dtype)

    def read_plan(self, plan, xp=np, dtype=None, prefetch: bool = True):
        """Yield ``(x, y)`` for each item of ``plan`` (a sequence of lists of global row ranges),
        reading the next one on the background thread with ``prefetch`` (the reader of
        :meth:`batches` and of the torch adapter)."""
        return self._iterate(plan, xp, dtype, prefetch)

    def torch(self, batch_size: int, shuffle_seed=None, remainder: str = "pad", **options):
        """A ``torch.utils.data.IterableDataset`` of ``(x, y)`` tensor batches, DDP-safe and
        resumable: :class:`hpcprep.train.torch_data.TorchBatches` (docs/train.md, "Training
        with PyTorch"; ``options``: ``block_rows``, ``dtype``, ``comm``, ``rank``,
        ``world_size``, ``xp``, ``prefetch``).

        Every rank yields the same number of batches per epoch (``remainder``: "pad",
        "drop" or "uneven"). Use ``.loader(num_workers=...)`` or
        ``DataLoader(..., batch_size=None)``. Raises ImportError without PyTorch.
        """
        try:
            from .train.torch_data import TorchBatches
        except ImportError as e:
            if e.name != "torch":
                raise
            raise ImportError("Dataset.torch() needs PyTorch (pip install 'hpcprep[torch]')") from e
        return TorchBatches(self, batch_size, shuffle_seed=shuffle_seed, remainder=remainder,
                            **options)

    def close(self):
        """Stop the prefetch thread and close the shard files and their pinned descriptors."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._shards.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- opening --------------------------------------------------------------------------------------
def _open_part(path, split, verify, rank, size):
    """This rank's part of opening: ``(folder, manifest, files, problems, digest)``."""
    try:
        folder, manifest = resolve(path, split)
    except HpcprepError as e:
        return None, None, None, [str(e)], None
    files, problems, _ = open_shards(folder, manifest, verify, rank, size)
    problems = in_folder(folder, problems)
    digest = zlib.crc32(json.dumps(manifest, sort_keys=True).encode())
    return folder, manifest, files, problems, digest


def open_dataset(path, split=None, comm=None, counts=None, verify: bool = True) -> Dataset:
    """Open an hpcprep dataset folder (or one split of it) through its manifest.

    Parameters
    ----------
    path : path-like
        The dataset folder (holding ``manifest.json``).
    split : str, optional
        Name of a split of a split dataset (``"train"``, ``"val"``, ...).
    comm : mpi4py communicator, optional
        The ranks sharing the dataset; None means this process alone. Collective:
        every rank of ``comm`` must call it.
    counts : list of int, optional
        Rows per rank (``len(counts) == comm.size``, summing to the dataset's rows);
        rank r gets the contiguous rows after those of ranks < r. Default: equal.
    verify : bool
        Check each shard's CRC-32 (default). The shards are read once in all,
        spread over the ranks (shard k by rank ``k % size``). ``False`` skips only
        the checksums; everything else below is always checked.

    Returns
    -------
    Dataset
        Holding the shard files it checked open (pinned) until :meth:`Dataset.close`:
        it reads that generation of the dataset even if the folder is replaced.

    Raises
    ------
    DataError
        On every rank, naming the file: the manifest is missing or malformed; a
        path of the dataset (split folder, master, shard) is absolute, holds ``..``
        or resolves outside the dataset folder; a shard is missing, holds links,
        external storage or virtual datasets, does not match the manifest (rows,
        columns, dtypes, CRC-32); the master's virtual sources are not exactly the
        manifest's shards; or the folder was replaced while it was being opened.
    ConfigError
        Bad ``counts``.
    """
    rank = 0 if comm is None else comm.Get_rank()
    size = 1 if comm is None else comm.Get_size()
    folder, manifest, files, problems, digest = _open_part(path, split, verify, rank, size)
    if size > 1:
        gathered = comm.allgather((problems[:5], digest))
        problems = [p for ps, _ in gathered for p in ps]
        if not problems and len({d for _, d in gathered}) > 1:
            problems = [f"{folder}{os.sep}manifest.json: the dataset was replaced while the ranks "
                        f"were opening it; open it again"]
    if not problems and counts is not None:
        counts = [int(c) for c in counts]
        if len(counts) != size or min(counts, default=0) < 0 or sum(counts) != manifest["rows"]:
            if files is not None:
                files.close()
            raise agreed(ConfigError, f"counts = {counts}: need {size} non-negative counts summing "
                                      f"to {manifest['rows']} rows")
    if problems:
        if files is not None:
            files.close()
        raise agreed(DataError, describe(problems))
    return Dataset(folder, manifest, files, comm, counts)

