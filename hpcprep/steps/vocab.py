"""Categories at scale: the category hash and the distributed vocabulary of ``categorical``.

**The category hash** (``encoding = "hash"``, docs/steps.md) of a value is
``splitmix64(fnv1a64(utf8(value)) ^ hash_key)``: FNV-1a (64-bit, offset basis
``0xcbf29ce484222325``, prime ``0x100000001b3``) over the value's UTF-8 bytes,
then the SplitMix64 finalizer of :func:`hpcprep.kernels.hashing.splitmix64`. It
is a pure function of the bytes and the key: not of ``PYTHONHASHSEED``, the
layout or the number of ranks. A chunk is hashed column by column of its byte
matrix (rows sorted by length, so the work is the bytes, not rows x longest).

**The distributed vocabulary** (``encoding = "codes"`` and ``"onehot"``): each
rank counts its categories; every category's partial count goes to the rank
owning it (a hash of its code points mod P; one all-to-all of fixed-size
records and one of the code points), which sums them, so each rank holds about V/P
categories. The owners keep by ``min_count`` / ``min_frequency`` and, with
``max_categories``, the most frequent (ties: smaller code point first, found
by a distributed selection, :func:`global_kth`), and only the kept categories
are gathered to every rank. Integer counts: the result does not depend on the
layout.
"""

import numpy as np

from ..kernels.hashing import splitmix64
from .sketch import sum_by_key

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
#: Key of the owner hash (any constant: the owner only spreads the work).
_OWNER_KEY = np.uint64(0x0C47E6021E5)
_COUNT = np.dtype([("n", "<i8"), ("len", "<i8")])


# -- bytes ----------------------------------------------------------------------------------------
def codepoints(values: np.ndarray):
    """The code points of a str array as a zero-padded uint32 matrix ``(n, width)`` (a view of
    NumPy's UCS-4 storage) and the lengths in characters."""
    values = np.ascontiguousarray(np.asarray(values, dtype=str))
    width = values.dtype.itemsize // 4
    return values.view(np.uint32).reshape(len(values), width), np.strings.str_len(values).astype(np.int64)


