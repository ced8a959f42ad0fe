"""Keyed hash of row ids: the random key of every row, on either device."""

from .hashing import random_keys, stream_base
from .xp import array_module
from ._util import is_cupy


def keyed_hash(seed: int, stream: int, ids):
    """Random uint64 key of each row id, bit-identical on NumPy and CuPy.

    ``key = splitmix64(stream_base(seed, stream) ^ uint64(id))``, exactly
    :func:`hpcprep.kernels.hashing.random_keys`. On a CuPy array it runs as one
    fused ElementwiseKernel (:func:`hpcprep.kernels.gpu.keyed_hash_kernel`)
    instead of six array operations.

    Parameters
    ----------
    seed : int
        The run's seed (reduced modulo 2**64).
    stream : int
        Random stream (sampling layer, or a constant naming a purpose).
    ids : array of integers, NumPy or CuPy
        Global row ids; signed ids are taken modulo 2**64, as ``astype(uint64)``.

    Returns
    -------
    array of uint64
        Same shape and array module as ``ids``. Distinct ids give distinct keys.

    Examples
    --------
    >>> import numpy as np
    >>> keyed_hash(42, 0, np.arange(3)).dtype
    dtype('uint64')
    """
    xp = array_module(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"keyed_hash: ids must be integers, got dtype {ids.dtype}")
    if not is_cupy(xp):
        return random_keys(seed, stream, ids)
    from .gpu import keyed_hash_kernel

    return keyed_hash_kernel()(ids, xp.uint64(stream_base(seed, stream)))
