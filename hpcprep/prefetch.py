"""Reading the next batch of a dataset while the current one is used (one background thread)."""

import numpy as np


class Prefetcher:
    """Reads one keyed batch ahead on a background thread.

    ``want(ranges)`` starts reading ``ranges`` (global row ranges) in the background;
    ``get(ranges)`` returns them, from the prefetched read when it was the same
    ranges, else by reading now (e.g. after batch sizes changed).
    """

    def __init__(self, dataset, xp=np, dtype=None):
        self.dataset, self.xp, self.dtype = dataset, xp, dtype
        self._key = None
        self._future = None
        self.hits = 0
        self.misses = 0

    def _load(self, ranges):
        return to_xp(self.xp, *self.dataset.read_ranges(ranges, self.dtype))

    def want(self, ranges) -> None:
        key = tuple(map(tuple, ranges))
        if key == self._key:
            return
        self._drop()
        self._key = key
        self._future = self.dataset._executor().submit(self._load, ranges)

    def get(self, ranges):
        key = tuple(map(tuple, ranges))
        if key == self._key and self._future is not None:
            fut, self._key, self._future = self._future, None, None
            self.hits += 1
            return fut.result()
        self._drop()
        self.misses += 1
        return self._load(ranges)

    def _drop(self):
        if self._future is not None:
            self._future.cancel() or self._future.exception()
        self._key = self._future = None


def to_xp(xp, x, y, *more):
    """``(x, y, *more)`` as arrays of ``xp`` (copied to the GPU for CuPy; ``y`` may be None;
    ``more``: the int64 codes of a dataset that has them)."""
    if xp is np:
        return (x, y, *more)
    return tuple(None if a is None else xp.asarray(a) for a in (x, y, *more))
