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

from ..kernels.active import host_argsort

#: One fence key per this many rows of a run (at most; small runs get at least 64 fences).
FENCE = 256


def sort_order(keys: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Indices ordering rows by ``(key, id, copy)``; the order does not depend on arrival order.

    Parameters
    ----------
    keys : ndarray of uint64
        Sort keys of the rows.
    records : structured ndarray
        The rows (field ``id``, optional field ``c``: copy tag).

    Returns
    -------
    ndarray of int64
    """
    order = host_argsort(keys)
    k = keys[order]
    if len(k) > 1 and bool((k[1:] == k[:-1]).any()):
        cols = [records["id"], keys]
        if "c" in records.dtype.names:
            cols.insert(0, records["c"])
        order = np.lexsort(cols)
    return order


class _Run:
    """One sorted run on disk: records and keys as raw files, fences in memory."""

    def __init__(self, path: str, records: np.ndarray, keys: np.ndarray):
        self.path, self.n, self.dtype = path, len(records), records.dtype
        records.tofile(path + ".rec")
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
    """

    def __init__(self, dtype: np.dtype, limit_bytes: int, spill_dir: str, name: str):
        self.dtype, self.limit, self.spill_dir, self.name = dtype, max(1, int(limit_bytes)), spill_dir, name
        self._buf: list[tuple[np.ndarray, np.ndarray]] = []
        self._buf_bytes = 0
        self.runs: list[_Run] = []
        self.rows = 0
        self.bytes_spilled = 0
        self.class_counts: dict = {}

    @property
    def spilled(self) -> bool:
        return bool(self.runs)

    def add(self, records: np.ndarray, keys: np.ndarray) -> None:
        """Keep ``records`` with their ``keys``; write a sorted run when the buffer passes the limit."""
        if len(records) == 0:
            return
        if "y" in records.dtype.names and records.dtype["y"].kind in "iu":
            vals, cnt = np.unique(records["y"], return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                self.class_counts[v] = self.class_counts.get(v, 0) + c
        self._buf.append((records, keys))
        self._buf_bytes += records.nbytes + keys.nbytes
        self.rows += len(records)
        if self._buf_bytes > self.limit:
            self._spill()

    def _take_buffer(self):
        if len(self._buf) == 1:
            rec, key = self._buf[0]
        elif self._buf:
            rec = np.concatenate([b[0] for b in self._buf])
            key = np.concatenate([b[1] for b in self._buf])
        else:
            rec, key = np.empty(0, self.dtype), np.empty(0, np.uint64)
        self._buf, self._buf_bytes = [], 0
        order = sort_order(key, rec)
        return rec[order], key[order]

    def _spill(self) -> None:
        rec, key = self._take_buffer()
        if not len(rec):
            return
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, f"{self.name}-run{len(self.runs):05d}")
        self.runs.append(_Run(path, rec, key))
        self.bytes_spilled += rec.nbytes + key.nbytes

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
        if not self.runs:
            rec, key = self._take_buffer()
            self.rows = 0
            yield rec, key
            return
        if self._buf:
            self._spill()
        runs, self.runs = self.runs, []
        per_row = self.dtype.itemsize + 8
        target = max(1, int(bucket_bytes) // per_row)
        # each fence stands for `step` rows of its run; a bucket ends where the fences' rows
        # reach `target`, so it holds at most target + sum of the runs' steps rows
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
        lows = [0] * len(runs)
        for b in bounds + [None]:
            pieces_r, pieces_k = [], []
            for i, run in enumerate(runs):
                hi = run.n if b is None else run.position(b)
                r, k = run.read(lows[i], hi)
                lows[i] = hi
                if len(r):
                    pieces_r.append(r)
                    pieces_k.append(k)
            if not pieces_r:
                continue
            rec = np.concatenate(pieces_r) if len(pieces_r) > 1 else pieces_r[0]
            key = np.concatenate(pieces_k) if len(pieces_k) > 1 else pieces_k[0]
            del pieces_r, pieces_k
            order = sort_order(key, rec)
            yield rec[order], key[order]
        for run in runs:
            run.remove()
        self.rows = 0

    def discard(self) -> None:
        for run in self.runs:
            run.remove()
        self.runs, self._buf = [], []


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
        if "y" in block.dtype.names and block.dtype["y"].kind in "iu":
            vals, cnt = np.unique(block["y"], return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                self.class_counts[v] = self.class_counts.get(v, 0) + c
        self.rows += len(block)
        if self._mem + block.nbytes <= self.limit:
            self._items.append(block)
            self._mem += block.nbytes
            return
        for i, item in enumerate(self._items):     # past the limit: everything goes to disk
            if isinstance(item, np.ndarray):
                self._items[i] = self._write(item)
        self._mem = 0
        self._items.append(self._write(block))

    def _write(self, block: np.ndarray):
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, f"{self.name}-block{len(self._items):06d}-{id(block):x}.rec")
        block.tofile(path)
        self.bytes_spilled += block.nbytes
        return (path, len(block))

    @property
    def n_blocks(self) -> int:
        return len(self._items)

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
