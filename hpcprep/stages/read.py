"""The read stage: which input rank reads which chunks (by speed), and this rank's chunk stream."""

from __future__ import annotations

import collections
import itertools
import time
from dataclasses import replace

import numpy as np

from ..config import RunConfig
from ..io.readers import ChunkReader
from ..layers.streams import ReaderStream
from ..mpi.agree import root_decides
from ..steps import make_step
from .subsample import SubsampledReader


class Slowed:
    """An object whose ``method`` takes ``factor`` times as long: after each call it sleeps
    ``factor - 1`` times the call's time (``plan.emulate_slowdown``: heterogeneous ranks on
    one machine, for benchmarks). Every other attribute is the wrapped object's."""

    def __init__(self, inner, factor: float, method: str):
        self.inner, self.factor, self.method = inner, factor, method

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def call(*args, **kwargs):
            t0 = time.perf_counter()
            out = attr(*args, **kwargs)
            time.sleep((self.factor - 1.0) * (time.perf_counter() - t0))
            return out

        return call


def slowed(obj, cfg: RunConfig, key: str, method: str):
    """``obj`` slowed as ``plan.emulate_slowdown[key]`` says (``"3"``: input rank 3's reads,
    ``"w3"``: writer 3's shard writes), or ``obj`` itself."""
    factor = float(cfg.plan.emulate_slowdown.get(key, 1.0))
    return obj if factor == 1.0 else Slowed(obj, factor, method)


class TimedReader:
    """A reader whose reads are charged to ``read`` on the run's clock (``report.json``: ``seconds.read``)."""

    def __init__(self, reader, clock):
        self.reader, self.clock = reader, clock

    def read(self, desc):
        with self.clock("read"):
            return self.reader.read(desc)

    def __getattr__(self, name):
        return getattr(self.reader, name)


def open_input(ctx, subsample: dict[int, int]) -> ReaderStream | None:
    """This input rank's planned chunks as a stream (None on a rank that reads no input).

    In a fused layout whose layers fit statistics, the chunks of the first pass
    are kept in memory for the later passes when they take at most half the
    memory budget. ``subsample``: the threshold keys of subsampled tasks by file
    index (:func:`hpcprep.stages.subsample.thresholds`).
    """
    topo, cfg, plan = ctx.topo, ctx.cfg, ctx.plan
    if ctx.rank not in topo.input_ranks:
        return None
    index = ctx.index_in(topo.input_ranks)
    descs = plan.chunks_of(index)
    planned = sum(d.rows for d in descs) * plan.bytes_per_row
    fits = topo.fused and any(layer_fits(t) for t in cfg.standardize)
    reader = ChunkReader(cfg.input, plan.feature_dtype, plan.label_dtype,
                         rejects=_input_rejects(ctx), label_classes=plan.label_classes,
                         kept_text=plan.kept_text)
    reader = TimedReader(slowed(reader, cfg, str(index), "read"), ctx.clock)
    ctx.report["input"] = {"chunks": len(descs), "rows": sum(d.rows for d in descs),
                           "bad_records": reader.bad_samples}
    if descs and descs[0].format not in ("hdf5", "npy"):   # parsed or decoded by Arrow
        from ..io.arrow import share_cores

        ctx.report["input"]["arrow_threads"] = share_cores(ctx.report["device"]["local_size"])
    if subsample:
        reader = SubsampledReader(reader, ctx.seed, subsample, ctx.report["input"])
    stream = ReaderStream(descs, reader, cache=fits and planned <= ctx.budget // 2,
                          progress=ctx.progress if ctx.rank == 0 else None)
    ctx.report["input"]["dropped"] = stream.dropped
    ctx.progress.phase("read")
    ctx.clock.seconds.setdefault("read", 0.0)
    return stream


def layer_fits(table: dict) -> bool:
    """True if a standardization layer has a step that fits statistics (more than one pass);
    a step's configuration may decide it (a hashed ``categorical`` fits nothing)."""
    return any(make_step(spec, "").needs_fit for spec in table["steps"])


def _input_rejects(ctx):
    """The writer of the records this input rank drops (None without rejects)."""
    from ..steps.rejects import RejectsWriter, input_part_path, rejects_enabled

    if not rejects_enabled(ctx.cfg):
        return None
    return RejectsWriter(input_part_path(ctx.location.join, ctx.rank))


# ---- which input rank reads what ------------------------------------------------------

def balance_input(ctx) -> dict:
    """Give chunks to input ranks by speed (plan.balance); every rank gets the same ranges.

    Rank 0 gathers the calibration speeds, solves the assignment program
    (:func:`hpcprep.assign.solve`) and broadcasts the chunk ranges with the plan's
    summary (``report.json``'s ``input_plan``); ``plan.speeds`` overrides measurements.
    """
    cfg, comm, topo, plan = ctx.cfg, ctx.comm, ctx.topo, ctx.plan
    mode = cfg.plan.balance
    if mode == "equal":
        return {"balance": "equal", "ranges": plan.ranges}
    measured = None
    if mode == "calibrate" and not cfg.plan.speeds:
        mine = _calibrate(cfg, plan, ctx.index_in(topo.input_ranks)) \
            if ctx.rank in topo.input_ranks else None
        everyone = comm.gather(mine, root=0)
        measured = [everyone[r] for r in topo.input_ranks] if ctx.rank == 0 else None
    source = "calibration" if measured is not None else "config"   # read on rank 0 only
    report = root_decides(comm, plan_input, cfg, plan, cfg.plan.speeds or measured, source)
    if "assigned" in report:
        plan.assigned = report["assigned"]
    else:
        plan.ranges = [tuple(r) for r in report["ranges"]]
    ctx.progress.log(f"plan: input rows per rank {report['rows']} for speeds "
                     f"{[round(s, 1) for s in report['speeds']]} ({mode}; {report['method']}, "
                     f"{report['status']}, {report['solve_time_s'] * 1e3:.1f} ms)")
    return report


