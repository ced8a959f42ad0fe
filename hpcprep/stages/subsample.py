"""Tasks subsampled by the plan: exactly the planned rows of each task, chosen by key.

Where the assignment program keeps a fraction of a task (``plan.min_fractions``
below 1, to meet a deadline or because ``plan.w2`` values the time more), the
run keeps exactly ``kept_rows`` of the task's rows: those whose key
``keyed_hash(seed, SUBSAMPLE_STREAM, id)`` is among the ``kept_rows`` smallest of
the task. The threshold key is found collectively before the data pass, from
the row ids alone (:func:`hpcprep.kernels.select.global_kth_key`: two passes
over ids, no data read), and every input rank keeps the rows of its chunks at
or below it: the same rows for any layout and rank count.
"""

from __future__ import annotations

import numpy as np

from ..kernels.keyed import keyed_hash
from ..kernels.select import global_kth_key

#: The random stream of subsampling keys (a purpose constant, like the sampling layers').
SUBSAMPLE_STREAM = 0x5B5A << 40

#: Threshold of a task that keeps no row.
KEEP_NONE = -1


def thresholds(ctx, input_plan: dict) -> dict[int, int]:
    """Collective: the threshold key of each subsampled task, by file index (empty: none is).

    ``input_plan`` is the broadcast plan report; its ``file_task`` (each file's
    task) is used here and removed from it.
    """
    file_task = input_plan.pop("file_task", None)
    kept = [(j, t["kept_rows"]) for j, t in enumerate(input_plan.get("tasks", ()))
            if t["kept_rows"] < t["rows"]]
    if not kept:
        return {}
    mine = ctx.plan.chunks_of(ctx.index_in(ctx.topo.input_ranks)) \
        if ctx.rank in ctx.topo.input_ranks else []
    by_task = {}
    for j, k in kept:   # the same tasks in the same order on every rank
        descs = [c for c in mine if file_task[c.file_index] == j]
        by_task[j] = KEEP_NONE if k == 0 else global_kth_key(
            ctx.comm, lambda descs=descs: (_keys(ctx.seed, c) for c in descs), k)
    return {f: by_task[j] for f, j in enumerate(file_task) if j in by_task}


def _keys(seed: int, desc) -> np.ndarray:
    """Subsampling keys of every row of a chunk, from its global ids."""
    return keyed_hash(seed, SUBSAMPLE_STREAM, np.arange(desc.first_id, desc.first_id + desc.rows,
                                                        dtype=np.int64))


class SubsampledReader:
    """A reader that keeps, of each chunk of a subsampled task, the rows at or below its threshold.

    The rows not kept are counted in ``report["subsampled"]`` (``report.json``:
    ``ranks[i].input.subsampled``); they are not drops: the plan chose them out.
    """

    def __init__(self, reader, seed: int, by_file: dict[int, int], report: dict):
        self.reader, self.seed, self.by_file, self.report = reader, seed, by_file, report
        report["subsampled"] = 0

    def read(self, desc):
        chunk = self.reader.read(desc)
        threshold = self.by_file.get(desc.file_index)
        if threshold is None:
            return chunk
        if threshold == KEEP_NONE:
            keep = np.zeros(len(chunk), dtype=bool)
        else:
            keep = keyed_hash(self.seed, SUBSAMPLE_STREAM, chunk.ids) <= np.uint64(threshold)
        self.report["subsampled"] += int(len(chunk) - keep.sum())
        return chunk if keep.all() else chunk.take(keep)

    def __getattr__(self, name):
        return getattr(self.reader, name)
