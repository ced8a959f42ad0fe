"""The assignment program in-process: closed form vs cvxpy, rounding, deadlines, errors."""

import json

import numpy as np
import pytest

from hpcprep.assign import (AssignError, AssignmentProgram, AssignProblem, Structure,
                            batch_sizes, contiguous_chunk_ranges, problem_from_table,
                            rows_by_speed, solve, water_fill)
from hpcprep.assign.solve import PROGRAMS
from hpcprep.assign.rounding import bounded_largest_remainder, round_plan
from hpcprep.errors import ConfigError


def random_problem(rng, n=12, m=3, **kw):
    return AssignProblem(speeds=rng.lognormal(0.0, 0.3, n) * 1000,
                         task_units=rng.integers(1000, 20000, m), **kw)


def check_plan_valid(problem, plan):
    """Totals exact, caps and deadlines hold in the rounded plan."""
    units = plan.units
    assert units.dtype == np.int64 and np.all(units >= 0)
    np.testing.assert_array_equal(units.sum(axis=0), plan.kept_units)
    assert np.all(plan.kept_units >= problem.min_units())
    assert np.all(units.sum(axis=1) <= np.floor(problem.memory_caps))
    order = problem.deadline_order()
    done = problem.overheads[:, None] + np.cumsum(units[:, order], axis=1) / problem.speeds[:, None]
    due = np.broadcast_to(problem.deadlines[order], done.shape)
    works = units[:, order] > 0
    assert np.all(done[works] <= due[works] * (1 + 1e-12))
    assert np.all(plan.task_finish <= problem.deadlines * (1 + 1e-12))


# --- closed form is the reference ------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("solver", ["CLARABEL", "HIGHS"])
def test_cvxpy_matches_closed_form(seed, solver):
    rng = np.random.default_rng(seed)
    n = 16
    problem = random_problem(rng, n=n, m=3, overheads=rng.uniform(0, 0.5, n),
                             memory_caps=np.where(rng.random(n) < 0.3, 3000.0, np.inf))
    loads, makespan = water_fill(float(problem.task_units.sum()), problem.speeds,
                                 problem.overheads, problem.unit_caps())
    plan = solve(problem, solver=solver)
    assert plan.method == "cvxpy" and plan.status == "optimal"
    assert plan.makespan_real == pytest.approx(makespan, rel=1e-6)
    # with every worker working the optimum is unique: same loads per worker
    assert makespan > problem.overheads.max()
    np.testing.assert_allclose(plan.real_units.sum(axis=1), loads, rtol=1e-6, atol=1e-6 * loads.max())
    check_plan_valid(problem, plan)


def test_closed_form_when_overheads_exceed_the_level():
    # worker 1's overhead is longer than the job: it gets nothing, the makespan is its overhead
    loads, makespan = water_fill(10.0, [1.0, 1.0], [0.0, 100.0])
    np.testing.assert_allclose(loads, [10.0, 0.0])
    assert makespan == 100.0
    problem = AssignProblem(speeds=[1.0, 1.0], task_units=[10], overheads=[0.0, 100.0])
    assert solve(problem, solver="CLARABEL").makespan_real == pytest.approx(100.0, rel=1e-6)


def test_water_fill_equalizes_finish_times():
    s, c = np.array([1.0, 2.0, 4.0]), np.array([0.0, 1.0, 0.5])
    loads, makespan = water_fill(70.0, s, c)
    np.testing.assert_allclose(c + loads / s, makespan)
    assert loads.sum() == pytest.approx(70.0)


def test_auto_uses_closed_form_only_where_exact():
    rng = np.random.default_rng(5)
    problem = random_problem(rng)
    assert solve(problem).method == "closed_form"
    subsample = random_problem(rng, min_fractions=[1.0, 0.5, 1.0])
    assert solve(subsample).method == "cvxpy"
    with pytest.raises(ConfigError, match="closed_form"):
        solve(subsample, solver="closed_form")
    capped = random_problem(rng, memory_caps=[1e3] + [1e9] * 11, w_idle=0.1)   # worker 0 idles
    assert solve(capped).method == "cvxpy"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("w_idle, cap", [(0.0, 1.2), (0.2, 3.0)])
