"""Evaluation metrics: loss, accuracy, and the exact ROC AUC of a binary classifier.

:func:`evaluate` runs a model over a dataset split across the ranks of a
communicator: loss and accuracy are sums reduced with one ``Allreduce``; the AUC
is computed exactly (Mann–Whitney with average ranks for ties) on rank 0 after a
``Gatherv`` of the scores and labels, then broadcast. That is O(rows) on rank 0,
fine for validation sets; an approximate sketch would be needed for huge ones.
"""

import numpy as np


def accuracy(pred, y) -> float:
    """Fraction of ``pred == y`` (NaN for no rows)."""
    pred, y = np.asarray(pred), np.asarray(y)
    return float(np.mean(pred == y)) if y.size else float("nan")


def binary_auc(scores, labels) -> float:
    """Exact area under the ROC curve; ties count one half. NaN when a class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(labels) == 1
    n_pos = int(pos.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0          # 1-based average rank of each tie group
    rank_sum = avg_rank[inverse][pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def evaluate(model, params, dataset, comm=None, xp=np, batch_size: int = 4096) -> dict:
    """Mean loss, accuracy and (binary models) AUC of ``model`` on ``dataset``.

    Collective over ``comm`` (every rank evaluates its own rows of ``dataset``,
    which must have been opened with the same communicator). Returns the same dict
    on every rank: ``{"loss", "accuracy", "auc", "rows"}`` (``auc`` None for
    multi-class models).
    """
    sums = np.zeros(3)  # loss sum, correct, rows
    scores, labels = [], []
    for x, y in dataset.batches(batch_size, xp=xp, dtype=np.float64):
        y = y.astype(np.int64, copy=False)
        z = model.logits(params, x)
        sums[0] += model.loss(params, x, y)
        pred = (z > 0).astype(np.int64) if model.binary else z.argmax(axis=1)
        sums[1] += float((pred == y).sum())
        sums[2] += y.shape[0]
        if model.binary:
            scores.append(_host(z))
            labels.append(_host(y))
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI

        comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    n = sums[2]
    out = {"rows": int(n), "loss": sums[0] / n if n else float("nan"),
           "accuracy": sums[1] / n if n else float("nan"), "auc": None}
    if model.binary:
        local = np.empty((sum(len(s) for s in scores), 2))
        if scores:
            local[:, 0] = np.concatenate(scores)   # logits: monotone in the probability
            local[:, 1] = np.concatenate(labels)
        if comm is not None and comm.Get_size() > 1:
            counts = np.array(dataset.counts, dtype=np.int64) * 2
            full = np.empty((int(sum(dataset.counts)), 2)) if comm.Get_rank() == 0 else None
            comm.Gatherv(local, (full, counts) if full is not None else None, root=0)
            auc = binary_auc(full[:, 0], full[:, 1]) if full is not None else None
            out["auc"] = comm.bcast(auc, root=0)
        else:
            out["auc"] = binary_auc(local[:, 0], local[:, 1])
    return out
