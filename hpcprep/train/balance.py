"""Per-rank batch sizes: equal (or fixed shares) or worker-adaptive (LB-BSP).

The global batch size ``B`` is fixed; rank i takes ``b_i`` of its samples with
``Σ b_i = B``. Every rank keeps its last step timings (:class:`.replan.RankTimings`).
With ``balance = "adaptive"``, every ``rebalance_every`` steps each rank reports
its fitted seconds per sample and fixed seconds, and its median step seconds
(lowercase ``gather``: three floats),
rank 0 decides through the assignment program whether and how to re-plan
(:class:`.replan.Replanner`) and broadcasts the decision. Since the
data-parallel step is exact for any split, changing the sizes changes only how
fast a step is, not what it computes.
"""

from ..errors import HpcprepError
from ..mpi.agree import root_decides
from ..partition import proportional_counts
from .ordered import aligned, to_rows, to_units
from .replan import RankTimings, ReplanSettings, Replanner


class Balancer:
    """The per-rank batch sizes of a training run, and their report.

    Parameters
    ----------
    comm : mpi4py communicator
    global_batch : int
    mode : "equal" or "adaptive"
    settings : ReplanSettings
        When and how far to re-plan (adaptive).
    shares : list of float, optional
        Fixed relative shares per rank (default equal); also the adaptive start.
    granule : int, optional
        Rows per block: every cut between ranks falls on a block boundary of the global
        batch (the ordered reduction, :mod:`.ordered`; 1: any cut).
    """

    def __init__(self, comm, global_batch: int, mode: str = "equal",
                 settings: ReplanSettings = ReplanSettings(), shares=None, granule: int = 1):
        self.comm = comm
        self.rank, self.nranks = comm.Get_rank(), comm.Get_size()
        self.global_batch, self.granule = int(global_batch), int(granule)
        self.mode, self.settings = mode, settings
        self.sizes = self._split(self.global_batch, shares if shares else [1.0] * self.nranks)
        self.initial_sizes = list(self.sizes)
        self.method = "equal" if not shares else "shares"
        self.replans = []          # re-plan records (rank 0's decisions, on every rank)
        self.timings = RankTimings(settings.window, settings.model)
        self.replanner = Replanner(self.global_batch, self.nranks, settings, self.granule) \
            if self.rank == 0 else None
        self.final = None          # set by finish()

    def _split(self, length: int, weights) -> list[int]:
        """``length`` rows in whole blocks proportional to ``weights`` (largest remainder)."""
        g = self.granule
        return to_rows(proportional_counts(-(-length // g), weights), length, g)

    def set_sizes(self, sizes) -> None:
        """Continue with ``sizes`` (a resumed run's; moved to block boundaries if need be)."""
        sizes = [int(b) for b in sizes]
        if not aligned(sizes, self.granule):
            sizes = self._split(self.global_batch, sizes)
        if sizes != self.sizes:
            self.method = "checkpoint"
        self.sizes = sizes
        self.timings.sizes_changed()

    def block(self, length: int) -> list[int]:
        """Sizes for a global batch of ``length`` samples (the last batch of an epoch is
        smaller): the current sizes scaled, largest remainder (in whole blocks)."""
        if length == self.global_batch:
            return list(self.sizes)
        if self.granule == 1:
            return proportional_counts(length, self.sizes).tolist()
        return self._split(length, to_units(self.sizes, self.granule))

    def record(self, samples: int, seconds: float) -> None:
        """Add one step's local work (samples, busy seconds: :class:`.parallel.StepResult`) to
        this rank's window."""
        self.timings.record(samples, seconds)

    def _decide(self, step: int, reports) -> dict | None:
        """Rank 0: the re-plan record, or None."""
        try:
            return self.replanner.check(step, list(self.sizes), [r[0] for r in reports],
                                        [r[1] for r in reports])
        except Exception as e:  # noqa: BLE001 - reported on every rank by root_decides
            raise HpcprepError(f"re-planning batch sizes at step {step} failed on rank 0: "
                               f"{type(e).__name__}: {e}") from None

    def after_step(self, step: int) -> dict | None:
        """Check when due (adaptive mode, every ``rebalance_every`` steps). Collective; every
        rank calls it after every step with the same ``step``. Returns the re-plan record
        when the sizes changed, else None."""
        if self.mode != "adaptive" or step % self.settings.every != 0:
            return None
        reports = self.comm.gather(self.timings.report(), root=0)
        rec = root_decides(self.comm, self._decide, step, reports)
        if rec is not None:
            self.sizes, self.method = list(rec["new_sizes"]), "assign"
            self.timings.sizes_changed()
            self.replans.append(rec)
        return rec

    def finish(self) -> None:
        """Gather every rank's last timings for :meth:`report`. Collective."""
        reports = self.comm.gather(self.timings.report(), root=0)
        if self.rank != 0:
            return
        est = self.replanner.estimates([r[0] for r in reports], [r[1] for r in reports])
        p, a = est if est is not None else (None, None)
        self.final = {
            "seconds_per_sample": p, "fixed_s": a,
            "predicted_step_s": None if est is None else
            [ai + b * pi for b, pi, ai in zip(self.sizes, p, a)],
            "measured_step_s": [r[2] for r in reports],
        }

    def report(self) -> dict:
        """What the summary says about the batch sizes: mode, settings, sizes, the last
        plan, predicted vs measured step seconds per rank (rank 0, after :meth:`finish`),
        and every re-plan."""
        st = self.settings
        out = {"mode": self.mode, "method": self.method, "initial_sizes": self.initial_sizes,
               "sizes": list(self.sizes), "replans": list(self.replans)}
        if self.granule > 1:
            out["block_rows"] = self.granule
        if self.mode == "adaptive":
            out["settings"] = {"every": st.every, "window": st.window, "threshold": st.threshold,
                               "patience": st.patience, "max_change": st.max_change,
                               "model": st.model}
            out["plan"] = self.replans[-1]["plan"] if self.replans else None
            if self.replanner is not None:
                out["checks"], out["last_check"] = self.replanner.checks, self.replanner.last
        if self.final is not None:
            out.update(self.final)
        return out
