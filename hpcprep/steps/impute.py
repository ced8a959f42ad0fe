"""``impute``: fill missing values with a global mean, median or constant, per column."""

import warnings

import numpy as np

from ..errors import ConfigError
from ..schema import Param, list_of
from ._columns import split_columns
from .base import Step, merge_by_chunk, register_step
from .moments import Moments, check_fitted
from .sketch import fit_quantiles, sketch_params

STRATEGIES = ("mean", "median", "constant")


def _check_per_column(table):
    if not isinstance(table, dict):
        return "expected a table { column = \"mean\" | \"median\" | <number> }"
    for name, v in table.items():
        if isinstance(v, bool) or not (isinstance(v, (int, float)) or v in ("mean", "median")):
            return (f"per_column.{name} = {v!r}: expected \"mean\", \"median\" or a number "
                    f"(the constant)")
    return None


@register_step
class Impute(Step):
    """Fill missing (NaN) and non-finite (±inf) values of numeric features with a global statistic.

    Config::

        { op = "impute", strategy = "median", columns = ["f0", "f1"],
          per_column = { f2 = "mean", f3 = -1.0 } }

    ``strategy`` applies to ``columns`` (default: every feature);
    ``per_column`` overrides it per feature (``"mean"``, ``"median"`` or a
    number, the constant). ``strategy = "constant"`` fills ``fill_value``.
    ±inf is filled like NaN. Statistics ignore NaN and ±inf (as
    scikit-learn's ``SimpleImputer`` ignores NaN); the mean is
    exact (Chan–Golub–LeVeque in float64), the median is exact while a column
    has at most ``exact_limit`` distinct values, else within a relative
    ``sketch_error`` (see :mod:`hpcprep.steps.sketch`). A column with no value
    at all is filled with ``fill_value`` and a warning (scikit-learn would
    drop it). A fitted mean that is not finite (float64 overflow) is an
    error naming the step and the column. The label is never imputed.
    """

    op = "impute"
    needs_fit = True
    changes_values = True
    params = {
        "strategy": Param(str, "mean", choices=STRATEGIES, doc="statistic of the chosen columns"),
        "columns": Param(list, [], check=list_of(str, int), doc="features to fill; empty = all"),
        "fill_value": Param(float, 0.0, doc="the constant, and the fill of an all-missing column"),
        "per_column": Param(dict, {}, check=_check_per_column,
                            doc="feature -> \"mean\" | \"median\" | number"),
        **sketch_params("median"),
    }

    def bind(self, feature_names):
        names = super().bind(feature_names)
        d = len(feature_names)
        idx, cats = split_columns(self.config["columns"], feature_names, "impute")
        if cats:
            raise ConfigError(f"impute.columns: no feature named {cats[0]!r}; features: "
                              f"{', '.join(feature_names)}")
        strategy = np.full(d, "", dtype=object)
        constant = np.full(d, self.config["fill_value"], dtype=np.float64)
        strategy[np.arange(d) if idx is None else idx] = self.config["strategy"]
        for name, v in self.config["per_column"].items():
            if name not in feature_names:
                raise ConfigError(f"impute.per_column: no feature named {name!r}; features: "
                                  f"{', '.join(feature_names)}")
            j = feature_names.index(name)
            if isinstance(v, str):
                strategy[j] = v
            else:
                strategy[j], constant[j] = "constant", float(v)
        self.strategy_ = strategy
        self._constant = constant
        return names

    def _cols(self, which):
        return np.flatnonzero(self.strategy_ == which)

    def fit_layer(self, ctx, chunks):
        med = self._cols("median")
        moments = {}

        def medians_of():
            for c in chunks:
                moments[c.chunk_id] = Moments.of(c.features)
                yield c.features[:, med]

        q = fit_quantiles(ctx.comm, medians_of(), self.config["exact_limit"],
                          self.config["sketch_error"])
        m = merge_by_chunk(ctx.comm, moments, lambda a, b: a.merge(b))
        self.set_fitted((m, q))

    def set_fitted(self, state):
        d = len(self.feature_names_in_)
        m, q = state if state is not None else (None, None)
        if m is None:
            m = Moments(np.zeros(d), np.zeros(d), np.zeros(d))
        fill = np.full(d, np.nan)
        mean_cols, med_cols, const_cols = self._cols("mean"), self._cols("median"), self._cols("constant")
        fill[mean_cols] = m.mean[mean_cols]
        if len(med_cols):
            fill[med_cols] = q.quantiles(0.5) if q is not None else np.nan
        fill[const_cols] = self._constant[const_cols]
        self.n_samples_seen_ = m.n
        self.columns_ = self.strategy_ != ""
        empty = self.columns_ & (m.n == 0) & (self.strategy_ != "constant")
        if empty.any():
            names = [self.feature_names_in_[i] for i in np.flatnonzero(empty)]
            warnings.warn(f"impute: no value in feature(s) {', '.join(names)}; filling "
                          f"{self.config['fill_value']}", RuntimeWarning, stacklevel=2)
            fill[empty] = self.config["fill_value"]
        self.statistics_ = np.where(self.columns_, fill, np.nan)
        check_fitted(self, seen=self.columns_, fill=self.statistics_)
        self.exact_ = np.ones(d, dtype=bool)
        if q is not None and len(med_cols):
            self.exact_[med_cols] = q.exact

    def apply(self, chunk):
        x = chunk.features
        nan = ~np.isfinite(x) & self.columns_
        if not nan.any():
            return chunk, {}
        x = x.copy()
        x[nan] = np.broadcast_to(self.statistics_, x.shape)[nan]
        return chunk.with_features(x), {}

    def stats(self):
        return {"fill": self.statistics_, "columns": self.columns_, "n": self.n_samples_seen_,
                "exact": self.exact_}

    def set_stats(self, stats):
        self.statistics_, self.columns_ = stats["fill"], stats["columns"].astype(bool)
        self.n_samples_seen_, self.exact_ = stats["n"], stats["exact"]
