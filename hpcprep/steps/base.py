"""The standardization step contract (DESIGN §3) and the step registry.

A step is configured by a table ``{ op = "...", ... }``. Steps that need global
statistics (``needs_fit = True``) are fitted per chunk: ``fit_chunk`` returns a
mergeable state, ``merge_states`` combines two states, and ``set_fitted`` turns
the merged state into fitted attributes (names ending in ``_``). The layer
driver merges the per-chunk states in chunk-id order (:func:`merge_by_chunk`),
so the fitted values are bit-identical for every layout. ``apply`` returns the
transformed chunk and a dict ``reason -> rows dropped``. A step that changes
values is rebuilt fitted from its table and what ``stats`` saved
(``Step.from_stats``): ``hpcprep.transform.Transform`` replays it with ``apply``.
"""

from typing import Any, ClassVar

import numpy as np

from ..chunk import Chunk
from ..schema import Param, validate_op_table

STEPS: dict[str, type["Step"]] = {}


def register_step(cls):
    """Class decorator: make a step available as ``{ op = cls.op }``."""
    if cls.op in STEPS:
        raise ValueError(f"step {cls.op!r} registered twice")
    STEPS[cls.op] = cls
    return cls


class LayerContext:
    """What a step may know about the layer it runs in.

    Attributes
    ----------
    comm : mpi4py communicator
        The layer's communicator (all ranks of this standardization layer).
    seed : int
        The run's seed.
    layer : int
        Index of the standardization layer.
    """

    def __init__(self, comm, seed: int, layer: int):
        self.comm = comm
        self.seed = seed
        self.layer = layer


class Step:
    """Base class of standardization steps. Subclasses set ``op`` and ``params``."""

    op: ClassVar[str] = ""
    #: The step's place in the config (``standardize[0].steps[3]``), set by :func:`make_step`.
    where: str = ""
    needs_fit: ClassVar[bool] = False
    #: Whether the step changes values, not only drops rows: ``Transform`` replays it (:meth:`replayed`).
    changes_values: ClassVar[bool] = False
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, **config):
        self.config = config
        self.feature_names_in_: list[str] = []

    # ---- wiring -------------------------------------------------------------
    def bind(self, feature_names: list[str]) -> list[str]:
        """Record the input feature names; return the output feature names.

        Steps bind in order just before they fit (or apply), so a step may
        change its output names in :meth:`set_fitted` (``feature_names_out_``).
        """
        self.feature_names_in_ = list(feature_names)
        self.feature_names_out_ = list(feature_names)
        return self.feature_names_out_

    def describe(self) -> str:
        """Short text for progress lines and the report."""
        return self.op

    # ---- fitting ------------------------------------------------------------
    def fit_chunk(self, chunk: Chunk) -> Any:
        """Return the mergeable state of one chunk (``needs_fit`` steps only)."""
        raise TypeError(f"step {self.op} does not fit")

    def merge_states(self, a: Any, b: Any) -> Any:
        """Combine two states (associative; applied in chunk-id order)."""
        raise TypeError(f"step {self.op} does not fit")

    def set_fitted(self, state: Any) -> None:
        """Turn the merged state of all chunks (None if no rows) into fitted attributes."""

    def fit_layer(self, ctx: LayerContext, chunks) -> None:
        """Fit on every chunk of the layer (a collective over ``ctx.comm``).

        The default fits each chunk, merges all chunk states in chunk-id order
        and calls :meth:`set_fitted` on every rank. Steps whose fit needs its own
        communication (dedup) override this.
        """
        states = {c.chunk_id: self.fit_chunk(c) for c in chunks}
        self.set_fitted(merge_by_chunk(ctx.comm, states, self.merge_states))

    # ---- applying -----------------------------------------------------------
    def apply(self, chunk: Chunk) -> tuple[Chunk, dict[str, int]]:
        """Return the transformed chunk and the rows dropped per reason."""
        raise NotImplementedError(f"step {self.op} must implement apply")

    def apply_rejects(self, chunk: Chunk):
        """Like :meth:`apply`, and also say which rows were dropped and why.

        Returns
        -------
        chunk : Chunk
            The transformed chunk.
        dropped : dict of str -> int
            Rows dropped per reason (as :meth:`apply`).
        rejected : list of (ndarray of intp, str)
            Positions in the *input* chunk of the dropped rows, with their reason.

        The default calls :meth:`apply` and finds the dropped rows by id; steps
        that drop for several reasons override it to name each row's reason.
        """
        out, dropped = self.apply(chunk)
        if not dropped:
            return out, dropped, []
        gone = np.flatnonzero(~np.isin(chunk.ids, out.ids))
        reason = next(iter(dropped)) if len(dropped) == 1 else "dropped"
        return out, dropped, [(gone, reason)]

    def stats(self) -> dict[str, np.ndarray]:
        """Fitted parameters to store under ``/stats/<layer>.<index>.<op>/`` in data.h5."""
        return {}

    # ---- inference (hpcprep.transform.Transform) ---------------------------------
    @classmethod
    def replayed(cls, config: dict) -> bool:
        """Whether ``Transform`` replays a step of this validated table: one that changes
        values (a step that only drops rows is skipped, so every new row gets an answer)."""
        return cls.changes_values

    @classmethod
    def from_stats(cls, config: dict, feature_names_in: list[str], stats: dict) -> "Step":
        """The fitted step again, from its table and the parameters :meth:`stats` saved.

        Parameters
        ----------
        config : dict
            The step's validated table without ``op`` (as :func:`make_step` validates it).
        feature_names_in : list of str
            The features the step received.
        stats : dict of str -> ndarray
            What :meth:`stats` returned (read back from ``/stats/<label>/``; nested
            groups as ``"group/name"``).

        Returns
        -------
        Step
            Bound and fitted: its :meth:`apply` gives what the run's step gave.

        Raises
        ------
        KeyError
            A parameter the step needs is not in ``stats``.
        """
        step = cls(**config)
        step.bind(feature_names_in)
        step.set_stats(stats)
        return step

    def set_stats(self, stats: dict) -> None:
        """Set the fitted attributes from what :meth:`stats` saved (steps that change values)."""
        raise TypeError(f"step {self.op} changes no values: it is not rebuilt from its stats")


