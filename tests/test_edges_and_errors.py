"""Tiny inputs, bad inputs and failing ranks, under mpiexec."""

import os

import h5py
import numpy as np
import pytest

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.generate import generate
from hpcprep.output.verify import read_all


def make_case(tmp_path, rows, files=1):
    generate(str(tmp_path / "raw"), rows, 4, files, seed=3, quiet=True)
    return write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=2))


@pytest.mark.parametrize("rows, ranks", [(0, 1), (0, 3), (1, 2), (2, 3), (3, 4)])
def test_tiny_inputs(tmp_path, rows, ranks):
    cfg = make_case(tmp_path, rows)
    mpirun(ranks, ["run", cfg, "--quiet"], cwd=tmp_path)
    got = read_all(tmp_path / "out")
    with h5py.File(tmp_path / "raw" / "part-00000.h5") as f:
        x = f["features"][()]
    kept = np.flatnonzero(~np.isnan(x).any(axis=1))
    assert np.array_equal(np.sort(got["ids"]), kept)
    assert got["features"].shape == (len(kept), 4)


def assert_failed_cleanly(proc, needle, tmp_path):
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert needle in text, text
    assert text.count(needle) == 1, f"message printed more than once:\n{text}"
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.tmp")], "temporary output left"


def test_missing_input_file(tmp_path):
    cfg = write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=10).replace(
        '"raw/*.h5"', '"raw/nothing-here.h5"'))
    proc = mpirun(3, ["run", cfg], cwd=tmp_path, check=False)
    assert_failed_cleanly(proc, "input file not found: ", tmp_path)
    assert "raw/nothing-here.h5" in proc.stderr


def test_unknown_config_key(tmp_path):
    cfg = make_case(tmp_path, 10)
    proc = mpirun(2, ["run", cfg, "--set", "output.colour=blue"], cwd=tmp_path, check=False)
    assert_failed_cleanly(proc, "unknown key output.colour", tmp_path)
    assert proc.returncode == 2


def test_non_numeric_features(tmp_path):
    (tmp_path / "raw").mkdir()
    with h5py.File(tmp_path / "raw" / "a.h5", "w") as f:
        f["features"] = np.array([[b"x", b"y"]] * 5)
        f["labels"] = np.zeros(5, dtype=np.int64)
    cfg = write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=10))
    proc = mpirun(2, ["run", cfg], cwd=tmp_path, check=False)
    assert_failed_cleanly(proc, "expected a numeric type", tmp_path)
    assert "a.h5" in proc.stderr


def test_existing_output_is_an_error_then_overwrite_works(tmp_path):
    cfg = make_case(tmp_path, 50)
    mpirun(2, ["run", cfg, "--quiet"], cwd=tmp_path)
    first = read_all(tmp_path / "out")["ids"]
    proc = mpirun(2, ["run", cfg], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    mpirun(2, ["run", cfg, "--quiet", "--set", "output.overwrite=true"], cwd=tmp_path)
    assert (read_all(tmp_path / "out")["ids"] == first).all()


def test_overwrite_refuses_a_folder_that_is_not_an_hpcprep_output(tmp_path):
    cfg = make_case(tmp_path, 50)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    proc = mpirun(2, ["run", cfg, "--set", "output.overwrite=true"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "precious.txt" in proc.stderr
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


FAULTY = """
import sys
from mpi4py import MPI
from hpcprep.steps import Step, register_step
from hpcprep.cli import main

@register_step
class Explode(Step):
    op = "explode"
    def apply(self, chunk):
        if MPI.COMM_WORLD.Get_rank() == 2:
            raise RuntimeError("boom on purpose")
        return chunk, {}

main(sys.argv[1:])
"""


def test_exception_on_one_rank_ends_all(tmp_path):
    generate(str(tmp_path / "raw"), 400, 4, 4, seed=3, quiet=True)
    cfg = write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=20).replace(
        '{ op = "dropna" }', '{ op = "explode" }'))
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY)
    # the 30 s timeout is the requirement: a hang raises TimeoutExpired and fails the test
    proc = mpirun(4, [str(script), "run", cfg, "--quiet"], cwd=tmp_path, check=False, module=False,
                  timeout=30)
    assert proc.returncode != 0
    assert "error on rank 2 of 4: RuntimeError: boom on purpose" in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.tmp")]
