"""Small helpers shared by the kernel twins (no CuPy import)."""

import numpy as np


def is_cupy(xp) -> bool:
    """True when ``xp`` is the CuPy module."""
    return xp is not np and getattr(xp, "__name__", "") == "cupy"


def argsort_stable(a, xp):
    """Stable ascending argsort of a 1-D array (CuPy's argsort is always stable)."""
    if is_cupy(xp):
        return xp.argsort(a)
    return np.argsort(a, kind="stable")


def to_host(a):
    """Return ``a`` as a NumPy array (copies a CuPy array to the host)."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def empty_index(xp):
    return xp.zeros(0, dtype=xp.int64)
