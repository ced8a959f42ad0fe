"""The data-parallel step: exact weighted gradient averaging with one fused Allreduce.

Rank i holds the same parameters as every other rank and a local batch of
``b_i`` samples (``b_i`` may differ between ranks and may be 0). It computes
the *sum* of its per-sample gradients ``G_i = b_i g_i`` and writes
``[G_i (P values), b_i, loss_sum_i]`` into one flat float64 buffer; a single
``Allreduce(SUM)`` of that buffer gives ``Σ G_i``, ``B = Σ b_i`` and the loss
total, so every rank gets ``Σ b_i g_i / Σ b_i``: exactly the gradient of the
global batch, whatever the split. When ``B == 0`` (every rank empty) the step
does not update; every rank knows ``B``, so every rank takes the same path.
With ``reduce = "ordered"`` the sums go through :class:`.ordered.OrderedReduce`
instead of the Allreduce: the same totals, added in an order fixed by the samples.

:class:`AdaptiveComm` is the optional communication-saving mode (local SGD with
an adaptive averaging interval).
"""

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from .ordered import OrderedReduce, to_units


def _sync(xp):
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


@dataclass
class StepResult:
    """What one data-parallel step computed (the same on every rank, except the timings)."""

    grad: object            # mean gradient over the global batch, (P,) xp array (None if total == 0)
    total: int              # Σ b_i
    loss_sum: float         # Σ of per-sample losses over the global batch
    compute_s: float        # this rank's forward/backward time (with the emulated slowdown)
    allreduce_s: float      # time in the reduction (including waiting for slower ranks)
    busy_s: float           # this rank's time from the end of the last reduction to this one


