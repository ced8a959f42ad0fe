"""Whole units from real shares: largest remainder on cumulative sums.

The solver returns real units ``x[i, j]``. A plan needs integers that keep each
task's total exact, every memory cap and every deadline. Rounding each task on
its own can break a cumulative deadline (worker ``i`` rounded up on several
early tasks), so we round the *cumulative* sums ``X[i, j] = sum_{k<=j} x[i, k]``
in deadline order, column by column, and difference them:

- column ``j`` must sum to ``S_j`` (the kept units of tasks ``0..j``);
- it stays within ``[Y[i, j-1], U[i, j]]``: no negative units, and ``U`` is the
  whole units worker ``i`` can finish by ``D_j`` within its memory cap;
- inside those bounds it is the largest-remainder rounding of ``X[:, j]``.

``U`` grows with ``j`` and ``S_j <= sum_i U[i, j]`` holds for every ``j`` once
:func:`.feasibility.check_feasible` passed, so every column has a solution and
the rounded plan meets every deadline and cap exactly.
"""

import numpy as np

from ..partition import largest_remainder
from .classes import Reduction, reduce_problem
from .problem import AssignError, AssignProblem


def bounded_largest_remainder(target, total: int, lower, upper) -> np.ndarray:
    """Integers near ``target`` within ``[lower, upper]`` that sum to ``total``.

    :func:`hpcprep.partition.largest_remainder`, with an :class:`AssignError` when
    the bounds admit no solution.

    Parameters
    ----------
    target : array of float, shape (n,)
    total : int
    lower, upper : array of int, shape (n,)

    Returns
    -------
    array of int64, shape (n,)

    Raises
    ------
    AssignError
        When ``sum(lower) > total`` or ``sum(upper) < total``.
    """
    try:
        return largest_remainder(target, total, lower, upper)
    except ValueError as e:
        raise AssignError(str(e)) from None


def cumulative_upper_bounds(problem: AssignProblem, order, use_deadlines: bool = True,
                            workers=None) -> np.ndarray:
    """Most whole units worker ``i`` may have done after task ``order[j]``.

    Parameters
    ----------
    problem : AssignProblem
    order : array of int
        Task order (deadline order).
    use_deadlines : bool
        False ignores deadlines (the proportional fallback).
    workers : array of int, optional
        Only these workers' rows (default: all).

    Returns
    -------
    array of int64, shape (n, m)
        ``min(floor(s_i * max(D_j - c_i, 0)), floor(M_i))``, non-decreasing in ``j``.
    """
    rows = slice(None) if workers is None else np.asarray(workers)
    caps = problem.unit_caps()[rows]
    speeds, overheads = problem.speeds[rows], problem.overheads[rows]
    bounds = np.empty((caps.size, problem.n_tasks), dtype=np.int64)
    bounds[:] = caps[:, None]
    deadlines = problem.deadlines[order]
    columns = np.flatnonzero(np.isfinite(deadlines))
    if use_deadlines and columns.size:
        # one bound per distinct deadline, then copied to its tasks' columns
        distinct, which = np.unique(deadlines[columns], return_inverse=True)
        slack = np.maximum(distinct[None, :] - overheads[:, None], 0.0)
        whole = np.minimum(np.floor(speeds[:, None] * slack + 1e-9), caps[:, None])
        bounds[:, columns] = whole.astype(np.int64)[:, which.reshape(-1)]
    return bounds


def capacity(problem: AssignProblem, order, use_deadlines: bool = True) -> np.ndarray:
    """Column sums of :func:`cumulative_upper_bounds`, shape (m,), computed over worker classes."""
    red = reduce_problem(problem)
    bounds = cumulative_upper_bounds(problem, order, use_deadlines, red.representative)
    return red.counts @ bounds


def round_plan(units_real, kept_units, problem: AssignProblem, use_deadlines: bool = True,
               worker_totals=None) -> np.ndarray:
    """Round real units per worker and task to whole units.

    Parameters
    ----------
    units_real : array of float, shape (n, m)
        Real units from the solver or the closed form (original task order).
    kept_units : array of int, shape (m,)
        Whole units of each task to place (task totals to keep exactly).
    problem : AssignProblem
    use_deadlines : bool
        False rounds within memory caps only.
    worker_totals : array of int, shape (n,), optional
        Whole units each worker must end with (``sum == sum(kept_units)``); the
        closed form with deadlines fixes them first.

    Returns
    -------
    array of int64, shape (n, m)
        Whole units, ``sum(axis=0) == kept_units``, within every cap and, with
        ``use_deadlines``, every deadline.

    Raises
    ------
    AssignError
        When no whole-unit plan fits the bounds (never after
        :func:`.feasibility.check_feasible` passed, unless ``worker_totals`` is given).
    """
    order = problem.deadline_order() if use_deadlines else np.arange(problem.n_tasks)
    x = np.asarray(units_real, dtype=np.float64)[:, order]
    upper = cumulative_upper_bounds(problem, order, use_deadlines)
    if worker_totals is not None:
        upper = np.minimum(upper, np.asarray(worker_totals, dtype=np.int64)[:, None])
    Y = round_cumulative(x, np.asarray(kept_units, dtype=np.int64)[order], upper)
    out = np.empty_like(Y)
    out[:, order] = np.diff(Y, axis=1, prepend=0)
    return out


