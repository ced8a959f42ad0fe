"""``bootstrap``: sampling with replacement, Poisson(1) per row or exactly ``n`` draws.

Copies of a row carry a non-zero 64-bit *copy tag* (record field ``c``), so
every copy has its own key in this and every later layer
(:func:`hpcprep.sampling.modes.row_keys`).
"""

import numpy as np

from ..mpi.exchange import alltoallv_records
from ..kernels.hashing import GOLDEN, key_to_unit, random_keys, splitmix64
from ..kernels.select import poisson1_multiplicity, repeat_indices
from ..partition import equal_counts, offsets
from ..schema import Param
from .modes import SampleMode, register_mode, row_keys

#: Random stream of the exact-n draws (xored with the layer's stream).
DRAW_STREAM = 0xB0075 << 40


def copy_tags(tags: np.ndarray, stream: int, j: np.ndarray) -> np.ndarray:
    """Tag of copy ``j`` (``j >= 1``) of rows with tags ``tags``; copy 0 keeps its tag.

    A tag is a function of the row's previous tag, the layer's stream and ``j``
    only, never 0 for a copy.
    """
    j = np.asarray(j, dtype=np.uint64)
    base = splitmix64(tags.astype(np.uint64) ^ np.uint64(stream))
    new = splitmix64(base + j * np.uint64(GOLDEN)) | np.uint64(1)
    return np.where(j == 0, tags.astype(np.uint64), new)


def expand_copies(records: np.ndarray, multiplicity: np.ndarray, stream: int) -> np.ndarray:
    """Repeat each row by its multiplicity; copy ``j >= 1`` of a row gets a fresh copy tag."""
    idx = repeat_indices(multiplicity)
    out = records[idx]
    if len(out):
        starts = np.cumsum(multiplicity) - multiplicity
        j = np.arange(len(idx), dtype=np.int64) - starts[idx]
        out["c"] = copy_tags(out["c"], stream, j)
    return out


def draw_positions(seed: int, stream: int, first: int, count: int, total: int) -> np.ndarray:
    """Positions in ``[0, total)`` of draws ``first .. first + count`` (uniform, with replacement).

    Draw ``d`` lands at ``floor(u_d * total)``, ``u_d`` from the key of ``d``
    in the draw stream: a function of ``(seed, stream, d)`` only.
    """
    d = np.arange(first, first + count, dtype=np.int64)
    u = key_to_unit(random_keys(seed, stream ^ DRAW_STREAM, d))
    return np.minimum((u * total).astype(np.int64), total - 1)


@register_mode
class Bootstrap(SampleMode):
    """``bootstrap``: with replacement.

    Without ``n``: every row appears ``m ~ Poisson(1)`` times, ``m`` a function
    of its key, so the output size is random (mean N, sd sqrt(N)); copies are
    made before routing, so they are spread over the shuffled order.
    With ``n``: exactly ``n`` uniform draws over the layer's rows; a row drawn
    ``m`` times appears ``m`` times in a row at its place in the key order
    (chain a ``shuffle`` layer to spread copies: they have distinct keys there).
    """

    op = "bootstrap"
    params = {"n": Param(int, -1, check=lambda v: None if v >= -1 else "must be >= 0",
                         doc="exact number of draws; -1 = Poisson(1) multiplicity per row")}

    def expand(self, seed, layer, records):
        if self.config["n"] != -1 or not len(records):
            return records
        m = poisson1_multiplicity(row_keys(seed, layer, records, self.kernels))
        return expand_copies(records, m, layer)

    def prepare(self, ctx):
        self._pos = None
        n = self.config["n"]
        if n == -1:
            return
        comm = ctx.comm
        size, rank = comm.Get_size(), comm.Get_rank()
        if ctx.total == 0:
            if n:
                self.warnings.append(f"bootstrap: n = {n} draws from an empty layer give no rows")
            self._pos = np.empty(0, np.int64)
            return
        share = equal_counts(n, size)
        pos = np.sort(draw_positions(ctx.seed, ctx.layer, int(offsets(share)[rank]), int(share[rank]),
                                     ctx.total))
        starts = np.array(comm.allgather(ctx.start), dtype=np.int64)
        owner = np.searchsorted(starts, pos, side="right") - 1
        counts = np.bincount(owner, minlength=size).astype(np.int64)
        got, _, _ = alltoallv_records(comm, pos, counts, np.dtype(np.int64))
        self._pos = np.sort(got)

    def select(self, ctx, records, keys):
        if self._pos is None:
            return records
        lo = np.searchsorted(self._pos, ctx.start, side="left")
        hi = np.searchsorted(self._pos, ctx.start + len(records), side="left")
        m = np.bincount(self._pos[lo:hi] - ctx.start, minlength=len(records))
        return expand_copies(records, m, ctx.layer)