def merge_by_chunk(comm, states: dict[int, Any], merge):
    """Merge per-chunk states from every rank of ``comm`` in chunk-id order.

    Every rank returns the same object, computed in the same order, so floating
    point results do not depend on how chunks were spread over ranks. States are
    small (per chunk, not per row); they travel with one ``allgather``.

    Returns
    -------
    The merged state, or None when no rank had a chunk.
    """
    gathered = comm.allgather(states)
    pairs = [kv for d in gathered for kv in d.items()]
    ordered = [st for _, st in sorted(pairs, key=lambda kv: kv[0])]
    if not ordered:
        return None
    # pairwise tree: deterministic and better conditioned than a left fold
    while len(ordered) > 1:
        nxt = [merge(ordered[i], ordered[i + 1]) for i in range(0, len(ordered) - 1, 2)]
        if len(ordered) % 2:
            nxt.append(ordered[-1])
        ordered = nxt
    return ordered[0]


def drop_rows(chunk: Chunk, bad: dict[str, np.ndarray]):
    """Drop the rows flagged by any mask; each row is counted under its first reason.

    Parameters
    ----------
    chunk : Chunk
    bad : dict of str -> ndarray of bool, shape (len(chunk),)
        One mask per reason, in priority order.

    Returns
    -------
    chunk, dropped, rejected
        As :meth:`Step.apply_rejects`.
    """
    taken = np.zeros(len(chunk), dtype=bool)
    dropped, rejected = {}, []
    for reason, mask in bad.items():
        mine = mask & ~taken
        n = int(mine.sum())
        if n:
            dropped[reason] = dropped.get(reason, 0) + n
            rejected.append((np.flatnonzero(mine), reason))
            taken |= mine
    if not dropped:
        return chunk, {}, []
    return chunk.take(~taken), dropped, rejected


def make_step(spec: dict, where: str) -> Step:
    """Build a step from its config table ``{ op = ..., ... }``, validating its keys."""
    cls, params = validate_op_table(spec, STEPS, where, "step")
    step = cls(**params)
    step.where = where  # its place in the config, for error messages
    return step
