"""Sampling modes: pure functions of keys, ids and parameters, registered by name.

A sampling layer gives every row a random uint64 key (:meth:`SampleMode.keys`),
routes rows by key range so that the layer's ranks hold the global key order in
rank order, sorts locally, and then calls :meth:`SampleMode.select` on each
rank's sorted block with the block's global position. The selection sees the
same global sequence for every layout, so its output does too.
"""

from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from ..kernels.hashing import random_keys
from ..schema import Param, validate_table

MODES: dict[str, type["SampleMode"]] = {}


def register_mode(cls):
    """Class decorator: make a mode available as ``op = cls.op`` in ``[[sample]]``."""
    if cls.op in MODES:
        raise ValueError(f"sampling mode {cls.op!r} registered twice")
    MODES[cls.op] = cls
    return cls


class SelectContext:
    """Where a rank's sorted block sits in the layer's global order.

    Attributes
    ----------
    comm : communicator of the sampling layer
    start : int
        Global position of this rank's first row.
    total : int
        Rows in the whole layer.
    seed, layer : int
    """

    def __init__(self, comm, start: int, total: int, seed: int, layer: int):
        self.comm, self.start, self.total, self.seed, self.layer = comm, start, total, seed, layer


class SampleMode:
    """Base class: ``keys`` gives the random order, ``select`` cuts the sorted sequence."""

    op: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, **config):
        self.config = config

    def keys(self, seed: int, layer: int, ids: np.ndarray, records: np.ndarray) -> np.ndarray:
        """Random uint64 key of each row: a function of ``(seed, layer, id)`` only."""
        return random_keys(seed, layer, ids)

    def select(self, ctx: SelectContext, records: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Rows of this rank's sorted block that the mode keeps (default: all)."""
        return records

    def summary(self, total_in: int, total_out: int) -> dict:
        """Figures for the report."""
        return {"op": self.op, "rows_in": total_in, "rows_out": total_out}


@register_mode
class Shuffle(SampleMode):
    """``shuffle``: a uniform random permutation of all rows (sort by random key)."""

    op = "shuffle"


def check_mode(table: dict, where: str) -> dict:
    """Validate a ``[[sample]]`` table; return it with defaults filled in."""
    if not isinstance(table, dict) or "op" not in table:
        raise ConfigError(f"{where}: needs op; known: {', '.join(sorted(MODES))}")
    op = table["op"]
    if op not in MODES:
        raise ConfigError(f"{where}.op = {op!r}: unknown sampling mode; known: {', '.join(sorted(MODES))}")
    body = validate_table({k: v for k, v in table.items() if k != "op"}, MODES[op].params, where)
    return {"op": op, **body}


def make_mode(table: dict) -> SampleMode:
    """Build the mode of a validated ``[[sample]]`` table."""
    body = {k: v for k, v in table.items() if k != "op"}
    return MODES[table["op"]](**body)
