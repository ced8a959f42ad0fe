"""Out-of-core storage for sampling layers: sorted run files read back bucket by bucket.

A sampling rank receives rows in pieces, in any order. :class:`RowStore` keeps
them in memory up to a limit; beyond it every buffered batch is sorted by
``(key, id, copy)`` and written as a *run*: a raw record file and a raw key
file, plus a small in-memory *fence* array (every ``FENCE``-th key). When all
rows are in, :meth:`RowStore.buckets` cuts the key space into consecutive
ranges from the fences so that each range holds about ``bucket_bytes`` of rows
over all runs, reads each range's slice of every run (plain ``np.fromfile``
reads at an offset, no memory maps), sorts it and yields it. The rank's rows so
come out as a sequence of sorted key-range buckets whose concatenation is the
rank's whole sorted block, never holding more than one bucket.

:class:`BlockSeq` is the other side: an ordered sequence of blocks (a layer's
selected rows), in memory up to a limit and then one file per block.
"""

import os

import numpy as np

from ..heap import release_free_memory
from ..kernels.active import HOST, Kernels
from ..kernels.pack import gather_rows, scatter_pieces
from ..kernels.route import destination_order

#: One fence key per this many rows of a run (at most; small runs get at least 64 fences).
FENCE = 256

#: In memory, :meth:`RowStore.buckets` joins consecutive fine key ranges into blocks of at least
#: this many bytes (or a sixteenth of the rows held, if more): few blocks for small data, and
#: never the whole store twice in memory for large data.
MIN_BLOCK_BYTES = 16 << 20


def _part_of_larger(a: np.ndarray) -> bool:
    """True when ``a`` is a view of a larger buffer (keeping it would keep the whole buffer)."""
    base = a.base
    return base is not None and getattr(base, "nbytes", a.nbytes) > a.nbytes


def count_classes(counts: dict, records: np.ndarray) -> None:
    """Add the rows of each integer label value of ``records`` to ``counts`` (no label: nothing)."""
    if "y" in records.dtype.names and records.dtype["y"].kind in "iu":
        for v, c in zip(*(a.tolist() for a in np.unique(records["y"], return_counts=True))):
            counts[v] = counts.get(v, 0) + c


def sort_order(keys: np.ndarray, records: np.ndarray, kernels: Kernels = HOST) -> np.ndarray:
    """Indices ordering rows by ``(key, id, copy)``; the order does not depend on arrival order.

    Parameters
    ----------
    keys : ndarray of uint64
        Sort keys of the rows.
    records : structured ndarray or dict
        The rows (field ``id``, optional field ``c``: copy tag), or those fields by name.
    kernels : Kernels
        The run's kernels (the keys are sorted on its device).

    Returns
    -------
    ndarray of int64
    """
    order = kernels.order(keys)  # ties are redone below
    k = keys[order]
    if len(k) > 1 and bool((k[1:] == k[:-1]).any()):
        cols = [records["id"], keys]
        if "c" in (records if isinstance(records, dict) else records.dtype.names):
            cols.insert(0, records["c"])
        order = np.lexsort(cols)
    return order


