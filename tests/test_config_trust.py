"""Errors users see are one line, printed once, before any work (issue 12, items 10 and 11).

In-process: the seed range and a range/finite check of every numeric key. Under mpiexec: errors
that every rank (or every member of a sampling layer) raises alike are printed exactly once,
and the real CLI turns bad numbers into a one-line message instead of a traceback.
"""

import json
import os

import pytest
from mpi4py import MPI

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.assign.cli import load_problem_file
from hpcprep.config import parse_config, parse_size
from hpcprep.errors import ConfigError

MINIMAL = '[input]\npaths = ["raw/*.h5"]\n'


def parse(text=MINIMAL, overrides=(), world=1):
    return parse_config(text, "test.toml", overrides, world, base_dir="/data")


def assert_once(proc, needle):
    """Non-zero exit, ``needle`` exactly once in stdout + stderr, and no traceback."""
    both = proc.stdout + proc.stderr
    assert proc.returncode != 0, both
    assert both.count(needle) == 1, both
    assert "Traceback" not in both, both


# ---- the seed ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [-1, -(2**63), 2**63, 2**64, 10**30])
@pytest.mark.parametrize("where", ["", "train."])
def test_seed_outside_its_range_is_an_error(seed, where):
    with pytest.raises(ConfigError) as info:
        parse(overrides=[f"{where}seed={seed}"])
    assert str(info.value) == f"{where}seed = {seed}: must lie in [0, 2**63 - 1]"


@pytest.mark.parametrize("seed", [0, 1, 2**63 - 1])
def test_seed_inside_its_range_is_kept(seed):
    cfg = parse(overrides=[f"seed={seed}", f"train.seed={seed}"])
    assert cfg.seed == seed and cfg.train["seed"] == seed


def test_largest_seed_runs_the_pipeline(tmp_path, small_raw):
    """2**63 - 1 is stored in the HDF5 attributes and the manifest (2**64 used to crash there)."""
    from hpcprep.pipeline import run_pipeline
    from hpcprep.progress import Progress

    text = BASE_CONFIG.format(chunk_rows=1000).replace("seed = 11", f"seed = {2**63 - 1}")
    text = text.replace('"raw/*.h5"', json.dumps(str(small_raw / "*.h5")))
    cfg = parse_config(text, "t.toml", (), 1, base_dir=tmp_path)
    run_pipeline(cfg, MPI.COMM_WORLD, Progress(False, quiet=True))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["seed"] == 2**63 - 1


# ---- every number is checked before any work ----------------------------------------------

STEPS = "[[standardize]]\nsteps = [{{ {} }}]\n"
SAMPLE = "[[sample]]\n{}\n"


