"""Mergeable per-column moments ``(n, mean, M2)`` on either device."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..steps.moments import Moments


def moments_of(x) -> "Moments":
    """Per-column count, mean and M2 of a 2-D array, in float64, NaNs ignored.

    On NumPy this is :meth:`hpcprep.steps.moments.Moments.of`. On CuPy the same
    formulas run on the device and only the ``3 * d`` results come back, so the
    state merges (Chan–Golub–LeVeque, :meth:`Moments.merge`) and allreduces as
    on the CPU. Sums are reduced in a different order on the GPU, so the floats
    agree to a few ulps, not bit for bit.

    Parameters
    ----------
    x : array, shape (n, d)
        NumPy or CuPy, any real dtype.

    Returns
    -------
    Moments
        With host NumPy float64 arrays of shape (d,).
    """
    from ..steps.moments import Moments   # here, not at import: hpcprep.steps may import kernels

    return Moments.of(x)
