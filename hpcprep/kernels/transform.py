"""Fused scale/clip transform: ``clip((x - mean) / scale, lo, hi)`` as float32."""

import numpy as np

from .xp import array_module
from ._util import is_cupy


def scale_clip(x, mean, scale, lo=None, hi=None, dtype=np.float32):
    """Standardize (and optionally clip) features in one pass.

    Computes ``v = (float64(x) - mean) / scale``; with ``lo``/``hi`` given,
    ``v`` is clipped to ``[lo, hi]`` (NaN stays NaN); the result is cast to
    ``dtype``. Every operation is an IEEE-rounded double subtraction, division
    or comparison followed by one rounding to ``dtype``, so NumPy and CuPy give
    bit-identical output.

    Parameters
    ----------
    x : array, shape (n, d)
        Features (NumPy or CuPy, any real dtype).
    mean, scale : array_like of float64, shape (d,) or scalar
        Fitted statistics (host arrays are moved to the device when needed).
    lo, hi : float or array_like, shape (d,), optional
        Clip bounds in standardized units; ``None`` means unbounded on that side.
    dtype : numpy dtype, default float32
        Output dtype (float32 or float64).

    Returns
    -------
    array of ``dtype``, shape (n, d)
        Same array module as ``x``.
    """
    xp = array_module(x)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"scale_clip: output dtype must be floating, got {dtype}")
    clip = lo is not None or hi is not None
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    if not is_cupy(xp):
        v = (np.asarray(x).astype(np.float64) - np.asarray(mean, np.float64)) / np.asarray(scale, np.float64)
        if clip:
            v = np.clip(v, np.asarray(lo, np.float64), np.asarray(hi, np.float64))
        return v.astype(dtype, copy=False)
    from .gpu import scale_clip_kernel

    def dev(a):
        return xp.asarray(a, dtype=xp.float64)

    y = xp.empty(x.shape, dtype=dtype)
    scale_clip_kernel()(x, dev(mean), dev(scale), dev(lo), dev(hi), clip, y)
    return y
