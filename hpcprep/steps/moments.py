"""Mergeable per-column moments ``(n, mean, M2)`` in float64 (Chan–Golub–LeVeque).

Non-finite policy (docs/steps.md): NaN and ±inf are ignored in fit, as
scikit-learn's scalers ignore NaN (each column counts its own finite values).
A fitted statistic that still is not finite (float64 overflow) is an error:
:func:`check_fitted`.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import FitError
from ..kernels.moments import BLOCK_BYTES, moments_of


#: Rows per block of the NumPy moments kernel, in bytes of float64 work buffer (tests size by it).
_BLOCK_BYTES = BLOCK_BYTES


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
        """Moments of the columns of a 2-D array (NaN and ±inf ignored), as host float64 arrays.

        The arithmetic is :func:`hpcprep.kernels.moments.moments_of` (NumPy or
        CuPy ``x``; the GPU's sums agree with the CPU's to a few ulps).
        """
        return cls(*moments_of(x))

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


def check_fitted(step, seen=None, **stats) -> None:
    """Raise if a fitted statistic of ``step`` is not finite.

    Parameters
    ----------
    step : Step
        The fitted step: its label (``step.where``, e.g. ``standardize[0].steps[3]``),
        op and ``feature_names_in_`` name the error.
    seen : ndarray, shape (d,), optional
        Values fitted per column: a column without any may have a NaN
        statistic. Without it, NaN entries are skipped and only ±inf is an error.
    **stats : ndarray, shape (d,)
        The statistics to check, by name (``mean=..., std=...``).

    Raises
    ------
    FitError
        Naming the step, the statistic and the first column where it is not finite.
    """
    for what, v in stats.items():
        v = np.asarray(v, dtype=np.float64)
        bad = np.isinf(v) if seen is None else ~np.isfinite(v) & (np.asarray(seen) > 0)
        bad = np.flatnonzero(bad)
        if len(bad):
            j = int(bad[0])
            names = step.feature_names_in_
            col = repr(names[j]) if j < len(names) else f"#{j}"
            more = f" (and {len(bad) - 1} more column(s))" if len(bad) > 1 else ""
            label = f"{step.where} {step.op}" if getattr(step, "where", "") else step.op
            raise FitError(f"{label}: the fitted {what} of feature {col} is not finite "
                            f"({v[j]}){more}: its values are too large for float64 statistics; "
                            f"rescale the column, drop it, or drop its extreme rows before this step")