def _calibrate(cfg, plan, input_index: int, min_seconds: float = 0.3) -> float:
    """Rows per second this input rank reads and converts, timed on rows not read before.

    Reads the first ``plan.calibration_rows`` rows of each chunk in input order,
    from the first chunk of its equal share on (wrapping around to the first
    chunk), and times the reads after the first for at least ``min_seconds``.
    What the timing must not measure (docs/assign.md "Calibration"): the same
    rows read again came from caches (HDF5's chunk cache, the CPU's) at 3x the
    rate of the run's reads; and a young process's first reads fault in the
    memory malloc grows its heap by, so a window of 0.1 s (a handful of reads)
    weighed them more than the run does and predicted about 1.5x too long.
    """
    probes = [_probe(d, cfg.plan.calibration_rows) for d in _calibration_order(plan, input_index)]
    if not probes:
        return 1.0
    reader = slowed(ChunkReader(cfg.input, plan.feature_dtype, plan.label_dtype,
                                label_classes=plan.label_classes, kept_text=plan.kept_text),
                    cfg, str(input_index), "read")
    # the last two chunks read stay alive, as in the run (a chunk in flight while the next is read)
    held = collections.deque(maxlen=2)
    try:
        held.append(reader.read(probes[0]))   # not timed: opens the file
        done, t0 = 0, time.perf_counter()
        for k in itertools.count(1):
            probe = probes[k % len(probes)]
            held.append(reader.read(probe))
            done += probe.rows
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return done / elapsed
    finally:
        reader.close()


def _calibration_order(plan, input_index: int) -> list:
    """The chunks with rows, from this input rank's first one on, then the ones before it."""
    mine = plan.chunks_of(input_index)
    first = mine[0].chunk_id if mine else 0   # chunk ids are positions in plan.chunks
    return [d for d in plan.chunks[first:] + plan.chunks[:first] if d.rows > 0]


def _probe(desc, rows: int):
    """The first ``rows`` rows of a chunk (a chunk of lines is read whole)."""
    if desc.by_bytes or desc.rows <= rows:
        return desc
    return replace(desc, stop=desc.start + rows, rows=rows)


def plan_input(cfg: RunConfig, plan, speeds, source: str) -> dict:
    """Rank 0: solve for the rows of each task on each input rank, and give out the chunks.

    One task: contiguous chunk ranges (``ranges``); several (``plan.tasks``):
    each rank's share of every task, tasks in deadline order (``assigned``,
    chunk indices). ``predicted_finish_s`` is for the rows of whole chunks, in
    seconds when ``speeds`` are rows per second (calibration), relative otherwise;
    the plan's own ``worker_finish_s`` is for its whole-row shares.
    """
    from ..assign import solve
    from .tasks import assign_chunks, chunks_of_ranks, input_problem, row_caps, task_of_files

    chunk_rows = np.array([c.rows for c in plan.chunks], dtype=np.int64)
    task_of_file, names = task_of_files(cfg.plan, cfg.input, plan.files)
    chunk_task = np.array([task_of_file[c.file_index] for c in plan.chunks], dtype=np.int64)
    task_rows = np.bincount(chunk_task, weights=chunk_rows, minlength=len(names)).astype(np.int64)
    problem = input_problem(cfg, speeds, task_rows.tolist(), names, plan.bytes_per_row)
    solved = solve(problem)
    task_ranges = assign_chunks(chunk_rows, chunk_task, solved, problem.deadlines,
                                row_caps(cfg.plan, len(speeds), plan.bytes_per_row))
    out = {"balance": cfg.plan.balance, "speeds": [float(s) for s in speeds],
           "speeds_from": source}
    if len(names) == 1:
        out["ranges"] = task_ranges[0][1]
        mine = [np.arange(lo, hi) for lo, hi in out["ranges"]]
    else:
        out["assigned"] = chunks_of_ranks(task_ranges, chunk_task, len(speeds))
        mine = [np.asarray(a, dtype=np.int64) for a in out["assigned"]]
    rows = [int(chunk_rows[k].sum()) for k in mine]
    out.update(rows=rows, **solved.summary(),
               predicted_finish_s=[r / float(s) for r, s in zip(rows, speeds)])
    if len(names) > 1 or cfg.plan.deadlines or cfg.plan.min_fractions:
        out["tasks"] = _task_report(solved, problem, task_rows)
        out["task_rows"] = [np.bincount(chunk_task[k], weights=chunk_rows[k],
                                        minlength=len(names)).astype(np.int64).tolist() for k in mine]
    if np.any(solved.kept_units < task_rows):
        out["file_task"] = list(task_of_file)   # for the subsampling thresholds; not reported
    return out


def _task_report(solved, problem, task_rows) -> list[dict]:
    """Each task's rows, deadline and predicted finish (``report.json``: ``input_plan.tasks``)."""
    return [{"name": name, "rows": int(rows), "kept_rows": int(kept), "kept_fraction": float(kept) / max(int(rows), 1),
             "deadline_s": float(deadline) if np.isfinite(deadline) else None,
             "predicted_finish_s": float(finish)}
            for name, rows, kept, deadline, finish in zip(problem.task_names, task_rows, solved.kept_units,
                                                          problem.deadlines, solved.task_finish)]
