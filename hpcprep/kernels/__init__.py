"""Array kernels with NumPy and CuPy twins, each called by a stage or a step.

Every kernel takes arrays of either module and dispatches on the array module of
its input (:func:`hpcprep.kernels.xp.array_module`), so the CPU and GPU paths
share one signature. CuPy is imported lazily: nothing here needs it. A run's
choice of device is :class:`hpcprep.kernels.active.Kernels` (held by the run).
"""

from .active import HOST, Kernels
from .hashing import GOLDEN, key_to_unit, random_keys, splitmix64, stream_base
from .keyed import keyed_hash
from .moments import moments_of
from .pack import gather_rows, pack_rows, scatter_pieces
from .route import contiguous_targets, destination_order, key_range_owner
from .rowhash import row_hash, row_words
from .select import (aes_keys, det_log, global_kth_key, key_order, poisson1_multiplicity,
                     repeat_indices)
from .transform import multiply_add, scale_clip

__all__ = [
    "HOST", "Kernels", "GOLDEN", "key_to_unit", "random_keys", "splitmix64", "stream_base",
    "keyed_hash", "moments_of", "gather_rows", "pack_rows", "scatter_pieces", "contiguous_targets",
    "destination_order", "key_range_owner", "row_hash", "row_words", "aes_keys", "det_log",
    "global_kth_key", "key_order", "poisson1_multiplicity", "repeat_indices", "multiply_add",
    "scale_clip",
]
