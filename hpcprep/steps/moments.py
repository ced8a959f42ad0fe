"""Mergeable per-column moments ``(n, mean, M2)`` in float64 (Chan–Golub–LeVeque).

Non-finite policy (docs/steps.md): NaN and ±inf are ignored in fit, as
scikit-learn's scalers ignore NaN (each column counts its own finite values).
A fitted statistic that still is not finite (float64 overflow) is an error:
:func:`check_fitted`.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import FitError


#: Bytes of float64 work buffer per block of rows in :meth:`Moments.of` (about an L2 cache).
_BLOCK_BYTES = 1 << 20


def _blocked_ok(x) -> bool:
    """True where the blocked sums of :meth:`Moments._of_blocked` equal NumPy's one-shot sums.

    NumPy adds the rows of a C-ordered array with at least two columns one by one
    (axis-0 reduction); a single column or another memory order reduces pairwise,
    so those keep the one-shot formulas.
    """
    return (x.shape[1] >= 2 and x.flags.c_contiguous and x.dtype.kind in "fiub"
            and x.shape[0] > max(1, _BLOCK_BYTES // (8 * x.shape[1])))


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

        ``x`` may be a NumPy or a CuPy array: the same formulas run on its
        device and only the ``3 * d`` results come back. GPU sums reduce in
        another order, so they agree with the CPU to a few ulps, not bit for bit.
        """
        from ..kernels._util import to_host
        from ..kernels.xp import array_module

        xp = array_module(x)
        if x.ndim != 2:
            raise ValueError(f"moments need a 2-D array, got shape {x.shape}")
        if xp is np and _blocked_ok(x):
            with np.errstate(all="ignore"):
                m = cls._of_blocked(x, np.isnan)
                if not (np.isfinite(m.mean).all() and np.isfinite(m.m2).all()):
                    # an infinity (or an overflow): again, leaving out every non-finite value
                    m = cls._of_blocked(x, _not_finite)
            return m
        x = x.astype(xp.float64, copy=False)
        finite = xp.isfinite(x)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: check_fitted says it once
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

    @classmethod
    def _of_blocked(cls, x: np.ndarray, skip) -> "Moments":
        """:meth:`of` for a C-ordered NumPy array, a block of rows at a time (bit for bit the same).

        ``skip(a, out=mask)`` flags the values to leave out: ``np.isnan`` is
        enough (and cheaper) while the data holds no infinity; the result of a
        column with one is not finite, and :meth:`of` runs again with
        :func:`_not_finite`.

        NumPy sums the rows of a C-ordered ``(n, d >= 2)`` array one after the other
        into the ``d`` column totals. Each block here is summed the same way with the
        running totals as its first row, so every total sees the same additions in
        the same order as the one-shot formulas, without their full-size float64
        temporaries (the float64 copy, the NaN mask, ``x - mean``, its square).
        """
        rows, d = x.shape
        b = max(1, _BLOCK_BYTES // (8 * d))
        buf = np.empty((b + 1, d))
        nan = np.empty((b, d), dtype=bool)
        missing = np.zeros(d, dtype=np.int64)
        blocks_with_nan = []
        total = None
        for s in range(0, rows, b):
            k = min(b, rows - s)
            at = 0 if total is None else 1
            body = buf[at:at + k]
            body[...] = x[s:s + k]
            m = skip(body, out=nan[:k])
            if m.any():
                missing += m.sum(axis=0)
                body[m] = 0.0  # as np.where(finite, x, 0.0)
                blocks_with_nan.append(s)
            if at:
                buf[0] = total
            total = buf[:at + k].sum(axis=0)
        if blocks_with_nan:
            n = (rows - missing).astype(np.float64)
        else:
            n = np.full(d, float(rows))
        mean = total / np.maximum(n, 1)
        with_nan = set(blocks_with_nan)
        m2 = None
        for s in range(0, rows, b):
            k = min(b, rows - s)
            at = 0 if m2 is None else 1
            body = buf[at:at + k]
            body[...] = x[s:s + k]
            if s in with_nan:
                m = skip(body, out=nan[:k])
            body -= mean
            np.square(body, out=body)
            if s in with_nan:
                body[m] = 0.0  # as np.where(finite, x - mean, 0.0) ** 2
            if at:
                buf[0] = m2
            m2 = buf[:at + k].sum(axis=0)
        return cls(n, mean, m2)

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


def _not_finite(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``~np.isfinite(a)`` into ``out`` (the mask of :meth:`Moments._of_blocked`)."""
    np.isfinite(a, out=out)
    return np.logical_not(out, out=out)


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
