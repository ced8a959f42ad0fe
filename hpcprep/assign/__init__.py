"""The assignment program (DESIGN §4): who does how much, and by when.

Rank 0 gathers the workers' measurements, solves with :func:`solve` (a DPP
cvxpy program, or the exact water-filling closed form where it applies), rounds
the shares to whole units and broadcasts the plan. See docs/assign.md. cvxpy is imported only when a
problem needs the solver, so ranks that follow a plan do not pay its import.
"""

from .closed_form import water_fill, water_level
from .collective import WorkerReport, gather_and_plan
from .feasibility import check_feasible
from .helpers import batch_sizes, contiguous_chunk_ranges, rows_by_speed
from .plan import Plan
from .problem import AssignError, AssignProblem, problem_from_table
from .learning_curve import accuracy_loss
from .solve import proportional_plan, solve

__all__ = [
    "AssignError", "AssignProblem", "AssignmentProgram", "Plan", "Structure", "WorkerReport",
    "accuracy_loss", "batch_sizes", "check_feasible", "contiguous_chunk_ranges", "gather_and_plan",
    "problem_from_table", "proportional_plan", "rows_by_speed", "solve", "water_fill",
    "water_level",
]


def __getattr__(name):
    # the cvxpy program loads on first use: ranks that only follow plans skip cvxpy's ~2 s import
    if name in ("AssignmentProgram", "Structure"):
        from . import program
        return getattr(program, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
