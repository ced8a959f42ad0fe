"""The whole run: input -> standardization layers -> sampling layers -> HDF5 output.

Every rank runs :func:`run_pipeline` with the same validated config. What a
rank does depends on the groups it belongs to (:mod:`hpcprep.topology`); with a
fused layout it plays every role in turn, with a layered one a single role.
Both go through the same code for the steps, the exchanges and the output.
"""

import os
import resource
import sys
import time
from dataclasses import replace

import numpy as np
from mpi4py import MPI

from . import __version__
from .mpi import tags
from .mpi.agree import AgreedError, root_decides, write_line
from .mpi.exchange import Exchanger, rounds, send_chunk
from .errors import ConfigError
from .io.classes import collect_label_classes, output_codes
from .io.plan import build_input_plan, check_input_columns, expand_paths
from .io.plan_count import count_csv_chunks
from .io.readers import ChunkReader
from .kernels import active as kernels_active
from .kernels.route import contiguous_targets
from .layers.sample import SampleLayer, record_dtype
from .layers.standardize import StandardizeLayer
from .layers.streams import AppliedStream, ChunkStore, ReaderStream, ReceiveStream
from .output.location import OutputLocation
from .output.checks import nonfinite_of, output_problem, sum_drops
from .output.master import manifest, write_json, write_master
from .output.shards import ShardWriter
from .partition import equal_counts, largest_remainder, offsets
from .steps.moments import Moments


def _prepare(cfg: dict, n_input: int, progress):
    """Rank 0, before any work: check the output path, take its lock, remove temporary folders
    of dead runs, plan the input and create a fresh temporary output folder."""
    location = OutputLocation(cfg["output"]["path"], cfg["output"]["overwrite"])
    location.check(cfg["input"]["paths"], expand_paths(cfg["input"]["paths"]))
    try:
        for line in location.acquire():
            progress.log(line)
        check_input_columns(cfg)
        plan = build_input_plan(cfg["input"], n_input)
        from .sampling import check_chain

        check_chain(cfg["sample"], plan.label_dtype)
        location.create()
    except BaseException:
        location.abandon()
        raise
    return plan, location


def run_pipeline(cfg: dict, comm, progress, cleanups: list | None = None) -> dict | None:
    """Run the configured pipeline on every rank of ``comm``.

    Parameters
    ----------
    cfg : dict
        Validated config (:func:`hpcprep.config.parse_config`).
    comm : communicator
        All ranks of the job.
    progress : Progress
        Where rank 0's progress lines go.
    cleanups : list, optional
        The run's cleanups for :func:`hpcprep.mpi.agree.fail_hard` (``cli.main``'s):
        the output location is added, so a failure removes its temporary folder and lock.

    Returns
    -------
    dict or None
        On rank 0, the run summary (also written to ``report.json``); None elsewhere.
    """
    from .topology import build_topology

    t_start = time.perf_counter()
    topo = build_topology(comm, cfg["layout"], len(cfg["standardize"]), len(cfg["sample"]))
    plan, location = root_decides(comm, _prepare, cfg, len(topo.input_ranks), progress)
    location.track(cleanups)
    if not plan.counted:
        count_csv_chunks(plan, comm, topo.input_ranks, cfg["input"])
    collect_label_classes(plan, comm, topo.input_ranks, cfg["input"])
    device = _select_device(comm, cfg["resources"]["device"])
    kernels_active.use(device.xp)
    balance = _balance_input(cfg, comm, topo, plan, progress)
    progress.log(f"input: {plan.total_rows:,} rows x {plan.n_features} features in "
                 f"{len(plan.files)} file(s), {len(plan.chunks)} chunk(s) over "
                 f"{len(topo.input_ranks)} input rank(s); layout "
                 f"{'fused' if topo.fused else 'layered'}, {comm.Get_size()} rank(s)")
    run = _RankRun(cfg, comm, topo, plan, location, progress)
    run.report["device"] = device.report()
    run.report["input_plan"] = balance
    run.standardize()
    run.sample()
    run.write()
    return run.finish(t_start)