class DataParallel:
    """Synchronous data-parallel gradient steps over a communicator.

    Parameters
    ----------
    comm : mpi4py communicator
    model : hpcprep.train.models.Model
    xp : module
        ``numpy`` or ``cupy``. With CuPy the buffer travels through host memory
        (pip's MPICH is not CUDA-aware).
    slowdown : float
        Emulate a slower rank: after computing, sleep ``(slowdown - 1) ×`` the
        compute time. The trainer sets it before each step
        (``train.emulate_slowdown``, ``train.emulate_episodes``: :mod:`.emulate`).
    granule : int, optional
        Rows per block of the ordered reduction (``train.reduce = "ordered"``);
        None: one Allreduce. With a granule, :meth:`step` needs every rank's ``sizes``.

    Attributes
    ----------
    step_cost : float
        Emulated fixed seconds per step (``train.emulate_step_cost``), slept after computing.
    """

    def __init__(self, comm, model, xp=np, slowdown: float = 1.0, granule: int | None = None):
        self.comm, self.model, self.xp = comm, model, xp
        self.slowdown, self.step_cost = float(slowdown), 0.0
        self.ordered = None if granule is None else OrderedReduce(comm, model, granule, xp)
        self.clock = None       # end of the last reduction (None: measure busy as compute)
        self.size = model.size
        self.buf = xp.zeros(self.size + 2, dtype=xp.float64)
        self.host = self.buf if xp is np else np.zeros(self.size + 2)
        self.allreduce_s = 0.0
        self.compute_s = 0.0
        self.calls = 0

    def local(self, params, x, y):
        """Compute this rank's gradient sum, count and loss sum into the buffer; return seconds."""
        t0 = time.perf_counter()
        b = 0 if y is None else int(y.shape[0])
        if b:
            loss = self.model.loss_grad(params, x, y, self.buf[:self.size])
        else:
            self.buf[:self.size] = 0.0
            loss = 0.0
        self.buf[self.size] = b
        self.buf[self.size + 1] = loss
        return self._emulate(t0)

    def _emulate(self, t0: float) -> float:
        """Seconds since ``t0`` after the emulated slowdown and step cost."""
        _sync(self.xp)
        dt = time.perf_counter() - t0
        if self.slowdown > 1.0 or self.step_cost > 0.0:
            time.sleep((self.slowdown - 1.0) * dt + self.step_cost)
            dt = time.perf_counter() - t0
        return dt

    def restart_clock(self) -> None:
        """Forget the last reduction's end (at an epoch's start: evaluation is not step time)."""
        self.clock = None

    def _allreduce(self) -> None:
        if self.xp is not np:
            self.host[...] = self.buf.get()
        self.comm.Allreduce(MPI.IN_PLACE, self.host, op=MPI.SUM)

    def _ordered(self, params, x, y, sizes) -> tuple[float, object]:
        """The ordered step's local part: (compute seconds, this rank's tree nodes)."""
        t0 = time.perf_counter()
        n_blocks = -(-int(sum(sizes)) // self.ordered.granule)
        first = int(sum(to_units(sizes, self.ordered.granule)[:self.comm.Get_rank()]))
        nodes = self.ordered.local(params, x, y, first, n_blocks)
        return self._emulate(t0), nodes

    def step(self, params, x, y, sizes=None) -> StepResult:
        """One synchronous step: local gradient sum, one fused reduction, global mean.

        Collective: every rank of ``comm`` calls it once per step, with ``x``, ``y``
        possibly empty (0 rows); with the ordered reduction, ``sizes`` are every rank's
        rows of this global batch, cut at block boundaries.
        """
        if self.ordered is None:
            compute = self.local(params, x, y)
        else:
            compute, nodes = self._ordered(params, x, y, sizes)
        t0 = time.perf_counter()
        busy = compute if self.clock is None else t0 - self.clock
        if self.ordered is None:
            self._allreduce()
        else:
            self.ordered.reduce(nodes, sizes, self.host)
        if self.xp is not np:
            self.buf[...] = self.xp.asarray(self.host)
        self.clock = time.perf_counter()
        allreduce = self.clock - t0
        self.allreduce_s += allreduce
        self.compute_s += compute
        self.calls += 1
        total = int(round(float(self.host[self.size])))
        loss_sum = float(self.host[self.size + 1])
        grad = None
        if total > 0:
            grad = self.buf[:self.size]
            grad /= total
        return StepResult(grad, total, loss_sum, compute, allreduce, busy)


class AdaptiveComm:
    """Local SGD with an adaptive averaging interval (``train.adaptive_comm = true``).

    Between averages every rank trains on its own batches with its own optimizer
    (no communication). Every ``interval`` steps the ranks average their models,
    weighted by the samples each saw since the last average, with ONE Allreduce of
    ``[w_i θ_i, w_i, w_i ||θ_i||²]``; that same buffer gives the weighted spread of
    the local models around the average, ``sqrt(Σ w_i ||θ_i − θ̄||² / Σ w_i)``. When
    the spread relative to ``||θ̄||`` stays under ``threshold`` the ranks trained
    nearly the same model, so the interval doubles (up to ``max_interval``);
    otherwise it halves (down to 1, plain synchronous averaging). Every rank
    computes the new interval from the same reduced numbers, so all take the same
    collective path with no extra messages.
    """

    def __init__(self, comm, size: int, threshold: float, max_interval: int = 64, xp=np):
        self.comm, self.size, self.threshold = comm, size, float(threshold)
        self.max_interval = int(max_interval)
        self.xp = xp
        self.interval = 1
        self.since = 0          # steps since the last average
        self.weight = 0.0       # samples since the last average
        self.rounds = 0         # averages done
        self.steps = 0          # local steps done
        self.last_spread = 0.0
        self.allreduce_s = 0.0
        self.buf = np.zeros(size + 2)

    def after_step(self, params, samples: int, force: bool = False) -> bool:
        """Count a local step; average when the interval is reached (or ``force``). Collective."""
        self.steps += 1
        self.since += 1
        self.weight += samples
        if self.since >= self.interval or force:
            self.average(params)
            return True
        return False

    def average(self, params) -> None:
        """Weighted model average over the ranks, in place. Collective."""
        host = params.get() if self.xp is not np else params
        w = self.weight
        self.buf[:self.size] = w * host
        self.buf[self.size] = w
        self.buf[self.size + 1] = w * float(host @ host)
        t0 = time.perf_counter()
        self.comm.Allreduce(MPI.IN_PLACE, self.buf, op=MPI.SUM)
        self.allreduce_s += time.perf_counter() - t0
        total = self.buf[self.size]
        if total > 0:
            mean = self.buf[:self.size] / total
            var = max(self.buf[self.size + 1] / total - float(mean @ mean), 0.0)
            norm = float(np.sqrt(mean @ mean))
            self.last_spread = float(np.sqrt(var)) / norm if norm > 0 else 0.0
            params[...] = mean if self.xp is np else self.xp.asarray(mean)
            if self.last_spread < self.threshold:
                self.interval = min(2 * self.interval, self.max_interval)
            else:
                self.interval = max(1, self.interval // 2)
        self.rounds += 1
        self.since = 0
        self.weight = 0.0

    def state(self) -> dict:
        return {"interval": self.interval, "rounds": self.rounds, "steps": self.steps}

    def load_state(self, state: dict) -> None:
        self.interval = int(state["interval"])
        self.rounds = int(state["rounds"])
        self.steps = int(state["steps"])

    def report(self) -> dict:
        """Communication done vs. a synchronous run (one Allreduce per step)."""
        saved = 1.0 - self.rounds / self.steps if self.steps else 0.0
        return {"steps": self.steps, "averages": self.rounds, "interval": self.interval,
                "allreduce_saved": saved, "last_spread": self.last_spread}
