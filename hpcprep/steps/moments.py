"""Mergeable per-column moments ``(n, mean, M2)`` in float64 (Chan–Golub–LeVeque).

NaN policy, as scikit-learn's scalers: NaNs are ignored in fit (each column
counts its own non-missing values).
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of each column.

    Attributes
    ----------
    n : ndarray of float64, shape (d,)
        Non-missing values seen per column.
    mean : ndarray of float64, shape (d,)
    m2 : ndarray of float64, shape (d,)
        Sum of squared deviations from the mean.
    """

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, x) -> "Moments":
        """Moments of the columns of a 2-D array (NaNs ignored), as host float64 arrays.

        ``x`` may be a NumPy or a CuPy array: the same formulas run on its
        device and only the ``3 * d`` results come back. GPU sums reduce in
        another order, so they agree with the CPU to a few ulps, not bit for bit.
        """
        from ..kernels._util import to_host
        from ..kernels.xp import array_module

        xp = array_module(x)
        if x.ndim != 2:
            raise ValueError(f"moments need a 2-D array, got shape {x.shape}")
        x = x.astype(xp.float64, copy=False)
        finite = ~xp.isnan(x)
        if bool(finite.all()):
            n = xp.full(x.shape[1], float(x.shape[0]))
            mean = x.sum(axis=0) / xp.maximum(n, 1)
            m2 = ((x - mean) ** 2).sum(axis=0)
        else:
            n = finite.sum(axis=0).astype(xp.float64)
            xz = xp.where(finite, x, 0.0)
            mean = xz.sum(axis=0) / xp.maximum(n, 1)
            m2 = (xp.where(finite, x - mean, 0.0) ** 2).sum(axis=0)
        return cls(*(np.asarray(to_host(a), dtype=np.float64) for a in (n, mean, m2)))

    def merge(self, other: "Moments") -> "Moments":
        """Chan–Golub–LeVeque combination of two sets of moments."""
        n = self.n + other.n
        safe = np.maximum(n, 1)
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / safe)
        m2 = self.m2 + other.m2 + delta * delta * (self.n * other.n / safe)
        return Moments(n, mean, m2)

    @property
    def var(self) -> np.ndarray:
        """Population variance (ddof = 0), NaN where a column has no values."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.m2 / self.n, np.nan)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)
