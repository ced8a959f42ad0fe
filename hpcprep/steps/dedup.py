"""``dedup``: drop exact duplicate rows across all ranks, keeping the smallest global id."""

import numpy as np
from mpi4py import MPI

from ..errors import ConfigError
from ..mpi.exchange import Exchanger
from ..kernels.hashing import splitmix64, stream_base
from ..kernels.route import destination_order
from ..kernels.rowhash import row_hash, row_words
from ..schema import Param, list_of
from ._columns import split_columns
from .base import Step, register_step

#: Random stream of the row hash (fixed: the hash must not depend on the layout).
DEDUP_STREAM = 0xDED0
#: Hashes mapped to their owner at a time (the scratch stays in cache).
_BLOCK = 1 << 14


#: Records of the first exchange: the row hash and the global id (16 B per row).
HASH_ID = np.dtype([("h", "<u8"), ("id", "<i8")])
#: Requests of the second exchange: a row's position in what its rank sent to the owner.
POSITION = np.dtype([("p", "<i8")])
#: Decisions sent back to the rows' ranks: the ids to drop.
ROW_ID = np.dtype([("id", "<i8")])


@register_step
class Dedup(Step):
    """Drop rows equal to a row with a smaller global id, wherever the two rows are.

    Config: ``{ op = "dedup", columns = ["f0", "f1"], label = true }``.
    ``columns`` (default: every feature) and, with ``label = true`` (default),
    the label make up the key. Values compare as numbers: ``-0.0`` equals
    ``0.0`` and NaN equals NaN (pandas' ``duplicated``). Raw categorical
    columns are not part of the key (encode them with ``categorical`` first).

    Fit (one pass over the chunks, four ``Alltoallv``; only the first moves every row):

    1. Every rank hashes the key of each of its rows (a 64-bit hash of the
       canonical bytes, a pure function of the values) and sends ``(hash, id)``
       (16 B per row) to the rank owning the hash (``splitmix64(hash) mod
       size``) with one ``Alltoallv``. It keeps a reference to its chunks' key
       columns (no copy of the key bytes).
    2. The owner sorts the hashes it got and finds the *candidates*: rows whose
       hash occurs more than once (the duplicates and the rare collisions). It
       sends each rank the positions of its candidates (second ``Alltoallv``)
       and gets their canonical key bytes back (third), for candidates only.
    3. Within each group of equal hashes the owner compares the key *bytes*
       (equal hashes alone never make a duplicate) and keeps the smallest id
       of each distinct key; it sends the ids to drop back to the ranks they
       came from (fourth ``Alltoallv``). Rows never leave their rank.

    Memory: about 40 B per row of the rank's share plus ``16 + key bytes`` per
    candidate, on top of the chunks of the pass (kept until the key bytes are
    served: free when the stream hands out its cached chunks, a copy of the
    share when an earlier step of the layer copied them).
    """

    op = "dedup"
    needs_fit = True
    params = {
        "columns": Param(list, [], check=list_of(str, int), doc="features in the key; empty = all"),
        "label": Param(bool, True, doc="include the label in the key"),
    }

    def bind(self, feature_names):
        names = super().bind(feature_names)
        idx, cats = split_columns(self.config["columns"], feature_names, "dedup")
        if cats:
            raise ConfigError(f"dedup.columns: no feature named {cats[0]!r} (raw categorical "
                              f"columns are not compared; encode them with op = \"categorical\" "
                              f"first); features: {', '.join(feature_names)}")
        self.columns_ = idx
        return names

    # ---- the key ------------------------------------------------------------
    def _key_columns(self, chunk):
        """The chunk's key arrays ``(x, y)``: key features (n, d) and the label or None."""
        x = chunk.features if self.columns_ is None else chunk.features[:, self.columns_]
        y = chunk.labels if self.config["label"] else None
        return x, y

    @staticmethod
    def _hash(x, y):
        """64-bit hash of each row's canonical key bytes (equal keys, equal hashes).

        :func:`~hpcprep.kernels.rowhash.row_hash` of the canonical key features,
        seeded with the dedup stream, then of the label seeded with that.
        """
        h = row_hash(x, seed=stream_base(0, DEDUP_STREAM))
        return h if y is None else row_hash(y, seed=h, out=h)

    @staticmethod
    def _words(x, y):
        """Canonical key bytes of each row as uint64 words, shape (n, words)."""
        words, _ = row_words(x, canonical=True)
        if y is not None:
            words = np.hstack([words, row_words(y, canonical=True)[0]])
        return words

    # ---- fit ----------------------------------------------------------------
    def fit_layer(self, ctx, chunks):
        with Exchanger() as ex:
            self._fit(ctx.comm, ex, chunks)

    def _fit(self, comm, ex, chunks):
        size = comm.Get_size()
        keys, hashes, ids, nw = [], [], [], 0
        for c in chunks:
            if len(c) == 0:
                continue
            x, y = self._key_columns(c)
            keys.append((x, y))
            hashes.append(self._hash(x, y))
            ids.append(c.ids)
            nw = max(nw, self._words(x[:0], None if y is None else y[:0]).shape[1])
        nw = comm.allreduce(nw, op=MPI.MAX)
        starts = np.cumsum([0] + [len(i) for i in ids])
        h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        del hashes

        # 1. (hash, id) to the owner of the hash
        order, sendcounts = destination_order(_owner(h, size), size)
        recs = np.empty(len(h), dtype=HASH_ID)
        recs["h"] = h[order]
        del h
        recs["id"] = np.concatenate(ids)[order] if ids else np.empty(0, np.int64)
        del ids
        got, recvcounts, _ = ex.records(comm, recs, sendcounts, HASH_ID)
        del recs

        # 2. the candidates' key bytes from their ranks
        cand = np.flatnonzero(_repeated(got["h"]))
        rends = np.cumsum(recvcounts)
        src = np.searchsorted(rends, cand, side="right")
        req = np.empty(len(cand), dtype=POSITION)
        req["p"] = cand - (rends - recvcounts)[src]
        reqcounts = np.bincount(src, minlength=size).astype(np.int64)
        todo, asked, _ = ex.records(comm, req, reqcounts, POSITION)
        sdispls = np.cumsum(sendcounts) - sendcounts
        rows = order[todo["p"] + np.repeat(sdispls, asked)]
        del order, todo
        wdt = np.dtype([("w", "<u8", (nw,))])
        words = np.empty(len(rows), dtype=wdt)
        if len(rows):
            words["w"] = self._gather_words(keys, starts, rows, nw)
        del keys
        if nw:
            cw, _, _ = ex.records(comm, words, asked, wdt)
        else:  # an empty key: every row equal (no bytes to move)
            cw = np.empty(len(cand), dtype=wdt)
        del words

        self.drop_ids_ = self._decide(comm, ex, got[cand], cw["w"], src)
        self.n_duplicates_ = comm.allreduce(len(self.drop_ids_), op=MPI.SUM)
        self.n_keys_ = comm.allreduce(len(got), op=MPI.SUM)

    def _decide(self, comm, ex, cands, words, src):
        """3. Byte comparison within equal hashes; this rank's ids to drop, back from their owners.

        ``cands``: the candidates' ``(hash, id)`` records, ``words`` their key words,
        ``src`` the rank each came from (ascending, so the ids go back grouped by rank).
        """
        nw = words.shape[1]
        crecs = np.empty(len(cands), dtype=np.dtype([("h", "<u8"), ("id", "<i8"), ("w", "<u8", (nw,))]))
        crecs["h"] = cands["h"]
        crecs["id"] = cands["id"]
        crecs["w"] = words
        drop = self._duplicates(crecs)
        ret = np.empty(int(drop.sum()), dtype=ROW_ID)
        ret["id"] = crecs["id"][drop]
        counts = np.bincount(src[drop], minlength=comm.Get_size()).astype(np.int64)
        mine, _, _ = ex.records(comm, ret, counts, ROW_ID)
        return np.sort(mine["id"])

    def _gather_words(self, keys, starts, rows, nw):
        """Canonical key words of the local rows ``rows`` (positions in chunk order)."""
        out = np.empty((len(rows), nw), dtype=np.uint64)
        which = np.searchsorted(starts, rows, side="right") - 1
        o = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[o], np.arange(len(keys) + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            sel = o[bounds[k]:bounds[k + 1]]
            r = rows[sel] - starts[k]
            x, y = keys[k]
            out[sel] = self._words(x[r], None if y is None else y[r])
        return out

    @staticmethod
    def _duplicates(recs):
        """Mask of the records equal (key bytes) to one with a smaller id.

        ``recs`` has fields ``h`` (hash), ``id`` and ``w`` (key words). Only
        records whose hash repeats can be duplicates. Those are sorted by hash
        and id; in a group of equal hashes whose rows all have the bytes of its
        first (smallest id) row, every other row is a duplicate (the common
        case). The rare groups that mix different keys (hash collisions) are
        sorted by hash, words and id, and a row is a duplicate when its hash and
        words equal its predecessor's. Equal hashes alone never make a duplicate.
        """
        n = len(recs)
        dup = np.zeros(n, dtype=bool)
        if n < 2:
            return dup
        idx = np.flatnonzero(_repeated(recs["h"]))
        if len(idx) == 0:
            return dup
        sub = recs[idx]
        nw = int(np.prod(recs.dtype["w"].shape))
        order = np.lexsort((sub["id"], sub["h"]))
        idx, hs = idx[order], sub["h"][order]
        ws = sub["w"].reshape(len(order), nw)[order]
        start = np.ones(len(idx), dtype=bool)
        start[1:] = hs[1:] != hs[:-1]
        group = np.cumsum(start) - 1
        first = np.flatnonzero(start)[group]
        same = (ws == ws[first]).all(axis=1)
        mixed = np.zeros(len(first), dtype=bool)
        mixed[group[~same]] = True
        mixed = mixed[group]                   # rows of groups with more than one key
        dup[idx[same & ~start & ~mixed]] = True
        if mixed.any():
            m = np.flatnonzero(mixed)
            wm = ws[m]
            keys = [sub["id"][order][m]] + [wm[:, j] for j in range(nw - 1, -1, -1)] + [hs[m]]
            o = np.lexsort(keys)  # by hash, then words, then id
            eq = (hs[m][o][1:] == hs[m][o][:-1]) & (wm[o][1:] == wm[o][:-1]).all(axis=1)
            dup[idx[m[o[1:][eq]]]] = True
        return dup

    def apply(self, chunk):
        if len(self.drop_ids_) == 0 or len(chunk) == 0:
            return chunk, {}
        bad = _isin_sorted(chunk.ids, self.drop_ids_)
        n = int(bad.sum())
        if n == 0:
            return chunk, {}
        return chunk.take(~bad), {"duplicate": n}

    def stats(self):
        return {"n_duplicates": np.int64(self.n_duplicates_)}


def _owner(h, size):
    """The rank owning each hash: ``splitmix64(h) mod size`` (uint16 for up to 65536 ranks)."""
    owner = np.empty(len(h), dtype=np.uint16 if size <= 1 << 16 else np.int64)
    z = np.empty(min(len(h), _BLOCK), np.uint64)
    for lo in range(0, len(h), _BLOCK):
        hi = min(len(h), lo + _BLOCK)
        zb = splitmix64(h[lo:hi], out=z[:hi - lo])
        np.remainder(zb, np.uint64(size), out=zb)
        owner[lo:hi] = zb
    return owner


def _repeated(h):
    """Mask of the entries of ``h`` (uint64) whose value occurs more than once."""
    rep = np.zeros(len(h), dtype=bool)
    if len(h) < 2:
        return rep
    s = np.sort(h)
    eq = s[1:] == s[:-1]
    vals = s[1:][eq]
    if len(vals) == 0:
        return rep
    vals = vals[np.concatenate([[True], vals[1:] != vals[:-1]])]
    # a bitmap of the low hash bits first: only its hits need the binary search
    bits = max(10, min(24, int(len(vals)).bit_length() + 5))
    mask = np.uint64((1 << bits) - 1)
    table = np.zeros(1 << bits, dtype=bool)
    table[(vals & mask).astype(np.intp)] = True
    maybe = np.flatnonzero(table[(h & mask).astype(np.intp)])
    hm = h[maybe]
    pos = np.searchsorted(vals, hm)
    pos[pos == len(vals)] = 0
    rep[maybe[vals[pos] == hm]] = True
    return rep


def _isin_sorted(ids, sorted_ids):
    """Mask of the entries of ``ids`` found in the sorted array ``sorted_ids``."""
    lo, hi = int(ids.min()), int(ids.max())
    sub = sorted_ids[np.searchsorted(sorted_ids, lo):np.searchsorted(sorted_ids, hi, side="right")]
    if len(sub) == 0:
        return np.zeros(len(ids), dtype=bool)
    if hi - lo <= 8 * len(ids) + (1 << 16):     # a table over the chunk's id range
        table = np.zeros(hi - lo + 1, dtype=bool)
        table[sub - lo] = True
        return table[ids - lo]
    return np.isin(ids, sub)
