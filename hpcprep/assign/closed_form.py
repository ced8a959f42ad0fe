"""Water-filling: the exact solution of the pure-makespan program.

With no deadlines, no subsampling and no idle-time weight (or a plan that leaves
no one idle), the program of DESIGN §4 reduces to: give worker ``i`` the load
``x_i`` so that every working worker finishes at the same level ``L``::

    x_i = clip(s_i * (L - c_i), 0, M_i),   sum_i x_i = W

(equalize ``s_i * (L - c_i)``; workers whose overhead exceeds ``L`` get nothing,
workers at their memory cap stop there). The makespan is ``max(L, max_i c_i)``:
every rank pays its overhead. ``g(L) = sum_i clip(...)`` is piecewise linear and
non-decreasing, so ``L`` is found exactly from its sorted breakpoints in
``O(n log n)``, with no solver. The tests use it as the reference for cvxpy.
"""

import numpy as np

from .problem import AssignError


def water_level(total: float, speeds, overheads=None, caps=None) -> float:
    """Smallest level ``L`` with ``sum_i clip(s_i (L - c_i), 0, M_i) >= total``.

    Parameters
    ----------
    total : float
        Work to place, in units (>= 0).
    speeds : array of float, shape (n,)
        Units per second, > 0.
    overheads : array of float, shape (n,), optional
        Seconds before a worker's first unit (default 0).
    caps : array of float, shape (n,), optional
        Most units per worker (default: none).

    Returns
    -------
    float
        The level in seconds (``min(overheads)`` when ``total`` is 0).

    Raises
    ------
    AssignError
        When the caps together hold less than ``total``.
    """
    s = np.asarray(speeds, dtype=np.float64)
    c = np.zeros_like(s) if overheads is None else np.asarray(overheads, dtype=np.float64)
    cap = np.full_like(s, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    if total <= 0:
        return float(c.min())
    capacity = cap.sum()
    if capacity < total * (1 - 1e-12):
        raise AssignError(f"memory caps hold at most {capacity:.6g} units in all, "
                          f"but {total:.6g} must be placed")
    # breakpoints: slope +s_i at c_i, -s_i at c_i + M_i/s_i
    full = c + cap / s
    points = np.concatenate([c, full[np.isfinite(full)]])
    deltas = np.concatenate([s, -s[np.isfinite(full)]])
    order = np.argsort(points, kind="stable")
    points, deltas = points[order], deltas[order]
    slopes = np.cumsum(deltas)                       # slope right of each breakpoint
    widths = np.diff(points)
    values = np.concatenate([[0.0], np.cumsum(slopes[:-1] * widths)])  # g at each breakpoint
    k = int(np.searchsorted(values, total, side="left")) - 1   # last breakpoint with g < total
    k = max(k, 0)
    if slopes[k] <= 0:   # only past the last breakpoint with every worker full
        return float(points[-1])
    return float(points[k] + (total - values[k]) / slopes[k])


def water_fill(total: float, speeds, overheads=None, caps=None) -> tuple[np.ndarray, float]:
    """Real-valued loads of the pure-makespan optimum.

    Parameters
    ----------
    total, speeds, overheads, caps
        As :func:`water_level`.

    Returns
    -------
    loads : array of float, shape (n,)
        Units per worker, summing to ``total`` (to rounding error).
    makespan : float
        ``max(level, max_i overheads_i)`` in seconds.
    """
    s = np.asarray(speeds, dtype=np.float64)
    c = np.zeros_like(s) if overheads is None else np.asarray(overheads, dtype=np.float64)
    cap = np.full_like(s, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    level = water_level(total, s, c, cap)
    loads = np.clip(s * (level - c), 0.0, cap)
    if total > 0 and loads.sum() > 0:
        loads *= total / loads.sum()      # remove the last rounding error of the level
    return loads, float(max(level, c.max()))
