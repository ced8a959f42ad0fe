"""Start-up checks on how the MPI job was launched.

The trap this catches: inside a Slurm allocation, ``srun --mpi=none python -m hpcprep ...``
(or an srun whose MPI plugin does not match the MPI library, or a plain ``python ...`` in a
multi-task batch script) starts the program N times, and each copy finds an MPI world of
size 1. Every copy then does the whole job alone, they overwrite each other's output, and
the job step still exits 0. See docs/cluster.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import HpcprepError

#: Set to 1 to run a single rank inside a multi-task Slurm allocation on purpose.
ALLOW_ENV = "HPCPREP_ALLOW_SINGLE_RANK"

_TASK_VARS = ("SLURM_NTASKS", "SLURM_NPROCS")


def _slurm_tasks(environ: Mapping[str, str]) -> tuple[str, int] | None:
    """The first of SLURM_NTASKS / SLURM_NPROCS that holds an integer, as (name, value)."""
    for name in _TASK_VARS:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return name, int(value)
    return None


def check_launch(comm, environ: Mapping[str, str] | None = None) -> None:
    """Raise HpcprepError when an MPI world of size 1 runs inside a multi-task Slurm job step.

    ``comm`` is the world communicator (anything with ``Get_size()``); ``environ`` defaults
    to ``os.environ``. Does nothing outside Slurm, when the world has more than one rank, or
    when ``HPCPREP_ALLOW_SINGLE_RANK=1`` is set.
    """
    env = os.environ if environ is None else environ
    if comm.Get_size() != 1:
        return
    if env.get(ALLOW_ENV, "").strip() in ("1", "true", "yes"):
        return
    found = _slurm_tasks(env)
    if found is None:
        return
    name, ntasks = found
    if ntasks <= 1:
        return
    procid = env.get("SLURM_PROCID")
    who = f" (this is Slurm task {procid})" if procid is not None else ""
    raise HpcprepError(
        f"MPI world has 1 rank, but Slurm runs this job with {ntasks} tasks "
        f"({name}={ntasks}){who}. Each task is a separate one-rank MPI job: the work would be "
        f"done {ntasks} times over and the copies would overwrite each other's output. "
        "This happens with `srun --mpi=none` (srun then exits 0 although nothing ran in "
        "parallel), with an srun MPI plugin that does not match the MPI library, or when "
        "python is run without a launcher in a multi-task batch script. Launch with "
        "`srun --mpi=pmi2 ...` or `mpiexec -n \"$SLURM_NTASKS\" ...` (HPCPREP_LAUNCHER in "
        f"slurm/*.sbatch; see docs/cluster.md). To run one rank on purpose, set {ALLOW_ENV}=1."
    )
