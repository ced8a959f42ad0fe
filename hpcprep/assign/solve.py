"""Plan a problem: feasibility check, closed form or cvxpy, rounding, predictions.

:func:`solve` is the one entry point. It keeps one built
:class:`.program.AssignmentProgram` per structure, so re-planning with new
measurements (same workers and tasks) is a DPP re-solve: cvxpy only refills its
Parameters.
"""

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from .closed_form import water_fill
from .feasibility import check_feasible
from .plan import Plan, evaluate
from .problem import AssignError, AssignProblem
from .rounding import bounded_largest_remainder, kept_whole_units, round_by_class, round_plan

if TYPE_CHECKING:
    from .program import AssignmentProgram

SOLVERS = ("auto", "closed_form", "CLARABEL", "HIGHS", "SCS")
ACCEPTED = ("optimal", "optimal_inaccurate")


def closed_form_is_exact(problem: AssignProblem) -> bool:
    """Whether water-filling solves ``problem`` exactly.

    True with nothing to subsample and either no idle-time weight or a
    water-filling plan that leaves no worker idle. Deadlines do not matter:
    they only bound the cumulative work of the tasks due by each ``D_j``, and
    once :func:`.feasibility.check_feasible` passed, the water-filling loads
    (the least makespan, and zero idle time) can always be ordered to meet them
    (see docs/assign.md). :func:`closed_form_plan` returns None in the rare
    whole-unit case where the rounded loads leave no room.
    """
    if problem.variable_fraction:
        return False
    if problem.w_idle == 0:
        return True
    loads, makespan = water_fill(float(problem.task_units.sum()), problem.speeds,
                                 problem.overheads, problem.unit_caps())
    finish = problem.overheads + loads / problem.speeds
    return bool(np.all(makespan - finish <= 1e-9 * max(makespan, 1e-300)))


def split_by_task(loads, task_units) -> np.ndarray:
    """Spread per-worker real loads over tasks in proportion to task size, shape (n, m)."""
    W = np.asarray(task_units, dtype=np.float64)
    total = W.sum()
    if total == 0:
        return np.zeros((np.size(loads), W.size))
    return np.outer(loads, W / total)


#: Built programs, one per structure, most recently used last: re-planning with new
#: measurements (same workers and tasks) is a DPP re-solve that only refills Parameters.
PROGRAMS: OrderedDict = OrderedDict()
MAX_PROGRAMS = 8


def solve(problem: AssignProblem, solver: str = "auto", fallback: bool = False) -> Plan:
    """Solve ``problem`` and round it to whole units: the one entry point of the program.

    Uses the closed form (water-filling) where it is exact (:func:`closed_form_is_exact`)
    and cvxpy otherwise; built cvxpy programs are kept (:data:`PROGRAMS`), so a
    re-plan with new measurements is a DPP re-solve.

    Parameters
    ----------
    problem : AssignProblem
    solver : str
        ``"auto"`` (closed form where exact, else Clarabel), ``"closed_form"``,
        or a cvxpy solver: ``"CLARABEL"``, ``"HIGHS"`` (no subsampling), ``"SCS"``.
    fallback : bool
        On infeasibility or solver failure, return the proportional plan
        (units in proportion to speed within memory caps, deadlines ignored) with
        the reason in ``status`` instead of raising.

    Returns
    -------
    Plan
        With ``method``, ``solver``, ``status``, ``solve_time``, ``objective`` and
        ``worker_finish``.

    Raises
    ------
    ConfigError
        An unknown solver, or one that cannot solve this problem.
    AssignError
        Infeasible (naming late tasks and by how much) or solver failure,
        unless ``fallback``.
    """
    if solver not in SOLVERS:
        raise ConfigError(f"solver = {solver!r}: expected one of {', '.join(map(repr, SOLVERS))}")
    start = time.perf_counter()
    try:
        plan = _solve(problem, solver)
    except AssignError as err:
        if not fallback:
            raise
        plan = proportional_plan(problem, reason=str(err))
    plan.solve_time = time.perf_counter() - start
    return plan


