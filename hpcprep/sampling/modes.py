"""Sampling modes: pure functions of keys, ids and parameters, registered by name.

A sampling layer gives every row a uint64 sort key (:meth:`SampleMode.keys`),
routes rows so that the layer's ranks hold the global order ``(key, id, copy)``
in rank order, and then calls :meth:`SampleMode.partition` (by default
:meth:`SampleMode.select`) on each sorted bucket of a rank with the bucket's
global position in :class:`SelectContext`. The selection sees the same global
sequence for every layout, so its output does too. See docs/sampling.md.

Life of a mode on every rank of a layer:

1. ``bind(feature_names, dtype)`` once the record layout is known;
2. ``expand(seed, stream, records)`` on the producers, before routing
   (bootstrap copies, excluded rows);
3. ``prepare(ctx)`` once per layer member, collective over ``ctx.comm``,
   after the global counts are known;
4. ``partition(ctx, records, keys)`` per sorted bucket, in order.
"""

from fractions import Fraction
from typing import ClassVar

import numpy as np

from ..errors import ConfigError, HpcprepError
from ..kernels.active import HOST, Kernels
from ..kernels.hashing import splitmix64
from ..schema import Param, validate_op_table

MODES: dict[str, type["SampleMode"]] = {}


class SamplingError(HpcprepError):
    """A sampling request the data cannot satisfy.

    Raised in :meth:`SampleMode.prepare` it is decided from the layer's global
    counts, so every member raises it alike (the layer marks it agreed and it
    is printed once); raised in :meth:`SampleMode.expand` it is about one rank's rows.
    """


def register_mode(cls):
    """Class decorator: make a mode available as ``op = cls.op`` in ``[[sample]]``."""
    if cls.op in MODES:
        raise ValueError(f"sampling mode {cls.op!r} registered twice")
    MODES[cls.op] = cls
    return cls


def round_half_up(fraction: float, n: int) -> int:
    """``floor(fraction * n + 1/2)`` in exact rational arithmetic (the documented rounding)."""
    return int(Fraction(fraction) * int(n) + Fraction(1, 2))


def row_keys(seed: int, stream: int, records: np.ndarray, kernels: Kernels = HOST) -> np.ndarray:
    """Uniform uint64 key of each row: a function of ``(seed, stream, id, copy tag)`` only.

    Originals (no field ``c``, or ``c == 0``) get ``random_keys(seed, stream, id)``
    (computed by ``kernels``, on the run's device);
    a bootstrap copy with tag ``c`` gets ``splitmix64(key ^ splitmix64(c))``, so
    copies of one row get distinct keys in every later layer.
    """
    keys = kernels.keys(seed, stream, records["id"])
    if "c" in records.dtype.names and len(records):
        c = records["c"]
        nz = c != 0
        if nz.any():
            keys[nz] = splitmix64(keys[nz] ^ splitmix64(c[nz].astype(np.uint64)))
    return keys


class SelectContext:
    """Where a rank's current sorted bucket sits in the layer's global order.

    Attributes
    ----------
    comm : communicator of the sampling layer
    start : int
        Global position of the bucket's first row (advanced by :meth:`advance`).
    total : int
        Rows in the whole layer.
    seed, layer : int
        The run's seed and the layer's random stream.
    classes : ndarray or None
        Sorted distinct label values of the whole layer (integer labels only).
    class_totals : ndarray of int64
        Rows of each class in the whole layer.
    class_start : ndarray of int64
        Global position, within its class, of the bucket's next row of each class.
    """

    def __init__(self, comm, start: int, total: int, seed: int, layer: int,
                 classes=None, class_totals=None, class_start=None):
        self.comm, self.start, self.total, self.seed, self.layer = comm, start, total, seed, layer
        self.classes = classes
        self.class_totals = class_totals
        self.class_start = None if class_start is None else np.array(class_start, dtype=np.int64)

    def class_codes(self, records: np.ndarray) -> np.ndarray:
        """Index of each row's label in :attr:`classes`."""
        if self.classes is None:
            raise SamplingError("this sampling mode needs an integer label (input.label)")
        return np.searchsorted(self.classes, records["y"]).astype(np.int64)

    def class_positions(self, codes: np.ndarray) -> np.ndarray:
        """Global position of each row within its class (rows in bucket order)."""
        n = len(codes)
        if n == 0:
            return np.empty(0, np.int64)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(self.classes))
        first = np.cumsum(counts) - counts
        within = np.empty(n, np.int64)
        within[order] = np.arange(n, dtype=np.int64) - first[codes[order]]
        return self.class_start[codes] + within

    def advance(self, records: np.ndarray) -> None:
        """Move past a bucket (called by the layer after each bucket)."""
        self.start += len(records)
        if self.class_start is not None and len(records):
            self.class_start += np.bincount(self.class_codes(records), minlength=len(self.classes))


