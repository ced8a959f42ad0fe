"""``hpcprep.assign.solve``: one entry point; the closed form only where it equals cvxpy."""

import numpy as np
import pytest

from hpcprep.assign import AssignProblem, batch_sizes, contiguous_chunk_ranges, rows_by_speed, solve, water_fill
from hpcprep.partition import largest_remainder


def real_objective(problem, loads, T):
    """w1*T + w3*mean idle (+ w2*loss, zero here) of real per-worker loads, before rounding."""
    finish = problem.overheads + loads / problem.speeds
    return problem.w_makespan * T + problem.w_idle * (T - finish.mean())


def random_instance(rng):
    n, m = int(rng.integers(2, 24)), int(rng.integers(1, 5))
    speeds = rng.lognormal(0, 0.5, n) * 1000
    units = rng.integers(1_000, 100_000, m)
    kw = {"overheads": rng.uniform(0, 2, n) if rng.random() < 0.5 else None,
          "w_idle": float(rng.choice([0.0, 0.1, 1.0]))}
    level = water_fill(float(units.sum()), speeds)[1]
    if rng.random() < 0.5:   # loose memory caps, or caps that bind
        kw["memory_caps"] = units.sum() / n * rng.uniform(1.05, 3.0, n)
    if rng.random() < 0.5:   # deadlines: some loose, some near the makespan
        kw["deadlines"] = np.where(rng.random(m) < 0.7, level * rng.uniform(1.5, 4.0, m), np.inf)
    return AssignProblem(speeds=speeds, task_units=units, **kw)


def test_closed_form_objective_equals_cvxpy_wherever_used():
    rng = np.random.default_rng(7)
    used = 0
    for _ in range(40):
        problem = random_instance(rng)
        auto = solve(problem)
        exact = solve(problem, solver="CLARABEL")
        assert exact.method == "cvxpy"
        if auto.method != "closed_form":
            continue
        used += 1
        assert auto.solver == "water-filling" and auto.status == "optimal"
        # the closed form's loads (with deadlines the plan keeps only their rounded split)
        loads, level = water_fill(float(problem.task_units.sum()), problem.speeds, problem.overheads,
                                  problem.unit_caps())
        assert auto.makespan_real == level
        assert real_objective(problem, loads, level) == pytest.approx(
            real_objective(problem, exact.real_units.sum(axis=1), exact.makespan_real), rel=1e-6)
    assert used >= 15   # the comparison ran on enough instances to mean something


def test_idle_weight_with_idle_workers_goes_to_cvxpy():
    # a worker whose overhead passes the level idles: water-filling is not the optimum with w3 > 0
    problem = AssignProblem(speeds=[1000.0, 1000.0, 1000.0], overheads=[0.0, 0.0, 50.0],
                            task_units=[20_000], w_idle=1.0)
    assert solve(problem).method == "cvxpy"
    assert solve(AssignProblem(speeds=[1000.0] * 3, overheads=[0.0, 0.0, 50.0],
                               task_units=[20_000])).method == "closed_form"


def test_plan_reports_solver_status_time_objective_and_finish():
    problem = AssignProblem(speeds=[1.0, 2.0, 3.0], task_units=[600], deadlines=[500.0])
    plan = solve(problem)
    summary = plan.summary()
    assert summary["method"] == "closed_form" and summary["status"] == "optimal"
    assert summary["solve_time_s"] > 0
    assert set(summary["objective"]) == {"makespan", "mean_idle", "accuracy_loss", "total"}
    assert summary["worker_finish_s"] == pytest.approx([100.0, 100.0, 100.0])
    assert plan.units[:, 0].tolist() == [100, 200, 300]


# --- the helpers go through solve and give what the run gave before --------------------------

def old_rows_by_speed(total, speeds):
    """rows_by_speed before it went through solve (the run's shard sizes)."""
    s = np.asarray(speeds, dtype=np.float64)
    caps = np.full(s.size, total, dtype=np.int64)
    loads, _ = water_fill(float(total), s, None, caps.astype(np.float64))
    return largest_remainder(loads, total, np.zeros(s.size, dtype=np.int64), caps)


def old_chunk_ranges(chunk_sizes, speeds):
    """contiguous_chunk_ranges before it went through solve (the run's input ranges)."""
    s = np.asarray(speeds, dtype=np.float64)
    sizes = np.asarray(chunk_sizes, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    loads, _ = water_fill(float(bounds[-1]), s)
    goals = np.cumsum(loads)[:-1]
    right = np.clip(np.searchsorted(bounds, goals, side="left"), 1, sizes.size)
    left = right - 1
    stops = np.where((goals - bounds[left]) <= (bounds[right] - goals), left, right)
    stops = np.maximum.accumulate(np.concatenate([stops, [sizes.size]]))
    starts = np.concatenate([[0], stops[:-1]])
    return [(int(a), int(b)) for a, b in zip(starts, stops)]


def test_helpers_match_the_previous_closed_form_exactly():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        speeds = rng.choice([rng.lognormal(0, 0.6, n), rng.integers(1, 5, n).astype(float),
                             np.ones(n)])
        total = int(rng.integers(0, 10_000))
        assert rows_by_speed(total, speeds).tolist() == old_rows_by_speed(total, speeds).tolist()
        chunks = rng.integers(1, 300, int(rng.integers(1, 40)))
        plan = solve(AssignProblem(speeds=speeds, task_units=[int(chunks.sum())]))
        assert contiguous_chunk_ranges(chunks, plan) == old_chunk_ranges(chunks, speeds)


def test_batch_sizes_sum_and_follow_speed():
    sizes = batch_sizes(64, [0.01, 0.02, 0.01])
    assert sizes.sum() == 64 and sizes[1] < sizes[0]


EXAMPLE_TOML = """
[objective]
idle = 0.1

[[workers]]
name = "fast"
speed = 2000.0
count = 2

[[workers]]
name = "slow"
speed = 1000.0
overhead = 0.5
memory = {memory}

[[tasks]]
name = "urgent"
units = 40000
deadline = {deadline}

[[tasks]]
name = "bulk"
units = 60000
"""


def test_plan_command_worked_example(tmp_path, capsys):
    """The example of docs/assign.md through the real ``cli.main``."""
    from hpcprep.cli import main

    def run(memory, deadline):
        path = tmp_path / "example.toml"
        path.write_text(EXAMPLE_TOML.format(memory=memory, deadline=deadline))
        with pytest.raises(SystemExit) as info:
            main(["plan", str(path)])
        out = capsys.readouterr()
        return info.value.code, out.out, out.err

    code, table, _ = run(15000, 10.0)
    assert code == 0
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert lines["slow"][1:3] == ["15000", "0.1500"] and lines["slow"][4] == "5.75"
    assert lines["fast.0"][1] == "42500" and float(lines["urgent"][3]) <= 10.0
    assert "objective: makespan 21.25, mean_idle 1.91667" in table
    assert "method cvxpy, solver CLARABEL, status optimal" in table
    code, table, _ = run(20000, 10.0)
    assert code == 0 and "method closed_form, solver water-filling" in table
    code, _, err = run(15000, 4.0)
    assert code == 2 and err.count("hpcprep: error: ") == 1 and "'urgent'" in err
