"""``dropna``: drop rows with a missing (NaN) value."""

import numpy as np

from ..schema import Param, list_of
from .base import Step, register_step


@register_step
class DropNA(Step):
    """Drop every row with a NaN in the chosen feature columns (default: all) or the label.

    Config: ``{ op = "dropna", columns = ["a", "b"] }``; ``columns`` absent or
    empty means every feature.
    """

    op = "dropna"
    params = {
        "columns": Param(list, [], check=list_of(str, int),
                         doc="feature names or indices to check; empty = all"),
    }

    def bind(self, feature_names):
        names = super().bind(feature_names)
        self.columns_ = _resolve_columns(self.config["columns"], feature_names, "dropna")
        return names

    def apply(self, chunk):
        x = chunk.features if self.columns_ is None else chunk.features[:, self.columns_]
        bad = np.isnan(x).any(axis=1) if x.shape[1] else np.zeros(len(chunk), bool)
        if chunk.labels is not None and chunk.labels.dtype.kind == "f":
            bad |= np.isnan(chunk.labels)
        n_bad = int(bad.sum())
        if n_bad == 0:
            return chunk, {}
        return chunk.take(~bad), {"missing value": n_bad}


def _resolve_columns(columns, feature_names, op):
    """Indices of ``columns`` (names or ints) in ``feature_names``; None for all."""
    from ..errors import ConfigError

    if not columns:
        return None
    idx = []
    for c in columns:
        if isinstance(c, int):
            if not 0 <= c < len(feature_names):
                raise ConfigError(f"{op}.columns: index {c} out of range 0..{len(feature_names) - 1}")
            idx.append(c)
        elif c in feature_names:
            idx.append(feature_names.index(c))
        else:
            raise ConfigError(f"{op}.columns: no feature named {c!r}; features: {', '.join(feature_names)}")
    return np.array(idx, dtype=np.intp)