def from_codepoints(flat: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """A str array from concatenated code points ``flat`` cut into pieces of ``lens`` characters."""
    n, width = len(lens), int(lens.max()) if len(lens) else 0
    mat = np.zeros((n, max(width, 1)), np.uint32)
    mat[np.arange(mat.shape[1]) < lens[:, None]] = flat
    return mat.view(f"<U{mat.shape[1]}").reshape(n)


def utf8_matrix(values: np.ndarray):
    """The UTF-8 bytes of a str array as a zero-padded uint8 matrix ``(n, width)`` and the lengths."""
    cp, lens = codepoints(values)
    wide = (cp >= 0x80).any(axis=1)
    if not wide.any():   # ASCII: one byte per character
        return cp.astype(np.uint8), lens
    sub, chars = cp[wide], lens[wide]
    inside = np.arange(cp.shape[1]) < chars[:, None]
    size = np.where(inside, 1 + (sub >= 0x80) + (sub >= 0x800) + (sub >= 0x10000), 0)
    lens = lens.copy()
    lens[wide] = size.sum(axis=1)
    out = np.zeros((len(cp), max(int(lens.max()), cp.shape[1])), np.uint8)
    out[~wide, :cp.shape[1]] = cp[~wide]
    width = out.shape[1]
    # byte k of every character of at least k + 1 bytes, written through flat positions
    at = (np.arange(len(sub)) * width)[:, None] + np.cumsum(size, axis=1) - size
    lead = np.array([0, 0, 0xC0, 0xE0, 0xF0], np.uint32)[size]
    flat = np.zeros(len(sub) * width, np.uint8)
    for k in range(4):
        m = size > k
        shift = (6 * (size[m] - 1 - k)).astype(np.uint32)
        byte = (sub[m] >> shift) & np.uint32(0x3F if k else 0xFF)
        flat[at[m] + k] = byte | (lead[m] if k == 0 else np.uint32(0x80))
    out[wide] = flat.reshape(len(sub), width)
    return out, lens


def fnv1a64(mat: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """FNV-1a (64-bit) of each row's first ``lens`` bytes of the uint8 matrix ``mat``."""
    n = len(lens)
    order = np.argsort(lens, kind="stable")
    slens, rows = lens[order], mat[order]
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    for j in range(int(slens[-1]) if n else 0):
        lo = int(np.searchsorted(slens, j, side="right"))   # rows longer than j bytes
        h[lo:] ^= rows[lo:, j]
        h[lo:] *= FNV_PRIME
    out = np.empty(n, np.uint64)
    out[order] = h
    return out


def category_hash(values: np.ndarray, key: int = 0) -> np.ndarray:
    """``splitmix64(fnv1a64(utf8(v)) ^ key)`` of each value of a str array (uint64)."""
    with np.errstate(over="ignore"):
        return splitmix64(fnv1a64(*utf8_matrix(values)) ^ np.uint64(key))


def hash_codes(values: np.ndarray, buckets: int, key: int = 0) -> np.ndarray:
    """The bucket of each value, ``category_hash(v, key) mod buckets`` (int64; -1 for ``""``)."""
    values = np.asarray(values, dtype=str)
    out = np.full(len(values), -1, dtype=np.int64)
    ok = values != ""
    if ok.any():
        out[ok] = (category_hash(values[ok], key) % np.uint64(buckets)).astype(np.int64)
    return out


# -- counting on one rank -------------------------------------------------------------------------
class LocalCounts:
    """Counts of the non-missing values of one column on this rank (merged lazily)."""

    def __init__(self):
        self.values = np.zeros(0, dtype="<U1")
        self.counts = np.zeros(0, dtype=np.int64)
        self._pending: list = []
        self._pending_rows = 0

    def add(self, values: np.ndarray) -> None:
        u, n = np.unique(values[values != ""], return_counts=True)
        self._pending.append((u, n.astype(np.int64)))
        self._pending_rows += len(u)
        if self._pending_rows > max(len(self.values), 1 << 16):
            self._merge()

    def _merge(self) -> None:
        if self._pending:
            parts = [(self.values, self.counts)] + self._pending
            self.values, self.counts = sum_by_key(np.concatenate([p[0] for p in parts]),
                                                  np.concatenate([p[1] for p in parts]))
            self._pending, self._pending_rows = [], 0

    def result(self):
        """Sorted distinct values (str array) and their counts (int64)."""
        self._merge()
        return self.values, self.counts


# -- the distributed vocabulary -------------------------------------------------------------------
def route_to_owners(comm, values: np.ndarray, counts: np.ndarray):
    """Send each category's partial count to its owner rank; return what this rank owns, summed.

    Collective over ``comm``: one all-to-all of ``(count, length)`` records and one of
    the code points. Returns sorted distinct values and their global counts.
    """
    from ..mpi.exchange import Exchanger

    size = comm.Get_size()
    cp, lens = codepoints(values)
    with np.errstate(over="ignore"):
        owner = (splitmix64(fnv1a64(cp, lens) ^ _OWNER_KEY) % np.uint64(size)).astype(np.int64)
    order = np.argsort(owner, kind="stable")
    recs = np.empty(len(values), _COUNT)
    recs["n"], recs["len"] = counts[order], lens[order]
    cp, lens = cp[order], lens[order]
    flat = cp[np.arange(cp.shape[1]) < lens[:, None]]
    sendcounts = np.bincount(owner, minlength=size).astype(np.int64)
    chars = np.bincount(owner[order], weights=lens, minlength=size).astype(np.int64)
    with Exchanger() as ex:
        got, _, _ = ex.records(comm, recs, sendcounts, _COUNT)
        gflat, _, _ = ex.records(comm, flat, chars, np.dtype(np.uint32))
        owned = from_codepoints(gflat, got["len"])
    return sum_by_key(owned, got["n"])


def global_kth(comm, a: np.ndarray, k: int):
    """The ``k``-th smallest (0-based) value of the union of every rank's sorted array ``a``.

    A distributed selection (collective over ``comm``): each round every rank offers
    the median of its active range, weighted by the range's size; the weighted median
    of those is the pivot, and one ``allreduce`` of the counts below and at the pivot
    discards at least a quarter of the active values. ``k`` must be below the total.
    """
    lo, hi = 0, len(a)
    while True:
        mid = a[(lo + hi) // 2] if hi > lo else None
        offers = sorted((m, w) for m, w in comm.allgather((mid, hi - lo)) if w)
        half, acc = sum(w for _, w in offers) / 2, 0
        for pivot, w in offers:
            acc += w
            if acc >= half:
                break
        below = min(max(int(np.searchsorted(a, pivot, side="left")), lo), hi)
        upto = min(max(int(np.searchsorted(a, pivot, side="right")), lo), hi)
        n_below, n_upto = comm.allreduce(np.array([below - lo, upto - lo], dtype=np.int64))
        if k < n_below:
            hi = below
        elif k < n_upto:
            return pivot
        else:
            k -= int(n_upto)
            lo = upto


def most_frequent(comm, values: np.ndarray, counts: np.ndarray, m: int) -> np.ndarray:
    """Mask of this rank's categories among the ``m`` most frequent of all ranks (ties: smaller
    code point first). Each category lives on one rank (collective over ``comm``)."""
    if comm.allreduce(len(values)) <= m:
        return np.ones(len(values), dtype=bool)
    t = -global_kth(comm, np.sort(-counts), m - 1)     # the m-th largest count
    above = counts > t
    need = m - comm.allreduce(int(above.sum()))
    tied = counts == t
    last = global_kth(comm, np.sort(values[tied]), need - 1)
    return above | (tied & (values <= last))


def build_vocabulary(comm, values, counts, min_count: int, min_frequency: float,
                     max_categories: int):
    """The kept categories of one column, on every rank (collective over ``comm``).

    Parameters
    ----------
    values, counts : ndarray
        This rank's distinct categories and their counts (:meth:`LocalCounts.result`).
    min_count, min_frequency, max_categories : as the ``categorical`` keys (0 = no limit).

    Returns
    -------
    kept : ndarray of str
        Sorted by code point.
    kept_counts : ndarray of int64
    total : int
        Non-missing rows of the column (the kept and the rare ones).
    """
    total = int(comm.allreduce(int(counts.sum())))
    mine, n = route_to_owners(comm, values, counts)
    keep = (n >= min_count) & (n >= min_frequency * total)
    mine, n = mine[keep], n[keep]
    if max_categories:
        top = most_frequent(comm, mine, n, max_categories)
        mine, n = mine[top], n[top]
    parts = [p for p in comm.allgather((mine, n)) if len(p[0])]
    if not parts:
        return np.zeros(0, dtype="<U1"), np.zeros(0, np.int64), total
    kept = np.concatenate([p[0] for p in parts])
    kept_counts = np.concatenate([p[1] for p in parts])
    order = np.argsort(kept, kind="stable")
    return kept[order], kept_counts[order], total
