"""``scale``: standardize features with global statistics."""

import warnings

import numpy as np

from ..errors import ConfigError
from ..kernels.transform import multiply_add, scale_clip
from ..schema import Param, list_of
from .base import Step, register_step
from .moments import Moments, check_fitted
from .sketch import fit_quantiles, sketch_params


def _range_check(v):
    if len(v) != 2 or list_of(int, float)(v):
        return "expected two numbers [low, high]"
    return None if v[0] < v[1] else "low must be < high"


@register_step
class Scale(Step):
    """Scale features with statistics fitted over the whole layer.

    ``method = "standard"``: ``(x - mean) / std`` with the population std
    (ddof = 0, as scikit-learn's ``StandardScaler``); a feature with zero
    variance gets std 1 and a warning. NaN and ±inf are ignored in fit and
    kept by the transform (±inf stays ±inf).

    ``method = "minmax"``: ``x * scale + min`` mapping the global
    ``[data_min, data_max]`` onto ``feature_range`` (default ``[0, 1]``), as
    scikit-learn's ``MinMaxScaler`` (a constant feature gets scale 1).

    ``method = "robust"``: ``(x - median) / (q_hi - q_lo)`` with the global
    quantiles of ``quantile_range`` (percent, default ``[25, 75]``), as
    scikit-learn's ``RobustScaler`` (a zero range gets scale 1). Quantiles are
    exact while a column has at most ``exact_limit`` distinct values, else
    within a relative ``sketch_error`` (see :mod:`hpcprep.steps.sketch`).

    Every method ignores NaN and ±inf in fit. A fitted statistic that is not
    finite (mean, std, data range or quantile range beyond float64, e.g. values
    near 1e308) is an error naming the step and the column.
    """

    op = "scale"
    needs_fit = True
    changes_values = True
    methods = ("standard", "minmax", "robust")
    params = {
        "method": Param(str, "standard", choices=methods, doc="scaling method"),
        "feature_range": Param(list, [0.0, 1.0], check=_range_check, doc="minmax: target range"),
        "quantile_range": Param(list, [25.0, 75.0], check=_range_check,
                                doc="robust: percentiles of the scale"),
        **sketch_params("robust"),
    }

    def __init__(self, **config):
        super().__init__(**config)
        lo, hi = config["quantile_range"]
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"scale.quantile_range = {config['quantile_range']}: need "
                              f"0 <= low < high <= 100")
        self.method = config["method"]

    def describe(self):
        return f"scale ({self.method})"

    # ---- fit --------------------------------------------------------------------
    def fit_layer(self, ctx, chunks):
        if self.method == "robust":
            self.set_fitted(fit_quantiles(ctx.comm, (c.features for c in chunks),
                                          self.config["exact_limit"], self.config["sketch_error"]))
        else:
            super().fit_layer(ctx, chunks)

    def fit_chunk(self, chunk):
        if self.method == "minmax":
            return _finite_min_max(chunk.features)
        return Moments.of(chunk.features)

    def merge_states(self, a, b):
        if self.method == "minmax":
            return np.fmin(a[0], b[0]), np.fmax(a[1], b[1])
        return a.merge(b)

    def set_fitted(self, state):
        if self.method == "minmax":
            return self._fit_minmax(state)
        if self.method == "robust":
            return self._fit_robust(state)
        d = len(self.feature_names_in_)
        if state is None:
            state = Moments(np.zeros(d), np.zeros(d), np.zeros(d))
        std = state.std
        check_fitted(self, seen=state.n, mean=state.mean, std=std)
        self.n_samples_seen_ = state.n
        self.mean_ = np.where(state.n > 0, state.mean, 0.0)
        constant = ~(std > 0)
        if constant.any() and state.n.max() > 0:
            names = [self.feature_names_in_[i] for i in np.flatnonzero(constant)]
            warnings.warn(f"scale: zero variance in feature(s) {', '.join(names)}; using std 1",
                          RuntimeWarning, stacklevel=2)
        self.scale_ = np.where(constant, 1.0, std)
        self.var_ = np.where(constant, 0.0, state.var)

    def _fit_minmax(self, state):
        d = len(self.feature_names_in_)
        lo, hi = state if state is not None else (np.full(d, np.nan), np.full(d, np.nan))
        a, b = (float(v) for v in self.config["feature_range"])
        self.data_min_, self.data_max_ = lo, hi
        with np.errstate(over="ignore"):
            rng = hi - lo
        check_fitted(self, range=rng)
        rng = np.where(np.isnan(rng) | (rng == 0), 1.0, rng)  # scikit-learn's _handle_zeros_in_scale
        self.scale_ = (b - a) / rng
        self.min_ = np.where(np.isnan(lo), a, a - lo * self.scale_)

    def _fit_robust(self, state):
        d = len(self.feature_names_in_)
        lo_q, hi_q = (float(v) / 100.0 for v in self.config["quantile_range"])
        if state is None:
            center, q_lo, q_hi, self.exact_ = (np.full(d, np.nan),) * 3 + (np.ones(d, bool),)
        else:
            center, q_lo, q_hi = state.quantiles(0.5), state.quantiles(lo_q), state.quantiles(hi_q)
            self.exact_ = state.exact
        self.center_ = np.where(np.isnan(center), 0.0, center)
        with np.errstate(over="ignore"):
            rng = q_hi - q_lo
        check_fitted(self, **{"quantile range": rng})
        self.scale_ = np.where(np.isnan(rng) | (rng == 0), 1.0, rng)

    # ---- apply ------------------------------------------------------------------
    def apply(self, chunk):
        x = chunk.features
        if self.method == "minmax":
            y = multiply_add(x, self.scale_, self.min_, dtype=x.dtype)
        else:
            center = self.center_ if self.method == "robust" else self.mean_
            y = scale_clip(x, center, self.scale_, dtype=x.dtype)
        return chunk.with_features(y), {}

    def stats(self):
        if self.method == "minmax":
            return {"data_min": self.data_min_, "data_max": self.data_max_, "scale": self.scale_,
                    "min": self.min_}
        if self.method == "robust":
            return {"center": self.center_, "scale": self.scale_, "exact": self.exact_}
        return {"mean": self.mean_, "std": self.scale_, "n": self.n_samples_seen_}

    def set_stats(self, stats):
        if self.method == "minmax":
            self.data_min_, self.data_max_ = stats["data_min"], stats["data_max"]
            self.scale_, self.min_ = stats["scale"], stats["min"]
        elif self.method == "robust":
            self.center_, self.scale_, self.exact_ = stats["center"], stats["scale"], stats["exact"]
        else:
            self.mean_, self.scale_, self.n_samples_seen_ = stats["mean"], stats["std"], stats["n"]


def _finite_min_max(x):
    """Per column ``(min, max)`` of the finite values of ``x`` as float64 (NaN: no finite value)."""
    d = x.shape[1]
    if not len(x):
        return np.full(d, np.nan), np.full(d, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        lo, hi = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
        if np.isinf(lo).any() or np.isinf(hi).any():  # ±inf is left out like NaN
            x = np.where(np.isfinite(x), x, np.nan)
            lo, hi = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
    return lo.astype(np.float64), hi.astype(np.float64)
