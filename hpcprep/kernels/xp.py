"""Array-module dispatch: NumPy always, CuPy only when it is importable and used."""

import numpy as np


def array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy`` (never imports CuPy)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np
