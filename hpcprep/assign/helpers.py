"""Small NumPy-in, NumPy-out helpers the pipeline and the trainer call.

Each builds a one-task :class:`.problem.AssignProblem` and goes through
:func:`.solve.solve` (the closed form where it is exact, as it is here without
deadlines, so no cvxpy import), or cuts chunks from a :class:`.plan.Plan` it made.
"""

import numpy as np

from ..errors import ConfigError
from ..partition import nearest_cuts
from .plan import Plan
from .problem import AssignProblem
from .solve import solve


def _speeds(speeds, name="speeds") -> np.ndarray:
    s = np.atleast_1d(np.asarray(speeds, dtype=np.float64))
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ConfigError(f"{name} must be a non-empty list of finite numbers > 0, got {s.tolist()}")
    return s


def rows_by_speed(total_rows: int, speeds, overheads=None, memory_caps=None) -> np.ndarray:
    """Whole rows per worker that minimize the makespan.

    Water-filling (every working worker finishes at the same time, given its
    speed and overhead) followed by largest remainder within the memory caps.

    Parameters
    ----------
    total_rows : int
        Rows to place (>= 0).
    speeds : array of float, shape (n,)
        Rows per second of each worker (> 0).
    overheads : array of float, shape (n,), optional
        Seconds before each worker's first row (default 0).
    memory_caps : array of float, shape (n,), optional
        Most rows each worker may hold (default: none).

    Returns
    -------
    array of int64, shape (n,)
        Sums exactly to ``total_rows``; equal speeds give an equal split
        (differing by at most one row, extra rows to the lowest ranks).

    Raises
    ------
    AssignError
        When the memory caps hold fewer than ``total_rows`` rows.

    Examples
    --------
    >>> rows_by_speed(10, [1.0, 1.0, 2.0]).tolist()
    [3, 2, 5]
    """
    s = _speeds(speeds)
    total_rows = int(total_rows)
    if total_rows < 0:
        raise ConfigError(f"total_rows must be >= 0, got {total_rows}")
    return solve(AssignProblem(speeds=s, task_units=[total_rows], overheads=overheads,
                               memory_caps=memory_caps)).units[:, 0]


def contiguous_chunk_ranges(chunk_sizes, plan: Plan) -> list[tuple[int, int]]:
    """Split an ordered list of chunks into one contiguous range per worker of ``plan``.

    The plan's real-valued shares (before rounding, summed over tasks) give worker
    ``k`` the cumulative row target ``G_k = sum_{i<=k} rows_i``; worker ``k``'s range ends at the chunk
    boundary nearest to ``G_k`` (ties to the lower boundary), so every worker's
    rows are within one chunk of its plan at each end.

    Parameters
    ----------
    chunk_sizes : array of int, shape (N,)
        Rows in each chunk, in input order.
    plan : Plan
        From :func:`.solve.solve` on the chunks' rows (workers in rank order).

    Returns
    -------
    list of (start, stop)
        Half-open chunk index ranges, one per worker, in order, covering
        ``0..N`` without gaps (a range may be empty).

    Examples
    --------
    >>> plan = solve(AssignProblem(speeds=[1, 1, 1, 1], task_units=[1000]))
    >>> contiguous_chunk_ranges([100] * 10, plan)
    [(0, 2), (2, 5), (5, 7), (7, 10)]
    """
    sizes = np.asarray(chunk_sizes, dtype=np.int64)
    if sizes.ndim != 1 or np.any(sizes < 0):
        raise ConfigError("chunk_sizes must be a list of integers >= 0")
    return nearest_cuts(sizes, plan.real_units.sum(axis=1))


def batch_sizes(global_batch: int, seconds_per_sample, overheads=None, max_per_rank=None) -> np.ndarray:
    """Per-rank batch sizes for one training step (worker-adaptive batching).

    Parameters
    ----------
    global_batch : int
        Samples per step over all ranks.
    seconds_per_sample : array of float, shape (n,)
        Measured compute time per sample on each rank (> 0).
    overheads : array of float, shape (n,), optional
        Fixed seconds per step on each rank (e.g. launch latency).
    max_per_rank : array of int, shape (n,), optional
        Most samples a rank fits in memory per step.

    Returns
    -------
    array of int64, shape (n,)
        Sums exactly to ``global_batch``. Weight each rank's gradient by its
        batch size in the allreduce to get the exact full-batch gradient.

    Examples
    --------
    >>> batch_sizes(100, [0.01, 0.01, 0.02]).tolist()
    [40, 40, 20]
    """
    per_sample = _speeds(seconds_per_sample, "seconds_per_sample")
    return rows_by_speed(global_batch, 1.0 / per_sample, overheads, max_per_rank)