def test_closed_form_with_deadlines_matches_cvxpy(seed, w_idle, cap):
    rng = np.random.default_rng(seed)
    n, m = 10, 4
    speeds = rng.lognormal(0, 0.3, n) * 100
    units = rng.integers(500, 3000, m)
    levels = [water_fill(float(units[: j + 1].sum()), speeds)[1] for j in range(m)]
    problem = AssignProblem(speeds=speeds, task_units=units, overheads=rng.uniform(0, 0.1, n),
                            deadlines=[levels[0] * 1.05, np.inf, levels[2] * 1.02, levels[3] * 1.5],
                            memory_caps=np.full(n, units.sum() / n * cap), w_idle=w_idle)
    fast = solve(problem)
    exact = solve(problem, solver="CLARABEL")
    assert fast.method == "closed_form"
    assert fast.makespan_real == pytest.approx(exact.makespan_real, rel=1e-6)
    assert fast.objective["total"] <= exact.objective["total"] * (1 + 1e-6) + 1e-9
    check_plan_valid(problem, fast)


# --- the program ------------------------------------------------------------------------

@pytest.mark.parametrize("deadlines", [None, [5.0, np.inf, 9.0]])
@pytest.mark.parametrize("caps", [None, 10_000.0])
@pytest.mark.parametrize("fmin", [None, [1.0, 0.5, 1.0]])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_program_is_dpp(deadlines, caps, fmin, beta):
    problem = AssignProblem(speeds=np.ones(4) * 1e3, task_units=[100, 200, 300], deadlines=deadlines,
                            memory_caps=caps, min_fractions=fmin, beta=beta, w_accuracy=1.0)
    assert AssignmentProgram(Structure.of(problem)).is_dpp()


def test_resolve_with_new_parameters_reuses_the_program():
    rng = np.random.default_rng(1)
    n = 20
    kw = dict(task_units=[30_000, 50_000, 20_000], deadlines=[20.0, 45.0, np.inf], w_idle=0.1)
    first = AssignProblem(speeds=rng.lognormal(0, 0.3, n) * 300, **kw)
    second = AssignProblem(speeds=rng.lognormal(0, 0.3, n) * 300, overheads=rng.uniform(0, 1, n), **kw)
    plan1 = solve(first, solver="CLARABEL")
    program = PROGRAMS[Structure.of(first)]
    solves = program.solves
    plan2 = solve(second, solver="CLARABEL")
    assert PROGRAMS[Structure.of(second)] is program and program.solves == solves + 1
    fresh = AssignmentProgram(Structure.of(second)).solve(second, solver="CLARABEL")
    assert plan2.makespan_real == pytest.approx(fresh["makespan"], rel=1e-6)
    assert plan1.makespan_real != pytest.approx(plan2.makespan_real, rel=1e-3)
    # the last task has no deadline, so the makespan is the water-filling level
    _, level = water_fill(1e5, second.speeds, second.overheads)
    assert plan2.makespan_real == pytest.approx(level, rel=1e-6)
    check_plan_valid(second, plan2)


def test_weights_trade_makespan_against_kept_fraction():
    base = dict(speeds=[1000.0, 1000.0, 500.0], task_units=[200_000, 400_000],
                min_fractions=[1.0, 0.1], values=[1.0, 1.0])
    fractions, makespans = [], []
    for w2 in [0.0, 10.0, 50.0, 200.0, 1000.0, 1e5]:
        plan = solve(AssignProblem(w_accuracy=w2, **base))
        fractions.append(plan.kept_fraction[1])
        makespans.append(plan.makespan_real)
    assert np.all(np.diff(fractions) >= -1e-6) and np.all(np.diff(makespans) >= -1e-6)
    assert fractions[0] == pytest.approx(0.1, abs=1e-6) and fractions[-1] > 0.99
    assert makespans[-1] > 2 * makespans[0]


def test_heterogeneous_speeds_beat_equal_split_by_theory():
    rng = np.random.default_rng(7)
    total = 10_000_000
    for speeds in (np.r_[np.ones(32), np.ones(32) / 1.5], rng.lognormal(0.0, 0.3, 64)):
        n = speeds.size
        plan = solve(AssignProblem(speeds=speeds * 1e4, task_units=[total]))
        equal = rows_by_speed(total, np.ones(n))
        equal_makespan = np.max(equal / (speeds * 1e4))
        predicted_ratio = speeds.mean() / speeds.min()      # (W/n)/s_min over W/sum(s)
        assert equal_makespan / plan.makespan == pytest.approx(predicted_ratio, rel=1e-3)
    assert np.r_[np.ones(32), np.ones(32) / 1.5].mean() * 1.5 == pytest.approx(1.25)


