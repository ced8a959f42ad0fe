"""The commit stage: check what was written, gather the reports, write master, manifest and
report.json on rank 0, and swap the new output in."""

from __future__ import annotations

import resource
import time

import numpy as np

from .. import __version__
from ..mpi.agree import AgreedError
from ..output.checks import nonfinite_of, output_problem, sum_drops
from ..output.master import manifest, write_json, write_master
from ..steps.categorical import code_columns
from ..steps.moments import Moments


def commit(ctx, standardized, sampled, shard, t_start: float) -> dict | None:
    """Finish the run on every rank; rank 0 returns the summary (also ``report.json``)."""
    ctx.exchanger.close()
    ctx.report["standardize"] = {l.index: l.report() for l in standardized.layers}
    ctx.report["sample"] = {l.index: l.report() for l in sampled.layers if l.comm is not None}
    ctx.report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_stats = {}
    for layer in standardized.layers:
        step_stats.update(layer.stats())
    split_names = sampled.layers[-1].output_names
    _check_output(ctx, shard, sampled.names, split_names)
    gathered = ctx.comm.gather((ctx.report, shard, step_stats or None, sampled.names, sampled.rdt),
                               root=0)
    result = None
    if ctx.rank == 0:
        result = _write_metadata(ctx, gathered, sampled.layers, time.perf_counter() - t_start)
    if not ctx.comm.bcast(result is not None if ctx.rank == 0 else None, root=0):
        raise RuntimeError("rank 0 could not finish the output")
    ctx.location.committed()
    return result


def _check_output(ctx, shard, names, split_names) -> None:
    """Refuse to commit too many dropped rows or non-finite features (DESIGN §6).

    A collective over every rank: each rank gives what it dropped and the
    non-finite values of its shards; every rank judges the same gathered
    numbers (:func:`output_problem`), so on failure all raise the same
    :class:`AgreedError` (printed once, by rank 0) after rank 0 removed the
    temporary output: nothing complete-looking is left.
    """
    mine = {"input": {"dropped": ctx.report.get("input", {}).get("dropped", {})},
            "standardize": {k: {"dropped": v["dropped"]} for k, v in ctx.report["standardize"].items()}}
    gathered = ctx.comm.allgather((mine, nonfinite_of(shard, names, split_names)))
    problem = output_problem(ctx.cfg.output, ctx.plan.total_rows,
                             sum_drops([g[0] for g in gathered]),
                             [s for g in gathered for s in g[1]])
    if problem is None:
        return
    if ctx.rank == 0:
        ctx.location.abandon()
    raise AgreedError(problem)


def _shards_by_output(gathered, split_names) -> dict:
    """Every shard's description in global order, by split name (``None``: one output)."""
    if not split_names:
        return {None: sorted((g[1] for g in gathered if g[1] is not None), key=lambda s: s["start"])}
    return {name: sorted((g[1]["splits"][name] for g in gathered if g[1] is not None),
                         key=lambda s: s["start"]) for name in split_names}


def _fitted_stats(gathered) -> dict:
    """Every layer's fitted statistics (layered: each layer's ranks hold that layer's)."""
    step_stats = {}
    for g in gathered:
        for label, params in (g[2] or {}).items():
            step_stats.setdefault(label, params)
    return step_stats


def _sampling_modes(sample_layers, reports) -> dict:
    sampling = {str(l.index): l.report()["mode"] for l in sample_layers if l.comm is not None}
    for rep in reports:
        sampling.update({str(k): v["mode"] for k, v in rep.get("sample", {}).items()})
    return sampling


