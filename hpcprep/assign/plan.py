"""The plan every rank follows: whole units per worker and task, and its predictions."""

from dataclasses import dataclass, field

import numpy as np

from .problem import AssignProblem
from .learning_curve import accuracy_loss


@dataclass
class Plan:
    """A whole-unit plan and what it predicts.

    Attributes
    ----------
    units : array of int64, shape (n, m)
        Whole units of task ``j`` given to worker ``i``; ``units.sum(0) == kept_units``.
    kept_units : array of int64, shape (m,)
        Units kept of each task (all of it unless ``min_fraction < 1``).
    kept_fraction : array of float, shape (m,)
        ``kept_units / task units`` (1 for empty tasks).
    real_units : array of float, shape (n, m)
        The unrounded solution.
    worker_finish, worker_idle : array of float, shape (n,)
        Predicted finish of each worker, and ``makespan - finish``, in seconds.
    task_finish : array of float, shape (m,)
        When the last unit of each task is done (workers run tasks in deadline order).
    makespan_real, makespan : float
        Predicted makespan before and after rounding, seconds.
    objective : dict
        Terms on the rounded plan: ``makespan``, ``mean_idle``, ``accuracy_loss``,
        ``total = w1*makespan + w3*mean_idle + w2*accuracy_loss``.
    method : str
        ``"closed_form"``, ``"cvxpy"`` or ``"proportional"``.
    solver, status : str
    solve_time : float
        Wall seconds of the whole planning call (check, solve, rounding).
    """

    units: np.ndarray
    kept_units: np.ndarray
    kept_fraction: np.ndarray
    real_units: np.ndarray
    worker_finish: np.ndarray
    worker_idle: np.ndarray
    task_finish: np.ndarray
    makespan_real: float
    makespan: float
    objective: dict
    method: str
    solver: str
    status: str
    solve_time: float = 0.0
    worker_names: list = field(default_factory=list)
    task_names: list = field(default_factory=list)

    @property
    def worker_units(self) -> np.ndarray:
        """Total whole units per worker, shape (n,)."""
        return self.units.sum(axis=1)

    def summary(self) -> dict:
        """What a run reports about how it was planned (JSON-ready): method, solver,
        status, solve time, objective terms, makespan and each worker's predicted finish."""
        return {"method": self.method, "solver": self.solver, "status": self.status,
                "solve_time_s": float(self.solve_time), "objective": dict(self.objective),
                "makespan_s": float(self.makespan),
                "worker_finish_s": [float(f) for f in self.worker_finish]}

    def to_dict(self) -> dict:
        """A JSON-ready description (lists and floats only)."""
        total = max(int(self.kept_units.sum()), 1)
        return {
            "method": self.method, "solver": self.solver, "status": self.status,
            "solve_time_s": self.solve_time,
            "makespan_s": self.makespan, "makespan_before_rounding_s": self.makespan_real,
            "objective": dict(self.objective),
            "workers": [
                {"name": name, "units": int(u), "share": float(u) / total,
                 "units_per_task": [int(v) for v in row],
                 "finish_s": float(fin), "idle_s": float(idle)}
                for name, u, row, fin, idle in zip(self.worker_names, self.worker_units,
                                                    self.units, self.worker_finish, self.worker_idle)],
            "tasks": [
                {"name": name, "kept_units": int(k), "kept_fraction": float(frac), "finish_s": float(fin)}
                for name, k, frac, fin in zip(self.task_names, self.kept_units,
                                              self.kept_fraction, self.task_finish)],
        }

    def format_table(self, max_workers: int = 64) -> str:
        """The plan as aligned text tables (workers, tasks, summary)."""
        total = max(int(self.kept_units.sum()), 1)
        lines = [f"{'worker':<16}{'units':>12}{'share':>9}{'finish s':>12}{'idle s':>10}"]
        for k, (name, u, fin, idle) in enumerate(zip(self.worker_names, self.worker_units,
                                                      self.worker_finish, self.worker_idle)):
            if k == max_workers:
                lines.append(f"... {len(self.worker_names) - max_workers} more workers (see --json)")
                break
            lines.append(f"{name:<16}{int(u):>12}{u / total:>9.4f}{fin:>12.4g}{idle:>10.4g}")
        lines += ["", f"{'task':<16}{'kept units':>12}{'kept frac':>10}{'finish s':>12}"]
        for name, k, frac, fin in zip(self.task_names, self.kept_units, self.kept_fraction, self.task_finish):
            lines.append(f"{name:<16}{int(k):>12}{frac:>10.4f}{fin:>12.4g}")
        terms = ", ".join(f"{k} {v:.6g}" for k, v in self.objective.items())
        lines += ["", f"makespan {self.makespan:.6g} s (before rounding {self.makespan_real:.6g} s)",
                  f"objective: {terms}",
                  f"method {self.method}, solver {self.solver}, status {self.status}, "
                  f"solve time {self.solve_time * 1e3:.2f} ms"]
        return "\n".join(lines)


def evaluate(problem: AssignProblem, units, real_units, kept_units, makespan_real: float,
             method: str, solver: str, status: str) -> Plan:
    """Predict finish times and objective terms of a whole-unit plan.

    Every worker pays its overhead; worker ``i`` runs its tasks in deadline order,
    so task ``j`` is done when the last worker holding units of it reaches it.
    """
    s, c = problem.speeds, problem.overheads
    units = np.asarray(units, dtype=np.int64)
    finish = c + units.sum(axis=1) / s
    makespan = float(finish.max())
    order = problem.deadline_order()
    through = c[:, None] + np.cumsum(units[:, order], axis=1) / s[:, None]
    through = np.where(units[:, order] > 0, through, 0.0)
    task_finish = np.empty(problem.n_tasks)
    task_finish[order] = through.max(axis=0)
    W = problem.task_units
    fraction = np.where(W > 0, kept_units / np.maximum(W, 1), 1.0)
    loss = float(problem.values @ accuracy_loss(np.maximum(fraction, 1e-12), problem.beta))
    idle = makespan - finish
    objective = {"makespan": makespan, "mean_idle": float(idle.mean()), "accuracy_loss": loss,
                 "total": problem.w_makespan * makespan + problem.w_idle * float(idle.mean())
                 + problem.w_accuracy * loss}
    return Plan(units=units, kept_units=np.asarray(kept_units, dtype=np.int64), kept_fraction=fraction,
                real_units=np.asarray(real_units, dtype=np.float64), worker_finish=finish,
                worker_idle=idle, task_finish=task_finish, makespan_real=float(makespan_real),
                makespan=makespan, objective=objective, method=method, solver=solver, status=status,
                worker_names=list(problem.worker_names), task_names=list(problem.task_names))
