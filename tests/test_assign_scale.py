"""Scale of the assignment program: worker classes and task groups are exact, and 4096 x 64 solves."""

import re
from pathlib import Path

import numpy as np
import pytest

from hpcprep.assign import AssignmentProgram, AssignProblem, Structure, accuracy_loss, solve, water_fill
from hpcprep.assign.classes import reduce_problem
from hpcprep.assign.solve import PROGRAMS
from test_assign import check_plan_valid

DOCS = Path(__file__).resolve().parents[1] / "docs" / "assign.md"


def real_objective(problem, result):
    """w1*T + w3*mean idle + w2*loss of a program result, before rounding (idle counts overheads)."""
    T = result["makespan"]
    finish = problem.overheads + result["units"].sum(axis=1) / problem.speeds
    loss = problem.values @ accuracy_loss(np.maximum(result["fraction"], 1e-12), problem.beta)
    return problem.w_makespan * T + problem.w_idle * (T - finish.mean()) + problem.w_accuracy * loss


def repeated_types(rng):
    """Workers of 2-4 types (1-5 of each), deadlines (some shared), caps and subsampling at random."""
    types = int(rng.integers(2, 5))
    counts = rng.integers(1, 6, types)
    k = np.repeat(np.arange(types), counts)
    rng.shuffle(k)
    speeds = (rng.lognormal(0, 0.5, types) * 100)[k]
    overheads = rng.uniform(0, 2, types)[k]
    m = int(rng.integers(1, 6))
    units = rng.integers(500, 5000, m)
    level = water_fill(float(units.sum()), speeds, overheads)[1]
    deadlines = np.where(rng.random(m) < 0.6, np.round(level * rng.choice([0.6, 1.0, 1.5], m), 1), np.inf)
    kw = {"memory_caps": (units.sum() / k.size * rng.uniform(1.1, 2.0, types))[k] if rng.random() < 0.5 else None,
          "min_fractions": np.where(rng.random(m) < 0.5, 0.4, 1.0), "w_accuracy": float(rng.choice([1.0, 30.0])),
          "w_idle": float(rng.choice([0.0, 0.3])), "beta": float(rng.choice([0.0, 0.3]))}
    return AssignProblem(speeds=speeds, task_units=units, overheads=overheads, deadlines=deadlines, **kw)


def test_aggregated_program_has_the_same_optimum():
    rng = np.random.default_rng(11)
    compared = 0
    for _ in range(20):
        problem = repeated_types(rng)
        try:
            solve(problem)                    # skips infeasible instances (the check names them)
        except Exception as err:
            assert "infeasible" in str(err), err
            continue
        merged = Structure.of(problem)
        single = Structure.of(problem, aggregate=False)
        assert merged.n_classes < single.n_classes == problem.n_workers
        a = AssignmentProgram(merged).solve(problem)
        b = AssignmentProgram(single).solve(problem)
        assert a["status"] == b["status"] == "optimal"
        assert real_objective(problem, a) == pytest.approx(real_objective(problem, b), rel=1e-6)
        compared += 1
    assert compared >= 10


def test_tasks_due_together_share_one_column():
    problem = AssignProblem(speeds=[1.0, 1.0, 2.0], task_units=[5, 6, 7, 8, 9],
                            deadlines=[30.0, np.inf, 10.0, 30.0, np.inf])
    red = reduce_problem(problem)
    assert red.group_sizes == (1, 2, 2) and red.n_deadline_groups == 2
    assert red.counts.tolist() == [2, 1] and red.worker_class.tolist() == [0, 0, 1]


def test_class_split_is_even_and_keeps_deadlines():
    # 7 identical workers and 3 others, a deadline tight in whole units: each class's workers
    # differ by at most one unit in every cumulative column
    speeds = np.r_[np.full(7, 10.0), np.full(3, 25.0)]
    problem = AssignProblem(speeds=speeds, task_units=[333, 400, 401], deadlines=[2.5, 5.5, np.inf],
                            overheads=np.r_[np.zeros(7), np.full(3, 0.3)], memory_caps=np.full(10, 200.0),
                            min_fractions=[1.0, 1.0, 0.5], w_accuracy=50.0, w_idle=0.2)
    plan = solve(problem)
    assert plan.method == "cvxpy"
    check_plan_valid(problem, plan)
    cumulative = np.cumsum(plan.units[:, problem.deadline_order()], axis=1)
    for members in (slice(0, 7), slice(7, 10)):
        assert np.all(np.ptp(cumulative[members], axis=0) <= 1)


def node_types(n, m, classes=16, seed=0):
    """``n`` workers of ``classes`` node types, ``m`` tasks, a deadline on every other, half subsampled."""
    rng = np.random.default_rng(seed)
    k = np.arange(n) % classes
    speeds, overheads = (rng.lognormal(0, 0.3, classes) * 1e4)[k], rng.uniform(0, 0.05, classes)[k]
    units = rng.integers(100_000, 1_000_000, m) * (n // 64)
    deadlines = np.full(m, np.inf)
    for j in range(0, m, 2):
        deadlines[j] = 1.5 * water_fill(float(units[: j + 1].sum()), speeds, overheads)[1]
    return AssignProblem(speeds=speeds, task_units=units, overheads=overheads, deadlines=deadlines,
                         min_fractions=np.where(np.arange(m) % 2, 0.5, 1.0), w_accuracy=1.0, w_idle=0.1)


def test_4096_workers_64_tasks_with_subsampling():
    # was a 277-537 GiB index array in cvxpy before any solve (one row per worker)
    problem = node_types(4096, 64)
    plan = solve(problem)
    assert plan.method == "cvxpy" and plan.status == "optimal"
    check_plan_valid(problem, plan)
    program = PROGRAMS[Structure.of(problem)]
    assert program.structure.n_classes == 16 and len(program.structure.group_sizes) == 33
    solves = program.solves
    again = node_types(4096, 64)
    again.speeds = again.speeds * 1.1      # every node type 10% faster: the same classes, a DPP re-solve
    plan2 = solve(again)
    assert program.solves == solves + 1 and plan2.makespan_real < plan.makespan_real
    check_plan_valid(again, plan2)


def test_many_distinct_workers_with_subsampling_skip_the_dpp_tensor():
    distinct = node_types(4096, 64, classes=4096)
    assert not AssignmentProgram(Structure.of(distinct)).dpp
    assert AssignmentProgram(Structure.of(node_types(4096, 64))).dpp


def test_docs_worked_example_is_what_the_command_prints(tmp_path, capsys):
    """docs/assign.md's example with deadlines, a cap and subsampling, through the real ``cli.main``."""
    from hpcprep.cli import main

    text = DOCS.read_text()
    section = text[text.index("### Worked example: deadlines, a memory cap and subsampling"):]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    printed = re.search(r"prints:\n\n```\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "example.toml"
    path.write_text(toml)
    with pytest.raises(SystemExit) as info:
        main(["plan", str(path)])
    assert info.value.code == 0
    out = capsys.readouterr().out
    strip = lambda s: re.sub(r"solve time [0-9.]+ ms", "solve time", s).strip()   # noqa: E731
    assert strip(out) == strip(printed)
