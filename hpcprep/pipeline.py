"""The whole run: read -> standardize -> sample -> write -> commit (:mod:`hpcprep.stages`).

Every rank runs :func:`run_pipeline` with the same validated config. What a
rank does depends on the groups it belongs to (:mod:`hpcprep.topology`); with a
fused layout it plays every role in turn, with a layered one a single role.
Both go through the same stages, steps, exchanges and output.
"""

import time

from .config import RunConfig
from .mpi.agree import AgreedError, root_decides
from .io.classes import collect_label_classes
from .io.plan import build_input_plan, check_input_columns, expand_paths, import_readers
from .io.plan_count import count_csv_chunks
from .kernels.active import Kernels
from .output.location import OutputLocation
from .stages.checkpoint import Checkpoint
from .stages.commit import commit
from .stages.context import RunContext
from .stages.read import balance_input, open_input
from .stages.sample import SampleStage
from .stages.standardize import standardize
from .stages.subsample import thresholds
from .stages.write import write


def _prepare(cfg: RunConfig, n_input: int, progress, resume: bool = False):
    """Rank 0, before any work: check the output path, take its lock, remove temporary folders
    of dead runs, plan the input, find or start the run's checkpoint
    (:class:`~hpcprep.stages.checkpoint.Checkpoint`) and create a fresh temporary output folder."""
    location = OutputLocation(cfg.output.path, cfg.output.overwrite)
    location.check(cfg.input.paths, expand_paths(cfg.input.paths))
    try:
        for line in location.acquire():
            progress.log(line)
        check_input_columns(cfg)
        plan = build_input_plan(cfg.input, n_input)
        from .sampling import check_chain

        check_chain(cfg.sample, plan.label_dtype)
        checkpoint = Checkpoint.find(location.path, cfg, expand_paths(cfg.input.paths),
                                     resume, progress.log)
        location.create()
    except BaseException:
        location.abandon()
        raise
    return plan, location, checkpoint


def run_pipeline(cfg: RunConfig, comm, progress, cleanups: list | None = None,
                 resume: bool = False) -> dict | None:
    """Run the configured pipeline on every rank of ``comm``.

    Parameters
    ----------
    cfg : RunConfig
        Validated config (:func:`hpcprep.config.parse_config`).
    comm : communicator
        All ranks of the job.
    progress : Progress
        Where rank 0's progress lines go.
    cleanups : list, optional
        The run's cleanups for :func:`hpcprep.mpi.agree.fail_hard` (``cli.main``'s):
        the output location is added, so a failure removes its temporary folder and lock.
    resume : bool
        ``hpcprep run --resume``: a run without a usable checkpoint is an error (without
        it, a checkpoint of the same config and input is used when there is one).

    Returns
    -------
    dict or None
        On rank 0, the run summary (also written to ``report.json``); None elsewhere.
    """
    from .topology import build_topology

    t_start = time.perf_counter()
    topo = build_topology(comm, cfg.layout, len(cfg.standardize), len(cfg.sample))
    import_readers(cfg.input)
    plan, location, checkpoint = root_decides(comm, _prepare, cfg, len(topo.input_ranks),
                                              progress, resume)
    location.track(cleanups)
    ctx = RunContext(cfg, comm, topo, plan, location, progress, checkpoint=checkpoint)
    if cleanups is not None:
        cleanups += [ctx.remove_spill, checkpoint.discard]
    if not plan.counted:   # compressed files' text is kept in the spill folder: read once
        count_csv_chunks(plan, comm, topo.input_ranks, cfg.input, keep_dir=ctx.spill_dir)
    collect_label_classes(plan, comm, topo.input_ranks, cfg.input)
    device = _select_device(comm, cfg.resources.device)
    ctx.kernels = Kernels(device.xp)
    ctx.report["device"] = device.report()
    ctx.report["input_plan"] = balance_input(ctx)
    progress.log(f"input: {plan.total_rows:,} rows x {plan.n_features} features in "
                 f"{len(plan.files)} file(s), {len(plan.chunks)} chunk(s) over "
                 f"{len(topo.input_ranks)} input rank(s); layout "
                 f"{'fused' if topo.fused else 'layered'}, {comm.Get_size()} rank(s)")
    subsample = thresholds(ctx, ctx.report["input_plan"])
    checkpoint.begin(ctx, subsample)
    standardized = standardize(ctx, open_input(ctx, subsample))
    sampled = SampleStage(ctx).run(standardized)
    shard = write(ctx, sampled)
    ctx.remove_spill()   # before the commit moves a spill folder inside the output
    summary = commit(ctx, standardized, sampled, shard, t_start)
    if ctx.rank == 0:
        checkpoint.remove()
    return summary


def _select_device(comm, requested: str):
    """Bind each rank to its device; a rank that cannot use what was asked stops every rank once."""
    from .device import select_device
    from .errors import HpcprepError

    try:
        return select_device(comm, requested)
    except HpcprepError as e:  # raised identically on every rank after an allgather
        raise AgreedError(str(e)) from None


