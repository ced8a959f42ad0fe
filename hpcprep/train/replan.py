"""When and how to re-plan per-rank batch sizes during training (worker-adaptive batching).

Three guards against chasing noise (docs/train.md; a model of the problem showed
that re-planning from the last step's timings, or from an exponential moving
average, falls up to 2x behind an oracle under transient interference):

* **Robust estimates.** Each rank keeps its last ``window`` step timings. A step
  takes ``t = a + b p``: a fixed part ``a`` (reading, the optimizer, Python, launch)
  and ``p`` seconds per sample of its batch ``b``. Once two batch sizes were seen
  with at least :data:`MIN_GROUP` steps each (in the window, or the size before the
  last change: its median when the sizes changed), ``p`` and ``a`` are fitted
  through the *median* step time of each size (Theil-Sen over the sizes); with
  one size, or a fit the timings do not determine (``p <= 0`` or ``a < 0``: the
  speed changed in between; or ``p`` uncertain by more than half its value: sizes
  too close for the noise, from the medians' spread), the estimate is the median
  seconds per sample, ``a = 0``. Medians: an episode shorter than half the window
  (or than half of a size's steps) does not move them.
* **Persistent change only.** At each check rank 0 predicts the step time of the
  current sizes and of the best sizes under the estimates; it re-plans only
  when the best step is faster by more than ``threshold`` (relative) at
  ``patience`` consecutive checks.
* **Bounded moves.** One re-plan changes a rank's batch by at most a factor
  ``max_change`` (up or down), so one wrong estimate cannot move much work; a
  large change takes several re-plans, each one due only while the change lasts.

The sizes come from the assignment program (:func:`hpcprep.assign.solve`): the
bounds ``lo_i <= b_i <= hi_i`` are the problem ``b_i = lo_i + x_i`` with
overhead ``a_i + lo_i p_i``, memory cap ``hi_i - lo_i`` and one task of
``B - Σ lo_i`` units, whose makespan is the predicted step time: the water-filling
closed form equalizes the predicted finish times ``a_i + b_i p_i``. With the
ordered reduction the units are blocks of ``granule`` rows (:mod:`.ordered`).
"""

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..assign import AssignProblem, solve
from .ordered import to_rows, to_units

#: Fewest steps at one batch size for that size to enter the fit of the fixed part.
MIN_GROUP = 3


@dataclass(frozen=True)
class ReplanSettings:
    """The ``train.rebalance_*`` keys (docs/train.md)."""

    every: int = 20
    window: int = 20
    threshold: float = 0.05
    patience: int = 2
    max_change: float = 2.0
    model: str = "affine"

    @classmethod
    def from_config(cls, cfg: dict) -> "ReplanSettings":
        return cls(cfg["rebalance_every"], cfg["rebalance_window"], cfg["rebalance_threshold"],
                   cfg["rebalance_patience"], cfg["rebalance_max_change"], cfg["rebalance_model"])


def median_and_error(t) -> tuple[float, float]:
    """The median of ``t`` and its standard error (from the median absolute deviation)."""
    t = np.asarray(t, dtype=np.float64)
    med = float(np.median(t))
    return med, 1.2533 * 1.4826 * float(np.median(np.abs(t - med))) / np.sqrt(t.size)


def _groups(b, t) -> dict:
    """``size: (median, its error)`` of each batch size with at least :data:`MIN_GROUP` steps."""
    sizes, counts = np.unique(b, return_counts=True)
    return {float(s): median_and_error(t[b == s]) for s in sizes[counts >= MIN_GROUP]}


def fit_step_time(steps, model: str = "affine", previous=None) -> tuple:
    """``(p, a)`` of ``t = a + b p`` from ``(b, t)`` pairs with ``b > 0`` (module docstring);
    ``previous``: ``(size, median seconds, its error)`` of an earlier size, used when the pairs
    hold no group of that size. ``(None, 0.0)`` without any pair."""
    if not steps:
        return None, 0.0
    b, t = np.array(steps, dtype=np.float64).T
    proportional = float(np.median(t / b)), 0.0
    groups = _groups(b, t)
    if previous is not None:
        groups.setdefault(float(previous[0]), tuple(previous[1:]))
    if model == "proportional" or len(groups) < 2:
        return proportional
    sizes = np.array(sorted(groups))
    med, err = np.array([groups[s] for s in sizes]).T
    i, j = np.triu_indices(sizes.size, 1)
    p = float(np.median((med[j] - med[i]) / (sizes[j] - sizes[i])))
    a = float(np.median(med - p * sizes))
    p_error = float(np.hypot(err[0], err[-1]) / (sizes[-1] - sizes[0]))
    if not p > 0 or a < 0 or 2 * p_error > p:
        return proportional
    return p, a