def _select_device(comm, requested: str):
    """Bind each rank to its device; a rank that cannot use what was asked stops every rank once."""
    from .device import select_device
    from .errors import HpcprepError

    try:
        return select_device(comm, requested)
    except HpcprepError as e:  # raised identically on every rank after an allgather
        raise AgreedError(str(e)) from None


def _calibrate(cfg, plan, input_index: int, min_seconds: float = 0.1) -> float:
    """Rows per second this input rank reads and converts.

    Reads (part of) its first chunk again and again for at least ``min_seconds``:
    shorter timings were too noisy to plan with (docs/assign.md).
    """
    descs = plan.chunks_of(input_index) or plan.chunks[:1]
    if not descs or descs[0].rows <= 0:
        return 1.0
    d = descs[0]
    rows = d.rows if d.by_bytes else min(d.rows, cfg["plan"]["calibration_rows"])
    probe = d if d.by_bytes else replace(d, stop=d.start + rows, rows=rows)
    reader = ChunkReader(cfg["input"], plan.feature_dtype, plan.label_dtype,
                         label_classes=plan.label_classes)
    try:
        reader.read(probe)  # opens the file: not timed
        done, t0 = 0, time.perf_counter()
        while True:
            reader.read(probe)
            done += rows
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return done / elapsed
    finally:
        reader.close()


def _balance_input(cfg, comm, topo, plan, progress) -> dict:
    """Give chunks to input ranks by speed (plan.balance); every rank gets the same ranges.

    Rank 0 gathers the calibration speeds, solves the assignment program
    (:func:`hpcprep.assign.solve`) and broadcasts the chunk ranges with the plan's
    summary (``report.json``'s ``input_plan``); ``plan.speeds`` overrides measurements.
    """
    mode = cfg["plan"]["balance"]
    if mode == "equal":
        return {"balance": "equal", "ranges": plan.ranges}
    measured = None
    if mode == "calibrate" and not cfg["plan"]["speeds"]:
        mine = _calibrate(cfg, plan, topo.input_ranks.index(comm.Get_rank())) \
            if comm.Get_rank() in topo.input_ranks else None
        everyone = comm.gather(mine, root=0)
        measured = [everyone[r] for r in topo.input_ranks] if comm.Get_rank() == 0 else None
    source = "calibration" if measured is not None else "config"   # read on rank 0 only
    report = root_decides(comm, _plan_input, mode, cfg["plan"]["speeds"] or measured, source,
                          [c.rows for c in plan.chunks])
    plan.ranges = [tuple(r) for r in report["ranges"]]
    progress.log(f"plan: input rows per rank {report['rows']} for speeds "
                 f"{[round(s, 1) for s in report['speeds']]} ({mode}; {report['method']}, "
                 f"{report['status']}, {report['solve_time_s'] * 1e3:.1f} ms)")
    return report


def _plan_input(mode: str, speeds, source: str, chunk_rows) -> dict:
    """Rank 0: solve for the input ranks' rows and cut the chunks into contiguous ranges.

    ``predicted_finish_s`` is for the rows of the ranges (whole chunks), in
    seconds when ``speeds`` are rows per second (calibration), relative otherwise;
    the plan's own ``worker_finish_s`` is for its whole-row shares.
    """
    from .assign import AssignProblem, contiguous_chunk_ranges, solve

    solved = solve(AssignProblem(speeds=speeds, task_units=[sum(chunk_rows)],
                                 worker_names=[f"input{k}" for k in range(len(speeds))]))
    ranges = contiguous_chunk_ranges(chunk_rows, solved)
    rows = [sum(chunk_rows[lo:hi]) for lo, hi in ranges]
    return {"balance": mode, "speeds": [float(s) for s in speeds],
            "speeds_from": source,
            "ranges": ranges, "rows": rows, **solved.summary(),
            "predicted_finish_s": [r / float(s) for r, s in zip(rows, speeds)]}


