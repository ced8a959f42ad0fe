"""Mergeable per-column moments ``(n, mean, M2)`` on either device."""

from typing import TYPE_CHECKING

import numpy as np

from .xp import array_module
from ._util import is_cupy, to_host

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

    xp = array_module(x)
    if not is_cupy(xp):
        return Moments.of(x)
    if x.ndim != 2:
        raise ValueError(f"moments_of needs a 2-D array, got shape {x.shape}")
    x = x.astype(xp.float64, copy=False)
    finite = ~xp.isnan(x)
    if bool(finite.all()):
        n = xp.full(x.shape[1], float(x.shape[0]), dtype=xp.float64)
        mean = x.sum(axis=0) / xp.maximum(n, 1)
        m2 = ((x - mean) ** 2).sum(axis=0)
    else:
        n = finite.sum(axis=0).astype(xp.float64)
        xz = xp.where(finite, x, 0.0)
        mean = xz.sum(axis=0) / xp.maximum(n, 1)
        m2 = (xp.where(finite, x - mean, 0.0) ** 2).sum(axis=0)
    return Moments(to_host(n).astype(np.float64), to_host(mean), to_host(m2))
