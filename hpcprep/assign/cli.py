"""``hpcprep plan PROBLEM.{toml,json} [--json]``: solve a problem file on rank 0 and print the plan."""

import json
import sys
import tomllib
from pathlib import Path

from ..errors import ConfigError
from ..mpi.agree import root_decides, write_line
from .problem import problem_from_table
from .solve import SOLVERS, solve


def load_problem_file(path):
    """Read a TOML or JSON problem file.

    Returns
    -------
    problem : AssignProblem
    solver : str
        From ``objective.solver``.

    Raises
    ------
    ConfigError
        Unreadable file, unknown extension, or a bad key (named with its path).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read problem file {path}: {err.strerror}") from None
    try:
        if path.suffix == ".toml":
            table = tomllib.loads(text)
        elif path.suffix == ".json":
            table = json.loads(text)
        else:
            raise ConfigError(f"problem file {path}: expected a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"problem file {path}: {err}") from None
    return problem_from_table(table)


def plan_text(args) -> str:
    """Solve the problem file of ``hpcprep plan`` and return the plan as a table, or JSON with ``--json``.

    Raises
    ------
    ConfigError, AssignError
        Bad file, or no plan (infeasible deadlines are named).
    """
    problem, solver = load_problem_file(args.problem)
    plan = solve(problem, solver=args.solver or solver, fallback=args.fallback)
    if args.json:
        return json.dumps(plan.to_dict(), indent=2)
    return plan.format_table(max_workers=args.max_rows)


def run_plan(args, comm) -> int:
    """Handle ``hpcprep plan``: rank 0 of ``comm`` solves and prints the plan.

    Raises
    ------
    AgreedError
        On every rank: a bad file, or no plan (infeasible deadlines are named),
        decided on rank 0 and printed once by ``cli.main``; also an instance of
        the class raised there (ConfigError, AssignError).
    """
    text = root_decides(comm, plan_text, args)
    if comm.Get_rank() == 0:
        write_line(text, sys.stdout)
    return 0


def register(subparsers):
    """Add the ``plan`` subcommand to an ``argparse`` subparsers object.

    The subcommand's handler is ``args.func(args, comm) -> int``.
    """
    parser = subparsers.add_parser(
        "plan", help="solve an assignment problem file (workers, tasks) and print the plan",
        description="Solve the assignment program for the workers and tasks in a TOML/JSON "
                    "file and print per-worker shares, finish and idle times, per-task kept "
                    "fraction and finish time, objective terms and solver statistics.")
    parser.add_argument("problem", help="problem file (.toml or .json); see docs/assign.md")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--solver", choices=SOLVERS, default=None,
                        help="override objective.solver")
    parser.add_argument("--fallback", action="store_true",
                        help="print the proportional plan instead of failing when infeasible")
    parser.add_argument("--max-rows", type=int, default=64, help="workers shown in the table")
    parser.set_defaults(func=run_plan)
    return parser
