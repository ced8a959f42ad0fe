"""The write stage: the last sampling layer's rows, rebalanced to the planned shard sizes, into shards.

Each writer's rows come as a sequence of blocks; each round moves one block of
every writer (``Alltoallv``) and every writer puts what it receives at its
global position, so no rank holds more than a block.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from ..kernels.route import contiguous_targets
from ..mpi.agree import root_decides
from ..mpi.exchange import rounds
from ..output.shards import ShardWriter
from ..partition import equal_counts, largest_remainder, offsets
from .read import slowed


def write(ctx, sampled) -> dict | None:
    """Write this rank's shard of every output (None on a rank outside the last sampling layer).

    Returns the shard's description, or ``{"splits": {name: description}}``.
    """
    last = sampled.layers[-1]
    if last.comm is None:
        return None
    with ctx.clock("write"):
        speeds = measure_writers(ctx, last.comm, sampled.rdt, sampled.names)
        split_names = last.output_names
        if split_names is None:
            return _write_output(ctx, sampled, 0, "", speeds)
        return {"splits": {name: _write_output(ctx, sampled, i, name + "/", speeds)
                           for i, name in enumerate(split_names)}}


def measure_writers(ctx, writers, rdt, names, min_seconds: float = 0.1) -> list[float] | None:
    """With ``plan.shard_speeds = "measured"``: rows per second of every writer (collective over
    ``writers``; also ``report.json``'s ``ranks[i].shard_plan``). None without it, and with
    ``output.shard_sizes``, which wins: then nothing is measured.

    Each writer writes ``plan.calibration_rows`` rows of zeros (at most a quarter of
    its memory budget) as a shard of its own into the output's temporary folder,
    again and again for at least ``min_seconds`` (the first write, which opens
    HDF5's machinery, is not timed), and removes it.
    """
    cfg = ctx.cfg
    if cfg.plan.shard_speeds != "measured" or cfg.output.shard_sizes:
        return None
    p = writers.Get_rank()
    path = ctx.location.join(f"calibration-{p:05d}.h5")
    rows = max(1, min(cfg.plan.calibration_rows, ctx.budget // (4 * rdt.itemsize)))
    records = np.zeros(rows, dtype=rdt)
    try:
        _write_shard(ctx, path, records, names, p)   # not timed
        done, t0 = 0, time.perf_counter()
        while True:
            _write_shard(ctx, path, records, names, p)
            done += rows
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
    speeds = writers.allgather(done / elapsed)
    ctx.report["shard_plan"] = {"speeds_from": "measured", "speeds": speeds}
    return speeds


def _write_shard(ctx, path: str, records: np.ndarray, names, p: int) -> None:
    """Write ``records`` as a whole shard at ``path`` (writer ``p``'s emulated slowdown applies)."""
    writer = _shard_writer(ctx, path, len(records), records.dtype, names, p)
    writer.write_at(0, records)
    writer.close()


def _shard_writer(ctx, path: str, rows: int, rdt, names, p: int):
    """A :class:`ShardWriter`, its writes slowed as ``plan.emulate_slowdown.w<p>`` says."""
    return slowed(ShardWriter(path, rows, rdt, names), ctx.cfg, f"w{p}", "write_at")


def shard_targets(cfg: RunConfig, writers, total: int, split: bool = False,
                  measured: list[float] | None = None) -> np.ndarray:
    """Rows of each writer's shard: ``output.shard_sizes`` (exact), by ``plan.shard_speeds``
    (the assignment program; collective over ``writers``), or equal.

    With splits the split sizes are known only at run time, so the sizes are
    taken as relative weights and each split is cut in proportion (largest
    remainder), unless they sum to exactly the split's rows. ``measured``: the
    writers' speeds with ``plan.shard_speeds = "measured"`` (:func:`measure_writers`).
    """
    n_writers = writers.Get_size()
    sizes = cfg.output.shard_sizes
    if not sizes and cfg.plan.shard_speeds:
        speeds = measured if cfg.plan.shard_speeds == "measured" else cfg.plan.shard_speeds
        # rank 0 of the writers solves (hpcprep.assign.solve), every writer follows
        return np.asarray(root_decides(writers, _shard_rows, total, speeds,
                                       job_wide=False), dtype=np.int64)
    if not sizes:
        return equal_counts(total, n_writers)
    # one non-negative size per writer: checked with the config (config._check_shard_sizes)
    if sum(sizes) == total:
        return np.asarray(sizes, dtype=np.int64)
    if not split or sum(sizes) == 0:
        raise ConfigError(f"output.shard_sizes = {sizes}: needs {n_writers} non-negative sizes "
                          f"(one per rank of the last sampling layer) summing to {total} rows")
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


def _write_output(ctx, sampled, i: int, prefix: str, speeds=None) -> dict:
    """Rebalance output ``i`` of the last layer to the planned shard sizes and write this rank's shard."""
    last, rdt = sampled.layers[-1], sampled.rdt
    comm, p = last.comm, last.comm.Get_rank()
    out = last.outputs[i]
    offs = offsets(shard_targets(ctx.cfg, comm, last.totals_out[i], split=prefix != "",
                                 measured=speeds))
    starts = _first_row(comm, out.rows)
    cursor = np.maximum(starts, offs[p]) - offs[p]   # where each source's next row lands here
    if prefix:
        os.makedirs(ctx.location.join(prefix, "shards"), exist_ok=True)
    rel = f"shards/part-{p:05d}.h5"
    writer = _shard_writer(ctx, ctx.location.join(prefix + rel), int(offs[p + 1] - offs[p]), rdt,
                           sampled.names, p)
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
