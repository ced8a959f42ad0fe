"""``reduce``: PCA from a global covariance, keeping the fewest components within a tolerance."""

from dataclasses import dataclass

import numpy as np

from ..errors import FitError
from ..schema import Param, fraction
from ._columns import names_array
from .base import Step, register_step
from .moments import check_fitted


@dataclass
class CovState:
    """Count, mean and co-moment matrix ``sum (x - mean)(x - mean)^T`` of complete rows."""

    n: float
    mean: np.ndarray
    c: np.ndarray
    n_missing: int

    @classmethod
    def of(cls, x) -> "CovState":
        x = np.asarray(x, dtype=np.float64)
        ok = np.isfinite(x).all(axis=1) if x.size else np.ones(len(x), bool)
        bad = len(x) - int(ok.sum())
        d = x.shape[1]
        if bad:
            x = x[ok]
        n = float(len(x))
        if n == 0:
            return cls(0.0, np.zeros(d), np.zeros((d, d)), bad)
        mean = x.sum(axis=0) / n
        xc = x - mean
        return cls(n, mean, xc.T @ xc, bad)

    def merge(self, o: "CovState") -> "CovState":
        n = self.n + o.n
        if n == 0:
            return CovState(0.0, self.mean, self.c + o.c, self.n_missing + o.n_missing)
        delta = o.mean - self.mean
        mean = self.mean + delta * (o.n / n)
        c = self.c + o.c + np.outer(delta, delta) * (self.n * o.n / n)
        return CovState(n, mean, c, self.n_missing + o.n_missing)


@register_step
class Reduce(Step):
    """Project the features onto their leading principal components.

    Config: ``{ op = "reduce", tolerance = 0.01 }``.

    Fit merges per-chunk ``(n, mean, co-moment matrix)`` in chunk-id order
    (Chan's update generalized to d×d; one ``allgather`` of d×d per chunk),
    so the covariance and the components are the same for every layout.
    The components are the eigenvectors of the covariance, in decreasing
    eigenvalue order, each signed so that its largest-magnitude entry is
    positive (scikit-learn's ``svd_flip`` convention). The step keeps the
    fewest ``k`` components whose relative reconstruction error on the
    centered data, ``sum(lambda[k:]) / sum(lambda)`` (the squared Frobenius
    norm of the residual over that of the centered data), is ``<= tolerance``.
    Output features ``pc0 .. pc{k-1}`` are ``(x - mean) @ components.T``.
    Missing values are not allowed (put ``dropna`` or ``impute`` first): a row
    with a NaN or ±inf is an error naming the count, and so is a mean or
    variance that is not finite (float64 overflow), naming the column.
    """

    op = "reduce"
    needs_fit = True
    changes_values = True
    params = {
        "tolerance": Param(float, 0.01, check=fraction,
                           doc="largest allowed relative reconstruction error"),
    }

    def fit_chunk(self, chunk):
        return CovState.of(chunk.features)

    def merge_states(self, a, b):
        return a.merge(b)

    def set_fitted(self, state):
        d = len(self.feature_names_in_)
        if state is None:
            state = CovState(0.0, np.zeros(d), np.zeros((d, d)), 0)
        if state.n_missing:
            raise FitError(f"reduce: {state.n_missing} row(s) with missing values (NaN or ±inf) "
                            f"reach the step; put op = \"dropna\" or op = \"impute\" before it")
        self.n_samples_seen_ = state.n
        self.mean_ = state.mean
        cov = state.c / max(state.n, 1.0)
        check_fitted(self, seen=np.full(d, state.n), mean=state.mean, variance=np.diag(cov))
        w, v = np.linalg.eigh(cov)
        order = np.argsort(w, kind="stable")[::-1]
        w, v = np.clip(w[order], 0.0, None), v[:, order].T
        if d:
            big = np.argmax(np.abs(v), axis=1)
            v *= np.where(v[np.arange(d), big] < 0, -1.0, 1.0)[:, None]
        total = w.sum()
        # residual[k] = error when keeping k components
        residual = np.concatenate([total - np.cumsum(np.concatenate([[0.0], w]))[:-1], [0.0]])
        rel = residual / total if total > 0 else np.zeros(d + 1)
        k = int(np.flatnonzero(rel <= self.config["tolerance"])[0]) if d else 0
        k = max(k, 1) if d else 0
        self.explained_variance_ = w
        self.explained_variance_ratio_ = w / total if total > 0 else np.zeros(d)
        self.n_components_ = k
        self.components_ = v[:k]
        self.reconstruction_error_ = float(rel[k]) if d else 0.0
        self.feature_names_out_ = [f"pc{i}" for i in range(k)]

    def apply(self, chunk):
        x = (chunk.features.astype(np.float64) - self.mean_) @ self.components_.T
        return chunk.with_features(x.astype(chunk.features.dtype, copy=False)), {}

    def stats(self):
        return {"mean": self.mean_, "components": self.components_,
                "explained_variance": self.explained_variance_,
                "explained_variance_ratio": self.explained_variance_ratio_,
                "reconstruction_error": np.float64(self.reconstruction_error_),
                "n": np.float64(self.n_samples_seen_),
                "feature_names_in": names_array(self.feature_names_in_)}

    def set_stats(self, stats):
        self.mean_, self.components_ = stats["mean"], stats["components"]
        self.explained_variance_ = stats["explained_variance"]
        self.explained_variance_ratio_ = stats["explained_variance_ratio"]
        self.reconstruction_error_ = float(stats["reconstruction_error"])
        self.n_samples_seen_ = float(stats["n"])
        self.n_components_ = len(self.components_)
        self.feature_names_out_ = [f"pc{i}" for i in range(self.n_components_)]
