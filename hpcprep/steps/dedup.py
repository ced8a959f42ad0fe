"""``dedup``: drop exact duplicate rows across all ranks, keeping the smallest global id."""

import numpy as np
from mpi4py import MPI

from ..errors import ConfigError
from ..exchange import alltoallv_records
from ..kernels.hashing import splitmix64, stream_base
from ..kernels.rowhash import _canonical, row_hash, row_words
from ..schema import Param, list_of
from ._columns import split_columns
from .base import Step, register_step

#: Random stream of the row hash (fixed: the hash must not depend on the layout).
DEDUP_STREAM = 0xDED0


@register_step
class Dedup(Step):
    """Drop rows equal to a row with a smaller global id, wherever the two rows are.

    Config: ``{ op = "dedup", columns = ["f0", "f1"], label = true }``.
    ``columns`` (default: every feature) and, with ``label = true`` (default),
    the label make up the key. Values compare as numbers: ``-0.0`` equals
    ``0.0`` and NaN equals NaN (pandas' ``duplicated``). Raw categorical
    columns are not part of the key (encode them with ``categorical`` first).

    Fit (one pass, one exchange): every rank hashes the key of each of its
    rows (a 64-bit hash of the canonical bytes, a pure function of the values)
    and sends ``(hash, id, key bytes)`` to the rank owning the hash
    (``hash mod size``) with one ``Alltoallv``. The owner sorts what it got by
    hash, key bytes and id, compares the key *bytes* of neighbours (equal
    hashes alone never make a duplicate), and sends the ids of the rows to drop
    back to the rank they came from with a second ``Alltoallv``. Rows never
    leave their rank; only decisions come back. Memory on the owner: about
    ``16 + key bytes`` per row of its hash range.
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

    def _key(self, chunk):
        x = chunk.features if self.columns_ is None else chunk.features[:, self.columns_]
        x = _canonical(np.ascontiguousarray(x), np)
        words, _ = row_words(x)
        h = row_hash(x, seed=stream_base(0, DEDUP_STREAM), canonical=False)
        if self.config["label"] and chunk.labels is not None:
            y = _canonical(np.ascontiguousarray(chunk.labels), np)
            words = np.hstack([words, row_words(y)[0]])
            h = row_hash(y, seed=h, canonical=False)
        return h, words

    def fit_layer(self, ctx, chunks):
        comm = ctx.comm
        size = comm.Get_size()
        hashes, ids, words = [], [], []
        for c in chunks:
            h, w = self._key(c)
            hashes.append(h)
            ids.append(c.ids)
            words.append(w)
        nw = self._width(comm, words)
        dt = np.dtype([("h", "<u8"), ("id", "<i8"), ("w", "<u8", (nw,))])
        recs = np.empty(sum(len(i) for i in ids), dtype=dt)
        if len(recs):
            recs["h"] = np.concatenate(hashes)
            recs["id"] = np.concatenate(ids)
            recs["w"] = np.concatenate(words).reshape(len(recs), nw)
        del hashes, words
        owner = (splitmix64(recs["h"]) % np.uint64(size)).astype(np.int64)
        order = np.argsort(owner, kind="stable")
        recs = recs[order]
        sendcounts = np.bincount(owner, minlength=size).astype(np.int64)
        got, _ = alltoallv_records(comm, recs, sendcounts, dt)
        del recs
        recvcounts = np.empty(size, dtype=np.int64)
        comm.Alltoall(sendcounts, recvcounts)
        src = np.repeat(np.arange(size), recvcounts)
        drop = self._duplicates(got)
        back = got["id"][drop]
        src = src[drop]
        o = np.argsort(src, kind="stable")
        idt = np.dtype([("id", "<i8")])
        ret = np.empty(len(back), dtype=idt)
        ret["id"] = back[o]
        mine, _ = alltoallv_records(comm, ret, np.bincount(src, minlength=size).astype(np.int64), idt)
        self.drop_ids_ = np.sort(mine["id"])
        self.n_duplicates_ = comm.allreduce(len(self.drop_ids_), op=MPI.SUM)
        self.n_keys_ = comm.allreduce(len(got), op=MPI.SUM)

    @staticmethod
    def _width(comm, words):
        nw = max((w.shape[1] for w in words), default=0)
        return comm.allreduce(nw, op=MPI.MAX)

    @staticmethod
    def _duplicates(recs):
        """Mask of the records equal (bytes) to one with a smaller id."""
        n = len(recs)
        if n < 2:
            return np.zeros(n, dtype=bool)
        w = recs["w"].reshape(n, -1)
        keys = [recs["id"]] + [w[:, j] for j in range(w.shape[1] - 1, -1, -1)] + [recs["h"]]
        order = np.lexsort(keys)  # by hash, then words, then id
        s = recs[order]
        ws = w[order]
        same = (s["h"][1:] == s["h"][:-1]) & (ws[1:] == ws[:-1]).all(axis=1)
        dup = np.zeros(n, dtype=bool)
        dup[order[1:][same]] = True
        return dup

    def apply(self, chunk):
        if len(self.drop_ids_) == 0 or len(chunk) == 0:
            return chunk, {}
        bad = np.isin(chunk.ids, self.drop_ids_)
        n = int(bad.sum())
        if n == 0:
            return chunk, {}
        return chunk.take(~bad), {"duplicate": n}

    def stats(self):
        return {"n_duplicates": np.int64(self.n_duplicates_)}