@pytest.mark.parametrize("text, overrides, needle", [
    (MINIMAL, ['resources.memory_per_rank="1e400"'], "resources.memory_per_rank = '1e400': too large"),
    (MINIMAL, ['resources.memory_per_rank="1e30"'], "too large: at most 2**62 bytes"),
    (MINIMAL, ['resources.memory_per_rank="1.2.3"'], "not a size"),
    (MINIMAL, ["resources.memory_per_rank=99999999999999999999"], "resources.memory_per_rank = 9999"),
    (MINIMAL, ["input.chunk_rows=2147483648"], "input.chunk_rows = 2147483648: must be <= 2**31 - 1"),
    (MINIMAL, ["input.chunk_rows=1e400"], "input.chunk_rows = inf: expected an integer"),
    (MINIMAL, ["plan.calibration_rows=0"], "plan.calibration_rows = 0: must be > 0"),
    (MINIMAL, ["output.shard_sizes=[1, 18446744073709551616]"],
     "output.shard_sizes[1] = 18446744073709551616: out of range"),
    (MINIMAL, ['plan.balance="speeds"', "plan.speeds=[nan]"], "plan.speeds[0] = nan: nan is not allowed"),
    (MINIMAL, ["plan.shard_speeds=[1, inf]"], "plan.shard_speeds[1] = inf: must be a finite number"),
    (MINIMAL, ["plan.shard_speeds=[1e308]"],
     "plan.shard_speeds = [1e+308]: every speed must lie in (0, 1e15]"),
    (MINIMAL + SAMPLE.format('op = "sample"\nfraction = nan'), [], "sample[0].fraction = nan"),
    (MINIMAL + SAMPLE.format('op = "sample"\nn = 18446744073709551616'), [], "sample[0].n = 1844"),
    (MINIMAL + SAMPLE.format('op = "bootstrap"\nn = -5'), [], "sample[0].n = -5"),
    (MINIMAL + SAMPLE.format('op = "split"\nsplits = { train = nan }'), [],
     "sample[0].splits.train = nan"),
    (MINIMAL + SAMPLE.format('op = "stratified"\nfraction = inf'), [], "sample[0].fraction = inf"),
    (MINIMAL + STEPS.format('op = "outliers", threshold = inf'), [],
     "standardize[0].steps[0].threshold = inf: must be a finite number"),
    (MINIMAL + STEPS.format('op = "outliers", method = "quantile", q_lo = nan'), [],
     "standardize[0].steps[0].q_lo = nan"),
    (MINIMAL + STEPS.format('op = "scale", method = "minmax", feature_range = [-inf, 1.0]'), [],
     "standardize[0].steps[0].feature_range[0] = -inf"),
    (MINIMAL + STEPS.format('op = "impute", fill_value = 1e400'), [],
     "standardize[0].steps[0].fill_value = inf"),
    (MINIMAL, ["train.lr=nan"], "train.lr = nan"),
    (MINIMAL, ["train.batch_size=4294967296"], "train.batch_size = 4294967296: must lie in"),
    (MINIMAL, ["train.hidden=[1073741824]"], "train.hidden = [1073741824]: every item must be"),
    (MINIMAL, ["train.shares=[1, nan]"], "train.shares[1] = nan"),
])
def test_every_number_is_range_checked(text, overrides, needle):
    with pytest.raises(ConfigError) as info:
        parse(text, overrides)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_parse_size_never_overflows():
    for bad in ("1e400", "1e30", "nan", "inf", "1e19"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_size("4EiB".replace("E", "T")) == 4 * 1024**4


def test_set_into_a_value_that_is_not_a_table():
    with pytest.raises(ConfigError, match="paths is not a table or a list|0 is not a table"):
        parse(overrides=["input.paths.0.x=1"])


def test_op_that_is_not_a_string():
    with pytest.raises(ConfigError, match=r"sample\[0\]\.op = \[\]: unknown sampling mode"):
        parse(MINIMAL + "[[sample]]\nop = []\n")


@pytest.mark.parametrize("table, needle", [
    ({"workers": [{"speed": float("nan")}], "tasks": [{"units": 5}]}, "workers[0].speed = nan"),
    ({"workers": [{"speed": 1.0, "count": 10**9}], "tasks": [{"units": 5}]},
     "workers[0].count = 1000000000: must lie in [1, 100000]"),
    ({"workers": [{"speed": 1.0}], "tasks": [{"units": 2**64}]}, "tasks[0].units = 1844"),
    ({"workers": [{"speed": 1.0}], "tasks": [{"units": 5, "value": float("inf")}]},
     "tasks[0].value = inf: must be a finite number"),
])
def test_problem_file_numbers(tmp_path, table, needle):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ConfigError) as info:
        load_problem_file(path)
    assert needle in str(info.value)


def test_problem_file_allows_no_deadline_and_no_cap(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[[workers]]\nspeed = 1.0\nmemory = inf\n[[tasks]]\nunits = 5\ndeadline = inf\n")
    problem, _ = load_problem_file(path)
    assert problem.n_workers == 1 and not problem.has_deadlines


# ---- through the real CLI, under mpiexec ----------------------------------------------------

@pytest.mark.parametrize("override, needle", [
    ("seed=18446744073709551616", "hpcprep: error: seed = 18446744073709551616: must lie in [0, 2**63 - 1]"),
    ('resources.memory_per_rank="1e400"', "hpcprep: error: resources.memory_per_rank = '1e400': too large"),
])
def test_cli_bad_number_is_one_line_before_any_work(tmp_path, small_raw, override, needle):
    os.symlink(small_raw, tmp_path / "raw")
    cfg = write_config(tmp_path / "c.toml", BASE_CONFIG.format(chunk_rows=1000))
    proc = mpirun(2, ["run", cfg, "--set", override], cwd=tmp_path, check=False, timeout=60)
    assert_once(proc, needle)
    assert proc.returncode == 2 and "input:" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ranks, layout, table, needle", [
    (3, [], 'op = "sample"\nn = 100000\nif_short = "error"',
     "hpcprep: error: sample: n = 100000 but the layer has only "),
    (4, ["layout.fused=false", "layout.input=1", "layout.standardize=[1]", "layout.sample=[2]"],
     'op = "stratified"\nn_per_class = 5000\nif_short = "error"',
     "hpcprep: error: stratified: n_per_class = 5000 but class(es) 0 has"),
])
def test_sampling_error_is_printed_once(tmp_path, small_raw, ranks, layout, table, needle):
    """Every member of the layer raises it; one prints (in the layered run, ranks 2 and 3 of 4)."""
    os.symlink(small_raw, tmp_path / "raw")
    text = BASE_CONFIG.format(chunk_rows=400).replace('op = "shuffle"', table)
    cfg = write_config(tmp_path / "c.toml", text)
    sets = [a for s in layout for a in ("--set", s)]
    proc = mpirun(ranks, ["run", cfg, "--quiet", *sets], cwd=tmp_path, check=False, timeout=60)
    assert_once(proc, needle)
    assert "on rank" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.tmp")]


