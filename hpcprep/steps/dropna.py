"""``dropna``: drop rows with a missing (NaN) or non-finite (±inf) value."""

import numpy as np

from ..schema import Param, list_of
from ._columns import categorical_column, categorical_names, split_columns
from .base import Step, drop_rows, register_step


@register_step
class DropNA(Step):
    """Drop every row with a missing or non-finite value in the chosen columns (default: all) or the label.

    Config: ``{ op = "dropna", columns = ["a", "b"] }``; ``columns`` absent or
    empty means every feature, every raw categorical column and a float label.
    A numeric value is missing when NaN; a categorical one when ``""``. Rows
    with a missing value are counted under ``"missing value"``, the others with
    a ±inf under ``"non-finite value"``. ``label = false`` skips the check of
    the label.
    """

    op = "dropna"
    params = {
        "columns": Param(list, [], check=list_of(str, int),
                         doc="feature names, indices or categorical names to check; empty = all"),
        "label": Param(bool, True, doc="also drop rows whose (float) label is NaN"),
    }

    def bind(self, feature_names):
        names = super().bind(feature_names)
        self.columns_, self.categorical_ = split_columns(self.config["columns"], feature_names,
                                                         "dropna")
        return names

    def _bad(self, chunk):
        """Masks of the rows to drop: ``{"missing value": ..., "non-finite value": ...}``."""
        x = chunk.features if self.columns_ is None else chunk.features[:, self.columns_]
        bad = _nonfinite_rows(x) if x.shape[1] else np.zeros(len(chunk), bool)
        missing = np.zeros(len(chunk), bool)
        rows = np.flatnonzero(bad)
        if len(rows):  # few rows: tell NaN from ±inf on them only
            missing[rows] = np.isnan(x[rows]).any(axis=1)
        y = chunk.labels
        if self.config["label"] and y is not None and y.dtype.kind == "f":
            missing |= np.isnan(y)
            bad |= np.isinf(y)
        cats = categorical_names(chunk) if self.categorical_ is None else self.categorical_
        for name in cats:
            missing |= categorical_column(chunk, name, "dropna", self.feature_names_in_) == ""
        return {"missing value": missing, "non-finite value": bad}

    def apply(self, chunk):
        out, dropped, _ = self.apply_rejects(chunk)
        return out, dropped

    def apply_rejects(self, chunk):
        return drop_rows(chunk, self._bad(chunk))


def _nonfinite_rows(x):
    """``~np.isfinite(x).all(axis=1)``, a block of rows at a time (no full-size mask)."""
    if x.dtype.kind != "f":
        return ~np.isfinite(x).all(axis=1)
    n, d = x.shape
    out = np.empty(n, dtype=bool)
    step = max(1, (1 << 16) // d)
    mask = np.empty((min(step, n), d), dtype=bool)
    for s in range(0, n, step):
        k = min(step, n - s)
        np.all(np.isfinite(x[s:s + k], out=mask[:k]), axis=1, out=out[s:s + k])
    return np.logical_not(out, out=out)
