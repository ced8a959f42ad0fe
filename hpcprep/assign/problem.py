"""The assignment problem as plain NumPy data: workers, tasks and objective weights.

A problem is what rank 0 knows after gathering the workers' measurements, or what
``hpcprep plan`` reads from a TOML/JSON file. It holds no cvxpy objects; the
program in :mod:`.program` is built from its *structure* (sizes, deadline order,
which constraints exist) and fed its *values* as cvxpy Parameters.

Units: work is counted in whole *units* (rows, batches or chunks: whatever the
caller plans), speeds in units per second, times in seconds.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, HpcprepError
from ..schema import Param, between, list_of, non_negative, positive, validate_table


class AssignError(HpcprepError):
    """The assignment program has no acceptable plan (infeasible, or the solver failed).

    Attributes
    ----------
    late_tasks : dict of str -> float
        For deadline infeasibility: task name -> seconds by which its deadline is
        missed at best (0.0 when it misses by less than one unit per worker).
    """

    def __init__(self, message: str, late_tasks: dict | None = None):
        super().__init__(message)
        self.late_tasks = dict(late_tasks or {})


@dataclass
class AssignProblem:
    """Workers, tasks and weights of one planning instance.

    Parameters
    ----------
    speeds : array of float, shape (n,)
        Units each worker processes per second (> 0).
    task_units : array of int, shape (m,)
        Size of each task in whole units (rows, batches, chunks).
    overheads : array of float, shape (n,), optional
        Fixed seconds each worker spends before its first unit (start-up, reading
        metadata). Every worker pays it: all ranks meet in the same collectives.
    memory_caps : array of float, shape (n,), optional
        Most units a worker may hold (``inf``: no cap).
    deadlines : array of float, shape (m,), optional
        Seconds by which each task must be finished (``inf``: none).
    values : array of float, shape (m,), optional
        Weight ``v_j`` of each task's accuracy in the objective (default 1).
    min_fractions : array of float, shape (m,), optional
        Smallest kept fraction ``f_min`` of each task, in (0, 1]. Default 1: keep
        everything, and the accuracy term is absent.
    w_makespan, w_accuracy, w_idle : float
        Objective weights ``w1, w2, w3`` of DESIGN §4.
    beta : float
        Learning-curve exponent (see :func:`.program.accuracy_loss`).
    worker_names, task_names : list of str, optional
        Names used in tables and error messages.
    """

    speeds: np.ndarray
    task_units: np.ndarray
    overheads: np.ndarray | None = None
    memory_caps: np.ndarray | None = None
    deadlines: np.ndarray | None = None
    values: np.ndarray | None = None
    min_fractions: np.ndarray | None = None
    w_makespan: float = 1.0
    w_accuracy: float = 0.0
    w_idle: float = 0.0
    beta: float = 0.3
    worker_names: list = field(default_factory=list)
    task_names: list = field(default_factory=list)

    def __post_init__(self):
        self.speeds = np.atleast_1d(np.asarray(self.speeds, dtype=np.float64))
        n = self.speeds.size
        units = np.atleast_1d(np.asarray(self.task_units))
        if units.size and not np.all(units == np.floor(units)):
            raise ConfigError(f"task sizes must be whole units, got {units.tolist()}")
        self.task_units = units.astype(np.int64)
        m = self.task_units.size
        self.overheads = _vector(self.overheads, n, 0.0, "overheads")
        self.memory_caps = _vector(self.memory_caps, n, np.inf, "memory_caps")
        self.deadlines = _vector(self.deadlines, m, np.inf, "deadlines")
        self.values = _vector(self.values, m, 1.0, "values")
        self.min_fractions = _vector(self.min_fractions, m, 1.0, "min_fractions")
        if not self.worker_names:
            self.worker_names = [f"w{i}" for i in range(n)]
        if not self.task_names:
            self.task_names = [f"t{j}" for j in range(m)]
        self._check()

    def _check(self):
        if self.speeds.size == 0:
            raise ConfigError("the problem needs at least one worker")
        if self.task_units.size == 0:
            raise ConfigError("the problem needs at least one task")
        checks = [
            (np.all(np.isfinite(self.speeds)) and np.all(self.speeds > 0), "speeds must be finite and > 0"),
            (np.all(self.task_units >= 0), "task sizes must be >= 0"),
            (np.all(np.isfinite(self.overheads)) and np.all(self.overheads >= 0), "overheads must be finite and >= 0"),
            (np.all(self.memory_caps >= 0), "memory caps must be >= 0"),
            (np.all(self.deadlines > 0), "deadlines must be > 0"),
            (np.all(np.isfinite(self.values)) and np.all(self.values >= 0), "task values must be finite and >= 0"),
            (np.all(self.min_fractions > 0) and np.all(self.min_fractions <= 1), "min_fraction must be in (0, 1]"),
            (min(self.w_makespan, self.w_accuracy, self.w_idle) >= 0, "objective weights must be >= 0"),
            (self.beta >= 0, "beta must be >= 0"),
            (len(self.worker_names) == self.speeds.size, "one name per worker"),
            (len(self.task_names) == self.task_units.size, "one name per task"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def n_workers(self) -> int:
        return int(self.speeds.size)

    @property
    def n_tasks(self) -> int:
        return int(self.task_units.size)

    @property
    def has_deadlines(self) -> bool:
        return bool(np.any(np.isfinite(self.deadlines)))

    @property
    def has_memory_caps(self) -> bool:
        return bool(np.any(np.isfinite(self.memory_caps)))

    @property
    def variable_fraction(self) -> bool:
        """True when some task may be subsampled (the accuracy term is present)."""
        return bool(np.any(self.min_fractions < 1))

    def deadline_order(self) -> np.ndarray:
        """Task indices by deadline (stable; tasks without deadline last)."""
        return np.argsort(self.deadlines, kind="stable")

    def min_units(self) -> np.ndarray:
        """Fewest whole units of each task that must be kept: ``ceil(f_min * units)``."""
        return np.ceil(self.min_fractions * self.task_units - 1e-9).astype(np.int64)

    def unit_caps(self) -> np.ndarray:
        """Whole units each worker may hold: ``floor(memory_caps)``, capped by the total work."""
        total = float(self.task_units.sum())
        return np.floor(np.minimum(self.memory_caps, total)).astype(np.int64)


def _vector(value, size, default, name):
    if value is None:
        return np.full(size, default, dtype=np.float64)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(size, float(arr))
    if arr.shape != (size,):
        raise ConfigError(f"{name}: expected {size} values, got shape {arr.shape}")
    return arr.copy()


# --- problem files (hpcprep plan) ------------------------------------------------------

#: Most workers one ``[[workers]]`` entry may stand for.
MAX_WORKERS = 100_000

OBJECTIVE_SPEC = {
    "makespan": Param(float, 1.0, check=non_negative, doc="w1: weight of the makespan (s)"),
    "accuracy": Param(float, 0.0, check=non_negative, doc="w2: seconds of makespan one unit of accuracy is worth"),
    "idle": Param(float, 0.0, check=non_negative, doc="w3: weight of the mean idle time (s)"),
    "beta": Param(float, 0.3, check=non_negative, doc="learning-curve exponent"),
    "solver": Param(str, "auto", choices=("auto", "closed_form", "CLARABEL", "HIGHS", "SCS"),
                    doc="how to solve"),
}

WORKER_SPEC = {
    "name": Param(str, "", doc="worker name"),
    "speed": Param(float, check=positive, doc="units per second"),
    "overhead": Param(float, 0.0, check=non_negative, doc="fixed seconds before the first unit"),
    "memory": Param(float, float("inf"), check=non_negative, allow_inf=True,
                    doc="most units the worker may hold"),
    "count": Param(int, 1, check=between(1, MAX_WORKERS),
                   doc="how many identical workers this entry stands for"),
}

TASK_SPEC = {
    "name": Param(str, "", doc="task name"),
    "units": Param(int, check=non_negative, doc="size in whole units (rows, batches, chunks)"),
    "deadline": Param(float, float("inf"), check=positive, allow_inf=True,
                      doc="seconds by which the task must finish"),
    "value": Param(float, 1.0, check=non_negative, doc="weight v_j of the task's accuracy"),
    "min_fraction": Param(float, 1.0, check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]",
                          doc="smallest kept fraction of the task"),
}

FILE_SPEC = {
    "objective": Param(dict, {}, nested=True, doc="objective weights and solver"),
    "workers": Param(list, check=list_of(dict), nested=True, doc="array of worker tables"),
    "tasks": Param(list, check=list_of(dict), nested=True, doc="array of task tables"),
}


def problem_from_table(table: dict) -> tuple[AssignProblem, str]:
    """Build a problem from a parsed TOML/JSON table.

    Parameters
    ----------
    table : dict
        ``{objective = {...}, workers = [{...}, ...], tasks = [{...}, ...]}``; see
        docs/assign.md for the keys.

    Returns
    -------
    problem : AssignProblem
    solver : str
        The ``objective.solver`` value.

    Raises
    ------
    ConfigError
        Naming the first bad key or value.
    """
    top = validate_table(table, FILE_SPEC, "")
    objective = validate_table(top["objective"], OBJECTIVE_SPEC, "objective")
    speeds, overheads, caps, wnames = [], [], [], []
    for i, raw in enumerate(top["workers"]):
        w = validate_table(raw, WORKER_SPEC, f"workers[{i}]")
        base = w["name"] or f"w{i}"
        for k in range(w["count"]):
            wnames.append(base if w["count"] == 1 else f"{base}.{k}")
            speeds.append(w["speed"])
            overheads.append(w["overhead"])
            caps.append(w["memory"])
    units, deadlines, values, fmins, tnames = [], [], [], [], []
    for j, raw in enumerate(top["tasks"]):
        t = validate_table(raw, TASK_SPEC, f"tasks[{j}]")
        tnames.append(t["name"] or f"t{j}")
        units.append(t["units"])
        deadlines.append(t["deadline"])
        values.append(t["value"])
        fmins.append(t["min_fraction"])
    for names, what in ((wnames, "worker"), (tnames, "task")):
        if len(set(names)) != len(names):
            raise ConfigError(f"{what} names must be unique, got {names}")
    problem = AssignProblem(
        speeds=np.array(speeds), task_units=np.array(units, dtype=np.int64),
        overheads=np.array(overheads), memory_caps=np.array(caps),
        deadlines=np.array(deadlines), values=np.array(values), min_fractions=np.array(fmins),
        w_makespan=objective["makespan"], w_accuracy=objective["accuracy"],
        w_idle=objective["idle"], beta=objective["beta"],
        worker_names=wnames, task_names=tnames)
    return problem, objective["solver"]
