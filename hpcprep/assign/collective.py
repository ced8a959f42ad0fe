"""Rank 0 solves, every rank follows: gather measurements, solve, broadcast the plan.

Works on any communicator it is given (a layer's, a ``Dup()``, ``COMM_SELF``).
Every rank leaves :func:`gather_and_plan` the same way: all with the same
:class:`.plan.Plan`, or all raising the same :class:`.problem.AssignError`, so
no rank is left waiting in a collective; the error is marked agreed over the
communicator, so hpcprep's error handler prints it once.
"""

from dataclasses import dataclass

import numpy as np

from ..mpi.agree import root_decides
from ..errors import HpcprepError
from .problem import AssignError, AssignProblem
from .solve import solve


@dataclass(frozen=True)
class WorkerReport:
    """What one rank measures about itself.

    Parameters
    ----------
    speed : float
        Units per second (from a calibration read, the last steps, or the config).
    overhead : float
        Seconds before its first unit.
    memory_cap : float
        Most units it may hold (``inf``: no cap).
    name : str
        Shown in tables and messages (default ``rank<r>``).
    """

    speed: float
    overhead: float = 0.0
    memory_cap: float = float("inf")
    name: str = ""


def problem_from_reports(reports, tasks: dict) -> AssignProblem:
    """Build the problem from the gathered reports and rank 0's task description.

    Parameters
    ----------
    reports : list of WorkerReport
        In rank order.
    tasks : dict
        Keyword arguments of :class:`AssignProblem` other than the worker
        fields: ``task_units`` (required), ``deadlines``, ``values``,
        ``min_fractions``, ``w_makespan``, ``w_accuracy``, ``w_idle``, ``beta``,
        ``task_names``.
    """
    return AssignProblem(
        speeds=np.array([r.speed for r in reports]),
        overheads=np.array([r.overhead for r in reports]),
        memory_caps=np.array([r.memory_cap for r in reports]),
        worker_names=[r.name or f"rank{i}" for i, r in enumerate(reports)],
        **tasks)


def gather_and_plan(comm, report: WorkerReport, tasks: dict | None = None, root: int = 0,
                    solver: str = "auto", fallback: bool = False):
    """Gather every rank's report on ``root``, plan there, broadcast the plan.

    Collective over ``comm``: every rank must call it.

    Parameters
    ----------
    comm : mpi4py communicator
        The ranks to plan for; worker ``i`` of the plan is rank ``i`` of ``comm``.
    report : WorkerReport
        This rank's measurements.
    tasks : dict, optional
        Task description (see :func:`problem_from_reports`); read on ``root`` only.
    root : int
        The rank that solves.
    solver, fallback : str, bool
        Read on ``root`` only; see :func:`.solve.solve` (re-planning with the
        same structure reuses the built program: a DPP re-solve).

    Returns
    -------
    Plan
        The same plan on every rank (one ``bcast``).

    Raises
    ------
    AssignError
        On every rank, with the same message, when the problem is infeasible
        (naming the late tasks and by how much) or the solver failed. It is
        marked :func:`hpcprep.mpi.agree.agreed_on` ``comm``: printed once.
    """
    reports = comm.gather(report, root=root)
    return root_decides(comm, _plan_on_root, reports, tasks, solver, fallback, root, root=root,
                        job_wide=False)


def _plan_on_root(reports, tasks, solver: str, fallback: bool, root: int):
    """The plan for the gathered reports; every failure becomes an :class:`AssignError`."""
    try:
        if tasks is None:
            raise AssignError(f"gather_and_plan: no tasks given on the root rank {root}")
        return solve(problem_from_reports(reports, tasks), solver=solver, fallback=fallback)
    except AssignError:
        raise
    except HpcprepError as err:
        raise AssignError(str(err)) from None
    except Exception as err:   # noqa: BLE001 - never leave the other ranks waiting in bcast
        raise AssignError(f"planning failed on rank {root}: {type(err).__name__}: {err}") from None
