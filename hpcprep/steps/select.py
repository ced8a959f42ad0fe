"""``select``: drop features that are mostly missing, (near) constant, or unrelated to the label."""

from dataclasses import dataclass

import numpy as np

from ..errors import DataError, FitError
from ..schema import Param, fraction, non_negative
from ._columns import names_array
from .base import Step, register_step
from .moments import Moments, check_fitted


@dataclass
class LabelMoments:
    """Per column: pairwise-complete co-moments of ``(x_j, label)`` (Chan–Golub–LeVeque merge)."""

    n: np.ndarray
    mx: np.ndarray
    my: np.ndarray
    sxx: np.ndarray
    syy: np.ndarray
    sxy: np.ndarray

    @classmethod
    def of(cls, x, y) -> "LabelMoments":
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)[:, None]
        ok = np.isfinite(x) & np.isfinite(y)
        n = ok.sum(axis=0).astype(np.float64)
        safe = np.maximum(n, 1)
        xz, yz = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
        mx, my = xz.sum(axis=0) / safe, yz.sum(axis=0) / safe
        dx, dy = np.where(ok, x - mx, 0.0), np.where(ok, y - my, 0.0)
        return cls(n, mx, my, (dx * dx).sum(axis=0), (dy * dy).sum(axis=0), (dx * dy).sum(axis=0))

    def merge(self, o: "LabelMoments") -> "LabelMoments":
        n = self.n + o.n
        safe = np.maximum(n, 1)
        dx, dy = o.mx - self.mx, o.my - self.my
        w = self.n * o.n / safe
        return LabelMoments(n, self.mx + dx * (o.n / safe), self.my + dy * (o.n / safe),
                            self.sxx + o.sxx + dx * dx * w, self.syy + o.syy + dy * dy * w,
                            self.sxy + o.sxy + dx * dy * w)

    @property
    def corr(self) -> np.ndarray:
        """Pearson correlation (pandas' ``Series.corr``); NaN where a variance is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            den = np.sqrt(self.sxx * self.syy)
            return np.where((den > 0) & (self.n > 1), self.sxy / np.where(den > 0, den, 1.0), np.nan)


@dataclass
class SelectState:
    rows: int
    missing: np.ndarray
    moments: Moments
    label: LabelMoments | None

    def merge(self, o: "SelectState") -> "SelectState":
        return SelectState(self.rows + o.rows, self.missing + o.missing, self.moments.merge(o.moments),
                           None if self.label is None else self.label.merge(o.label))


@register_step
class Select(Step):
    """Keep the features that pass three global tests; the kept names go to the output.

    Config::

        { op = "select", max_missing = 0.5, min_variance = 0.0, min_abs_corr = 0.05 }

    A feature is dropped if its fraction of missing values (NaN or ±inf) is
    ``> max_missing``, its population variance (NaN and ±inf ignored) is
    ``<= min_variance`` (with the
    default 0.0: constant features, as scikit-learn's ``VarianceThreshold``), or
    ``min_abs_corr > 0`` and its Pearson correlation with the label over the
    rows where both are present (pandas' ``Series.corr``) is below
    ``min_abs_corr`` in absolute value or undefined. The correlation test needs
    a label. Keeping no feature at all is an error, and so is a variance
    that is not finite (float64 overflow), naming the step and the column.
    """

    op = "select"
    needs_fit = True
    changes_values = True
    params = {
        "max_missing": Param(float, 0.5, check=fraction, doc="largest allowed missing fraction"),
        "min_variance": Param(float, 0.0, check=non_negative, doc="drop if variance <= this"),
        "min_abs_corr": Param(float, 0.0, check=fraction,
                              doc="drop if |corr(feature, label)| < this (0 = off)"),
    }

    def fit_chunk(self, chunk):
        label = None
        if self.config["min_abs_corr"] > 0:
            if chunk.labels is None:
                raise DataError("select: min_abs_corr needs a label (input.label)")
            label = LabelMoments.of(chunk.features, chunk.labels)
        missing = len(chunk) - np.isfinite(chunk.features).sum(axis=0)
        return SelectState(len(chunk), missing.astype(np.int64),
                           Moments.of(chunk.features), label)

    def merge_states(self, a, b):
        return a.merge(b)

    def set_fitted(self, state):
        d = len(self.feature_names_in_)
        if state is None:
            z = np.zeros(d)
            state = SelectState(0, np.zeros(d, np.int64), Moments(z, z, z), None)
        cfg = self.config
        self.missing_rate_ = state.missing / max(state.rows, 1)
        self.variance_ = state.moments.var
        check_fitted(self, seen=state.moments.n, variance=self.variance_)
        keep = self.missing_rate_ <= cfg["max_missing"]
        with np.errstate(invalid="ignore"):
            keep &= self.variance_ > cfg["min_variance"]
        self.corr_ = np.full(d, np.nan) if state.label is None else state.label.corr
        if cfg["min_abs_corr"] > 0:
            with np.errstate(invalid="ignore"):
                keep &= np.abs(self.corr_) >= cfg["min_abs_corr"]
        if d and not keep.any() and state.rows:
            raise FitError(f"select: no feature passes (max_missing = {cfg['max_missing']}, "
                            f"min_variance = {cfg['min_variance']}, min_abs_corr = "
                            f"{cfg['min_abs_corr']}); relax the thresholds")
        if not state.rows:
            keep = np.ones(d, dtype=bool)
        self.keep_ = keep
        self.feature_names_out_ = [n for n, k in zip(self.feature_names_in_, keep) if k]

    def apply(self, chunk):
        return chunk.with_features(np.ascontiguousarray(chunk.features[:, self.keep_])), {}

    def stats(self):
        return {"keep": self.keep_, "missing_rate": self.missing_rate_, "variance": self.variance_,
                "corr": self.corr_,
                "feature_names_in": names_array(self.feature_names_in_)}

    def set_stats(self, stats):
        self.keep_ = stats["keep"].astype(bool)
        self.missing_rate_, self.variance_, self.corr_ = (stats["missing_rate"], stats["variance"],
                                                          stats["corr"])
        self.feature_names_out_ = [n for n, k in zip(self.feature_names_in_, self.keep_) if k]
