"""The assignment program of DESIGN §4, built once as a DPP cvxpy problem.

The program is built over the exact reduction of :mod:`.classes`: *classes* of
identical workers (``n_k`` workers with equal speed, overhead and cap) and
*groups* of tasks due together, in deadline order. Variables (units divided by
``w_scale`` = the largest group, times by a reference time ``tau``, so that the
solver sees numbers near 1):

- ``Z[k, g]``: cumulative units the workers of class ``k`` do, all together, of
  groups ``0..g``; ``Y = diff(Z)`` (units of each group) must be ``>= 0``;
- ``T``: the makespan; ``B``: the mean busy time over all workers; ``f[j]``:
  kept fraction of task ``j`` (only when some task may be subsampled, else 1).

Constraints, with the Parameters in brackets:

- finish ``[c_k] + [1 / (n_k s_k)] * Z[k, G-1] <= T`` (each worker of the class
  does ``1/n_k`` of its units) and ``B == sum_k [1 / (n s_k)] * Z[k, G-1]``;
- group totals ``sum_k Y[k, g] == sum_{j in g} [W_j] * f_j``;
- memory caps ``Z[k, G-1] <= [n_k M_k]`` (only when some worker has a cap);
- deadlines ``Z[k, g] <= [n_k U_kg]`` for each group with a deadline, where
  ``U_kg = min(floor(s_k * max(D_g - c_k, 0)), M_k)`` is the whole units one
  worker of class ``k`` can finish by ``D_g``. A worker whose overhead alone
  passes ``D_g`` gets ``U_kg = 0``: none of the tasks due by then. Rounding to
  whole units keeps every deadline (see :mod:`.rounding`).
- ``f_min_j <= f_j <= 1``.

Objective ``[w1] * T + [w3] * (T - B) + sum_j [u_j] * loss(f_j)`` with
``u_j = w2 * v_j`` and the learning-curve loss of
:func:`.learning_curve.accuracy_loss` (the idle term's constant ``mean_i c_i``
is added back when the plan is reported).

Every product is Parameter x parameter-free expression, so the problem is DPP:
new speeds, overheads, caps, deadlines or weights re-solve without
re-canonicalizing. Working in units keeps the speeds out of the ``K x G``
constraints: only the last column of ``Z`` meets a Parameter vector, because
cvxpy's parameter tensor for such a product grows with (parameter size) x
(expression size). The *structure* (numbers of classes and of tasks per group,
whether caps and subsampling exist, ``beta``) is fixed at build time; workers
that change class (a speed that differs from its classmates') change it.

cvxpy's DPP tensor has (variables + 1) x (parameters + 1) columns, which it
materializes when it formats power cones: with one class per worker at
4096 workers x 64 tasks that was a 277 GiB index array. Classes keep both
factors small. Where they are still large (many distinct workers with
subsampling), the program is solved without DPP (:data:`MAX_DPP_COLUMNS`):
slower to compile on every solve, but no tensor.
"""

import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from .classes import Reduction, class_task_units, per_worker, reduce_problem
from .learning_curve import accuracy_loss
from .problem import AssignProblem

#: Most (variables + 1) x (parameters + 1) for a DPP solve with cones to format (1 GiB of
#: int64 indices in cvxpy); above it the conic program is compiled without DPP.
MAX_DPP_COLUMNS = 2**27

@dataclass(frozen=True)
class Structure:
    """What fixes the shape of the program; equal structures share one build.

    ``aggregate`` is False only where the tests or the benchmark build the
    program with one class per worker, to compare.
    """

    n_classes: int
    group_sizes: tuple
    n_deadline_groups: int
    has_caps: bool
    variable_fraction: bool
    beta: float
    aggregate: bool = True

    @classmethod
    def of(cls, problem: AssignProblem, aggregate: bool = True,
           reduction: Reduction | None = None) -> "Structure":
        red = reduction if reduction is not None else reduce_problem(problem, aggregate)
        return cls(int(red.counts.size), red.group_sizes, red.n_deadline_groups,
                   problem.has_memory_caps, problem.variable_fraction,
                   float(problem.beta) if problem.variable_fraction else 0.0, aggregate)

    @property
    def n_tasks(self) -> int:
        return int(sum(self.group_sizes))