def program_for(problem: AssignProblem) -> "AssignmentProgram":
    """The built program for ``problem``'s structure (built on first use, kept in :data:`PROGRAMS`)."""
    from .program import AssignmentProgram, Structure   # cvxpy loads only where a solve needs it
    key = Structure.of(problem)
    if key in PROGRAMS:
        PROGRAMS.move_to_end(key)
    else:
        if len(PROGRAMS) >= MAX_PROGRAMS:
            PROGRAMS.popitem(last=False)
        PROGRAMS[key] = AssignmentProgram(key)
    return PROGRAMS[key]


def _solve(problem: AssignProblem, solver: str) -> Plan:
    check_feasible(problem)
    exact = closed_form_is_exact(problem)
    if solver == "closed_form" and not exact:
        raise ConfigError("solver = 'closed_form' solves only the makespan case "
                          "(min_fraction = 1, and idle = 0 or no idle time); use 'auto'")
    if solver in ("auto", "closed_form") and exact:
        plan = closed_form_plan(problem)
        if plan is not None:
            return plan
    solver = "CLARABEL" if solver in ("auto", "closed_form") else solver
    if solver == "HIGHS" and problem.variable_fraction:
        raise ConfigError("solver = 'HIGHS' solves linear programs only; "
                          "with min_fraction < 1 use 'CLARABEL' or 'auto'")
    import cvxpy as cp
    program = program_for(problem)
    try:
        result = program.solve(problem, solver=solver)
    except cp.SolverError as err:
        raise AssignError(f"solver {solver} failed: {err}") from None
    if result["status"] not in ACCEPTED or result["units"] is None:
        raise AssignError(f"solver {solver} returned status {result['status']!r} although the "
                          "whole-unit feasibility check passed (numerical trouble; try another solver)")
    kept = kept_whole_units(result["fraction"], problem)
    units = round_by_class(result["class_units"], kept, problem, result["reduction"])
    return evaluate(problem, units, result["units"], kept, result["makespan"],
                    "cvxpy", solver, result["status"])


def closed_form_plan(problem: AssignProblem) -> Plan | None:
    """The water-filling plan in whole units (use where :func:`closed_form_is_exact`).

    Per-worker totals are the water-filling loads rounded by largest remainder;
    each task is spread in proportion to them, then the cumulative sums are
    rounded within the deadline bounds and those totals.

    Returns
    -------
    Plan or None
        None when deadlines leave no whole-unit order for the rounded totals.
    """
    W = problem.task_units
    total = int(W.sum())
    caps = problem.unit_caps()
    loads, makespan = water_fill(float(total), problem.speeds, problem.overheads, caps)
    totals = bounded_largest_remainder(loads, total, np.zeros_like(caps), caps)
    real = split_by_task(loads, W)
    try:
        units = round_plan(real, W, problem, worker_totals=totals)
    except AssignError:
        return None
    if problem.has_deadlines:
        real = units.astype(np.float64)    # the proportional split may not meet the deadlines
    return evaluate(problem, units, real, W, makespan, "closed_form", "water-filling", "optimal")


def proportional_plan(problem: AssignProblem, reason: str = "") -> Plan:
    """Units in proportion to speed within memory caps; overheads and deadlines ignored.

    Parameters
    ----------
    problem : AssignProblem
    reason : str
        Why the fallback was taken (kept in ``status``).

    Raises
    ------
    AssignError
        When even the memory caps cannot hold all tasks.
    """
    kept = problem.task_units
    loads, _ = water_fill(float(kept.sum()), problem.speeds, None, problem.unit_caps())
    real = split_by_task(loads, kept)
    units = round_plan(real, kept, problem, use_deadlines=False)
    finish = problem.overheads + real.sum(axis=1) / problem.speeds
    return evaluate(problem, units, real, kept, float(finish.max()), "proportional", "none",
                    f"fallback: {reason}" if reason else "proportional")
