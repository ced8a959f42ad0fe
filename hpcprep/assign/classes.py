"""Exact reductions of the program before it is built: identical workers, tasks due together.

- **Worker classes.** Workers with equal speed, overhead and memory cap are
  interchangeable: the program is convex and unchanged by permuting them, so
  averaging an optimum over each class gives an optimum in which every worker of
  a class does the same. The program is therefore built over *classes*, with the
  class's total units as variables (``n_k`` workers, each doing ``1/n_k`` of
  it). Same optimum, ``K`` rows instead of ``n``.
- **Task groups.** In deadline order, tasks with the same deadline (and all
  tasks without one) only ever appear through their cumulative sum: the
  deadline bound of a group is the same for each of its tasks, and nothing
  bounds the work inside the group. So one cumulative column per group suffices;
  each worker's group units are split over the group's tasks in proportion to
  their kept units.

:func:`class_task_units` and :func:`per_worker` map a class x group solution
back to real units per class and per worker; :func:`.rounding.round_by_class`
makes whole units of it (the workers of a class differ by at most one unit in
each cumulative column).
"""

from dataclasses import dataclass

import numpy as np

from .problem import AssignProblem


@dataclass(frozen=True)
class Reduction:
    """How a problem's workers and tasks map onto the program's classes and groups.

    Attributes
    ----------
    worker_class : array of int, shape (n,)
        Class of each worker.
    counts : array of int, shape (K,)
        Workers in each class.
    representative : array of int, shape (K,)
        One worker of each class (its speed, overhead and cap stand for the class).
    order : array of int, shape (m,)
        Tasks in deadline order (:meth:`.AssignProblem.deadline_order`).
    group_sizes : tuple of int
        Consecutive tasks of ``order`` in each group.
    n_deadline_groups : int
        Groups with a finite deadline (they come first).
    """

    worker_class: np.ndarray
    counts: np.ndarray
    representative: np.ndarray
    order: np.ndarray
    group_sizes: tuple
    n_deadline_groups: int

    @property
    def group_of_task(self) -> np.ndarray:
        """Group of each task in deadline order, shape (m,)."""
        return np.repeat(np.arange(len(self.group_sizes)), self.group_sizes)

    @property
    def group_starts(self) -> np.ndarray:
        """Position in ``order`` of each group's first task, shape (G,)."""
        return np.concatenate([[0], np.cumsum(self.group_sizes)[:-1]]).astype(np.int64)


def reduce_problem(problem: AssignProblem, aggregate: bool = True) -> Reduction:
    """Worker classes and task groups of ``problem`` (the last few are kept: one solve asks several times).

    Parameters
    ----------
    problem : AssignProblem
    aggregate : bool
        False keeps one class per worker (the tests compare both).

    Returns
    -------
    Reduction
    """
    key = (problem.speeds.tobytes(), problem.overheads.tobytes(), problem.memory_caps.tobytes(),
           problem.deadlines.tobytes(), aggregate)
    return _reduce(key, problem) if key not in _REDUCED else _REDUCED[key]


_REDUCED: dict = {}


def _reduce(key, problem: AssignProblem) -> Reduction:
    if len(_REDUCED) >= 4:
        _REDUCED.pop(next(iter(_REDUCED)))
    _REDUCED[key] = red = _compute_reduction(problem, key[-1])
    return red


def _compute_reduction(problem: AssignProblem, aggregate: bool) -> Reduction:
    n = problem.n_workers
    if aggregate:
        key = np.stack([problem.speeds, problem.overheads, problem.memory_caps], axis=1)
        _, first, inverse, counts = np.unique(key, axis=0, return_index=True, return_inverse=True,
                                              return_counts=True)
        worker_class, representative = inverse.reshape(-1), first
    else:
        worker_class, representative, counts = np.arange(n), np.arange(n), np.ones(n, dtype=np.int64)
    order = problem.deadline_order()
    deadlines = problem.deadlines[order]
    new_group = np.concatenate([[True], deadlines[1:] != deadlines[:-1]])
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.concatenate([starts, [deadlines.size]]))
    return Reduction(worker_class=worker_class.astype(np.int64), counts=counts.astype(np.int64),
                     representative=representative.astype(np.int64), order=order,
                     group_sizes=tuple(int(s) for s in sizes),
                     n_deadline_groups=int(np.isfinite(deadlines[starts]).sum()))


def class_task_units(class_group_units, kept_sorted, reduction: Reduction) -> np.ndarray:
    """Real units of each task done by each class, from class totals per group.

    Parameters
    ----------
    class_group_units : array of float, shape (K, G)
        Units of each group done by each class in all.
    kept_sorted : array of float, shape (m,)
        Real kept units of each task, in deadline order.
    reduction : Reduction

    Returns
    -------
    array of float, shape (K, m)
        Original task order; a group's units go to its tasks in proportion to
        their kept units.
    """
    group = reduction.group_of_task
    kept = np.asarray(kept_sorted, dtype=np.float64)
    group_kept = np.bincount(group, weights=kept, minlength=len(reduction.group_sizes))[group]
    sizes = np.asarray(reduction.group_sizes, dtype=np.float64)[group]
    share = np.where(group_kept > 0, kept / np.where(group_kept > 0, group_kept, 1.0), 1.0 / sizes)
    out = np.empty((reduction.counts.size, kept.size))
    out[:, reduction.order] = class_group_units[:, group] * share[None, :]
    return out


def per_worker(class_units, reduction: Reduction) -> np.ndarray:
    """Each worker's real units, shape (n, m): ``1/n_k`` of its class's."""
    return (class_units / reduction.counts[:, None])[reduction.worker_class]
