"""``outliers``: drop or clip rows far from the bulk (global z-score or global quantiles)."""

import numpy as np

from ..errors import ConfigError, DataError
from ..kernels.transform import scale_clip
from ..schema import Param, fraction, list_of, positive
from ._columns import split_columns
from .base import Step, drop_rows, merge_by_chunk, register_step
from .moments import Moments, check_fitted
from .sketch import fit_quantiles, sketch_params


@register_step
class Outliers(Step):
    """Drop (or clip) values outside a range fitted over the whole layer.

    Config::

        { op = "outliers", method = "zscore", threshold = 5.0, action = "drop" }
        { op = "outliers", method = "quantile", q_lo = 0.01, q_hi = 0.99, action = "clip" }

    ``method = "zscore"``: the range of column j is
    ``mean_j ± threshold * std_j`` (global mean and population std, NaNs
    ignored); a column with zero or no variance has no outliers.
    ``method = "quantile"``: the range is the global ``[q_lo, q_hi]``
    quantiles (NumPy's linear definition; exact while a column has at most
    ``exact_limit`` distinct values, else within ``sketch_error`` relative).
    ``action = "drop"`` drops rows with a value outside the range in any of
    ``columns`` (default: all features), counted under ``"|z| > t"`` or
    ``"outside [q_lo, q_hi]"``; ``action = "clip"`` clips those values to the
    range and drops nothing. NaNs are never outliers and stay NaN. ±inf is
    left out of the fit (as NaN) and is outside every fitted range: dropped,
    or clipped to the range. A fitted mean or std that is not finite is an
    error naming the step and the column.
    """

    op = "outliers"
    needs_fit = True
    changes_values = True   # with action = "clip" (:meth:`replayed`)
    params = {
        "method": Param(str, "zscore", choices=("zscore", "quantile"), doc="how the range is fitted"),
        "threshold": Param(float, 3.0, check=positive, doc="zscore: largest allowed |z|"),
        "q_lo": Param(float, 0.01, check=fraction, doc="quantile: lower quantile"),
        "q_hi": Param(float, 0.99, check=fraction, doc="quantile: upper quantile"),
        "action": Param(str, "drop", choices=("drop", "clip"), doc="drop rows or clip values"),
        "columns": Param(list, [], check=list_of(str, int), doc="features checked; empty = all"),
        **sketch_params("quantile"),
    }

    def __init__(self, **config):
        super().__init__(**config)
        if config["q_lo"] >= config["q_hi"]:
            raise ConfigError(f"outliers: q_lo = {config['q_lo']} must be < q_hi = {config['q_hi']}")
        if config["method"] == "zscore":
            self.reason = f"|z| > {config['threshold']:g}"
        else:
            self.reason = f"outside [q{config['q_lo']:g}, q{config['q_hi']:g}]"

    def describe(self):
        return f"outliers ({self.config['method']}, {self.config['action']})"

    @classmethod
    def replayed(cls, config):
        return config["action"] == "clip"   # dropping rows is not replayed

    def bind(self, feature_names):
        names = super().bind(feature_names)
        idx, cats = split_columns(self.config["columns"], feature_names, "outliers")
        if cats:
            raise ConfigError(f"outliers.columns: no feature named {cats[0]!r}; features: "
                              f"{', '.join(feature_names)}")
        d = len(feature_names)
        self.columns_ = np.zeros(d, dtype=bool)
        self.columns_[np.arange(d) if idx is None else idx] = True
        return names

    def fit_layer(self, ctx, chunks):
        if self.config["method"] == "zscore":
            states = {c.chunk_id: Moments.of(c.features) for c in chunks}
            self.set_fitted(merge_by_chunk(ctx.comm, states, lambda a, b: a.merge(b)))
        else:
            self.set_fitted(fit_quantiles(ctx.comm, (c.features for c in chunks),
                                          self.config["exact_limit"], self.config["sketch_error"]))

    def set_fitted(self, state):
        d = len(self.feature_names_in_)
        if self.config["method"] == "zscore":
            m = state if state is not None else Moments(np.zeros(d), np.zeros(d), np.zeros(d))
            std = m.std
            check_fitted(self, seen=m.n * self.columns_, mean=m.mean, std=std)
            ok = self.columns_ & (std > 0)
            t = self.config["threshold"]
            self.mean_, self.std_ = m.mean, std
            lo, hi = m.mean - t * std, m.mean + t * std
            self.exact_ = np.ones(d, dtype=bool)
        else:
            if state is None:
                lo = hi = np.full(d, np.nan)
                self.exact_ = np.ones(d, dtype=bool)
            else:
                lo, hi = state.quantiles(self.config["q_lo"]), state.quantiles(self.config["q_hi"])
                self.exact_ = state.exact
            ok = self.columns_ & ~np.isnan(lo)
        self.lo_ = np.where(ok, lo, -np.inf)
        self.hi_ = np.where(ok, hi, np.inf)
        self._cuts = {}

    def _outside(self, x):
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.config["method"] == "zscore":
                ok = np.isfinite(self.lo_)
                z = (x[:, ok] - self.mean_[ok]) / self.std_[ok]
                return np.abs(z) > self.config["threshold"]
            return (x < self.lo_) | (x > self.hi_)

    def apply(self, chunk):
        out, dropped, _ = self.apply_rejects(chunk)
        return out, dropped

    def _cut(self, dtype):
        """Per column, values ``a, b`` of ``dtype`` with: a value ``v`` is outside iff ``v < a or v > b``.

        Being outside is decided in float64 (:meth:`_outside`): ``(v - mean) / std``
        against ``±threshold``, or ``v`` against ``[lo, hi]``. Each side is monotone
        in ``v`` (every operation rounds monotonically), so it holds beyond one
        value of ``dtype`` per side. That value is found by bisection over the
        ordered bit patterns of ``dtype``, evaluating the same float64 formula,
        so comparing the ``dtype`` values with ``a`` and ``b`` flags exactly the
        values the float64 test flags (NaN: never; infinities included).
        """
        dtype = np.dtype(dtype)
        cuts = self.__dict__.setdefault("_cuts", {})
        if dtype not in cuts:
            cuts[dtype] = self._find_cut(dtype)
        return cuts[dtype]

    def _find_cut(self, dtype):
        unsigned = {4: np.uint32, 8: np.uint64}[dtype.itemsize]
        sign = np.uint64(1) << np.uint64(8 * dtype.itemsize - 1)
        # ordered keys as uint64: z = key of ±0.0, z ± (bits of |v|); -inf = 1, +inf = 2 z - 1,
        # 0 and 2 z are the sentinels beyond them
        z = np.uint64(int(np.array(np.inf, dtype).view(unsigned))) + np.uint64(1)

        def value(k):  # ordered keys -> values of dtype, as float64
            up = k >= z
            u = np.where(up, k - np.where(up, z, k), sign | (z - np.where(up, z, k)))
            return u.astype(unsigned).view(dtype).astype(np.float64)

        d = len(self.lo_)
        if self.config["method"] == "zscore":
            cols = np.isfinite(self.lo_)
            mean, std = self.mean_[cols], self.std_[cols]
            t = self.config["threshold"]

            def above(v):
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    return (v - mean) / std > t

            def below(v):
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    return (v - mean) / std < -t
        else:
            cols = np.ones(d, dtype=bool)
            lo, hi = self.lo_, self.hi_

            def above(v):
                return v > hi

            def below(v):
                return v < lo

        m = int(cols.sum())
        one = np.uint64(1)
        # b: the largest key not above (-inf never is); a: the smallest key not below (+inf never is)
        keep, bad = np.full(m, one), np.full(m, 2 * z)  # -inf; beyond +inf ("above")
        keep = np.where(above(value(np.full(m, 2 * z - one))), keep, 2 * z - one)
        while (open_ := bad - keep > one).any():
            mid = keep + (bad - keep) // np.uint64(2)
            up = above(value(mid))
            bad = np.where(open_ & up, mid, bad)
            keep = np.where(open_ & ~up, mid, keep)
        b_key = keep
        keep, bad = np.full(m, 2 * z - one), np.full(m, np.uint64(0))  # +inf; beyond -inf ("below")
        keep = np.where(below(value(np.full(m, one))), keep, one)
        while (open_ := keep - bad > one).any():
            mid = keep - (keep - bad) // np.uint64(2)
            dn = below(value(mid))
            bad = np.where(open_ & dn, mid, bad)
            keep = np.where(open_ & ~dn, mid, keep)
        a_key = keep
        a = np.full(d, -np.inf, dtype=dtype)
        b = np.full(d, np.inf, dtype=dtype)
        a[cols] = value(a_key).astype(dtype)
        b[cols] = value(b_key).astype(dtype)
        return a, b

    def _outside_rows(self, x):
        """Rows of ``x`` with a value outside the fitted range (as ``_outside(x64).any(axis=1)``)."""
        if x.ndim != 2 or x.dtype not in (np.float32, np.float64):
            return self._outside(x.astype(np.float64)).any(axis=1)
        a, b = self._cut(x.dtype)
        n, d = x.shape
        out = np.empty(n, dtype=bool)
        step = max(1, (1 << 16) // max(d, 1))
        work = np.empty((min(step, n), d), dtype=bool)
        more = np.empty_like(work)
        for s in range(0, n, step):
            k = min(step, n - s)
            xb = x[s:s + k]
            w = np.less(xb, a, out=work[:k])
            w |= np.greater(xb, b, out=more[:k])
            np.any(w, axis=1, out=out[s:s + k])
        return out

    def apply_rejects(self, chunk):
        if self.config["action"] == "clip":
            x = chunk.features
            y = scale_clip(x, lo=self.lo_, hi=self.hi_, dtype=x.dtype)  # in float64; NaN stays NaN
            return chunk.with_features(y), {}, []
        return drop_rows(chunk, {self.reason: self._outside_rows(chunk.features)})

    def stats(self):
        out = {"lo": self.lo_, "hi": self.hi_, "columns": self.columns_,
               "clip": np.bool_(self.config["action"] == "clip"), "exact": self.exact_}
        if self.config["method"] == "zscore":
            out.update(mean=self.mean_, std=self.std_)
        return out

    def set_stats(self, stats):
        if bool(stats["clip"]) != (self.config["action"] == "clip"):
            raise DataError(f"outliers: stats say clip = {bool(stats['clip'])}, the config "
                            f"action = {self.config['action']!r}")
        self.lo_, self.hi_, self.exact_ = stats["lo"], stats["hi"], stats["exact"]
        self.columns_ = stats["columns"].astype(bool)
        if self.config["method"] == "zscore":
            self.mean_, self.std_ = stats["mean"], stats["std"]
        self._cuts = {}
