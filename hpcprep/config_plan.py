"""The ``[plan]`` table of the run config: its keys, their checks, and the checks that need the layout.

What the keys do: docs/assign.md ("In the run").
"""

from .errors import ConfigError
from .schema import Param, list_of, non_negative, read_rows, section_class


#: Largest relative speed: speeds are summed and divided in the plan, and stay far from overflow.
SPEED_MAX = 1e15


def _deadlines(value):
    return list_of(int, float)(value) or next(
        (f"every deadline must be > 0 seconds (inf: none), got {v!r}" for v in value
         if not v > 0), None)


def _non_negative_list(value):
    return list_of(int, float)(value) or next(
        (f"every weight must be finite and >= 0, got {v!r}" for v in value
         if not 0 <= v < float("inf")), None)


def _slowdown(value):
    for key, factor in value.items():
        if not _slowdown_rank(key)[1].isdigit():
            return f"keys are input rank numbers, or w and a writer's number (w0), got {key!r}"
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 1e3:
            return f"factor of {key} must be a number in [1, 1000], got {factor!r}"
    return None


def _slowdown_rank(key) -> tuple[str, str]:
    """``("writer", "3")`` for the key ``"w3"``, ``("input rank", "3")`` for ``"3"``."""
    key = str(key)
    return ("writer", key[1:]) if key.startswith("w") else ("input rank", key)


def _fractions(value):
    return list_of(int, float)(value) or next(
        (f"every fraction must lie in (0, 1], got {v!r}" for v in value if not 0 < v <= 1), None)


def _speeds(value):
    return list_of(int, float)(value) or next(
        (f"every speed must lie in (0, 1e15], got {v!r}" for v in value if not 0 < v <= SPEED_MAX), None)


def _shard_speeds(value):
    if isinstance(value, str):
        return None if value == "measured" else 'expected a list of speeds or "measured"'
    return _speeds(value)


PLAN = {
    "balance": Param(str, "equal", choices=("equal", "speeds", "calibrate"),
                     doc="how chunks are given to input ranks: equal rows, by given speeds, or by "
                         "speeds measured in a calibration read"),
    "speeds": Param(list, [], check=_speeds,
                    doc="relative speed of each input rank (overrides the calibration's)"),
    "shard_speeds": Param((list, str), [], check=_shard_speeds,
                          doc="relative speed of each writer rank: shard sizes follow it; "
                              "\"measured\": the writers time a calibration write (shard "
                              "boundaries then vary from run to run, the rows do not)"),
    "calibration_rows": Param(int, 65536, check=read_rows,
                              doc="rows of each calibration read (of each chunk, for 0.3 s) and "
                                  "of each calibration write (shard_speeds = \"measured\")"),
    "tasks": Param(str, "all", choices=("all", "paths", "files"),
                   doc="what the plan schedules as tasks: all input as one, one per entry of "
                       "input.paths, or one per file"),
    "deadlines": Param(list, [], check=_deadlines, allow_inf=True,
                       doc="seconds after the plan by which each task must be read (inf: none); "
                           "speeds are then rows per second"),
    "task_weights": Param(list, [], check=_non_negative_list,
                          doc="v_j: weight of each task in the objective (default 1 each)"),
    "memory": Param(list, [], check=list_of(str, int),
                    doc="most input bytes each input rank may read (sizes as memory_per_rank)"),
    "min_fractions": Param(list, [], check=_fractions,
                           doc="f_min: smallest fraction of each task's rows the plan may keep "
                               "(default 1: keep all); rows are subsampled by key"),
    "emulate_slowdown": Param(dict, {}, check=_slowdown,
                              doc="benchmarks on one machine: { input rank = factor >= 1 }: that "
                                  "input rank's reads take factor times as long (it sleeps); "
                                  "{ wK = factor }: writer K's shard writes"),
    "w1": Param((int, float), 1.0, check=non_negative, doc="objective weight of the makespan"),
    "w2": Param((int, float), 0.0, check=non_negative,
                doc="objective weight of accuracy (the learning curve of kept fractions)"),
    "beta": Param((int, float), 0.3, check=non_negative, doc="learning-curve exponent"),
    "w3": Param((int, float), 0.0, check=non_negative, doc="objective weight of idle time"),
}


#: The validated ``[plan]`` table (docs/assign.md).
PlanConfig = section_class("PlanConfig", PLAN, __name__, "The ``[plan]`` table of the run config.")


def check_plan(cfg, n_input, n_writers, total, world_size):
    """The checks of [plan] that need the layout: one value per input rank or writer."""
    from .config import _size_check

    if total != world_size:
        return  # the layout error comes first
    plan = cfg.plan
    if plan.balance == "speeds" and len(plan.speeds) != n_input:
        raise ConfigError(f"plan.speeds = {plan.speeds}: needs one speed per input rank ({n_input})")
    if plan.balance == "equal" and plan.speeds:
        raise ConfigError("plan.speeds is used only with plan.balance = \"speeds\" or "
                          "\"calibrate\" (where it overrides the measured speeds)")
    for key, n in (("speeds", n_input), ("shard_speeds", n_writers)):
        speeds = getattr(plan, key)
        if speeds and speeds != "measured" and len(speeds) != n:   # range-checked by _speeds
            raise ConfigError(f"plan.{key} = {speeds}: needs {n} positive speeds")
    for key in plan.emulate_slowdown:
        what, number = _slowdown_rank(key)
        n = n_writers if what == "writer" else n_input
        if int(number) >= n:
            raise ConfigError(f"plan.emulate_slowdown.{key}: no {what} {number} "
                              f"({what}s 0..{n - 1})")
    if plan.memory and len(plan.memory) != n_input:
        raise ConfigError(f"plan.memory = {plan.memory}: needs one size per input rank ({n_input})")
    for size in plan.memory:
        problem = _size_check(size)
        if problem:
            raise ConfigError(f"plan.memory: {size!r} {problem}")
    if plan.balance == "equal" and (plan.deadlines or plan.memory or plan.tasks != "all"
                                    or plan.min_fractions):
        raise ConfigError("plan.tasks, plan.deadlines, plan.min_fractions and plan.memory need "
                          "plan.balance = "
                          "\"speeds\" or \"calibrate\" (the equal split plans nothing)")