# --- rounding ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_deadlines_and_caps_hold_after_rounding(seed):
    rng = np.random.default_rng(seed)
    n, m = 9, 4
    speeds = rng.lognormal(0, 0.4, n) * 50
    units = rng.integers(50, 400, m)
    _, level = water_fill(float(units.sum()), speeds)
    # tight deadlines (just feasible in whole units: few units per worker, so rounding matters)
    problem = AssignProblem(speeds=speeds, task_units=units, overheads=rng.uniform(0, 0.2, n),
                            memory_caps=np.full(n, 1.3 * units.sum() / n),
                            deadlines=[level * 0.4, level * 0.7, level * 1.1, np.inf],
                            min_fractions=[1.0, 1.0, 0.5, 1.0], w_accuracy=5.0)
    try:
        plan = solve(problem)
    except AssignError as err:  # a random instance may be infeasible: then the error must say why
        assert err.late_tasks and "deadline" in str(err), err
        return
    check_plan_valid(problem, plan)
    assert plan.makespan >= plan.makespan_real * (1 - 1e-9)


def test_cumulative_rounding_needs_lower_bounds():
    # a worker rounded up on an early task must not get negative units later
    x = np.array([[0.4, 0.0], [0.4, 0.0], *[[0.2, 0.8]] * 5, [0.2, 1.0]])
    problem = AssignProblem(speeds=np.ones(8), task_units=[2, 5])
    y = round_plan(x, [2, 5], problem)
    assert np.all(y >= 0)
    np.testing.assert_array_equal(y.sum(axis=0), [2, 5])


def test_bounded_largest_remainder():
    y = bounded_largest_remainder([2.5, 2.5, 2.5, 2.5], 10, [0] * 4, [10] * 4)
    assert y.tolist() == [3, 3, 2, 2]
    y = bounded_largest_remainder([5.0, 5.0], 10, [0, 0], [3, 10])
    assert y.tolist() == [3, 7]
    with pytest.raises(AssignError):
        bounded_largest_remainder([5.0, 5.0], 10, [0, 0], [3, 3])


# --- errors -----------------------------------------------------------------------------

def test_infeasible_deadlines_name_the_tasks_and_by_how_much():
    problem = AssignProblem(speeds=[10.0, 10.0], task_units=[100, 100, 300],
                            deadlines=[10.0, 4.0, 100.0], task_names=["ok", "urgent", "late-ok"])
    with pytest.raises(AssignError) as info:
        solve(problem)
    message = str(info.value)
    assert "'urgent'" in message and "'ok'" not in message and "late-ok" not in message
    assert "misses it by 1 s" in message            # 100 units on 20 units/s: 5 s > 4 s
    assert info.value.late_tasks == {"urgent": pytest.approx(1.0)}
    # cumulative: 'ok' is late only because 'urgent' comes first
    problem.deadlines = np.array([9.0, 4.0, 100.0])
    with pytest.raises(AssignError) as info:
        solve(problem)
    assert set(info.value.late_tasks) == {"urgent", "ok"}
    assert info.value.late_tasks["ok"] == pytest.approx(1.0)


def test_infeasible_memory_and_fallback():
    problem = AssignProblem(speeds=[1.0, 2.0], task_units=[100], memory_caps=[30, 30])
    with pytest.raises(AssignError, match="memory caps hold 60 units"):
        solve(problem)
    late = AssignProblem(speeds=[1.0, 3.0], task_units=[100], deadlines=[10.0])
    plan = solve(late, fallback=True)
    assert plan.method == "proportional" and plan.status.startswith("fallback: infeasible deadlines")
    assert plan.units[:, 0].tolist() == [25, 75]


def test_bad_problem_values_are_config_errors():
    with pytest.raises(ConfigError, match="speeds"):
        AssignProblem(speeds=[1.0, 0.0], task_units=[10])
    with pytest.raises(ConfigError, match="min_fraction"):
        AssignProblem(speeds=[1.0], task_units=[10], min_fractions=[0.0])


