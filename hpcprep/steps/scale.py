"""``scale``: standardize features with global statistics."""

import warnings

import numpy as np

from ..schema import Param
from .base import Step, register_step
from .moments import Moments


@register_step
class Scale(Step):
    """Scale features with statistics fitted over the whole layer.

    ``method = "standard"``: ``(x - mean) / std`` with the population std
    (ddof = 0, as scikit-learn's ``StandardScaler``); a feature with zero
    variance gets std 1 and a warning. NaNs are ignored in fit and kept.
    """

    op = "scale"
    needs_fit = True
    methods = ("standard",)
    params = {
        "method": Param(str, "standard", choices=methods, doc="scaling method"),
    }

    def fit_chunk(self, chunk):
        return Moments.of(chunk.features)

    def merge_states(self, a, b):
        return a.merge(b)

    def set_fitted(self, state):
        d = len(self.feature_names_in_)
        if state is None:
            state = Moments(np.zeros(d), np.zeros(d), np.zeros(d))
        self.n_samples_seen_ = state.n
        self.mean_ = np.where(state.n > 0, state.mean, 0.0)
        std = state.std
        constant = ~(std > 0)
        if constant.any() and state.n.max() > 0:
            names = [self.feature_names_in_[i] for i in np.flatnonzero(constant)]
            warnings.warn(f"scale: zero variance in feature(s) {', '.join(names)}; using std 1",
                          RuntimeWarning, stacklevel=2)
        self.scale_ = np.where(constant, 1.0, std)
        self.var_ = np.where(constant, 0.0, state.var)

    def apply(self, chunk):
        x = (chunk.features.astype(np.float64) - self.mean_) / self.scale_
        return chunk.with_features(x.astype(chunk.features.dtype, copy=False)), {}

    def stats(self):
        return {"mean": self.mean_, "std": self.scale_, "n": self.n_samples_seen_}