def round_cumulative(x, kept, upper) -> np.ndarray:
    """Whole cumulative units ``Y`` (rows: workers or classes) from real units ``x``, tasks in order.

    Column ``j`` is the largest-remainder rounding of ``cumsum(x)[:, j]`` within
    ``[Y[:, j-1], upper[:, j]]`` summing to ``sum(kept[:j+1])``.
    """
    X = np.cumsum(x, axis=1)
    S = np.cumsum(kept)
    Y = np.zeros_like(upper)
    previous = np.zeros(upper.shape[0], dtype=np.int64)
    for j in range(upper.shape[1]):
        target = X[:, j]
        if target.sum() > 0:
            target = target * (S[j] / target.sum())   # remove the solver's last error
        Y[:, j] = bounded_largest_remainder(target, int(S[j]), previous, upper[:, j])
        previous = Y[:, j]
    return Y


def round_by_class(class_units, kept_units, problem: AssignProblem, reduction: Reduction) -> np.ndarray:
    """Whole units per worker from real units per class (the classes' totals), keeping every bound.

    The classes' cumulative totals are rounded as in :func:`round_plan` within
    ``n_k`` times one worker's bounds; then each class's cumulative total ``Y``
    is split evenly: its ``r``-th worker (by index) gets ``Y // n_k + (r < Y % n_k)``.
    That is non-decreasing in ``Y`` for every ``r`` (no negative units) and at
    most ``ceil(Y / n_k)``, so within every deadline and cap of one worker.

    Parameters
    ----------
    class_units : array of float, shape (K, m)
        Real units of each task done by each class in all (original task order).
    kept_units : array of int, shape (m,)
    problem : AssignProblem
    reduction : Reduction
        From :func:`.classes.reduce_problem` (``problem``'s classes).

    Returns
    -------
    array of int64, shape (n, m)
    """
    order = reduction.order
    counts = reduction.counts
    upper = counts[:, None] * cumulative_upper_bounds(problem, order, True, reduction.representative)
    Y = round_cumulative(np.asarray(class_units, dtype=np.float64)[:, order],
                         np.asarray(kept_units, dtype=np.int64)[order], upper)
    k = reduction.worker_class
    by_class = np.argsort(k, kind="stable")
    rank = np.empty_like(k)
    rank[by_class] = np.arange(k.size) - np.repeat(np.cumsum(counts) - counts, counts)
    even, extra = np.divmod(Y, counts[:, None])
    cumulative = even[k] + (rank[:, None] < extra[k])
    out = np.empty_like(cumulative)
    out[:, order] = np.diff(cumulative, axis=1, prepend=0)
    return out


def kept_whole_units(fraction, problem: AssignProblem, use_deadlines: bool = True) -> np.ndarray:
    """Whole units to keep per task from real kept fractions.

    ``floor(f_j * W_j)``, at least ``ceil(f_min_j * W_j)``; then, in deadline order,
    units are taken back from the latest tasks above their minimum wherever the
    tasks due by some deadline would not fit in whole units.

    Returns
    -------
    array of int64, shape (m,)
    """
    W = problem.task_units
    minimum = problem.min_units()
    # the solver is accurate to ~1e-8: a fraction within 1e-6 of the next whole unit counts as it
    kept = np.clip(np.floor(np.asarray(fraction) * W + 1e-6 * np.maximum(W, 1)).astype(np.int64), minimum, W)
    order = problem.deadline_order() if use_deadlines else np.arange(problem.n_tasks)
    room = capacity(problem, order, use_deadlines)
    k, lo = kept[order].copy(), minimum[order]
    for j in range(k.size):
        excess = int(k[: j + 1].sum() - room[j])
        for i in range(j, -1, -1):
            if excess <= 0:
                break
            take = min(excess, int(k[i] - lo[i]))
            k[i] -= take
            excess -= take
    kept[order] = k
    return kept
