"""Array kernels with NumPy and CuPy twins.

Every kernel takes arrays of either module and dispatches on the array module of
its input (:func:`hpcprep.kernels.xp.array_module`), so the CPU and GPU paths
share one signature. CuPy is imported lazily: nothing here needs it.
"""

from .hashing import GOLDEN, key_to_unit, random_keys, splitmix64, stream_base
from .keyed import keyed_hash
from .moments import moments_of
from .pack import Packed, destination_order, gather_rows, pack_by_destination, record_dtype, unpack_columns
from .rowhash import row_hash
from .select import (aes_keys, det_log, global_kth_key, k_smallest, k_smallest_per_class,
                     poisson1_multiplicity, repeat_indices, sorted_by_key)
from .transform import scale_clip

__all__ = [
    "GOLDEN", "key_to_unit", "random_keys", "splitmix64", "stream_base",
    "keyed_hash", "moments_of", "Packed", "destination_order", "gather_rows",
    "pack_by_destination", "record_dtype", "unpack_columns", "row_hash",
    "aes_keys", "det_log", "global_kth_key", "k_smallest", "k_smallest_per_class",
    "poisson1_multiplicity", "repeat_indices", "sorted_by_key", "scale_clip",
]
