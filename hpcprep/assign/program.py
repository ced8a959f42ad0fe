"""The assignment program of DESIGN §4, built once as a DPP cvxpy problem.

Variables (tasks in deadline order; units divided by ``w_scale`` = the largest
task, times by a reference time ``tau``, so that the solver sees numbers near 1):

- ``Z[i, j]``: cumulative units worker ``i`` does of tasks ``0..j``;
  ``Y = diff(Z)`` (units of each task) must be ``>= 0``;
- ``b[i]``: busy seconds of worker ``i``; ``T``: the makespan; ``f[j]``: kept
  fraction of task ``j`` (only when some task may be subsampled, else 1).

Constraints, with the Parameters in brackets:

- busy time ``b_i == [1 / s_i] * Z[i, m-1]`` and finish ``[c_i] + b_i <= T``;
- task totals ``sum_i Y[i, j] == [W_j] * f_j``;
- memory caps ``Z[i, m-1] <= [M_i]`` (only when some worker has a cap);
- deadlines ``Z[i, j] <= [U_ij]`` for each task with a deadline, where
  ``U_ij = min(floor(s_i * max(D_j - c_i, 0)), M_i)`` is the whole units worker
  ``i`` can finish by ``D_j``. A worker whose overhead alone passes ``D_j`` gets
  ``U_ij = 0``: none of the tasks due by then. Rounding to whole units keeps
  every deadline (see :mod:`.rounding`).
- ``f_min_j <= f_j <= 1``.

Objective ``[w1] * T + [w3] * (T - mean_i t_i) + sum_j [u_j] * loss(f_j)`` with
``t_i = c_i + b_i``, ``u_j = w2 * v_j`` and the learning-curve loss of
:func:`.learning_curve.accuracy_loss` (the idle term's constant ``mean_i c_i``
is added back when the plan is reported).

Every product is Parameter x parameter-free expression, so the problem is DPP:
new speeds, overheads, caps, deadlines or weights re-solve without
re-canonicalizing. Working in units keeps the speeds out of the ``n x m``
constraints: only ``b = [1/s] * Z[:, -1]`` multiplies a Parameter vector by a
variable, because cvxpy's parameter tensor for such a product grows with
(parameter size) x (expression size): ``n * n`` here instead of ``n * n * m``.
The *structure* (sizes, number of deadline tasks, whether caps and subsampling
exist, ``beta``) is fixed at build time.
"""

import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from .learning_curve import accuracy_loss
from .problem import AssignProblem


@dataclass(frozen=True)
class Structure:
    """What fixes the shape of the program; equal structures share one build."""

    n_workers: int
    n_tasks: int
    n_deadlines: int
    has_caps: bool
    variable_fraction: bool
    beta: float

    @classmethod
    def of(cls, problem: AssignProblem) -> "Structure":
        return cls(problem.n_workers, problem.n_tasks, int(np.isfinite(problem.deadlines).sum()),
                   problem.has_memory_caps, problem.variable_fraction,
                   float(problem.beta) if problem.variable_fraction else 0.0)