class AssignmentProgram:
    """The DPP program for one :class:`Structure`; :meth:`solve` fills its Parameters.

    Parameters
    ----------
    structure : Structure
    """

    def __init__(self, structure: Structure):
        self.structure = st = structure
        K, G, m, k = st.n_classes, len(st.group_sizes), st.n_tasks, st.n_deadline_groups
        self.per_worker = cp.Parameter(K, nonneg=True, name="p")     # w_scale / (n_k s_k tau)
        self.per_all = cp.Parameter(K, nonneg=True, name="q")        # w_scale / (n s_k tau)
        self.overhead = cp.Parameter(K, nonneg=True, name="overhead")  # c_k / tau
        self.w_makespan = cp.Parameter(nonneg=True, name="w_makespan")
        self.w_idle = cp.Parameter(nonneg=True, name="w_idle")
        self.Z = cp.Variable((K, G), name="Z")
        self.T = cp.Variable(name="T")
        self.mean_busy = cp.Variable(name="B")
        total = self.Z[:, G - 1]
        if st.variable_fraction:
            self.units = cp.Parameter(m, nonneg=True, name="units")   # W_j / w_scale, deadline order
            self.fraction = cp.Variable(m, name="f")
            self.min_fraction = cp.Parameter(m, nonneg=True, name="f_min")
            self.value = cp.Parameter(m, nonneg=True, name="u")       # w2 * v_j / tau
            member = np.zeros((G, m))
            member[np.repeat(np.arange(G), st.group_sizes), np.arange(m)] = 1.0
            kept = member @ cp.multiply(self.units, self.fraction)
        else:
            self.units = cp.Parameter(G, nonneg=True, name="units")   # group units / w_scale
            self.fraction = None
            kept = self.units
        column_sums = cp.sum(self.Z, axis=0)
        constraints = [
            self.Z[:, :1] >= 0,
            self.overhead + cp.multiply(self.per_worker, total) <= self.T,
            self.mean_busy == self.per_all @ total,
            column_sums[0] == kept[0],
        ]
        if G > 1:
            constraints += [self.Z[:, 1:] >= self.Z[:, :-1],
                            column_sums[1:] - column_sums[:-1] == kept[1:]]
        if st.variable_fraction:
            constraints += [self.fraction >= self.min_fraction, self.fraction <= 1]
        if st.has_caps:
            self.cap_units = cp.Parameter(K, nonneg=True, name="M")    # n_k M_k / w_scale
            constraints.append(total <= self.cap_units)
        if k:
            self.deadline_units = cp.Parameter((K, k), nonneg=True, name="U")  # n_k U_kg / w_scale
            constraints.append(self.Z[:, :k] <= self.deadline_units)
        objective = self.w_makespan * self.T + self.w_idle * (self.T - self.mean_busy)
        if st.variable_fraction:
            objective = objective + self.value @ accuracy_loss(self.fraction, st.beta)
        self.problem = cp.Problem(cp.Minimize(objective), constraints)
        columns = (sum(v.size for v in self.problem.variables()) + 1) * \
            (sum(p.size for p in self.problem.parameters()) + 1)
        self.dpp = not st.variable_fraction or columns <= MAX_DPP_COLUMNS
        self.solves = 0
        self.last_timing = {}

    def is_dpp(self) -> bool:
        """Whether the built problem follows the DPP rules (it always should)."""
        return self.problem.is_dpp()

    def _set_parameters(self, problem: AssignProblem, red: Reduction) -> tuple:
        """Set the scaled Parameters from ``problem``; ``(unit scale, tau)``."""
        st = self.structure
        rep, count = red.representative, red.counts.astype(np.float64)
        s, c = problem.speeds[rep], problem.overheads[rep]
        units = problem.task_units[red.order].astype(np.float64)
        group_units = np.add.reduceat(units, red.group_starts)
        w_scale = max(float(group_units.max()), 1.0)
        tau = float(problem.overheads.max()) + max(float(units.sum()), 1.0) / float(problem.speeds.sum())
        self.per_worker.value = w_scale / (count * s * tau)
        self.per_all.value = w_scale / (problem.n_workers * s * tau)
        self.overhead.value = c / tau
        self.w_makespan.value = float(problem.w_makespan)
        self.w_idle.value = float(problem.w_idle)
        if st.variable_fraction:
            self.units.value = units / w_scale
            self.min_fraction.value = problem.min_fractions[red.order]
            self.value.value = problem.w_accuracy * problem.values[red.order] / tau
        else:
            self.units.value = group_units / w_scale
        caps = problem.unit_caps()[rep].astype(np.float64)
        if st.has_caps:
            self.cap_units.value = count * caps / w_scale
        if st.n_deadline_groups:
            deadlines = problem.deadlines[red.order][red.group_starts[: st.n_deadline_groups]]
            whole = np.floor(s[:, None] * np.maximum(deadlines[None, :] - c[:, None], 0.0) + 1e-9)
            self.deadline_units.value = count[:, None] * np.minimum(whole, caps[:, None]) / w_scale
        return w_scale, tau

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
            order, shape (n, m)), ``class_units`` (the same per worker class, in
            all, shape (K, m)), ``reduction`` (the classes, :mod:`.classes`),
            ``fraction`` (m,), ``makespan`` (s),
            ``compile_time`` (cvxpy's canonicalization, s) and ``solve_time``
            (the rest of ``Problem.solve``: the solver and unpacking, s).
        """
        st = self.structure
        red = reduce_problem(problem, st.aggregate)
        if Structure.of(problem, st.aggregate, red) != st:
            raise ValueError(f"problem structure {Structure.of(problem, st.aggregate, red)} "
                             f"!= program structure {st}")
        w_scale, tau = self._set_parameters(problem, red)
        start = time.perf_counter()
        self.problem.solve(solver=solver, ignore_dpp=not self.dpp, **solver_options)
        call = time.perf_counter() - start
        self.solves += 1
        compile_time = getattr(self.problem, "compilation_time", None) or 0.0
        out = {"status": self.problem.status, "units": None, "fraction": None, "makespan": None,
               "compile_time": compile_time, "solve_time": call - compile_time}
        self.last_timing = {"compile": compile_time, "solver": call - compile_time}
        if self.Z.value is None:
            return out
        Z = np.maximum(self.Z.value, 0.0)
        Y = np.maximum(np.diff(Z, axis=1, prepend=0.0), 0.0) * w_scale   # class totals per group
        m = st.n_tasks
        frac = np.ones(m) if self.fraction is None else np.clip(self.fraction.value, 0, 1)
        kept_sorted = frac * problem.task_units[red.order]
        f_orig = np.empty_like(frac)
        f_orig[red.order] = frac
        by_class = class_task_units(Y, kept_sorted, red)
        out.update(units=per_worker(by_class, red), class_units=by_class, reduction=red,
                   fraction=f_orig, makespan=float(self.T.value) * tau)
        return out
