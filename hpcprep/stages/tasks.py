"""The input as tasks of the assignment program: which chunks make a task, and who reads what.

``plan.tasks`` groups the input into tasks (all of it, one per entry of
``input.paths``, or one per file); each may have a deadline (``plan.deadlines``)
and a weight, and each input rank a memory cap (``plan.memory``). Rank 0 solves
the program (:func:`hpcprep.assign.solve`) for the rows of each task on each
input rank; every rank then reads its share of every task, in deadline order.
A deadline no plan can meet is an :class:`~hpcprep.assign.AssignError` naming
the late tasks, raised before the data pass.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..config import InputConfig, PlanConfig, RunConfig, parse_size
from ..errors import ConfigError
from ..io.plan import expand_paths
from ..partition import nearest_cuts


def task_of_files(plan_cfg: PlanConfig, input_cfg: InputConfig, files: list[str]) -> tuple[list[int], list[str]]:
    """Each file's task index and the tasks' names, for ``plan.tasks``."""
    how = plan_cfg.tasks
    if how == "files":
        return list(range(len(files))), [os.path.basename(f) for f in files]
    if how == "all":
        return [0] * len(files), ["input"]
    patterns = input_cfg.paths
    first = {}
    for t, pattern in enumerate(patterns):
        for f in expand_paths([pattern]):
            first.setdefault(f, t)
    return [first[f] for f in files], [f"paths[{t}] {p}" for t, p in enumerate(patterns)]


def _per_task(values: list, n_tasks: int, key: str, default: float) -> np.ndarray:
    if not values:
        return np.full(n_tasks, default)
    if len(values) != n_tasks:
        raise ConfigError(f"plan.{key} = {values}: needs one value per task ({n_tasks} tasks of "
                          f"plan.tasks)")
    return np.asarray(values, dtype=np.float64)


def row_caps(plan_cfg: PlanConfig, n_ranks: int, bytes_per_row: int) -> np.ndarray:
    """Most rows each input rank may read (``plan.memory``; inf without)."""
    if not plan_cfg.memory:
        return np.full(n_ranks, np.inf)
    return np.array([parse_size(m) // bytes_per_row for m in plan_cfg.memory], dtype=np.float64)


def input_problem(cfg: RunConfig, speeds, task_rows: list[int], task_names: list[str],
                  bytes_per_row: int):
    """The assignment problem of the input stage: rows of each task on each input rank."""
    from ..assign import AssignProblem

    plan_cfg = cfg.plan
    n_tasks = len(task_rows)
    return AssignProblem(
        speeds=speeds, task_units=task_rows, memory_caps=row_caps(plan_cfg, len(speeds), bytes_per_row),
        deadlines=_per_task(plan_cfg.deadlines, n_tasks, "deadlines", math.inf),
        values=_per_task(plan_cfg.task_weights, n_tasks, "task_weights", 1.0),
        min_fractions=_per_task(plan_cfg.min_fractions, n_tasks, "min_fractions", 1.0),
        w_makespan=plan_cfg.w1, w_accuracy=plan_cfg.w2, w_idle=plan_cfg.w3,
        beta=plan_cfg.beta,
        worker_names=[f"input{k}" for k in range(len(speeds))], task_names=task_names)


def assign_chunks(chunk_rows, chunk_task, solved, deadlines, caps) -> list[list[tuple[int, int]]]:
    """Each task's chunks cut into one contiguous range per input rank, tasks in deadline order.

    Task ``j``'s chunks (positions in ``chunk_task == j``, input order) are cut at
    the chunk boundaries nearest to the cumulative targets of the plan's
    real-valued rows ``real_units[:, j]`` (kept rows: divided by the kept
    fraction, the rows read); a cut that would give a rank more rows than its
    cap (``plan.memory``) moves down to a whole chunk.

    Returns
    -------
    list of (task index, ranges)
        In deadline order; ``ranges[i]`` are positions in the task's chunk list.
    """
    from ..assign import AssignError

    chunk_rows = np.asarray(chunk_rows, dtype=np.int64)
    room = np.asarray(caps, dtype=np.float64).copy()
    out = []
    for j in np.argsort(np.asarray(deadlines, dtype=np.float64), kind="stable"):
        sizes = chunk_rows[np.asarray(chunk_task) == j]
        read = solved.real_units[:, j] / solved.kept_fraction[j]
        ranges = _within_caps(nearest_cuts(sizes, read), sizes, room)
        rows = np.array([sizes[lo:hi].sum() for lo, hi in ranges], dtype=np.float64)
        if np.any(rows > room):
            raise AssignError(f"plan.memory: input rank {int(np.argmax(rows > room))} would read "
                              f"more rows than its cap allows, in whole chunks of input.chunk_rows: "
                              f"raise plan.memory or lower input.chunk_rows")
        room -= rows
        out.append((int(j), ranges))
    return out


def _within_caps(ranges, sizes, room) -> list[tuple[int, int]]:
    """Move each range's end down to the last chunk boundary where its rows fit the rank's room
    (the last range takes what is left)."""
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out, start = [], 0
    for k, (_, stop) in enumerate(ranges):
        if k + 1 < len(ranges):
            fits = int(np.searchsorted(bounds, bounds[start] + room[k], side="right")) - 1
            stop = min(max(stop, start), max(fits, start))
        else:
            stop = len(sizes)
        out.append((start, stop))
        start = stop
    return out


def chunks_of_ranks(task_ranges, chunk_task, n_ranks: int) -> list[list[int]]:
    """Chunk indices (input order within a task) each rank reads, its tasks in deadline order."""
    chunk_task = np.asarray(chunk_task)
    out: list[list[int]] = [[] for _ in range(n_ranks)]
    for j, ranges in task_ranges:
        members = np.flatnonzero(chunk_task == j)
        for i, (lo, hi) in enumerate(ranges):
            out[i].extend(members[lo:hi].tolist())
    return out
