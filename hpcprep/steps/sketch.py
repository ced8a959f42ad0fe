"""Mergeable quantile summaries, exact while small, a log-bucket sketch beyond.

Used by ``impute`` (median), ``scale`` (robust) and ``outliers`` (quantile).

Each column keeps the exact multiset of its finite values (NaN and ±inf are
left out) as sorted ``(value, count)`` pairs while it has at most
``exact_limit`` distinct values.
Beyond that it switches to a relative-error log-bucket sketch (the DDSketch
mapping): a value ``x != 0`` falls into bucket ``k = ceil(log(|x|) / log(g))``
with ``g = (1 + a) / (1 - a)``, and a bucket is represented by
``2 g**k / (g + 1)``, which is within a relative error ``a`` of every value in
it. Counts are integers, so merging is exactly associative and commutative:
the merged summary is a pure function of the global multiset of values, the
same for every order of merges and every layout. In particular, whether the
result is exact depends only on the global number of distinct values (a merge
can only grow it).

Quantiles follow NumPy's default ("linear") definition: for ``n`` values and
``q`` in [0, 1], position ``p = q (n - 1)`` between the order statistics
``v[floor(p)]`` and ``v[floor(p) + 1]``. In exact mode this is NumPy's result
(to rounding). In sketch mode each order statistic is replaced by its bucket's
representative, so ``|estimate - exact| <= a * max(|v[floor(p)]|, |v[floor(p) + 1]|)``.
"""

import math

import numpy as np

#: Default number of distinct values per column kept exactly.
EXACT_LIMIT = 20000
#: Default relative error of the log-bucket sketch.
SKETCH_ERROR = 1e-3


def sketch_params(purpose: str) -> dict:
    """The ``exact_limit`` and ``sketch_error`` keys of a step with quantiles (``purpose``: for the docs)."""
    from ..schema import Param, positive

    return {
        "exact_limit": Param(int, EXACT_LIMIT, check=positive,
                             doc=f"{purpose}: distinct values per column kept exactly"),
        "sketch_error": Param(float, SKETCH_ERROR,
                              check=lambda v: None if 0 < v < 0.5 else "must be in (0, 0.5)",
                              doc=f"{purpose}: relative error beyond exact_limit"),
    }

_OFFSET = 1 << 40  # keeps bucket indices of positive values > 0 (log(5e-324) / log(g) > -2**40)


