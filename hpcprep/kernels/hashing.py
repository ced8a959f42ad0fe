"""Counter-based random keys: SplitMix64 of ``(seed, stream, row id)``.

All randomness in hpcprep is a pure function of the seed, a stream number
(the sampling layer, or a fixed constant per purpose) and the row's global id,
never of the rank or of arrival order (DESIGN §2). Because SplitMix64's mixer is
a bijection on 64-bit integers, distinct ids get distinct keys within a stream:
sorting by key has no ties.
"""

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def _mix_scalar(x: int) -> int:
    z = (x + GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def stream_base(seed: int, stream: int) -> int:
    """Return the 64-bit base of a random stream (a Python int).

    Parameters
    ----------
    seed : int
        The run's seed (any integer; reduced modulo 2**64).
    stream : int
        Which stream: the sampling layer, or a constant naming a purpose.
    """
    return _mix_scalar(_mix_scalar(seed & _MASK) ^ (stream & _MASK))


def splitmix64(x, xp=np, out=None):
    """SplitMix64 finalizer applied elementwise to a uint64 array (wrapping arithmetic).

    Parameters
    ----------
    x : array of uint64
        NumPy or CuPy.
    xp : module, default numpy
        Array module of the scalars (NumPy scalars also work with CuPy arrays).
    out : array of uint64, optional
        Where the result goes (may be ``x`` itself). On NumPy it is computed
        there in place, with one scratch array of its shape and no other
        temporaries; the same integers as without ``out``.

    Returns
    -------
    array of uint64, shape of ``x``
    """
    if out is None:
        z = x + xp.uint64(GOLDEN)
        z = (z ^ (z >> xp.uint64(30))) * xp.uint64(_M1)
        z = (z ^ (z >> xp.uint64(27))) * xp.uint64(_M2)
        return z ^ (z >> xp.uint64(31))
    if out is not x:
        out[...] = x
    if type(out).__module__.startswith("cupy"):
        out[...] = splitmix64(out, xp)
    else:
        mix_inplace(out, np.empty_like(out))
    return out


def mix_inplace(h: np.ndarray, t: np.ndarray) -> None:
    """``h = splitmix64(h)`` in place on a NumPy uint64 array (``t``: scratch of the same shape)."""
    h += np.uint64(GOLDEN)
    np.right_shift(h, np.uint64(30), out=t)
    h ^= t
    h *= np.uint64(_M1)
    np.right_shift(h, np.uint64(27), out=t)
    h ^= t
    h *= np.uint64(_M2)
    np.right_shift(h, np.uint64(31), out=t)
    h ^= t


def random_keys(seed: int, stream: int, ids, xp=None):
    """Random uint64 key of each row id: ``splitmix64(stream_base(seed, stream) ^ id)``.

    Parameters
    ----------
    seed, stream : int
        See :func:`stream_base`.
    ids : array of int64
        Global row ids (NumPy or CuPy array).
    xp : module, optional
        Array module; by default that of ``ids``.

    Returns
    -------
    array of uint64, same shape and module as ``ids``; distinct ids give distinct keys.
    """
    if xp is None:
        from .xp import array_module

        xp = array_module(ids)
    base = xp.uint64(stream_base(seed, stream))
    return splitmix64(ids.astype(xp.uint64, copy=False) ^ base, xp)


def key_to_unit(keys, xp=None, open_left=False):
    """Map uint64 keys to floats uniform on [0, 1) (or (0, 1] with ``open_left``), 53-bit exact."""
    if xp is None:
        from .xp import array_module

        xp = array_module(keys)
    top = (keys >> xp.uint64(11)).astype(xp.float64)
    if open_left:
        top = top + 1.0
    return top * (2.0 ** -53)
