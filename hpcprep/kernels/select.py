"""Sampling selections on random keys: exact-k, stratified, weighted (A-ES), bootstrap.

Every function is a pure function of its arrays (DESIGN §2) and gives the same
integers on NumPy and CuPy. Ties between equal keys are broken by position, so
the result never depends on how a sort treats equal elements (keys made by
:func:`hpcprep.kernels.keyed.keyed_hash` from distinct ids are distinct anyway).
"""

from fractions import Fraction

import numpy as np

from .hashing import key_to_unit, splitmix64
from .xp import array_module
from ._util import argsort_stable, empty_index, to_host


def sorted_by_key(keys, idx=None):
    """Indices ordering ``keys`` ascending, ties by position.

    Parameters
    ----------
    keys : array, shape (n,)
        Sort keys (NumPy or CuPy).
    idx : array of int64, optional
        Restrict to these positions (returned reordered); must be ascending.

    Returns
    -------
    array of int64
    """
    xp = array_module(keys)
    if idx is None:
        return argsort_stable(keys, xp).astype(xp.int64, copy=False)
    return idx[argsort_stable(keys[idx], xp)]


def k_smallest(keys, k: int):
    """Positions of the ``k`` smallest keys, in ascending key order (ties by position).

    Equal to ``argsort(keys, kind="stable")[:k]``, without sorting all keys
    when ``k`` is small: a partition finds the k-th key, then only the rows at
    or below it are sorted.

    Parameters
    ----------
    keys : array, shape (n,)
        uint64 keys, or any ordered dtype without NaN (NumPy or CuPy).
    k : int
        How many; ``k >= n`` returns all positions in key order.

    Returns
    -------
    array of int64, shape (min(k, n),)
    """
    xp = array_module(keys)
    n = int(keys.shape[0])
    k = max(0, min(int(k), n))
    if k == 0:
        return empty_index(xp)
    if 4 * k >= n:
        return sorted_by_key(keys)[:k]
    kth = xp.partition(keys, k - 1)[k - 1]
    cand = xp.flatnonzero(keys <= kth).astype(xp.int64, copy=False)
    return sorted_by_key(keys, cand)[:k]


def k_smallest_per_class(keys, classes, k_per_class):
    """Stratified selection: the ``k_c`` smallest keys within each class ``c``.

    Parameters
    ----------
    keys : array, shape (n,)
        Random keys (NumPy or CuPy).
    classes : array of int, shape (n,)
        Class code of each row, in ``[0, C)``.
    k_per_class : int or array_like of int, shape (C,)
        Rows to keep per class (an int applies to every class).

    Returns
    -------
    array of int64
        Selected positions in ascending key order (ties by position).
    """
    xp = array_module(keys)
    n = int(keys.shape[0])
    if n == 0:
        return empty_index(xp)
    classes = xp.asarray(classes).astype(xp.int64, copy=False)
    lo, hi = int(classes.min()), int(classes.max())
    kpc = np.asarray(k_per_class, dtype=np.int64)
    n_cls = hi + 1 if kpc.ndim == 0 else len(kpc)
    if lo < 0 or hi >= n_cls:
        raise ValueError(f"class codes must lie in [0, {n_cls}), got [{lo}, {hi}]")
    kpc = xp.asarray(np.broadcast_to(kpc, (n_cls,)).copy())
    by_key = sorted_by_key(keys)
    order = by_key[argsort_stable(classes[by_key], xp)]          # class, then key, then position
    cls = classes[order]
    counts = xp.bincount(classes, minlength=n_cls)
    starts = xp.cumsum(counts) - counts
    rank = xp.arange(n, dtype=xp.int64) - starts[cls]
    sel = xp.sort(order[rank < kpc[cls]])
    return sorted_by_key(keys, sel)


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
