"""Exact feasibility check in whole units, and the message that names late tasks.

With divisible work the deadline constraints are nested: the tasks due by
``D_j`` (in deadline order, ``0..j``) need ``C_j`` units at least (their
``ceil(f_min * units)``), and worker ``i`` can finish at most ``U[i, j]`` whole
units by then (see :func:`.rounding.cumulative_upper_bounds`). A plan exists if
and only if ``C_j <= sum_i U[i, j]`` for every ``j`` (a plan for column ``j-1``
can always be extended, since ``U`` grows with ``j``). So the check is exact,
costs ``O(n m)`` and needs no solver; it runs before every solve.
"""

import numpy as np

from .closed_form import water_level
from .problem import AssignError, AssignProblem
from .rounding import capacity


def late_tasks(problem: AssignProblem) -> tuple[dict, list[str]]:
    """Which deadlines cannot be met, and by how much at best.

    Returns
    -------
    late : dict of str -> float
        Task name -> seconds between its deadline and the earliest time the tasks
        due by then could finish (0.0 when it misses by less than one whole unit
        per worker).
    lines : list of str
        One sentence per late deadline group.
    """
    order = problem.deadline_order()
    deadlines = problem.deadlines[order]
    need = np.cumsum(problem.min_units()[order])
    can = capacity(problem, order)
    caps = problem.unit_caps().astype(np.float64)
    late, lines = {}, []
    m = problem.n_tasks
    j = 0
    while j < m and np.isfinite(deadlines[j]):
        last = j
        while last + 1 < m and deadlines[last + 1] == deadlines[j]:
            last += 1      # tasks with the same deadline are judged together
        if need[last] > can[last]:
            names = [problem.task_names[order[k]] for k in range(j, last + 1)]
            try:
                earliest = water_level(float(need[last]), problem.speeds, problem.overheads, caps)
                earliest = max(earliest, float(problem.overheads.min()))
                by = max(earliest - deadlines[j], 0.0)
                how = (f"misses it by {by:.4g} s at best" if by > 0 else
                       "misses it by less than one unit per worker")
            except AssignError:
                by, how = float("inf"), "cannot finish at all within the memory caps"
            label = ", ".join(repr(x) for x in names)
            lines.append(
                f"task{'s' if len(names) > 1 else ''} {label} (deadline {deadlines[j]:.4g} s) {how}: "
                f"the tasks due by then need at least {int(need[last])} units, "
                f"the workers can finish {int(can[last])} by then")
            for name in names:
                late[name] = by
        j = last + 1
    return late, lines


def check_feasible(problem: AssignProblem) -> None:
    """Raise a clear :class:`AssignError` when no whole-unit plan exists.

    Raises
    ------
    AssignError
        Naming every task whose deadline cannot be met and by how much, or the
        memory shortfall; ``late_tasks`` holds task -> seconds.
    """
    need_total = int(problem.min_units().sum())
    caps = int(problem.unit_caps().sum())
    if need_total > caps:
        raise AssignError(
            f"infeasible: the memory caps hold {caps} units in all, but the tasks need at "
            f"least {need_total} (raise the caps, add workers or lower min_fraction)")
    if not problem.has_deadlines:
        return
    late, lines = late_tasks(problem)
    if late:
        raise AssignError("infeasible deadlines: " + "; ".join(lines)
                          + " (extend these deadlines, add workers or lower min_fraction)",
                          late_tasks=late)
