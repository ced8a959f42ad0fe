"""``outliers``: drop or clip rows far from the bulk (global z-score or global quantiles)."""

import numpy as np

from ..errors import ConfigError
from ..schema import Param, fraction, list_of, positive
from ._columns import split_columns
from .base import Step, drop_rows, merge_by_chunk, register_step
from .moments import Moments
from .sketch import EXACT_LIMIT, SKETCH_ERROR, fit_quantiles


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
    range and drops nothing. NaNs are never outliers and stay NaN.
    """

    op = "outliers"
    needs_fit = True
    params = {
        "method": Param(str, "zscore", choices=("zscore", "quantile"), doc="how the range is fitted"),
        "threshold": Param(float, 3.0, check=positive, doc="zscore: largest allowed |z|"),
        "q_lo": Param(float, 0.01, check=fraction, doc="quantile: lower quantile"),
        "q_hi": Param(float, 0.99, check=fraction, doc="quantile: upper quantile"),
        "action": Param(str, "drop", choices=("drop", "clip"), doc="drop rows or clip values"),
        "columns": Param(list, [], check=list_of(str, int), doc="features checked; empty = all"),
        "exact_limit": Param(int, EXACT_LIMIT, check=positive,
                             doc="quantile: distinct values per column kept exactly"),
        "sketch_error": Param(float, SKETCH_ERROR,
                              check=lambda v: None if 0 < v < 0.5 else "must be in (0, 0.5)",
                              doc="quantile: relative error beyond exact_limit"),
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

    def apply_rejects(self, chunk):
        x = chunk.features.astype(np.float64)
        if self.config["action"] == "clip":
            y = np.clip(x, self.lo_, self.hi_)  # NaN stays NaN
            return chunk.with_features(y.astype(chunk.features.dtype, copy=False)), {}, []
        return drop_rows(chunk, {self.reason: self._outside(x).any(axis=1)})

    def stats(self):
        out = {"lo": self.lo_, "hi": self.hi_, "columns": self.columns_,
               "clip": np.bool_(self.config["action"] == "clip"), "exact": self.exact_}
        if self.config["method"] == "zscore":
            out.update(mean=self.mean_, std=self.std_)
        return out