def _shard_rows(total: int, speeds) -> list[int]:
    """Writer rank 0: rows of each shard by speed (the assignment program's closed form)."""
    from .assign import rows_by_speed

    return rows_by_speed(total, speeds).tolist()


class _TimedReader:
    """A reader that adds up the seconds its reads take (``report.json``: ``seconds.read``)."""

    def __init__(self, reader):
        self.reader, self.seconds = reader, 0.0

    def read(self, desc):
        t0 = time.perf_counter()
        try:
            return self.reader.read(desc)
        finally:
            self.seconds += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self.reader, name)


class _RankRun:
    """What one rank does in one run, phase by phase (state shared between phases)."""

    def __init__(self, cfg, comm, topo, plan, location, progress):
        self.cfg, self.comm, self.topo, self.plan = cfg, comm, topo, plan
        self.location, self.progress = location, progress
        self.rank = comm.Get_rank()
        self.seed = cfg["seed"]
        self.budget = cfg["resources"]["memory_bytes"]
        self.spill_dir = os.path.join(cfg["resources"]["spill_dir"] or location.join("spill"),
                                      f"rank-{self.rank:05d}")
        self.report = {"rank": self.rank, "roles": topo.roles(), "seconds": {}}
        self.std_layers: list[StandardizeLayer] = []
        self.stream = None  # this rank's output stream into the first sampling layer
        self.names = list(plan.feature_names)
        self.n_chunks_out = 0
        self.exchanger = Exchanger()   # every records exchange of this rank's run
        self.sample_layers = [SampleLayer(i, t, topo.sample_comms[i], self.seed, self.budget,
                                          self.spill_dir, self.exchanger)
                              for i, t in enumerate(cfg["sample"])]
        self.rdt = None
        self.shard = None
        self._reader = None    # this input rank's _TimedReader

    # ---- input and standardization ----------------------------------------------
    def _group_index(self, group: list[int]) -> int:
        return group.index(self.rank)

    def standardize(self) -> None:
        t0 = time.perf_counter()
        topo, cfg = self.topo, self.cfg
        n_std = len(cfg["standardize"])
        reader_stream = None
        if self.rank in topo.input_ranks:
            i = self._group_index(topo.input_ranks)
            descs = self.plan.chunks_of(i)
            planned = sum(d.rows for d in descs) * self.plan.bytes_per_row
            fits = topo.fused and any(_layer_fits(t) for t in cfg["standardize"])
            reader = _TimedReader(ChunkReader(cfg["input"], self.plan.feature_dtype,
                                              self.plan.label_dtype, rejects=self._input_rejects(),
                                              label_classes=self.plan.label_classes))
            self._reader = reader
            reader_stream = ReaderStream(descs, reader, cache=fits and planned <= self.budget // 2,
                                         progress=self.progress if self.rank == 0 else None)
            self.progress.phase("read")
            self.report["input"] = {"chunks": len(descs), "rows": sum(d.rows for d in descs),
                                    "dropped": reader_stream.dropped,
                                    "bad_records": reader.bad_samples}
            self.n_chunks_out = len(descs)
        if topo.fused:
            stream = reader_stream
            for j, table in enumerate(cfg["standardize"]):
                layer = StandardizeLayer(j, table, self.names, topo.std_comms[j], self.seed,
                                         self._layer_log(topo.std_comms[j]),
                                         self._rejects_path(j, table))
                if layer.needs_passes:
                    layer.fit(stream)
                self.names = layer.feature_names_out
                stream = AppliedStream(stream, layer)
                self.std_layers.append(layer)
            self.stream = stream
        else:
            self._standardize_layered(reader_stream, n_std)
        self.report["seconds"]["standardize"] = time.perf_counter() - t0

    def _standardize_layered(self, reader_stream, n_std) -> None:
        topo, cfg = self.topo, self.cfg
        if reader_stream is not None:
            if n_std == 0:
                self.stream = reader_stream
                return
            peer = topo.std_ranks[0][self._group_index(topo.input_ranks)]
            self._send_stream(peer, reader_stream)
            return
        for j in range(n_std):
            if self.rank not in topo.std_ranks[j]:
                continue
            i = self._group_index(topo.std_ranks[j])
            self.n_chunks_out = len(self.plan.chunks_of(i))
            upstream = topo.upstream_of_std(j)[i]
            self.names = self.comm.recv(source=upstream, tag=tags.FEATURE_NAMES)
            layer = StandardizeLayer(j, cfg["standardize"][j], self.names, topo.std_comms[j],
                                     self.seed, self._layer_log(topo.std_comms[j]),
                                     self._rejects_path(j, cfg["standardize"][j]))
            incoming = ReceiveStream(self.comm, upstream)
            if layer.needs_passes:
                incoming = incoming.drain_into(ChunkStore(self.budget // 2, self.spill_dir))
                layer.fit(incoming)
            self.names = layer.feature_names_out
            self.std_layers.append(layer)
            stream = AppliedStream(incoming, layer)
            if j + 1 < n_std:
                self._send_stream(topo.std_ranks[j + 1][i], stream)
            else:
                self.stream = stream

    def _input_rejects(self):
        """The writer of the CSV records this input rank drops (None without rejects)."""
        from .steps.rejects import RejectsWriter, input_part_path, rejects_enabled

        if not rejects_enabled(self.cfg):
            return None
        return RejectsWriter(input_part_path(self.location.join, self.rank))

    def _rejects_path(self, j: int, table: dict) -> str | None:
        """This rank's rejects part file for standardization layer ``j`` (None without rejects)."""
        from .steps.rejects import part_path

        return part_path(self.location.join, j, self.rank) if table["rejects"] else None

    def _layer_log(self, layer_comm):
        """Log lines of a layer: progress from world rank 0, warnings from the layer's first rank."""
        first = layer_comm.Get_rank() == 0

        def log(message: str) -> None:
            if self.rank == 0:
                self.progress.log(message)
            elif first and message.startswith("warning"):
                write_line(f"[hpcprep rank {self.rank}] {message}", sys.stdout)

        return log

    def _send_stream(self, peer: int, stream) -> None:
        """Send the feature names, then every chunk of ``stream``, to the next layer's peer."""
        self.comm.send(self.names, dest=peer, tag=tags.FEATURE_NAMES)
        sent = 0
        for chunk in stream.iterate(final=True):
            sent += send_chunk(self.comm, peer, chunk)
        send_chunk(self.comm, peer, None)
        self.report["bytes_sent_one_to_one"] = self.report.get("bytes_sent_one_to_one", 0) + sent

    # ---- sampling -------------------------------------------------------------
    def _record_dtype(self, names) -> np.dtype:
        copies = any(t["op"] == "bootstrap" for t in self.cfg["sample"])
        return record_dtype(len(names), self.cfg["output"]["dtype"], self.plan.label_dtype,
                            weights=bool(self.cfg["input"].get("weight")), copies=copies)

    def sample(self) -> None:
        t0 = time.perf_counter()
        self._exchange_into_first()
        for li, layer in enumerate(self.sample_layers):
            if layer.comm is not None:
                layer.finish(self.rdt)
                log = self._layer_log(layer.comm)
                for w in layer.mode.warnings:
                    log(f"warning: sample[{li}] {w}")
                spilled = layer.comm.allreduce(layer.bytes_spilled)
                log(f"sample[{li}] {layer.mode.op}: {layer.total_in:,} rows in, "
                    f"{layer.total_out:,} out" + (f", {spilled / 2**20:,.1f} MiB spilled" if spilled else ""))
            if li + 1 < len(self.sample_layers):
                self._exchange_between(li)
        self.report["seconds"]["sample"] = time.perf_counter() - t0

    def _exchange_into_first(self) -> None:
        topo = self.topo
        link = topo.links[0]
        if link is None:
            return
        producers = topo.producers_of(0)
        consumers = topo.sample_ranks[0]
        is_producer = self.rank in producers
        layer = self._agree_on_rows(link, 0, producers[0])
        n_rounds = link.allreduce(self.n_chunks_out if is_producer else 0, op=MPI.MAX)
        cons_link = topo.link_ranks(0, consumers)
        chunks = iter(self.stream.iterate(final=True)) if is_producer else None
        self.progress.log(f"exchange into sample[0]: {n_rounds} round(s) over {len(producers)} "
                          f"producer(s) and {len(consumers)} sampling rank(s)")
        for _ in range(n_rounds):
            chunk = next(chunks, None) if is_producer else None
            if chunk is not None and self.plan.label_classes is not None:
                chunk = output_codes(chunk)
            routed, counts = layer.route_chunk(chunk, len(cons_link))
            del chunk
            self._send_routed(link, layer, routed, counts, cons_link)
        # one more step ends the generators, so streams release their caches and files
        if is_producer and next(chunks, None) is not None:
            raise RuntimeError(f"rank {self.rank} has more chunks than the plan gave it")
        layer.exchange_done(link)

    def _exchange_between(self, li: int) -> None:
        """Route sampling layer ``li``'s rows into layer ``li + 1`` (one exchange, bounded rounds)."""
        topo = self.topo
        link = topo.links[li + 1]
        if link is None:
            return
        src = self.sample_layers[li]
        dst = self._agree_on_rows(link, li + 1, topo.sample_ranks[li][0])
        cons_link = topo.link_ranks(li + 1, topo.sample_ranks[li + 1])
        blocks = src.outputs[0].blocks() if src.outputs is not None else ()
        # one round per block of the source layer's output (bounded memory)
        for blk in rounds(link, blocks, np.empty(0, self.rdt)):
            self._route_and_send(link, dst, blk, cons_link)
            del blk
        dst.exchange_done(link)

    def _agree_on_rows(self, link, layer_index: int, producer: int) -> SampleLayer:
        """Broadcast the feature names from a producer over ``link``; bind the consuming layer."""
        root = self.topo.link_ranks(layer_index, [producer])[0]
        self.names = link.bcast(self.names if link.Get_rank() == root else None, root=root)
        self.rdt = self._record_dtype(self.names)
        layer = self.sample_layers[layer_index]
        layer.bind(self.names, self.rdt)
        return layer

    def _route_and_send(self, link, layer: SampleLayer, recs, cons_link) -> None:
        routed, counts = layer.route(recs, len(cons_link))
        del recs
        self._send_routed(link, layer, routed, counts, cons_link)

    def _send_routed(self, link, layer: SampleLayer, routed, counts, cons_link) -> None:
        """Send rows grouped by consumer; a consumer keeps its own rows without copying them through MPI."""
        me = link.Get_rank()
        sendcounts = np.zeros(link.Get_size(), dtype=np.int64)
        sendcounts[cons_link] = counts
        own = None
        if sendcounts[me]:
            lo = int(sendcounts[:me].sum())
            own = routed[lo:lo + int(sendcounts[me])]
        received, recvcounts, sent = self.exchanger.records(link, routed, sendcounts, self.rdt,
                                                            skip_self=True)
        layer.bytes_sent += sent
        if me in cons_link:
            layer.receive_sections(received, recvcounts, own, me)
        if me not in cons_link or layer.copies_received:
            self.exchanger.recycle(received)
        del routed, own, received

    # ---- output -----------------------------------------------------------------
    def _shard_targets(self, n_writers: int, total: int, split: bool = False) -> np.ndarray:
        """Rows of each writer's shard: ``output.shard_sizes`` (exact), by ``plan.shard_speeds``
        (the assignment program; collective over the writers), or equal.

        With splits the split sizes are known only at run time, so the sizes are
        taken as relative weights and each split is cut in proportion (largest
        remainder), unless they sum to exactly the split's rows.
        """
        sizes = self.cfg["output"]["shard_sizes"]
        if not sizes and self.cfg["plan"]["shard_speeds"]:
            # rank 0 of the writers solves (hpcprep.assign.solve), every writer follows
            return np.asarray(root_decides(self.sample_layers[-1].comm, _shard_rows, total,
                                           self.cfg["plan"]["shard_speeds"], job_wide=False),
                              dtype=np.int64)
        if not sizes:
            return equal_counts(total, n_writers)
        if len(sizes) != n_writers or min(sizes) < 0:
            raise ConfigError(f"output.shard_sizes = {sizes}: needs {n_writers} non-negative sizes "
                              f"(one per rank of the last sampling layer)")
        if sum(sizes) == total:
            return np.asarray(sizes, dtype=np.int64)
        if not split or sum(sizes) == 0:
            raise ConfigError(f"output.shard_sizes = {sizes}: needs {n_writers} non-negative sizes "
                              f"(one per rank of the last sampling layer) summing to {total} rows")
        w = np.asarray(sizes, dtype=np.float64)
        # shares as (w / sum) * total, not total * w / sum: the same floats, so the same
        # shards as datasets written before (near-ties are decided by the last bit)
        return largest_remainder(w / w.sum() * total, total)

    def write(self) -> None:
        last = self.sample_layers[-1]
        if last.comm is None:
            return
        t0 = time.perf_counter()
        names = last.output_names
        if names is None:
            self.shard = self._write_output(last, 0, "")
        else:
            self.shard = {"splits": {name: self._write_output(last, i, name + "/")
                                     for i, name in enumerate(names)}}
        self.report["seconds"]["write"] = time.perf_counter() - t0

    def _write_output(self, last: SampleLayer, i: int, prefix: str) -> dict:
        """Rebalance output ``i`` of the last layer to the planned shard sizes and write this rank's shard.

        The rank's rows come as a sequence of blocks; each round moves one block
        of every rank (``Alltoallv``) and every writer puts what it receives at
        its global position, so no rank holds more than a block.
        """
        comm = last.comm
        size, p = comm.Get_size(), comm.Get_rank()
        out = last.outputs[i]
        targets = self._shard_targets(size, last.totals_out[i], split=prefix != "")
        offs = offsets(targets)
        n_local = np.array([out.rows], dtype=np.int64)
        start = np.zeros(1, dtype=np.int64)
        comm.Exscan(n_local, start)
        start = int(start[0]) if p else 0
        starts = np.array(comm.allgather(start), dtype=np.int64)
        cursor = np.maximum(starts, offs[p]) - offs[p]   # where each source's next row lands here
        if prefix:
            os.makedirs(self.location.join(prefix, "shards"), exist_ok=True)
        rel = f"shards/part-{p:05d}.h5"
        writer = ShardWriter(self.location.join(prefix + rel), int(targets[p]), self.rdt, self.names)
        position = start
        for rec in rounds(comm, out.blocks(), np.empty(0, self.rdt)):
            counts = contiguous_targets(position, len(rec), offs)
            position += len(rec)
            own_lo = int(counts[:p].sum())
            own = rec[own_lo:own_lo + int(counts[p])]   # this rank's rows for its own shard
            got, recvcounts, sent = self.exchanger.records(comm, rec, counts, self.rdt, skip_self=True)
            last.bytes_sent += sent
            recvcounts[p] = len(own)
            at = 0
            for s in np.flatnonzero(recvcounts):   # pieces in source order: global order
                c = int(recvcounts[s])
                writer.write_at(int(cursor[s]), own if s == p else got[at:at + c])
                cursor[s] += c
                if s != p:
                    at += c
            self.exchanger.recycle(got)   # the writer has copied it
            del got, own, rec
        info = writer.close()
        self.progress.log(f"wrote {prefix}{rel}: {info['rows']:,} rows")
        return {"path": rel, "start": int(offs[p]), **info}

    # ---- report, master file, manifest ----------------------------------------------
    def finish(self, t_start: float) -> dict | None:
        self.exchanger.close()
        if self._reader is not None:
            self.report["seconds"]["read"] = self._reader.seconds
        self.report["standardize"] = {l.index: l.report() for l in self.std_layers}
        self.report["sample"] = {l.index: l.report() for l in self.sample_layers if l.comm is not None}
        self.report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        step_stats = {}
        for layer in self.std_layers:
            step_stats.update(layer.stats())
        self._check_output()
        gathered = self.comm.gather((self.report, self.shard, step_stats or None, self.names,
                                     self.rdt), root=0)
        result = None
        if self.rank == 0:
            result = self._write_metadata(gathered, time.perf_counter() - t_start)
        ok = self.comm.bcast(result is not None if self.rank == 0 else None, root=0)
        if not ok:
            raise RuntimeError("rank 0 could not finish the output")
        self.location.committed()
        return result

    def _check_output(self) -> None:
        """Refuse to commit too many dropped rows or non-finite features (DESIGN §6).

        A collective over every rank: each rank gives what it dropped and the
        non-finite values of its shards; every rank judges the same gathered
        numbers (:func:`output_problem`), so on failure all raise the same
        :class:`AgreedError` (printed once, by rank 0) after rank 0 removed the
        temporary output: nothing complete-looking is left.
        """
        mine = {"input": {"dropped": self.report.get("input", {}).get("dropped", {})},
                "standardize": {k: {"dropped": v["dropped"]}
                                for k, v in self.report["standardize"].items()}}
        gathered = self.comm.allgather((mine, nonfinite_of(self.shard, self.names,
                                                           self.sample_layers[-1].output_names)))
        problem = output_problem(self.cfg["output"], self.plan.total_rows,
                                 sum_drops([g[0] for g in gathered]),
                                 [s for g in gathered for s in g[1]])
        if problem is None:
            return
        if self.rank == 0:
            self.location.abandon()
        raise AgreedError(problem)

    def _write_metadata(self, gathered, seconds: float) -> dict:
        reports = [g[0] for g in gathered]
        split_names = self.sample_layers[-1].output_names
        if split_names:
            by_split = {name: sorted((g[1]["splits"][name] for g in gathered if g[1] is not None),
                                     key=lambda s: s["start"]) for name in split_names}
            shards = [s for name in split_names for s in by_split[name]]
        else:
            shards = sorted((g[1] for g in gathered if g[1] is not None), key=lambda s: s["start"])
        step_stats = {}  # layered: each std layer's ranks hold that layer's stats
        for g in gathered:
            for label, params in (g[2] or {}).items():
                step_stats.setdefault(label, params)
        writer = next(g for g in gathered if g[1] is not None)
        names, rdt = writer[3], writer[4]
        counts = sum_drops(reports)
        total = sum(s["rows"] for s in shards)
        sampling = {str(l.index): l.report()["mode"] for l in self.sample_layers if l.comm is not None}
        for rep in reports:
            sampling.update({str(k): v["mode"] for k, v in rep.get("sample", {}).items()})
        base_attrs = {"hpcprep_version": __version__, "seed": self.seed, "config": self.cfg["_text"],
                      "rows_in": self.plan.total_rows, "feature_names": names, "counts": counts,
                      "sampling": sampling}
        if split_names:
            for name in split_names:
                sub = _SubLocation(self.location, name)
                _write_dataset(sub, rdt, by_split[name], names, dict(base_attrs, split=name),
                               step_stats, self.seed, label_classes=self.plan.label_classes)
        else:
            _write_dataset(self.location, rdt, shards, names, base_attrs, step_stats, self.seed,
                           write_manifest=False, label_classes=self.plan.label_classes)
        summary = {
            "hpcprep_version": __version__, "world_size": self.comm.Get_size(),
            "layout": "fused" if self.topo.fused else "layered",
            "rows_in": self.plan.total_rows, "rows_out": total, "dropped": counts,
            "seconds": seconds, "rows_per_second": self.plan.total_rows / max(seconds, 1e-9),
            "ranks": reports,
        }
        summary["sampling"] = sampling
        summary["input"] = _input_summary(reports, counts)
        summary["input_plan"] = _input_plan_report(reports, self.topo.input_ranks)
        write_json(self.location.join("report.json"), summary)
        from .steps.rejects import rejects_enabled

        if rejects_enabled(self.cfg):
            from .steps.rejects import PARTS, merge_rejects

            merge_rejects(self.location.join(PARTS), self.location.join("rejects.h5"), counts)
        if split_names:
            top = manifest(rdt, [], names, self.seed, splits={n: n for n in split_names},
                           label_classes=self.plan.label_classes)
            top["rows"] = int(total)
            top["master"] = None
            write_json(self.location.join("manifest.json"), top)
        else:
            write_json(self.location.join("manifest.json"),
                       manifest(rdt, shards, names, self.seed, label_classes=self.plan.label_classes))
        for line in self.location.commit():
            self.progress.log(line)
        self.progress.log(f"done: {self.plan.total_rows:,} rows in, {total:,} rows out in "
                          f"{len(shards)} shard(s), {seconds:.2f} s "
                          f"({summary['rows_per_second']:,.0f} rows/s) -> {self.location.path}")
        return summary


class _SubLocation:
    """A dataset folder inside the run's temporary folder (one split)."""

    def __init__(self, location, name: str):
        self.location, self.name = location, name

    def join(self, *parts: str) -> str:
        return self.location.join(self.name, *parts)


def _write_dataset(location, rdt, shards, names, attrs, step_stats, seed,
                   write_manifest: bool = True, label_classes=None) -> None:
    """Master file (and manifest) of one dataset from its shards' descriptions
    (``label_classes``: the vocabulary of class labels, or None)."""
    moments = None
    for s in shards:
        if s["moments"] is not None:
            moments = s["moments"] if moments is None else moments.merge(s["moments"])
    d = len(names)
    moments = moments or Moments(np.zeros(d), np.full(d, np.nan), np.zeros(d))
    attrs = dict(attrs, rows=sum(s["rows"] for s in shards))
    stats = {"mean": moments.mean, "std": moments.std}
    if label_classes is not None:
        stats["label_classes"] = label_classes
    write_master(location, rdt, shards, names, attrs, stats, step_stats)
    if write_manifest:
        write_json(location.join("manifest.json"),
                   manifest(rdt, shards, names, seed, label_classes=label_classes))


def _input_summary(reports, counts) -> dict:
    """report.json's ``input``: reader drops, and the first bad records of each file and reason."""
    from .io.readers import merge_bad_samples

    parts = [rep["input"].pop("bad_records") for rep in reports if "bad_records" in rep.get("input", {})]
    return {"dropped": counts.get("input", {}), "bad_records": merge_bad_samples(parts)}


def _layer_fits(table: dict) -> bool:
    from .steps import STEPS

    return any(STEPS[s["op"]].needs_fit for s in table["steps"])


def _input_plan_report(reports, input_ranks) -> dict:
    """report.json's ``input_plan``: the plan rank 0 broadcast, with each input rank's
    measured read time (``seconds.read`` of its own report, every pass) next to the prediction."""
    out = dict(reports[0].get("input_plan", {}))
    if "predicted_finish_s" in out:
        out["measured_finish_s"] = [reports[r]["seconds"].get("read") for r in input_ranks]
    return out