PROBLEM = "[[workers]]\nspeed = 10.0\n[[workers]]\nspeed = 20.0\n[[tasks]]\nunits = 100\ndeadline = {}\n"


def test_plan_command_runs_under_mpiexec_and_prints_once(tmp_path):
    (tmp_path / "ok.toml").write_text(PROBLEM.format(10.0))
    proc = mpirun(2, ["plan", "ok.toml", "--json"], cwd=tmp_path, timeout=60)
    plan = json.loads(proc.stdout)                      # one JSON document: printed once
    assert [w["units"] for w in plan["workers"]] == [33, 67]


def test_plan_command_infeasible_is_printed_once(tmp_path):
    (tmp_path / "late.toml").write_text(PROBLEM.format(1.0))
    proc = mpirun(3, ["plan", "late.toml"], cwd=tmp_path, check=False, timeout=60)
    assert_once(proc, "hpcprep: error: infeasible deadlines: task 't0'")
    assert proc.returncode == 2


GATHER = """\
from mpi4py import MPI
from hpcprep.assign import WorkerReport, gather_and_plan
from hpcprep.mpi.agree import fail_hard

world = MPI.COMM_WORLD
sub = world.Split(0 if world.Get_rank() < 2 else 1, world.Get_rank())
try:
    if world.Get_rank() < 2:     # ranks 0 and 1 plan; rank 2 waits elsewhere
        gather_and_plan(sub, WorkerReport(speed=10.0), {"task_units": [100], "deadlines": [1.0]})
    world.Barrier()
except Exception as e:
    fail_hard(world, e)
"""


def test_assign_error_of_a_collective_is_printed_once(tmp_path):
    """gather_and_plan raises the same AssignError on every rank of its communicator."""
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    proc = mpirun(3, [str(script)], cwd=tmp_path, check=False, module=False, timeout=60)
    assert_once(proc, "infeasible deadlines: task 't0'")
    assert "hpcprep: error: infeasible deadlines" in proc.stderr   # agreed: no rank of its own


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_generate_seed_outside_its_range(tmp_path, seed):
    from argparse import Namespace

    from hpcprep.cli import cmd_generate
    from hpcprep.mpi.agree import AgreedError

    args = Namespace(rows=10, features=2, files=1, seed=seed, out=str(tmp_path / "g"), quiet=True)
    with pytest.raises(AgreedError, match=r"0 <= --seed <= 2\*\*63 - 1"):
        cmd_generate(args, MPI.COMM_SELF)
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("overrides, world, n_writers", [
    (["output.shard_sizes=[5, 5]"], 3, 3),                        # fused: every rank writes
    (["output.shard_sizes=[5, -1, 5]"], 3, 3),
    (["layout.fused=false", "layout.input=1", "layout.sample=[2]", "output.shard_sizes=[5]"], 3, 2),
])
def test_shard_sizes_of_the_wrong_length_fail_before_any_work(overrides, world, n_writers):
    """Found while parsing the config (was: after standardize and sample had run, once per rank)."""
    with pytest.raises(ConfigError) as info:
        parse(overrides=overrides, world=world)
    assert f"needs {n_writers} non-negative sizes" in str(info.value)


def test_shard_sizes_of_the_right_length_pass():
    cfg = parse(overrides=["output.shard_sizes=[5, 0, 7]"], world=3)
    assert cfg.output.shard_sizes == [5, 0, 7]
