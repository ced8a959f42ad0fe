"""Shared helpers: run hpcprep under mpiexec with a timeout, make small datasets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON = sys.executable
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session):
    """Write hpcprep's bytecode once, as a regular install does: the suite starts hundreds of
    Python processes, and an editable install under PYTHONDONTWRITEBYTECODE=1 (these
    machines) would compile every module in each of them (~0.35 s of CPU)."""
    import compileall

    compileall.compile_dir(str(REPO / "hpcprep"), quiet=1)


def mpirun(n: int, args: list[str], cwd, timeout: float = 180, check: bool = True,
           module: bool = True) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n python -m hpcprep ARGS`` (or a script) and return the finished process.

    A hang fails the test through the timeout instead of freezing the suite.
    """
    cmd = [MPIEXEC, "-n", str(n), PYTHON]
    cmd += ["-m", "hpcprep", *args] if module else list(args)
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def write_config(path, text: str) -> str:
    Path(path).write_text(text)
    return str(path)


BASE_CONFIG = """\
seed = 11
[input]
paths = ["raw/*.h5"]
label = "labels"
chunk_rows = {chunk_rows}
[[standardize]]
steps = [{{ op = "dropna" }}, {{ op = "scale" }}]
[[sample]]
op = "shuffle"
[output]
path = "out"
"""


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory):
    """A generated messy dataset: 3000 rows x 6 features in 3 files (session-wide, read-only)."""
    from hpcprep.generate import generate

    root = tmp_path_factory.mktemp("raw")
    generate(str(root / "raw"), 3000, 6, 3, seed=5, quiet=True)
    return root / "raw"