class AssignmentProgram:
    """The DPP program for one :class:`Structure`; :meth:`solve` fills its Parameters.

    Parameters
    ----------
    structure : Structure
    """

    def __init__(self, structure: Structure):
        self.structure = st = structure
        n, m, k = st.n_workers, st.n_tasks, st.n_deadlines
        self.seconds_per_unit = cp.Parameter(n, nonneg=True, name="p")     # w_scale / (s_i * tau)
        self.overhead = cp.Parameter(n, nonneg=True, name="overhead")       # c_i / tau
        self.units = cp.Parameter(m, nonneg=True, name="units")             # W_j / w_scale
        self.w_makespan = cp.Parameter(nonneg=True, name="w_makespan")
        self.w_idle = cp.Parameter(nonneg=True, name="w_idle")
        self.Z = cp.Variable((n, m), name="Z")
        self.busy = cp.Variable(n, name="b")
        self.T = cp.Variable(name="T")
        total = self.Z[:, m - 1]
        if st.variable_fraction:
            self.fraction = cp.Variable(m, name="f")
            self.min_fraction = cp.Parameter(m, nonneg=True, name="f_min")
            self.value = cp.Parameter(m, nonneg=True, name="u")             # w2 * v_j / tau
            kept = cp.multiply(self.units, self.fraction)
        else:
            self.fraction = None
            kept = self.units
        column_sums = cp.sum(self.Z, axis=0)
        constraints = [
            self.Z[:, :1] >= 0,
            self.busy == cp.multiply(self.seconds_per_unit, total),
            self.overhead + self.busy <= self.T,
        ]
        if m > 1:
            constraints += [self.Z[:, 1:] >= self.Z[:, :-1],
                            column_sums[1:] - column_sums[:-1] == kept[1:]]
        constraints.append(column_sums[0] == kept[0])
        if st.variable_fraction:
            constraints += [self.fraction >= self.min_fraction, self.fraction <= 1]
        if st.has_caps:
            self.cap_units = cp.Parameter(n, nonneg=True, name="M")         # M_i / w_scale
            constraints.append(total <= self.cap_units)
        if k:
            self.deadline_units = cp.Parameter((n, k), nonneg=True, name="U")  # U_ij / w_scale
            constraints.append(self.Z[:, :k] <= self.deadline_units)
        objective = self.w_makespan * self.T + self.w_idle * (self.T - cp.sum(self.busy) / n)
        if st.variable_fraction:
            objective = objective + self.value @ accuracy_loss(self.fraction, st.beta)
        self.problem = cp.Problem(cp.Minimize(objective), constraints)
        self.solves = 0
        self.last_timing = {}

    def is_dpp(self) -> bool:
        """Whether the built problem follows the DPP rules (it always should)."""
        return self.problem.is_dpp()

    def _set_parameters(self, problem: AssignProblem) -> tuple:
        """Set the scaled Parameters from ``problem``; ``(deadline order, unit scale, tau)``."""
        st = self.structure
        order = problem.deadline_order()
        s, c = problem.speeds, problem.overheads
        units = problem.task_units[order].astype(np.float64)
        w_scale = max(float(units.max()), 1.0)
        tau = float(c.max()) + max(float(units.sum()), 1.0) / float(s.sum())
        self.seconds_per_unit.value = w_scale / (s * tau)
        self.overhead.value = c / tau
        self.units.value = units / w_scale
        self.w_makespan.value = float(problem.w_makespan)
        self.w_idle.value = float(problem.w_idle)
        if st.variable_fraction:
            self.min_fraction.value = problem.min_fractions[order]
            self.value.value = problem.w_accuracy * problem.values[order] / tau
        caps = np.minimum(problem.unit_caps().astype(np.float64), units.sum())
        if st.has_caps:
            self.cap_units.value = caps / w_scale
        if st.n_deadlines:
            deadlines = problem.deadlines[order][: st.n_deadlines]
            whole = np.floor(s[:, None] * np.maximum(deadlines[None, :] - c[:, None], 0.0) + 1e-9)
            self.deadline_units.value = np.minimum(whole, caps[:, None]) / w_scale
        return order, w_scale, tau

    def solve(self, problem: AssignProblem, solver: str = "CLARABEL", **solver_options) -> dict:
        """Set the Parameters from ``problem`` and solve.

        Parameters
        ----------
        problem : AssignProblem
            Must have this program's structure.
        solver : str
            A cvxpy solver name.

        Returns
        -------
        dict
            ``status``, ``units`` (real units per worker and task, original task
            order, shape (n, m)), ``fraction`` (m,), ``makespan`` (s),
            ``compile_time`` (cvxpy's canonicalization, s) and ``solve_time``
            (the rest of ``Problem.solve``: the solver and unpacking, s).
        """
        st = self.structure
        if Structure.of(problem) != st:
            raise ValueError(f"problem structure {Structure.of(problem)} != program structure {st}")
        order, w_scale, tau = self._set_parameters(problem)
        start = time.perf_counter()
        self.problem.solve(solver=solver, **solver_options)
        call = time.perf_counter() - start
        self.solves += 1
        compile_time = getattr(self.problem, "compilation_time", None) or 0.0
        out = {"status": self.problem.status, "units": None, "fraction": None, "makespan": None,
               "compile_time": compile_time, "solve_time": call - compile_time}
        self.last_timing = {"compile": compile_time, "solver": call - compile_time}
        if self.Z.value is None:
            return out
        Z = np.maximum(self.Z.value, 0.0)
        Y = np.diff(np.concatenate([np.zeros((st.n_workers, 1)), Z], axis=1), axis=1)
        x = np.maximum(Y, 0.0) * w_scale                      # units per worker, deadline order
        frac = np.ones(st.n_tasks) if self.fraction is None else np.clip(self.fraction.value, 0, 1)
        x_orig = np.empty_like(x)
        x_orig[:, order] = x
        f_orig = np.empty_like(frac)
        f_orig[order] = frac
        out.update(units=x_orig, fraction=f_orig, makespan=float(self.T.value) * tau)
        return out
