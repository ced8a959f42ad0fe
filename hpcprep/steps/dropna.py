"""``dropna``: drop rows with a missing (NaN) value."""

import numpy as np

from ..schema import Param, list_of
from ._columns import categorical_column, categorical_names, split_columns
from .base import Step, drop_rows, register_step


@register_step
class DropNA(Step):
    """Drop every row with a missing value in the chosen columns (default: all) or the label.

    Config: ``{ op = "dropna", columns = ["a", "b"] }``; ``columns`` absent or
    empty means every feature, every raw categorical column and a float label.
    A numeric value is missing when NaN; a categorical one when ``""``.
    ``label = false`` skips the check of the label.
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
        x = chunk.features if self.columns_ is None else chunk.features[:, self.columns_]
        bad = _nan_rows(x) if x.shape[1] else np.zeros(len(chunk), bool)
        if self.config["label"] and chunk.labels is not None and chunk.labels.dtype.kind == "f":
            bad |= np.isnan(chunk.labels)
        cats = categorical_names(chunk) if self.categorical_ is None else self.categorical_
        for name in cats:
            bad |= categorical_column(chunk, name, "dropna", self.feature_names_in_) == ""
        return bad

    def apply(self, chunk):
        out, dropped, _ = self.apply_rejects(chunk)
        return out, dropped

    def apply_rejects(self, chunk):
        return drop_rows(chunk, {"missing value": self._bad(chunk)})


def _nan_rows(x):
    """``np.isnan(x).any(axis=1)``, a block of rows at a time (no full-size mask)."""
    if x.dtype.kind != "f":
        return np.isnan(x).any(axis=1)
    n, d = x.shape
    out = np.empty(n, dtype=bool)
    step = max(1, (1 << 16) // d)
    mask = np.empty((min(step, n), d), dtype=bool)
    for s in range(0, n, step):
        k = min(step, n - s)
        np.any(np.isnan(x[s:s + k], out=mask[:k]), axis=1, out=out[s:s + k])
    return out
