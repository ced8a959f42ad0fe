"""Give freed heap memory back to the system, so that a rank's RSS follows what it holds.

glibc keeps the pages of freed blocks that are not at the top of its heap:
after a phase frees many pieces in another order than it allocated them (the
sampling store's buckets), the RSS stays at its high-water mark while the next
arrays are allocated beside the holes. ``malloc_trim(0)`` hands those pages back
(measured: docs/BENCHMARKS.md "Peak RSS").
"""

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library)."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return the pages of freed heap blocks to the system (``malloc_trim(0)``).

    Returns
    -------
    bool
        True if memory was returned; False if none was, or the C library is not glibc.
    """
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
