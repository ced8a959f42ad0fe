"""Sorting and selecting on random keys: the local sort, the global k-th key (subsampling),
weighted keys (A-ES), the bootstrap's multiplicities.

Every function is a pure function of its arrays (DESIGN §2) and gives the same
integers (or float bits) on NumPy and CuPy; keys made by
:func:`hpcprep.kernels.keyed.keyed_hash` from distinct ids are distinct, so no
result depends on how a sort treats equal keys.
"""

from fractions import Fraction

import numpy as np

from .hashing import key_to_unit, splitmix64
from .xp import array_module
from ._util import empty_index, is_cupy, to_host


def key_order(keys):
    """Indices ordering ``keys`` ascending (the local sort of a sampling rank's rows).

    NumPy sorts with its default (quick)sort, CuPy with its (stable) radix
    sort: the twins give the same indices whenever the keys are distinct, which
    keys of distinct rows are (:func:`hpcprep.kernels.keyed.keyed_hash` is a
    bijection). Equal keys come in an order a caller must not rely on:
    :func:`hpcprep.layers.spill.sort_order` orders them by id and copy tag.

    Parameters
    ----------
    keys : array, shape (n,)
        Sort keys (NumPy or CuPy).

    Returns
    -------
    array of int64, shape (n,)
    """
    xp = array_module(keys)
    if is_cupy(xp):
        return xp.argsort(keys).astype(xp.int64, copy=False)
    return np.argsort(keys)


#: Bits of the key whose histogram the first pass of :func:`global_kth_key` reduces.
TOP_BITS = 16


def global_kth_key(comm, key_blocks, k: int):
    """The k-th smallest key over all ranks of ``comm`` (collective), with bounded communication.

    Two passes over this rank's keys, neither holding more than a block: the
    first reduces a histogram of the keys' top 16 bits (one ``Allreduce`` of
    65,536 counts), which names the bin holding the k-th key; the second keeps
    only the keys in that bin, which all ranks gather (about ``n / 65536`` keys
    over all ranks for uniform keys) to take the k-th exactly. Rows with
    ``key <= result`` are then exactly the global ``k`` smallest when keys are
    distinct (keys of distinct ids are, :func:`hpcprep.kernels.keyed.keyed_hash`).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    key_blocks : callable
        ``key_blocks()`` gives an iterable of this rank's uint64 key arrays
        (NumPy or CuPy); it is called twice, and must give the same keys both times.
    k : int

    Returns
    -------
    int or None
        The threshold key, or ``None`` when the ranks hold fewer than ``k``
        keys in all (keep every row).

    Raises
    ------
    ValueError
        If ``k < 1`` (on every rank, before any communication).
    """
    from mpi4py import MPI

    if k < 1:
        raise ValueError(f"global_kth_key: k must be at least 1, got {k}")
    shift = np.uint64(64 - TOP_BITS)
    hist = np.zeros(1 << TOP_BITS, dtype=np.int64)
    for keys in key_blocks():
        xp = array_module(keys)
        hist += to_host(xp.bincount((keys >> shift).astype(xp.int64), minlength=1 << TOP_BITS))
    comm.Allreduce(MPI.IN_PLACE, hist, op=MPI.SUM)
    cum = np.cumsum(hist)
    if cum[-1] < k:
        return None
    b = int(np.searchsorted(cum, k))           # the bin of the k-th key
    need = k - (int(cum[b - 1]) if b else 0)   # its rank within the bin
    mine = [to_host(keys[(keys >> shift) == np.uint64(b)]) for keys in key_blocks()]
    cand = np.concatenate(mine).astype(np.uint64) if mine else np.empty(0, np.uint64)
    counts = np.array(comm.allgather(len(cand)), dtype=np.int64)
    allc = np.empty(int(counts.sum()), dtype=np.uint64)
    displs = np.concatenate(([0], np.cumsum(counts)[:-1]))
    comm.Allgatherv(cand, [allc, counts, displs, MPI.UINT64_T])
    return int(np.partition(allc, need - 1)[need - 1])


# ---------------------------------------------------------------- A-ES keys
_LN2_HI = 6.93147180369123816490e-01   # 32 significant bits: e * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.7071067811865476
_ATANH_COEF = [1.0 / (2 * j + 1) for j in range(14)]


