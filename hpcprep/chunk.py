"""The unit of data that flows through the input and standardization layers."""

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Chunk:
    """A block of consecutive input rows, as read by one input rank.

    Attributes
    ----------
    chunk_id : int
        Global, layout-independent number of the chunk (files in sorted order,
        ``chunk_rows`` rows per chunk within a file). Fitted statistics are
        merged in chunk-id order, so they do not depend on the layout.
    ids : ndarray of int64, shape (n,)
        Global row ids (position in the ordered input).
    features : ndarray, shape (n, d)
        Numeric features (float32 or float64).
    labels : ndarray, shape (n,), or None
        Label column, if the input has one.
    extras : dict of str -> ndarray
        Further per-row columns (weights, raw categorical codes, ...).
    source : str
        The file the chunk came from (for error messages).
    source_rows : ndarray of int64, shape (n,), or None
        Row (or line) number of each row within ``source``, for error messages
        and the rejects file; ``None`` means ``ids - first id + source_start``.
    source_start : int
        Row number in ``source`` of the chunk's first row.
    dropped : dict of str -> int
        Rows the reader dropped from this chunk (malformed CSV lines), per reason.
    stage : dict of int -> int
        Standardization steps already applied to these rows, per layer index
        (``{layer: k}``: steps ``0 .. k-1`` of that layer). Empty for rows as read.
    records : dict of int -> object
        What those steps dropped (per layer; see
        :class:`hpcprep.layers.standardize.StageRecord`), counted when the
        chunk leaves the layer in its final pass.
    """

    chunk_id: int
    ids: np.ndarray
    features: np.ndarray
    labels: np.ndarray | None = None
    extras: dict = field(default_factory=dict)
    source: str = ""
    source_start: int = 0
    source_rows: np.ndarray | None = None
    dropped: dict = field(default_factory=dict)
    stage: dict = field(default_factory=dict, repr=False, compare=False)
    records: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nbytes(self) -> int:
        n = self.ids.nbytes + self.features.nbytes
        if self.labels is not None:
            n += self.labels.nbytes
        return n + sum(a.nbytes for a in self.extras.values())

    def rows_in_source(self) -> np.ndarray:
        """Row number of each row within its source file."""
        if self.source_rows is not None:
            return self.source_rows
        if len(self) == 0:
            return np.empty(0, np.int64)
        return self.ids - self.ids[0] + self.source_start

    def take(self, keep) -> "Chunk":
        """Return the chunk restricted to ``keep`` (boolean mask or index array)."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)  # one nonzero for every column, not one per column
        ids = self.ids.take(keep, axis=0)
        if self.source_rows is not None:
            source_rows = self.source_rows.take(keep, axis=0)
        elif len(self):
            source_rows = ids - self.ids[0] + self.source_start
        else:
            source_rows = np.empty(0, np.int64)
        return replace(
            self,
            ids=ids,
            features=self.features.take(keep, axis=0),
            labels=None if self.labels is None else self.labels.take(keep, axis=0),
            extras={k: v.take(keep, axis=0) for k, v in self.extras.items()},
            source_rows=source_rows,
        )

    def with_features(self, features: np.ndarray) -> "Chunk":
        """Return the same rows with new features."""
        return replace(self, features=features)
