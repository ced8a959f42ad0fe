"""Array kernels with NumPy and CuPy twins.

Every kernel takes arrays of either module and dispatches on the array module of
its input (:func:`hpcprep.kernels.xp.array_module`), so the CPU and GPU paths
share one signature. CuPy is imported lazily: nothing here needs it.
"""

from .hashing import GOLDEN, key_to_unit, random_keys, splitmix64, stream_base

__all__ = ["GOLDEN", "key_to_unit", "random_keys", "splitmix64", "stream_base"]
