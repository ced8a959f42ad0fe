"""Emulated slow ranks, for tests, demos and benchmarks on one machine.

``train.emulate_slowdown = { 1 = 2.0 }`` makes rank 1 two times slower for the
whole run; ``train.emulate_episodes = [{ rank = 1, factor = 4.0, start = 10,
steps = 3 }]`` makes it four times slower for steps 10, 11 and 12 only
(transient interference; ``steps = 0``: to the end of the run, a persistent
change). Steps count from 0 over the whole run. A rank slowed by ``f`` sleeps
``(f - 1) ×`` its compute time after computing (:class:`.parallel.DataParallel`);
factors of overlapping entries multiply.
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


def parse_slowdown(table: dict, size: int | None = None) -> dict[int, float]:
    """``{"1": 2.0}`` -> ``{1: 2.0}``; checks ranks (when ``size`` is known) and factors >= 1."""
    out = {}
    for key, factor in table.items():
        try:
            rank = int(key)
        except ValueError:
            raise ConfigError(f"train.emulate_slowdown.{key}: keys are rank numbers") from None
        if _factor_problem(factor):
            raise ConfigError(f"train.emulate_slowdown.{key} = {factor!r}: expected a number >= 1")
        problem = _rank_problem(rank, size)
        if problem:
            raise ConfigError(f"train.emulate_slowdown.{key}: {problem}")
        out[rank] = float(factor)
    return out


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
    """The slowdown factor of one rank at each step."""

    def __init__(self, rank: int, slowdown: dict[int, float], episodes: list):
        self.base = slowdown.get(rank, 1.0)
        self.episodes = [(f, start, steps) for r, f, start, steps in episodes if r == rank]

    def factor(self, step: int) -> float:
        """The factor for step ``step`` (0-based over the whole run)."""
        f = self.base
        for factor, start, steps in self.episodes:
            if start <= step and (steps == 0 or step < start + steps):
                f *= factor
        return f