class ColumnSketch:
    """Summary of one column: exact ``(value, count)`` pairs or log-bucket counts.

    Attributes
    ----------
    exact : bool
        True while the values are kept exactly.
    keys : ndarray
        Sorted distinct values (float64) when exact, else sorted bucket keys
        (int64; the key order is the value order).
    counts : ndarray of int64
    """

    __slots__ = ("exact", "keys", "counts", "limit", "error")

    def __init__(self, keys, counts, exact=True, limit=EXACT_LIMIT, error=SKETCH_ERROR):
        self.keys, self.counts, self.exact = keys, counts, exact
        self.limit, self.error = limit, error
        if exact and len(keys) > limit:
            self._to_buckets()

    @classmethod
    def of(cls, values, limit=EXACT_LIMIT, error=SKETCH_ERROR) -> "ColumnSketch":
        """Summary of the finite entries of ``values`` (NaN and ±inf are left out)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        # +0.0 canonicalizes -0.0 so that both count as one value
        keys, counts = np.unique(v + 0.0, return_counts=True)
        return cls(keys, counts.astype(np.int64), True, limit, error)

    @property
    def n(self) -> int:
        """Number of values summarized."""
        return int(self.counts.sum())

    # ---- buckets --------------------------------------------------------------
    def _gamma(self) -> float:
        return (1.0 + self.error) / (1.0 - self.error)

    def _bucket(self, v: np.ndarray) -> np.ndarray:
        lg = math.log(self._gamma())
        out = np.zeros(v.shape, dtype=np.int64)
        nz = v != 0
        with np.errstate(divide="ignore"):
            k = np.ceil(np.log(np.abs(v[nz])) / lg).astype(np.int64) + _OFFSET
        out[nz] = np.where(v[nz] > 0, k, -k)
        return out

    def _to_buckets(self) -> None:
        keys = self._bucket(self.keys)
        self.keys, self.counts = sum_by_key(keys, self.counts)
        self.exact = False

    def representatives(self) -> np.ndarray:
        """The value standing for each key (the value itself in exact mode)."""
        if self.exact:
            return self.keys
        g = self._gamma()
        k = np.abs(self.keys)
        mag = np.where(k == 0, 0.0, 2.0 * np.power(g, (k - _OFFSET).astype(np.float64)) / (g + 1.0))
        return np.where(self.keys < 0, -mag, mag)

    # ---- merging ----------------------------------------------------------------
    def merge(self, other: "ColumnSketch") -> "ColumnSketch":
        """The summary of both multisets (exact if the union has at most ``limit`` values)."""
        a, b = self, other
        if a.exact != b.exact:
            a, b = (a._copy_as_buckets() if a.exact else a), (b._copy_as_buckets() if b.exact else b)
        keys, counts = sum_by_key(np.concatenate([a.keys, b.keys]),
                                   np.concatenate([a.counts, b.counts]))
        return ColumnSketch(keys, counts, a.exact, self.limit, self.error)

    def _copy_as_buckets(self) -> "ColumnSketch":
        c = ColumnSketch(self.keys, self.counts, True, self.limit, self.error)
        c._to_buckets()
        return c

    # ---- queries -----------------------------------------------------------------
    def quantile(self, q: float) -> float:
        """The ``q`` quantile (NumPy "linear" definition); NaN if there are no values."""
        n = self.n
        if n == 0:
            return float("nan")
        vals = self.representatives()
        cum = np.cumsum(self.counts)
        p = q * (n - 1)
        lo = int(math.floor(p))
        hi = min(lo + 1, n - 1)
        t = p - lo
        a = float(vals[np.searchsorted(cum, lo, side="right")])
        b = float(vals[np.searchsorted(cum, hi, side="right")])
        # NumPy's _lerp: the same formula so exact results agree to the last bits
        diff = b - a
        return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def sum_by_key(keys: np.ndarray, counts: np.ndarray):
    """Sorted distinct keys and the sum of the counts of each."""
    if len(keys) == 0:
        return keys, counts.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    start = np.concatenate([[True], keys[1:] != keys[:-1]])
    idx = np.flatnonzero(start)
    return keys[idx], np.add.reduceat(counts, idx).astype(np.int64)


class QuantileState:
    """One :class:`ColumnSketch` per column of a 2-D array (NaN and ±inf ignored)."""

    def __init__(self, columns: list[ColumnSketch]):
        self.columns = columns

    @classmethod
    def of(cls, x: np.ndarray, limit=EXACT_LIMIT, error=SKETCH_ERROR) -> "QuantileState":
        x = np.asarray(x)
        return cls([ColumnSketch.of(x[:, j], limit, error) for j in range(x.shape[1])])

    def merge(self, other: "QuantileState") -> "QuantileState":
        return QuantileState([a.merge(b) for a, b in zip(self.columns, other.columns)])

    def quantiles(self, q: float) -> np.ndarray:
        """The ``q`` quantile of every column (NaN for a column without values)."""
        return np.array([c.quantile(q) for c in self.columns], dtype=np.float64)

    @property
    def exact(self) -> np.ndarray:
        """Per column: True if its quantiles are exact."""
        return np.array([c.exact for c in self.columns], dtype=bool)


def allmerge(comm, local, merge):
    """Merge one state per rank of ``comm``, in rank order; every rank gets the result.

    Only for states whose merge is exactly associative and commutative
    (integer counts, min/max, sets): the result does not depend on how the
    chunks were spread over ranks. ``None`` states (no chunks) are skipped.
    """
    states = [s for s in comm.allgather(local) if s is not None]
    if not states:
        return None
    out = states[0]
    for s in states[1:]:
        out = merge(out, s)
    return out


def fit_quantiles(comm, xs, limit=EXACT_LIMIT, error=SKETCH_ERROR) -> QuantileState | None:
    """Quantile state of the rows of every array in the iterable ``xs`` over all ranks of ``comm``."""
    local = None
    for x in xs:
        st = QuantileState.of(x, limit, error)
        local = st if local is None else local.merge(st)
    return allmerge(comm, local, lambda a, b: a.merge(b))
