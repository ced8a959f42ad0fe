"""The write stage: the last sampling layer's rows, rebalanced to the planned shard sizes, into shards.

Each writer's rows come as a sequence of blocks; each round moves one block of
every writer (``Alltoallv``) and every writer puts what it receives at its
global position, so no rank holds more than a block.
"""

from __future__ import annotations

import os

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from ..kernels.route import contiguous_targets
from ..mpi.agree import root_decides
from ..mpi.exchange import rounds
from ..output.shards import ShardWriter
from ..partition import equal_counts, largest_remainder, offsets


def write(ctx, sampled) -> dict | None:
    """Write this rank's shard of every output (None on a rank outside the last sampling layer).

    Returns the shard's description, or ``{"splits": {name: description}}``.
    """
    last = sampled.layers[-1]
    if last.comm is None:
        return None
    with ctx.clock("write"):
        split_names = last.output_names
        if split_names is None:
            return _write_output(ctx, sampled, 0, "")
        return {"splits": {name: _write_output(ctx, sampled, i, name + "/")
                           for i, name in enumerate(split_names)}}


def shard_targets(cfg: RunConfig, writers, total: int, split: bool = False) -> np.ndarray:
    """Rows of each writer's shard: ``output.shard_sizes`` (exact), by ``plan.shard_speeds``
    (the assignment program; collective over ``writers``), or equal.

    With splits the split sizes are known only at run time, so the sizes are
    taken as relative weights and each split is cut in proportion (largest
    remainder), unless they sum to exactly the split's rows.
    """
    n_writers = writers.Get_size()
    sizes = cfg.output.shard_sizes
    if not sizes and cfg.plan.shard_speeds:
        # rank 0 of the writers solves (hpcprep.assign.solve), every writer follows
        return np.asarray(root_decides(writers, _shard_rows, total, cfg.plan.shard_speeds,
                                       job_wide=False), dtype=np.int64)
    if not sizes:
        return equal_counts(total, n_writers)
    what = (f"output.shard_sizes = {sizes}: needs {n_writers} non-negative sizes "
            f"(one per rank of the last sampling layer)")
    if len(sizes) != n_writers or min(sizes) < 0:
        raise ConfigError(what)
    if sum(sizes) == total:
        return np.asarray(sizes, dtype=np.int64)
    if not split or sum(sizes) == 0:
        raise ConfigError(f"{what} summing to {total} rows")
    w = np.asarray(sizes, dtype=np.float64)
    # shares as (w / sum) * total, not total * w / sum: the same floats, so the same
    # shards as datasets written before (near-ties are decided by the last bit)
    return largest_remainder(w / w.sum() * total, total)


def _shard_rows(total: int, speeds) -> list[int]:
    """Writer rank 0: rows of each shard by speed (the assignment program's closed form)."""
    from ..assign import rows_by_speed

    return rows_by_speed(total, speeds).tolist()


def _first_row(comm, rows: int) -> np.ndarray:
    """Every writer's first global row of this output (an exclusive scan, gathered)."""
    start = np.zeros(1, dtype=np.int64)
    comm.Exscan(np.array([rows], dtype=np.int64), start)
    return np.array(comm.allgather(int(start[0]) if comm.Get_rank() else 0), dtype=np.int64)


def _write_output(ctx, sampled, i: int, prefix: str) -> dict:
    """Rebalance output ``i`` of the last layer to the planned shard sizes and write this rank's shard."""
    last, rdt = sampled.layers[-1], sampled.rdt
    comm, p = last.comm, last.comm.Get_rank()
    out = last.outputs[i]
    offs = offsets(shard_targets(ctx.cfg, comm, last.totals_out[i], split=prefix != ""))
    starts = _first_row(comm, out.rows)
    cursor = np.maximum(starts, offs[p]) - offs[p]   # where each source's next row lands here
    if prefix:
        os.makedirs(ctx.location.join(prefix, "shards"), exist_ok=True)
    rel = f"shards/part-{p:05d}.h5"
    writer = ShardWriter(ctx.location.join(prefix + rel), int(offs[p + 1] - offs[p]), rdt,
                         sampled.names)
    position = int(starts[p])
    for rec in rounds(comm, out.blocks(), np.empty(0, rdt)):
        counts = contiguous_targets(position, len(rec), offs)
        position += len(rec)
        own_lo = int(counts[:p].sum())
        own = rec[own_lo:own_lo + int(counts[p])]   # this rank's rows for its own shard
        with ctx.clock("exchange"):
            got, recvcounts, sent = ctx.exchanger.records(comm, rec, counts, rdt, skip_self=True)
        last.bytes_sent += sent
        recvcounts[p] = len(own)
        _place(writer, cursor, got, recvcounts, own, p)
        ctx.exchanger.recycle(got)   # the writer has copied it
        del got, own, rec
    info = writer.close()
    ctx.progress.log(f"wrote {prefix}{rel}: {info['rows']:,} rows")
    return {"path": rel, "start": int(offs[p]), **info}


def _place(writer, cursor, got, recvcounts, own, p: int) -> None:
    """Write one round's pieces at their positions, in source order (global order)."""
    at = 0
    for s in np.flatnonzero(recvcounts):
        c = int(recvcounts[s])
        writer.write_at(int(cursor[s]), own if s == p else got[at:at + c])
        cursor[s] += c
        if s != p:
            at += c