class _Run:
    """One sorted run on disk: records and keys as raw files, fences in memory; written from
    sorted ``parts`` (``(records, keys)`` in key order), never held as one array."""

    def __init__(self, path: str, dtype: np.dtype, parts):
        self.path, self.n, self.dtype = path, 0, dtype
        keys = []
        with open(path + ".rec", "wb") as f:
            for rec, key in parts:
                rec.tofile(f)
                keys.append(key)
                self.n += len(rec)
        keys = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        keys.tofile(path + ".key")
        self.step = max(1, min(FENCE, self.n // 64))
        self.fences = keys[::self.step].copy()

    def position(self, key: int) -> int:
        """Number of rows of the run with a key below ``key``."""
        i = int(np.searchsorted(self.fences, np.uint64(key), side="left"))
        if i == 0:
            return 0
        lo = (i - 1) * self.step
        block = np.fromfile(self.path + ".key", dtype=np.uint64, count=min(self.step, self.n - lo),
                            offset=lo * 8)
        return lo + int(np.searchsorted(block, np.uint64(key), side="left"))

    def read(self, lo: int, hi: int):
        if hi <= lo:
            return np.empty(0, self.dtype), np.empty(0, np.uint64)
        rec = np.fromfile(self.path + ".rec", dtype=self.dtype, count=hi - lo,
                          offset=lo * self.dtype.itemsize)
        key = np.fromfile(self.path + ".key", dtype=np.uint64, count=hi - lo, offset=lo * 8)
        return rec, key

    def remove(self) -> None:
        for ext in (".rec", ".key"):
            try:
                os.remove(self.path + ext)
            except FileNotFoundError:
                pass


class RowStore:
    """The rows one sampling rank receives, with their sort keys; spills sorted runs past a limit.

    Parameters
    ----------
    dtype : numpy dtype
        Record dtype of the rows.
    limit_bytes : int
        Rows (records + keys) buffered in memory before a run is written.
    spill_dir : str
        Folder for run files (created when the first run is written).
    name : str
        Prefix of this store's run files.
    fine, n_fine : callable, int
        Fine key ranges (see :meth:`add`).
    kernels : Kernels
        The run's kernels (sorts by key).
    """

    def __init__(self, dtype: np.dtype, limit_bytes: int, spill_dir: str, name: str,
                 fine=None, n_fine: int = 1, kernels: Kernels = HOST):
        self.dtype, self.limit, self.spill_dir, self.name = dtype, max(1, int(limit_bytes)), spill_dir, name
        self.fine, self.n_fine, self.kernels = fine, (int(n_fine) if fine is not None else 1), kernels
        self._fb: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(self.n_fine)]
        self._buf_bytes = 0
        self.runs: list[_Run] = []
        self.rows = 0
        self.bytes_spilled = 0
        self.class_counts: dict = {}

    @property
    def _buf(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every buffered piece, fine key range by fine key range."""
        return [p for fb in self._fb for p in fb]

    @property
    def spilled(self) -> bool:
        return bool(self.runs)

    def add(self, records: np.ndarray, keys: np.ndarray, owned: bool = False) -> None:
        """Keep ``records`` with their ``keys``; write a sorted run when the buffer passes the limit.

        With ``fine`` (a function of the keys giving a bucket in ``[0, n_fine)``,
        non-decreasing in the key) every piece is cut into its fine key ranges
        (rows grouped by bucket are cut by slicing, others gathered once).
        Slices are copied unless ``owned`` (the caller hands its buffers over:
        it neither reuses nor changes them), so the store keeps no caller's
        buffer alive; owned buffers are kept as views, one copy of each row
        less, and freed once all their key ranges are taken.
        """
        n = len(records)
        if n == 0:
            return
        count_classes(self.class_counts, records)
        self.rows += n
        self._buf_bytes += records.nbytes + keys.nbytes
        if self.n_fine == 1:
            if not owned and _part_of_larger(records):
                records = records.copy()
            if not owned and _part_of_larger(keys):
                keys = keys.copy()
            self._fb[0].append((records, keys))
        else:
            f = np.asarray(self.fine(keys))
            if n > 1 and bool((f[1:] < f[:-1]).any()):
                order, counts = destination_order(f, self.n_fine)
                bounds = np.concatenate(([0], np.cumsum(counts)))
            else:
                order = None
                bounds = np.searchsorted(f, np.arange(self.n_fine + 1), side="left")
            for b in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
                lo, hi = int(bounds[b]), int(bounds[b + 1])
                if order is None:
                    piece = (records[lo:hi], keys[lo:hi]) if owned else \
                        (records[lo:hi].copy(), keys[lo:hi].copy())
                else:
                    idx = order[lo:hi]
                    piece = (gather_rows(records, idx), keys[idx])
                self._fb[b].append(piece)
        if self._buf_bytes > self.limit:
            self._spill()

    def _sort_pieces(self, pieces):
        """One sorted ``(records, keys)`` from pieces: keys sorted, each row gathered once."""
        if not pieces:
            return None
        if len(pieces) == 1:
            rec, key = pieces[0]
            order = sort_order(key, rec, self.kernels)
            return gather_rows(rec, order), key[order]
        key = np.concatenate([p[1] for p in pieces])
        ties = {name: np.concatenate([p[0][name] for p in pieces])
                for name in ("id", "c") if name in self.dtype.names}
        order = sort_order(key, ties, self.kernels)
        return scatter_pieces(pieces, order, self.dtype), key[order]

    def _take_fine(self, lo: int, hi: int):
        """Sorted rows of fine buckets ``lo .. hi`` (released from the store)."""
        pieces = []
        for b in range(lo, hi):
            pieces += self._fb[b]
            self._fb[b] = []
        got = self._sort_pieces(pieces)
        if got is not None:
            self._buf_bytes -= got[0].nbytes + got[1].nbytes
        return got

    def _sorted_parts(self):
        """The buffered rows as sorted parts in key order, one fine range at a time (released)."""
        for b in range(self.n_fine):
            got = self._take_fine(b, b + 1)
            if got is not None:
                yield got
        self._buf_bytes = 0

    def _spill(self) -> None:
        if not self._buf:
            return
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, f"{self.name}-run{len(self.runs):05d}")
        self.runs.append(_Run(path, self.dtype, self._sorted_parts()))
        self.bytes_spilled += self.runs[-1].n * (self.dtype.itemsize + 8)

    def sample_keys(self, m: int) -> tuple[np.ndarray, float]:
        """About ``m`` keys at regular quantiles of this rank's rows, and the rows each stands for.

        Deterministic for a given set of rows on the rank (fences of the runs,
        or the sorted in-memory keys). Used to choose splitters.
        """
        if self.runs:
            if self._buf:
                self._spill()
            fences = np.sort(np.concatenate([r.fences for r in self.runs]))
        else:
            keys = np.sort(np.concatenate([b[1] for b in self._buf])) if self._buf else np.empty(0, np.uint64)
            fences = keys
        if len(fences) == 0:
            return np.empty(0, np.uint64), 0.0
        idx = ((np.arange(m) + 0.5) * len(fences) / m).astype(np.int64)
        idx = np.unique(np.clip(idx, 0, len(fences) - 1))
        return fences[idx], self.rows / len(idx)

    def buckets(self, bucket_bytes: int):
        """Yield ``(records, keys)`` sorted blocks covering every row once, in key order.

        In memory: one block. Spilled: consecutive key ranges of about
        ``bucket_bytes`` each (all rows with equal keys fall in one block). Run
        files are removed as the last block is read. The store is empty after.
        """
        if self.runs:
            yield from self._spilled_buckets(bucket_bytes)
        elif self.n_fine == 1:
            got = self._take_fine(0, 1)
            self._buf_bytes = self.rows = 0
            yield got if got is not None else (np.empty(0, self.dtype), np.empty(0, np.uint64))
        else:
            yield from self._fine_buckets()

    def _fine_buckets(self):
        """In memory, by fine key range: consecutive ranges of about 1/16 of the rows each."""
        per_row = self.dtype.itemsize + 8
        target = max(MIN_BLOCK_BYTES, self.rows * per_row // 16)
        sizes = np.array([sum(len(p[0]) for p in fb) for fb in self._fb], dtype=np.int64) * per_row
        yielded, lo = False, 0
        while lo < self.n_fine:
            hi, acc = lo, 0
            while hi < self.n_fine and (acc == 0 or acc + sizes[hi] <= target):
                acc += int(sizes[hi])
                hi += 1
            got = self._take_fine(lo, hi)
            release_free_memory()   # the pieces just freed: else RSS keeps them (hpcprep.heap)
            lo = hi
            if got is not None:
                yielded = True
                yield got
                del got
        if not yielded:
            yield np.empty(0, self.dtype), np.empty(0, np.uint64)
        self._buf_bytes = 0
        self.rows = 0

    def _spilled_buckets(self, bucket_bytes: int):
        """From the sorted runs on disk: a merge of every run's rows between consecutive bounds."""
        if self._buf:
            self._spill()
        runs, self.runs = self.runs, []
        target = max(1, int(bucket_bytes) // (self.dtype.itemsize + 8))
        lows = [0] * len(runs)
        for b in _bucket_bounds(runs, target) + [None]:
            pieces = []
            for i, run in enumerate(runs):
                hi = run.n if b is None else run.position(b)
                r, k = run.read(lows[i], hi)
                lows[i] = hi
                if len(r):
                    pieces.append((r, k))
            if pieces:
                yield self._sort_pieces(pieces)
        for run in runs:
            run.remove()
        self.rows = 0

    def discard(self) -> None:
        for run in self.runs:
            run.remove()
        self.runs = []
        self._fb = [[] for _ in range(self.n_fine)]
        self._buf_bytes = 0


def _bucket_bounds(runs, target: int) -> list[int]:
    """Keys that cut the runs' rows into buckets of about ``target`` rows.

    Each fence stands for ``step`` rows of its run; a bucket ends where the
    fences' rows reach ``target``, so it holds at most target + the sum of the
    runs' steps rows.
    """
    fences = np.concatenate([r.fences for r in runs])
    weight = np.concatenate([np.full(len(r.fences), r.step, np.int64) for r in runs])
    order = np.argsort(fences, kind="stable")
    fences, cum = fences[order], np.cumsum(weight[order])
    bounds, last = [], 0
    for i in np.flatnonzero(np.diff(cum // target, prepend=0) > 0).tolist():
        b = int(fences[i])
        if i > 0 and b > last:
            bounds.append(b)
            last = b
    return bounds


class BlockSeq:
    """An ordered sequence of record blocks, in memory up to ``limit_bytes``, then one file per block.

    Parameters
    ----------
    dtype : numpy dtype
    limit_bytes : int
    spill_dir : str
    name : str
        Prefix of this sequence's block files.
    """

    def __init__(self, dtype: np.dtype, limit_bytes: int, spill_dir: str, name: str):
        self.dtype, self.limit, self.spill_dir, self.name = dtype, int(limit_bytes), spill_dir, name
        self._items: list = []  # ndarray, or (path, rows)
        self._mem = 0
        self.rows = 0
        self.bytes_spilled = 0
        self.class_counts: dict = {}

    def append(self, block: np.ndarray) -> None:
        if len(block) == 0:
            return
        count_classes(self.class_counts, block)
        self.rows += len(block)
        if self._mem + block.nbytes <= self.limit:
            self._items.append(block)
            self._mem += block.nbytes
        else:   # past the limit: this block goes to disk, those in memory stay there
            self._items.append(self._write(block))

    def _write(self, block: np.ndarray):
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, f"{self.name}-block{len(self._items):06d}-{id(block):x}.rec")
        block.tofile(path)
        self.bytes_spilled += block.nbytes
        return (path, len(block))

    def blocks(self):
        """Yield the blocks in order, releasing each (memory or file) once yielded."""
        items, self._items, self._mem = self._items, [], 0
        for i, item in enumerate(items):
            items[i] = None
            if isinstance(item, np.ndarray):
                yield item
            else:
                path, n = item
                block = np.fromfile(path, dtype=self.dtype, count=n)
                os.remove(path)
                yield block
        self.rows = 0
