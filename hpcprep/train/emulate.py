"""Emulated slow ranks, for tests, demos and benchmarks on one machine.

``train.emulate_slowdown = { 1 = 2.0 }`` makes rank 1 two times slower for the
whole run; ``train.emulate_episodes = [{ rank = 1, factor = 4.0, start = 10,
steps = 3 }]`` makes it four times slower for steps 10, 11 and 12 only
(transient interference; ``steps = 0``: to the end of the run, a persistent
change). Steps count from 0 over the whole run. A rank slowed by ``f`` sleeps
``(f - 1) ×`` its compute time after computing (:class:`.parallel.DataParallel`);
factors of overlapping entries multiply. ``train.emulate_step_cost = { 1 = 0.05 }`` adds a fixed
0.05 s to every step of rank 1 (a per-step cost that does not grow with the batch: a
slower link, launch latency), slept after the slowdown.
"""

from ..errors import ConfigError

EPISODE_KEYS = ("rank", "factor", "start", "steps")


def _factor_problem(factor) -> str | None:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
        return f"{factor!r}: expected a number >= 1"
    return None


def _rank_problem(rank: int, size: int | None) -> str | None:
    if rank < 0 or (size is not None and rank >= size):
        return f"no rank {rank} (ranks 0..{(size or 1) - 1})"
    return None


def _cost_problem(seconds) -> str | None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e6:
        return f"{seconds!r}: expected seconds >= 0"
    return None


def _rank_table(table: dict, name: str, value_problem, size: int | None) -> dict[int, float]:
    out = {}
    for key, value in table.items():
        try:
            rank = int(key)
        except ValueError:
            raise ConfigError(f"train.{name}.{key}: keys are rank numbers") from None
        problem = value_problem(value)
        if problem:
            raise ConfigError(f"train.{name}.{key} = {problem}")
        problem = _rank_problem(rank, size)
        if problem:
            raise ConfigError(f"train.{name}.{key}: {problem}")
        out[rank] = float(value)
    return out


def parse_slowdown(table: dict, size: int | None = None) -> dict[int, float]:
    """``{"1": 2.0}`` -> ``{1: 2.0}``; checks ranks (when ``size`` is known) and factors >= 1."""
    return _rank_table(table, "emulate_slowdown", _factor_problem, size)


def parse_step_cost(table: dict, size: int | None = None) -> dict[int, float]:
    """``{"1": 0.05}`` -> ``{1: 0.05}``; checks ranks (when ``size`` is known) and seconds >= 0."""
    return _rank_table(table, "emulate_step_cost", _cost_problem, size)


def _episode(item, where: str, size: int | None) -> tuple[int, float, int, int]:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} = {item!r}: expected a table {{ rank, factor, start, steps }}")
    unknown = sorted(set(item) - set(EPISODE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; allowed keys here: {', '.join(EPISODE_KEYS)}")
    for key in ("rank", "factor", "start"):
        if key not in item:
            raise ConfigError(f"missing key {where}.{key}")
    rank, start, steps = item["rank"], item["start"], item.get("steps", 0)
    for key, value in (("rank", rank), ("start", start), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}.{key} = {value!r}: expected an integer >= 0")
    problem = _factor_problem(item["factor"])
    if problem:
        raise ConfigError(f"{where}.factor = {problem}")
    problem = _rank_problem(rank, size)
    if problem:
        raise ConfigError(f"{where}.rank = {rank}: {problem}")
    return rank, float(item["factor"]), start, steps


def parse_episodes(items: list, size: int | None = None) -> list[tuple[int, float, int, int]]:
    """``[{rank, factor, start, steps}]`` -> ``[(rank, factor, start, steps)]``, checked
    (ranks against ``size`` when known; ``steps = 0`` or absent: to the end of the run)."""
    return [_episode(item, f"train.emulate_episodes[{i}]", size) for i, item in enumerate(items)]


class Emulation:
    """The slowdown factor of one rank at each step, and its fixed step cost."""

    def __init__(self, rank: int, slowdown: dict[int, float], episodes: list,
                 step_cost: dict[int, float] | None = None):
        self.base = slowdown.get(rank, 1.0)
        self.step_cost = (step_cost or {}).get(rank, 0.0)
        self.episodes = [(f, start, steps) for r, f, start, steps in episodes if r == rank]

    def factor(self, step: int) -> float:
        """The factor for step ``step`` (0-based over the whole run)."""
        f = self.base
        for factor, start, steps in self.episodes:
            if start <= step and (steps == 0 or step < start + steps):
                f *= factor
        return f
