"""The plan under mpiexec: rank 0 solves, every rank gets the same plan or the same error."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpcprep.assign import solve
from hpcprep.assign.collective import problem_from_reports

MPIEXEC = Path(sys.executable).parent / "mpiexec"

SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from mpi4py import MPI
    from hpcprep.assign import AssignError, WorkerReport, gather_and_plan

    def report_for(rank):
        return WorkerReport(speed=1000.0 / (1.5 if rank % 2 else 1.0), overhead=0.01 * rank,
                            memory_cap=float("inf"), name=f"rank{rank}")

    def tasks_for(mode):
        deadline = 0.001 if mode == "infeasible" else 1e4
        return {"task_units": [10007, 5003, 777], "deadlines": [deadline, np.inf, 1e5],
                "task_names": ["first", "second", "third"], "w_idle": 0.1}

    def digest(plan):
        h = hashlib.sha256(plan.units.tobytes())
        h.update(plan.kept_units.tobytes())
        h.update(repr((plan.makespan, plan.method, plan.solver)).encode())
        return h.hexdigest()[:16]

    if __name__ == "__main__":
        mode = sys.argv[1]
        comm = MPI.COMM_WORLD.Dup()            # the planner only uses the communicator it is given
        rank = comm.Get_rank()
        tasks = tasks_for(mode) if rank == 0 else None
        try:
            plan = gather_and_plan(comm, report_for(rank), tasks)
        except AssignError as err:
            text = str(err)
            if rank == 0:
                sys.stdout.write(f"message: {text}\\n")
            sys.stdout.write(f"rank {rank} error {hashlib.sha256(text.encode()).hexdigest()[:16]}\\n")
            sys.stdout.flush()
            sys.exit(3)
        sys.stdout.write(f"rank {rank} plan {digest(plan)} {int(plan.worker_units[rank])}\\n")
        sys.stdout.flush()
""")


def run_ranks(tmp_path, ranks, mode):
    script = tmp_path / "plan_ranks.py"
    script.write_text(SCRIPT)
    return subprocess.run([str(MPIEXEC), "-n", str(ranks), sys.executable, str(script), mode],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def load_script_module(tmp_path):
    namespace = {"__name__": "plan_ranks"}
    exec(compile(SCRIPT, "plan_ranks.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_every_rank_gets_the_same_plan(tmp_path, ranks):
    result = run_ranks(tmp_path, ranks, "ok")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = sorted(line.split() for line in result.stdout.splitlines() if line.startswith("rank "))
    assert [int(words[1]) for words in lines] == list(range(ranks))
    assert {words[3] for words in lines} == {lines[0][3]}
    # and it is the plan rank 0 would compute in-process from the same reports
    module = load_script_module(tmp_path)
    problem = problem_from_reports([module["report_for"](r) for r in range(ranks)], module["tasks_for"]("ok"))
    expected = solve(problem)
    assert lines[0][3] == module["digest"](expected)
    assert sum(int(words[4]) for words in lines) == 10007 + 5003 + 777
    assert [int(words[4]) for words in lines] == expected.worker_units.tolist()


@pytest.mark.parametrize("ranks", [1, 4])
def test_infeasible_plan_stops_every_rank_with_the_message(tmp_path, ranks):
    result = run_ranks(tmp_path, ranks, "infeasible")
    assert result.returncode != 0
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("rank ")]
    assert sorted(int(words[1]) for words in lines) == list(range(ranks))
    assert {words[2] for words in lines} == {"error"}
    assert len({words[3] for words in lines}) == 1           # the same message on every rank
    messages = [line for line in result.stdout.splitlines() if line.startswith("message: ")]
    assert len(messages) == 1
    assert "'first'" in messages[0] and "deadline 0.001 s" in messages[0]
    assert "'second'" not in messages[0] and "'third'" not in messages[0]
