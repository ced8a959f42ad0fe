"""When and how to re-plan per-rank batch sizes during training (worker-adaptive batching).

Three guards against chasing noise (docs/train.md; a model of the problem showed
that re-planning from the last step's timings, or from an exponential moving
average, falls up to 2x behind an oracle under transient interference):

* **Robust estimates.** Each rank keeps its last ``window`` step timings; its
  speed estimate is the *median* seconds per sample over them, so an episode
  shorter than half the window does not move it.
* **Persistent change only.** At each check rank 0 predicts the step time of the
  current sizes and of the best sizes under the estimates; it re-plans only
  when the best step is faster by more than ``threshold`` (relative) at
  ``patience`` consecutive checks.
* **Bounded moves.** One re-plan changes a rank's batch by at most a factor
  ``max_change`` (up or down), so one wrong estimate cannot move much work; a
  large change takes several re-plans, each one due only while the change lasts.

The sizes come from the assignment program (:func:`hpcprep.assign.solve`): the
bounds ``lo_i <= b_i <= hi_i`` are the problem ``b_i = lo_i + x_i`` with
overhead ``lo_i p_i``, memory cap ``hi_i - lo_i`` and one task of
``B - Σ lo_i`` units, whose makespan is the predicted step time.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..assign import AssignProblem, solve


@dataclass(frozen=True)
class ReplanSettings:
    """The ``train.rebalance_*`` keys (docs/train.md)."""

    every: int = 20
    window: int = 20
    threshold: float = 0.05
    patience: int = 2
    max_change: float = 2.0

    @classmethod
    def from_config(cls, cfg: dict) -> "ReplanSettings":
        return cls(cfg["rebalance_every"], cfg["rebalance_window"], cfg["rebalance_threshold"],
                   cfg["rebalance_patience"], cfg["rebalance_max_change"])


class RankTimings:
    """One rank's last ``window`` steps: seconds per sample, and step seconds since the
    sizes last changed."""

    def __init__(self, window: int):
        self.per_sample = deque(maxlen=window)
        self.step_s = deque(maxlen=window)

    def record(self, samples: int, seconds: float) -> None:
        if samples > 0:                       # an empty batch says nothing about speed
            self.per_sample.append(seconds / samples)
        self.step_s.append(seconds)

    def sizes_changed(self) -> None:
        self.step_s.clear()

    def report(self) -> tuple:
        """``(median seconds per sample, median step seconds)``, None where nothing was measured."""
        med = lambda q: float(np.median(q)) if q else None  # noqa: E731
        return med(self.per_sample), med(self.step_s)


def share_bounds(old, max_change: float | None, global_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-rank ``(lo, hi)`` of one re-plan: within a factor ``max_change`` of ``old`` (None: any
    size), and at least one sample per rank when the batch allows it (so every rank keeps
    being measured)."""
    old = np.asarray(old, dtype=np.int64)
    if max_change is None:
        lo, hi = np.zeros_like(old), np.full_like(old, global_batch)
    else:
        lo = np.ceil(old / max_change - 1e-9).astype(np.int64)
        hi = np.floor(old * max_change + 1e-9).astype(np.int64)
    if global_batch >= old.size:
        lo_one = np.maximum(lo, 1)
        if lo_one.sum() <= global_batch:
            lo = lo_one
        hi = np.maximum(hi, 1)
    return lo, np.maximum(hi, lo)


def bounded_sizes(global_batch: int, per_sample, old, max_change: float | None):
    """Batch sizes (summing to ``global_batch``) that minimize the predicted step time
    ``max_i b_i p_i`` within :func:`share_bounds`; returns ``(sizes, plan)``."""
    p = np.asarray(per_sample, dtype=np.float64)
    lo, hi = share_bounds(old, max_change, global_batch)
    problem = AssignProblem(speeds=1.0 / p, task_units=[global_batch - int(lo.sum())],
                            overheads=lo * p, memory_caps=(hi - lo).astype(np.float64),
                            worker_names=[f"rank{i}" for i in range(p.size)], task_names=["batch"])
    plan = solve(problem)
    return (lo + plan.units[:, 0]).tolist(), plan


class Replanner:
    """Rank 0's re-planning state: the latest estimates and the streak of checks that
    asked for a re-plan. :meth:`check` is pure apart from that state (no MPI)."""

    def __init__(self, global_batch: int, ranks: int, settings: ReplanSettings):
        self.global_batch, self.settings = int(global_batch), settings
        self.per_sample = [None] * ranks
        self.streak = 0
        self.checks = 0
        self.last = None          # the last check: predicted step times and gain

    def estimates(self, per_sample) -> list | None:
        """Seconds per sample per rank: the new medians, else the last known one, else the
        median of the known ranks; None before any rank was measured."""
        for r, s in enumerate(per_sample):
            if s is not None and s > 0:
                self.per_sample[r] = s
        known = [s for s in self.per_sample if s is not None]
        if not known:
            return None
        fill = float(np.median(known))
        return [fill if s is None else s for s in self.per_sample]

    def check(self, step: int, sizes: list, per_sample) -> dict | None:
        """One check at ``step``: the re-plan record when it is due, else None."""
        self.checks += 1
        est = self.estimates(per_sample)
        if est is None:
            return None
        st = self.settings
        current = float(max(b * p for b, p in zip(sizes, est)))
        best = bounded_sizes(self.global_batch, est, sizes, None)[1].makespan
        gain = current / best - 1.0 if best > 0 else 0.0
        self.last = {"step": step, "predicted_step_s": current, "best_step_s": best, "gain": gain}
        self.streak = self.streak + 1 if gain > st.threshold else 0
        if self.streak < st.patience:
            return None
        new, plan = bounded_sizes(self.global_batch, est, sizes, st.max_change)
        if new == sizes:
            return None
        self.streak = 0
        reason = (f"predicted step {current:.3g} s, best {best:.3g} s ({1 + gain:.2f}x faster) at "
                  f"{st.patience} consecutive check(s); this re-plan: {plan.makespan:.3g} s")
        return {"step": step, "reason": reason, "old_sizes": list(sizes), "new_sizes": new,
                "seconds_per_sample": est,
                "predicted_step_s": [b * p for b, p in zip(new, est)],
                "plan": plan.summary()}


def replan_line(rec: dict) -> str:
    """The progress line rank 0 prints for a re-plan."""
    plan = rec["plan"]
    return (f"replan at step {rec['step']}: batch sizes {rec['old_sizes']} -> {rec['new_sizes']}; "
            f"{rec['reason']}; {plan['method']} {plan['status']} in {plan['solve_time_s'] * 1e3:.2f} ms")