def det_log(u):
    """Natural log of positive finite float64 values, the same bits on NumPy and CuPy.

    ``numpy.log`` and CUDA's ``log`` may differ in the last ulp, which could
    flip the order of two weighted keys and so change a selection. This log
    uses only exact operations (frexp, scaling by 2) and IEEE-rounded ``+ - * /``
    in a fixed order: ``log(m 2^e) = e ln2 + 2 atanh((m-1)/(m+1))`` with
    ``m`` in ``[sqrt(1/2), sqrt(2))`` and a 14-term series. Accurate to a few ulps.

    Parameters
    ----------
    u : array of float64
        Positive, finite values (NumPy or CuPy).

    Returns
    -------
    array of float64
    """
    xp = array_module(u)
    m, e = xp.frexp(u.astype(xp.float64, copy=False))
    small = m < _SQRT_HALF
    m = xp.where(small, m * 2.0, m)
    e = (e - small.astype(e.dtype)).astype(xp.float64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = xp.full(s.shape, _ATANH_COEF[-1], dtype=xp.float64)
    for c in reversed(_ATANH_COEF[:-1]):
        p = p * s2 + c
    logm = (2.0 * s) * p
    return e * _LN2_HI + (e * _LN2_LO + logm)


def aes_keys(keys, weights):
    """Weighted-sampling keys of Efraimidis–Spirakis (A-ES): ``-log(u) / w``.

    The k rows with the smallest A-ES keys are a weighted sample without
    replacement. ``u = key_to_unit(keys, open_left=True)`` lies in ``(0, 1]``;
    the log is :func:`det_log`, so both devices give the same floats.

    Parameters
    ----------
    keys : array of uint64, shape (n,)
        Random keys of the rows (NumPy or CuPy).
    weights : array of float, shape (n,)
        Row weights; a weight ``<= 0`` or NaN gives ``+inf`` (never chosen
        before a positive weight).

    Returns
    -------
    array of float64, shape (n,)
    """
    xp = array_module(keys)
    w = xp.asarray(weights).astype(xp.float64, copy=False)
    u = key_to_unit(keys, xp=xp, open_left=True)
    good = w > 0
    r = -det_log(u) / xp.where(good, w, 1.0)
    return xp.where(good, r, xp.inf)


# ----------------------------------------------------- Poisson(1) bootstrap
#: Salt that decorrelates the multiplicity from the key it is derived from.
POISSON_SALT = 0xD1B54A32D192ED03


def _poisson1_thresholds():
    """T_k = floor(P(X <= k) * 2**64) for X ~ Poisson(1), exact rational arithmetic."""
    inv_e = sum(Fraction((-1) ** j, _fact(j)) for j in range(60))     # error < 1/60!
    out, cdf, k = [], Fraction(0), 0
    while True:
        cdf += inv_e / _fact(k)
        tail = (1 - cdf) * 2 ** 64
        if tail < 1:
            break
        out.append(int(cdf * 2 ** 64))
        k += 1
    return np.array(out, dtype=np.uint64)


def _fact(j):
    f = 1
    for i in range(2, j + 1):
        f *= i
    return f


POISSON1_THRESHOLDS = _poisson1_thresholds()


def poisson1_multiplicity(keys):
    """Poisson(1) multiplicity of each row, for the bootstrap (with replacement).

    ``v = splitmix64(key ^ POISSON_SALT)`` is a uniform 64-bit integer
    independent of the key's order; the multiplicity is the number of
    thresholds ``T_k = floor(P(X <= k) 2**64)`` with ``v >= T_k`` (inverse CDF
    in integer arithmetic). Identical integers on NumPy and CuPy.

    Parameters
    ----------
    keys : array of uint64, shape (n,)
        Random keys (NumPy or CuPy).

    Returns
    -------
    array of int64, shape (n,)
        Multiplicities in ``[0, len(POISSON1_THRESHOLDS)]``; mean 1, variance 1.
    """
    xp = array_module(keys)
    v = splitmix64(keys.astype(xp.uint64, copy=False) ^ xp.uint64(POISSON_SALT), xp)
    m = xp.zeros(v.shape, dtype=xp.int64)
    for t in POISSON1_THRESHOLDS:
        m += (v >= xp.uint64(t))
    return m


def repeat_indices(multiplicity):
    """Positions repeated by their multiplicity: ``repeat(arange(n), multiplicity)``.

    Written with cumsum and searchsorted, which CuPy supports for array repeats.

    Parameters
    ----------
    multiplicity : array of int, shape (n,)
        Non-negative counts (NumPy or CuPy).

    Returns
    -------
    array of int64, shape (multiplicity.sum(),)
    """
    xp = array_module(multiplicity)
    ends = xp.cumsum(multiplicity.astype(xp.int64, copy=False))
    total = int(ends[-1]) if ends.size else 0
    if total == 0:
        return empty_index(xp)
    return xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right").astype(xp.int64)