def _write_metadata(ctx, gathered, sample_layers, seconds: float) -> dict:
    """Rank 0: master file(s), report.json, rejects.h5 and manifest.json; then commit."""
    split_names = sample_layers[-1].output_names
    reports = [g[0] for g in gathered]
    by_output = _shards_by_output(gathered, split_names)
    names, rdt = next((g[3], g[4]) for g in gathered if g[1] is not None)
    counts = sum_drops(reports)
    total = sum(s["rows"] for shards in by_output.values() for s in shards)
    classes, codes = ctx.plan.label_classes, code_columns(ctx.cfg)
    sampling = _sampling_modes(sample_layers, reports)
    attrs = {"hpcprep_version": __version__, "seed": ctx.seed, "config": ctx.cfg.text,
             "rows_in": ctx.plan.total_rows, "feature_names": names, "counts": counts,
             "sampling": sampling}
    stats = _fitted_stats(gathered)
    for name, shards in by_output.items():
        where = ctx.location if name is None else _SubLocation(ctx.location, name)
        _write_dataset(where, rdt, shards, names, attrs if name is None else dict(attrs, split=name),
                       stats, ctx.seed, write_manifest=name is not None, label_classes=classes,
                       code_names=codes)
    summary = _summary(ctx, reports, counts, total, seconds, sampling)
    write_json(ctx.location.join("report.json"), summary)
    _merge_rejects(ctx, counts)
    top = manifest(rdt, by_output.get(None, []), names, ctx.seed, label_classes=classes,
                   splits={n: n for n in split_names} if split_names else None, code_names=codes)
    if split_names:
        top["rows"] = int(total)
        top["master"] = None
    write_json(ctx.location.join("manifest.json"), top)
    for line in ctx.location.commit():
        ctx.progress.log(line)
    n_shards = sum(len(s) for s in by_output.values())
    ctx.progress.log(f"done: {ctx.plan.total_rows:,} rows in, {total:,} rows out in "
                     f"{n_shards} shard(s), {seconds:.2f} s "
                     f"({summary['rows_per_second']:,.0f} rows/s) -> {ctx.location.path}")
    return summary


def _summary(ctx, reports, counts, total: int, seconds: float, sampling: dict) -> dict:
    """``report.json``: the run's totals, every rank's report, the input and its plan."""
    return {
        "hpcprep_version": __version__, "world_size": ctx.comm.Get_size(),
        "layout": "fused" if ctx.topo.fused else "layered",
        "rows_in": ctx.plan.total_rows, "rows_out": total, "dropped": counts,
        "seconds": seconds, "rows_per_second": ctx.plan.total_rows / max(seconds, 1e-9),
        "ranks": reports, "sampling": sampling,
        "input": _input_summary(reports, counts),
        "input_plan": _input_plan_report(reports, ctx.topo.input_ranks),
    }


def _merge_rejects(ctx, counts) -> None:
    from ..steps.rejects import PARTS, merge_rejects, rejects_enabled

    if rejects_enabled(ctx.cfg):
        merge_rejects(ctx.location.join(PARTS), ctx.location.join("rejects.h5"), counts)


class _SubLocation:
    """A dataset folder inside the run's temporary folder (one split)."""

    def __init__(self, location, name: str):
        self.location, self.name = location, name

    def join(self, *parts: str) -> str:
        return self.location.join(self.name, *parts)


def _write_dataset(location, rdt, shards, names, attrs, step_stats, seed,
                   write_manifest: bool = True, label_classes=None, code_names=None) -> None:
    """Master file (and manifest) of one dataset from its shards' descriptions
    (``label_classes``: the vocabulary of class labels, or None; ``code_names``: the
    columns of the int64 codes)."""
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
    write_master(location, rdt, shards, names, attrs, stats, step_stats, code_names)
    if write_manifest:
        write_json(location.join("manifest.json"),
                   manifest(rdt, shards, names, seed, label_classes=label_classes,
                            code_names=code_names))


def _input_summary(reports, counts) -> dict:
    """report.json's ``input``: reader drops, and the first bad records of each file and reason."""
    from ..io.readers import merge_bad_samples

    parts = [rep["input"].pop("bad_records") for rep in reports if "bad_records" in rep.get("input", {})]
    return {"dropped": counts.get("input", {}), "bad_records": merge_bad_samples(parts)}


def _input_plan_report(reports, input_ranks) -> dict:
    """report.json's ``input_plan``: the plan rank 0 broadcast, with each input rank's
    measured read time (``seconds.read`` of its own report, every pass) next to the prediction."""
    out = dict(reports[0].get("input_plan", {}))
    if "predicted_finish_s" in out:
        out["measured_finish_s"] = [reports[r]["seconds"].get("read") for r in input_ranks]
    return out
