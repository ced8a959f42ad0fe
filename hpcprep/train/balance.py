"""Per-rank batch sizes: equal (or fixed shares) or worker-adaptive (LB-BSP).

The global batch size ``B`` is fixed; rank i takes ``b_i`` of its samples with
``Σ b_i = B``. With ``balance = "adaptive"``, every ``rebalance_every`` steps each
rank reports its measured seconds per sample over the last window (lowercase
``gather``: a few floats), rank 0 computes new sizes — with
``hpcprep.assign.batch_sizes`` when that module provides it, else a split
proportional to measured speed — and broadcasts them. Since the data-parallel
step is exact for any split, changing the sizes changes only how fast a step is,
not what it computes.
"""

import numpy as np

from ..errors import ConfigError, HpcprepError
from ..mpi.agree import root_decides
from ..partition import proportional_counts


def proportional_sizes(global_batch: int, seconds_per_sample) -> list[int]:
    """Batch sizes proportional to speed (1 / seconds per sample), every rank at least 1
    sample when ``global_batch >= ranks`` so that every rank keeps being measured."""
    s = np.asarray(seconds_per_sample, dtype=np.float64)
    speed = 1.0 / np.maximum(s, 1e-12)
    n = s.size
    if global_batch >= n:
        return [1 + b for b in proportional_counts(global_batch - n, speed).tolist()]
    return proportional_counts(global_batch, speed).tolist()


def compute_sizes(global_batch: int, seconds_per_sample) -> tuple[list[int], str]:
    """New per-rank batch sizes and the name of the method used.

    Uses ``hpcprep.assign.batch_sizes(global_batch, seconds_per_sample)`` (the
    assignment program) when it is importable, else :func:`proportional_sizes`.
    """
    try:
        from ..assign import batch_sizes
    except ImportError:
        return proportional_sizes(global_batch, seconds_per_sample), "proportional"
    sizes = [int(b) for b in batch_sizes(global_batch, list(map(float, seconds_per_sample)))]
    if len(sizes) != len(seconds_per_sample) or sum(sizes) != global_batch or min(sizes) < 0:
        raise HpcprepError(f"hpcprep.assign.batch_sizes returned {sizes} for a global batch of "
                           f"{global_batch} over {len(seconds_per_sample)} ranks")
    return sizes, "assign"


def parse_slowdown(table: dict, size: int | None = None) -> dict[int, float]:
    """``{"1": 2.0}`` -> ``{1: 2.0}``; checks ranks (when ``size`` is known) and factors >= 1."""
    out = {}
    for key, factor in table.items():
        try:
            rank = int(key)
        except ValueError:
            raise ConfigError(f"train.emulate_slowdown.{key}: keys are rank numbers") from None
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
            raise ConfigError(f"train.emulate_slowdown.{key} = {factor!r}: expected a number >= 1")
        if rank < 0 or (size is not None and rank >= size):
            raise ConfigError(f"train.emulate_slowdown.{key}: no rank {rank} "
                              f"(ranks 0..{(size or 1) - 1})")
        out[rank] = float(factor)
    return out


class Balancer:
    """The per-rank batch sizes of a training run.

    Parameters
    ----------
    comm : mpi4py communicator
    global_batch : int
    mode : "equal" or "adaptive"
    every : int
        Rebalance every ``every`` steps (adaptive).
    shares : list of float, optional
        Fixed relative shares per rank (default equal); also the adaptive start.
    """

    def __init__(self, comm, global_batch: int, mode: str = "equal", every: int = 20, shares=None):
        self.comm = comm
        self.rank, self.nranks = comm.Get_rank(), comm.Get_size()
        self.global_batch = int(global_batch)
        self.mode = mode
        self.every = int(every)
        self.sizes = proportional_counts(self.global_batch, shares if shares else [1.0] * self.nranks).tolist()
        self.method = "equal" if not shares else "shares"
        self.history = []          # (step, sizes, seconds per sample)
        self._samples = 0
        self._seconds = 0.0
        self._last_sps = [None] * self.nranks
        if mode == "adaptive" and self.rank == 0:
            try:  # import the assignment program (cvxpy) now, not inside a timed window
                from .. import assign  # noqa: F401
            except ImportError:
                pass

    def block(self, length: int) -> list[int]:
        """Sizes for a global batch of ``length`` samples (the last batch of an epoch is
        smaller): the current sizes scaled, largest remainder."""
        if length == self.global_batch:
            return list(self.sizes)
        return proportional_counts(length, self.sizes).tolist()

    def record(self, samples: int, seconds: float) -> None:
        """Add one step's local work to the current measurement window."""
        self._samples += samples
        self._seconds += seconds

    def _decide(self, reports) -> tuple:
        """Rank 0: new ``(sizes, method, estimates)`` from the ranks' seconds per sample."""
        try:
            for r, s in enumerate(reports):
                if s is not None:
                    self._last_sps[r] = s
            known = [s for s in self._last_sps if s is not None]
            if not known:
                return list(self.sizes), self.method, [None] * self.nranks
            fill = float(np.median(known))
            est = [fill if s is None else s for s in self._last_sps]
            sizes, method = compute_sizes(self.global_batch, est)
            return sizes, method, est
        except Exception as e:  # noqa: BLE001 - reported on every rank by root_decides
            raise HpcprepError(f"rebalancing batch sizes failed on rank 0: "
                               f"{type(e).__name__}: {e}") from None

    def after_step(self, step: int) -> bool:
        """Rebalance when due (adaptive mode, every ``every`` steps). Collective; every rank
        calls it after every step with the same ``step``. Returns whether sizes changed."""
        if self.mode != "adaptive" or step % self.every != 0:
            return False
        sps = self._seconds / self._samples if self._samples else None
        self._samples, self._seconds = 0, 0.0
        reports = self.comm.gather(sps, root=0)
        sizes, method, est = root_decides(self.comm, self._decide, reports)
        changed = sizes != self.sizes
        self.sizes, self.method = sizes, method
        self.history.append((step, list(sizes), est))
        return changed