class RankTimings:
    """One rank's last ``window`` steps: ``(samples, seconds)`` of each, and the step
    seconds since the sizes last changed."""

    def __init__(self, window: int, model: str = "affine"):
        self.steps = deque(maxlen=window)
        self.step_s = deque(maxlen=window)
        self.model = model
        self.previous = None     # (size, median seconds, error) of the size before the last change

    def record(self, samples: int, seconds: float) -> None:
        if samples > 0:                       # an empty batch says nothing about speed
            self.steps.append((samples, seconds))
        self.step_s.append(seconds)

    def sizes_changed(self) -> None:
        """Remember the size in force (the most frequent in the window) and its median."""
        self.step_s.clear()
        if self.steps:
            b, t = np.array(self.steps, dtype=np.float64).T
            sizes, counts = np.unique(b, return_counts=True)
            size = sizes[np.argmax(counts)]
            if counts.max() >= MIN_GROUP:
                self.previous = (float(size), *median_and_error(t[b == size]))

    def report(self) -> tuple:
        """``(seconds per sample, fixed seconds, median step seconds)`` (:func:`fit_step_time`);
        None where nothing was measured."""
        p, a = fit_step_time(list(self.steps), self.model, self.previous)
        return p, a, float(np.median(self.step_s)) if self.step_s else None


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


def bounded_sizes(global_batch: int, per_sample, old, max_change: float | None, fixed=None):
    """Batch sizes (summing to ``global_batch``) that minimize the predicted step time
    ``max_i (a_i + b_i p_i)`` within :func:`share_bounds` (``fixed``: the ``a_i``, default 0);
    returns ``(sizes, plan)``."""
    p = np.asarray(per_sample, dtype=np.float64)
    a = np.zeros_like(p) if fixed is None else np.asarray(fixed, dtype=np.float64)
    lo, hi = share_bounds(old, max_change, global_batch)
    problem = AssignProblem(speeds=1.0 / p, task_units=[global_batch - int(lo.sum())],
                            overheads=a + lo * p, memory_caps=(hi - lo).astype(np.float64),
                            worker_names=[f"rank{i}" for i in range(p.size)], task_names=["batch"])
    plan = solve(problem)
    return (lo + plan.units[:, 0]).tolist(), plan


class Replanner:
    """Rank 0's re-planning state: the latest estimates and the streak of checks that
    asked for a re-plan. :meth:`check` is pure apart from that state (no MPI).
    ``granule``: rows per block; the sizes are planned in whole blocks (:mod:`.ordered`)."""

    def __init__(self, global_batch: int, ranks: int, settings: ReplanSettings, granule: int = 1):
        self.global_batch, self.settings, self.granule = int(global_batch), settings, int(granule)
        self.per_sample, self.fixed = [None] * ranks, [0.0] * ranks
        self.streak = 0
        self.checks = 0
        self.last = None          # the last check: predicted step times and gain

    def estimates(self, per_sample, fixed=None) -> tuple[list, list] | None:
        """Seconds per sample and fixed seconds per rank: the new fits, else the last known
        ones, else the median of the known ranks; None before any rank was measured."""
        for r, s in enumerate(per_sample):
            if s is not None and s > 0:
                self.per_sample[r], self.fixed[r] = s, 0.0 if fixed is None else float(fixed[r])
        known = [r for r, s in enumerate(self.per_sample) if s is not None]
        if not known:
            return None
        fill = (float(np.median([self.per_sample[r] for r in known])),
                float(np.median([self.fixed[r] for r in known])))
        return ([fill[0] if s is None else s for s in self.per_sample],
                [fill[1] if s is None else a for s, a in zip(self.per_sample, self.fixed)])

    def _plan(self, p, a, sizes, max_change):
        """``(sizes, plan)`` of the best split in whole blocks within ``max_change`` of ``sizes``."""
        g = self.granule
        units, plan = bounded_sizes(-(-self.global_batch // g), np.asarray(p) * g, to_units(sizes, g),
                                    max_change, a)
        return to_rows(units, self.global_batch, g), plan

    def check(self, step: int, sizes: list, per_sample, fixed=None) -> dict | None:
        """One check at ``step``: the re-plan record when it is due, else None."""
        self.checks += 1
        est = self.estimates(per_sample, fixed)
        if est is None:
            return None
        p, a, st = est[0], est[1], self.settings
        current = float(max(ai + b * pi for b, pi, ai in zip(sizes, p, a)))
        best = self._plan(p, a, sizes, None)[1].makespan
        gain = current / best - 1.0 if best > 0 else 0.0
        self.last = {"step": step, "predicted_step_s": current, "best_step_s": best, "gain": gain}
        self.streak = self.streak + 1 if gain > st.threshold else 0
        if self.streak < st.patience:
            return None
        new, plan = self._plan(p, a, sizes, st.max_change)
        if new == sizes:
            return None
        self.streak = 0
        reason = (f"predicted step {current:.3g} s, best {best:.3g} s ({1 + gain:.2f}x faster) at "
                  f"{st.patience} consecutive check(s); this re-plan: {plan.makespan:.3g} s")
        return {"step": step, "reason": reason, "old_sizes": list(sizes), "new_sizes": new,
                "seconds_per_sample": p, "fixed_s": a,
                "predicted_step_s": [ai + b * pi for b, pi, ai in zip(new, p, a)],
                "plan": plan.summary()}


def replan_line(rec: dict) -> str:
    """The progress line rank 0 prints for a re-plan."""
    plan = rec["plan"]
    return (f"replan at step {rec['step']}: batch sizes {rec['old_sizes']} -> {rec['new_sizes']}; "
            f"{rec['reason']}; {plan['method']} {plan['status']} in {plan['solve_time_s'] * 1e3:.2f} ms")
