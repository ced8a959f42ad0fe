"""Per-value float64 transforms rounded once into the output: scale/clip and multiply-add.

The NumPy twins work a block of rows at a time through one float64 buffer
(about 1 MiB), so a chunk never has full-size float64 temporaries; every
operation is elementwise, so the blocks give the bits of the one-shot formulas.
"""

import numpy as np

from .xp import array_module
from ._util import is_cupy

#: Bytes of the float64 work buffer of the NumPy twins.
BLOCK_BYTES = 1 << 20


def scale_clip(x, center=None, scale=None, lo=None, hi=None, dtype=np.float32):
    """Standardize (and optionally clip) features in one pass: ``clip((x - center) / scale, lo, hi)``.

    Computes ``v = (float64(x) - center) / scale`` (``center`` or ``scale``
    None: that operation is left out); with ``lo``/``hi`` given, ``v`` is
    clipped to ``[lo, hi]`` (NaN stays NaN); the result is rounded once to
    ``dtype``. Every operation is an IEEE-rounded double subtraction, division
    or comparison, so NumPy and CuPy give bit-identical output (NaN payloads
    aside: the device subtracts 0 and divides by 1 where NumPy leaves them out).

    Parameters
    ----------
    x : array, shape (n, d)
        Features (NumPy or CuPy, any real dtype).
    center, scale : array_like of float64, shape (d,) or scalar, optional
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
    dtype = _float_dtype(dtype, "scale_clip")
    clip = lo is not None or hi is not None
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    if not is_cupy(xp):
        center, scale, lo, hi = (None if a is None else np.asarray(a, np.float64)
                                 for a in (center, scale, lo, hi))

        def ops(b):
            if center is not None:
                b -= center
            if scale is not None:
                b /= scale
            if clip:
                np.clip(b, lo, hi, out=b)
        return _numpy_blocked(x, dtype, ops)
    from .gpu import scale_clip_kernel

    y = xp.empty(x.shape, dtype=dtype)
    center = 0.0 if center is None else center
    scale = 1.0 if scale is None else scale
    scale_clip_kernel()(x, *(xp.asarray(a, dtype=xp.float64) for a in (center, scale, lo, hi)),
                        clip, y)
    return y


def multiply_add(x, scale, offset, dtype=np.float32):
    """``float64(x) * scale + offset``, rounded once to ``dtype`` (min-max scaling).

    The product and the sum are rounded separately (never fused into one FMA:
    the CUDA twin uses ``__dmul_rn`` and ``__dadd_rn``), so NumPy and CuPy give
    bit-identical output.

    Parameters
    ----------
    x : array, shape (n, d)
        NumPy or CuPy, any real dtype.
    scale, offset : array_like of float64, shape (d,) or scalar
    dtype : numpy dtype, default float32
        Output dtype (float32 or float64).

    Returns
    -------
    array of ``dtype``, shape (n, d)
        Same array module as ``x``.
    """
    xp = array_module(x)
    dtype = _float_dtype(dtype, "multiply_add")
    if not is_cupy(xp):
        scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)

        def ops(b):
            b *= scale
            b += offset
        return _numpy_blocked(x, dtype, ops)
    from .gpu import multiply_add_kernel

    y = xp.empty(x.shape, dtype=dtype)
    multiply_add_kernel()(x, xp.asarray(scale, dtype=xp.float64), xp.asarray(offset, dtype=xp.float64), y)
    return y


def _float_dtype(dtype, what: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{what}: output dtype must be floating, got {dtype}")
    return dtype


def _numpy_blocked(x, dtype: np.dtype, ops):
    """``ops`` (in place on float64) over ``x`` a block of rows at a time, each rounded once into the output.

    A C-ordered 2-D ``x`` goes in blocks; any other (a view, another memory order)
    in one piece, so that the output keeps the memory order of ``x``.
    """
    x = np.asarray(x)
    if x.ndim != 2 or not x.flags.c_contiguous or not len(x):
        b = x.astype(np.float64)   # keeps x's memory order, as the output does
        ops(b)
        return b.astype(dtype, copy=False)
    n, d = x.shape
    out = np.empty((n, d), dtype=dtype)
    step = max(1, BLOCK_BYTES // (8 * max(d, 1)))
    buf = np.empty((min(step, n), d))
    for s in range(0, n, step):
        k = min(step, n - s)
        b = buf[:k]
        b[...] = x[s:s + k]
        ops(b)
        out[s:s + k] = b
    return out
