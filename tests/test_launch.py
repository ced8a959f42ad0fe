"""check_launch: the `srun --mpi=none` trap (world size 1 inside a multi-task Slurm step)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpi4py import MPI

from hpcprep.errors import HpcprepError
from hpcprep.launch import check_launch

ROOT = Path(__file__).resolve().parents[1]
SLURM_VARS = ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_PROCID", "HPCPREP_ALLOW_SINGLE_RANK")


@pytest.fixture
def clean_env(monkeypatch):
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_outside_slurm_is_fine(clean_env):
    assert MPI.COMM_SELF.Get_size() == 1
    check_launch(MPI.COMM_SELF)
    check_launch(MPI.COMM_WORLD)


@pytest.mark.parametrize("name", ["SLURM_NTASKS", "SLURM_NPROCS"])
def test_single_rank_in_multi_task_step_is_an_error(clean_env, name):
    clean_env.setenv(name, "4")
    clean_env.setenv("SLURM_PROCID", "2")
    with pytest.raises(HpcprepError) as err:
        check_launch(MPI.COMM_SELF)
    msg = str(err.value)
    assert f"{name}=4" in msg
    assert "--mpi=none" in msg
    assert "--mpi=pmi2" in msg and "mpiexec" in msg
    assert "task 2" in msg
    assert "HPCPREP_ALLOW_SINGLE_RANK" in msg


def test_explicit_environ_mapping(clean_env):
    with pytest.raises(HpcprepError):
        check_launch(MPI.COMM_SELF, environ={"SLURM_NTASKS": "2"})
    check_launch(MPI.COMM_SELF, environ={"SLURM_NTASKS": "1"})
    check_launch(MPI.COMM_SELF, environ={})


@pytest.mark.parametrize("value", ["1", "", "abc", "0"])
def test_one_task_or_unreadable_value_is_fine(clean_env, value):
    clean_env.setenv("SLURM_NTASKS", value)
    check_launch(MPI.COMM_SELF)


def test_ntasks_wins_over_nprocs(clean_env):
    clean_env.setenv("SLURM_NTASKS", "1")
    clean_env.setenv("SLURM_NPROCS", "4")
    check_launch(MPI.COMM_SELF)


def test_opt_out(clean_env):
    clean_env.setenv("SLURM_NTASKS", "4")
    clean_env.setenv("HPCPREP_ALLOW_SINGLE_RANK", "1")
    check_launch(MPI.COMM_SELF)


def test_multi_rank_world_is_fine():
    """A real 2-rank world with SLURM_NTASKS=2 (and a larger allocation) passes."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip(f"no mpiexec next to {sys.executable}")
    code = (
        "from mpi4py import MPI; from hpcprep.launch import check_launch; "
        "check_launch(MPI.COMM_WORLD); import sys; "
        # one write per line: with PYTHONUNBUFFERED=1 Hydra glues print()'s pieces together
        "sys.stdout.write(f'ok {MPI.COMM_WORLD.Get_size()}\\n'); sys.stdout.flush()"
    )
    for ntasks in ("2", "4"):
        env = dict(os.environ, SLURM_NTASKS=ntasks, PYTHONPATH=str(ROOT))
        res = subprocess.run(
            [str(mpiexec), "-n", "2", sys.executable, "-c", code],
            env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == ["ok 2", "ok 2"], res.stdout