class SampleMode:
    """Base class: ``keys`` give the random order, ``select`` cuts the sorted sequence.

    Class attributes
    ----------------
    op : str
        Name in ``[[sample]] op = ...``.
    params : dict of str -> Param
        Allowed keys of the table.
    routing : str
        ``"range"``: keys are uniform, rows go to fixed key ranges;
        ``"splitters"``: keys are not uniform, the layer re-routes by splitters
        chosen from a sample of keys (sample sort).
    needs_labels : bool
        The mode reads the integer label.
    kernels : Kernels
        The run's kernels (set by :func:`make_mode`): pass them to :func:`row_keys`.
    """

    op: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    routing: ClassVar[str] = "range"
    needs_labels: ClassVar[bool] = False
    kernels: Kernels = HOST

    def __init__(self, **config):
        self.config = config
        self.splits: list[str] | None = None
        self.warnings: list[str] = []
        self.excluded = 0

    @classmethod
    def check(cls, body: dict, where: str) -> None:
        """Checks across keys (raise :class:`ConfigError`); by default none."""

    def bind(self, feature_names: list[str], dtype: np.dtype) -> None:
        """Learn the record layout (feature names, dtype) before any row is seen."""

    def keys(self, seed: int, layer: int, ids: np.ndarray, records: np.ndarray) -> np.ndarray:
        """Sort key (uint64) of each row: a function of ``(seed, layer, id, copy, record)`` only."""
        return row_keys(seed, layer, records, self.kernels)

    def route_keys(self, seed: int, layer: int, records: np.ndarray) -> np.ndarray:
        """Uniform keys used to spread rows before a splitter re-route."""
        return row_keys(seed, layer, records, self.kernels)

    def expand(self, seed: int, layer: int, records: np.ndarray) -> np.ndarray:
        """Rows as they enter the layer (before routing); by default unchanged."""
        return records

    def prepare(self, ctx: SelectContext) -> None:
        """Collective over ``ctx.comm`` once the global counts are known; by default nothing.

        A :class:`SamplingError` raised here must depend on the global figures in
        ``ctx`` only (every member raises it alike; it is printed once).
        """

    def select(self, ctx: SelectContext, records: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Rows of the sorted bucket that the mode keeps (default: all)."""
        return records

    def partition(self, ctx: SelectContext, records: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
        """Kept rows of the bucket per output (one output unless the mode has splits)."""
        return [self.select(ctx, records, keys)]

    def summary(self, total_in: int, total_out: int) -> dict:
        """Figures for the report."""
        out = {"op": self.op, "rows_in": total_in, "rows_out": total_out}
        if self.excluded:
            out["excluded"] = self.excluded
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@register_mode
class Shuffle(SampleMode):
    """``shuffle``: a uniform random permutation of all rows (sort by random key)."""

    op = "shuffle"


def check_mode(table: dict, where: str) -> dict:
    """Validate a ``[[sample]]`` table; return it with defaults filled in."""
    cls, body = validate_op_table(table, MODES, where, "sampling mode")
    cls.check(body, where)
    return {"op": table["op"], **body}


def check_chain(tables: list[dict], label_dtype: str | None) -> None:
    """Checks over the whole ``[[sample]]`` chain and the input (rank 0, before any work).

    Raises
    ------
    ConfigError
        A ``split`` layer that is not the last one, or a mode that needs an
        integer label when the input has none.
    """
    for i, t in enumerate(tables):
        cls = MODES[t["op"]]
        if t["op"] == "split" and i != len(tables) - 1:
            raise ConfigError(f"sample[{i}].op = 'split': a split must be the last [[sample]] layer")
        needs = cls.needs_labels or (t["op"] == "split" and t.get("stratify"))
        if needs and (label_dtype is None or np.dtype(label_dtype).kind not in "iu"):
            raise ConfigError(f"sample[{i}] ({t['op']}): needs an integer class label "
                              f"(input.label), the input has "
                              f"{'none' if label_dtype is None else label_dtype}")


def make_mode(table: dict, kernels: Kernels = HOST) -> SampleMode:
    """Build the mode of a validated ``[[sample]]`` table, computing with the run's ``kernels``."""
    body = {k: v for k, v in table.items() if k != "op"}
    mode = MODES[table["op"]](**body)
    mode.kernels = kernels
    return mode


def exactly_one_size(body: dict, where: str, names=("n", "fraction")) -> None:
    """Config check: exactly one of the size keys is given (``-1`` = not given)."""
    given = [k for k in names if body.get(k, -1) != -1]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(names)} "
                          f"(got {', '.join(given) or 'none'})")
