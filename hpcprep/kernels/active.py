"""The array module the pipeline's hot kernels run on (set once per rank from resources.device).

Rows stay in host memory between layers (pip's MPICH is not CUDA-aware); on a
rank bound to a GPU, the per-row hashing and the local sort by key run as CuPy
kernels on device copies of the key columns. The kernels are bit-identical to
their NumPy twins (tests/test_kernels_parity.py), so the output is the same.
"""

import numpy as np

from .hashing import random_keys

_state = {"xp": np}


def use(xp) -> None:
    """Run the hot kernels with ``xp`` (``numpy``, or ``cupy`` on a rank bound to a GPU)."""
    _state["xp"] = xp


def on_gpu() -> bool:
    return _state["xp"] is not np


def host_keys(seed: int, stream: int, ids: np.ndarray) -> np.ndarray:
    """Random keys of host row ids, computed on the active device, returned on the host."""
    if not on_gpu() or len(ids) == 0:
        return random_keys(seed, stream, ids)
    from .keyed import keyed_hash

    xp = _state["xp"]
    return xp.asnumpy(keyed_hash(seed, stream, xp.asarray(ids)))


def host_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable ascending order of host keys, computed on the active device."""
    if not on_gpu() or len(keys) == 0:
        return np.argsort(keys, kind="stable")
    from .select import sorted_by_key

    xp = _state["xp"]
    return xp.asnumpy(sorted_by_key(xp.asarray(keys)))