# --- helpers for the pipeline -------------------------------------------------------------

def test_rows_by_speed():
    assert rows_by_speed(10, [1, 1, 1]).tolist() == [4, 3, 3]
    rows = rows_by_speed(1_000_003, [1.0, 2.0, 3.0, 4.0], overheads=[0, 0, 0, 10], memory_caps=[1e9, 1e9, 2e5, 1e9])
    assert rows.sum() == 1_000_003 and rows.dtype == np.int64 and rows[2] == 200_000
    assert rows_by_speed(0, [1.0, 2.0]).tolist() == [0, 0]
    with pytest.raises(AssignError):
        rows_by_speed(10, [1, 1], memory_caps=[4, 4])


def chunk_ranges(sizes, speeds):
    return contiguous_chunk_ranges(sizes, solve(AssignProblem(speeds=speeds, task_units=[int(np.sum(sizes))])))


def test_contiguous_chunk_ranges():
    ranges = chunk_ranges([100] * 12, [1.0] * 4)
    assert ranges == [(0, 3), (3, 6), (6, 9), (9, 12)]
    ranges = chunk_ranges([100] * 10, [1.0] * 4)
    assert [b - a for a, b in ranges] in ([2, 3, 2, 3], [3, 2, 3, 2], [2, 3, 3, 2], [3, 2, 2, 3])
    sizes = np.full(60, 1000)
    ranges = chunk_ranges(sizes, [1.0, 2.0, 3.0])
    assert ranges == [(0, 10), (10, 30), (30, 60)]
    assert chunk_ranges([5], [1.0, 1.0, 1.0])[-1][1] == 1
    for a, b in zip(ranges, ranges[1:]):
        assert a[1] == b[0]


def test_batch_sizes():
    sizes = batch_sizes(256, [0.01] * 3 + [0.015])
    assert sizes.sum() == 256 and sizes[:3].min() > sizes[3]


# --- problem files and the plan subcommand ------------------------------------------------

PROBLEM_TOML = """
[objective]
makespan = 1.0
idle = 0.1

[[workers]]
name = "fast"
speed = 2000.0
count = 2

[[workers]]
name = "slow"
speed = 1000.0
overhead = 0.5

[[tasks]]
name = "train"
units = 100000
deadline = 60.0

[[tasks]]
name = "extra"
units = 50000
min_fraction = 0.5
"""


def run_cli(argv) -> int:
    """The exit code of ``hpcprep ARGV`` run in this process (through the real ``cli.main``)."""
    from hpcprep.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_plan_subcommand(tmp_path, capsys):
    path = tmp_path / "problem.toml"
    path.write_text(PROBLEM_TOML)
    assert run_cli(["plan", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [w["name"] for w in out["workers"]] == ["fast.0", "fast.1", "slow"]
    assert sum(w["units"] for w in out["workers"]) == sum(t["kept_units"] for t in out["tasks"])
    assert out["tasks"][0]["finish_s"] <= 60.0 and out["status"] == "optimal"
    assert set(out["objective"]) == {"makespan", "mean_idle", "accuracy_loss", "total"}
    assert run_cli(["plan", str(path)]) == 0
    table = capsys.readouterr().out
    assert "fast.0" in table and "solver CLARABEL" in table
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"workers": [{"speed": 1.0, "sped": 2}], "tasks": [{"units": 5}]}))
    assert run_cli(["plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("hpcprep: error: ") == 1 and "workers[0].sped" in err


def test_problem_from_table_counts_and_defaults():
    problem, solver = problem_from_table({"workers": [{"speed": 2.0, "count": 3}], "tasks": [{"units": 7}]})
    assert problem.n_workers == 3 and solver == "auto" and not problem.has_deadlines


def test_gather_and_plan_on_comm_self():
    from mpi4py import MPI

    from hpcprep.assign import WorkerReport, gather_and_plan
    plan = gather_and_plan(MPI.COMM_SELF, WorkerReport(speed=10.0), {"task_units": [100]})
    assert plan.units.tolist() == [[100]]
    with pytest.raises(AssignError, match="'t0'"):
        gather_and_plan(MPI.COMM_SELF, WorkerReport(speed=10.0), {"task_units": [100], "deadlines": [1.0]})
