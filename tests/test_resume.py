"""Restart after a time limit: a run stopped or killed after its fit passes resumes from its
checkpoint, and the output is byte-identical to an uninterrupted run (docs/cluster.md).

Every run goes through a small script that registers a step ``explode`` (last in the config,
after every fitting step, so it runs only in the apply pass, during the exchange): with
``KILL_IN_APPLY=1`` it SIGKILLs rank 0 there, like a node lost after the fit.
"""

import importlib.util
import json
import os
import shutil
import sys

import numpy as np
import pytest

from conftest import REPO, mpirun, write_config
from hpcprep.stages.checkpoint_files import (decode, encode, id_ranges, ids_within,
                                             is_checkpoint, remove_checkpoint)

_spec = importlib.util.spec_from_file_location("check_identity", REPO / "scripts" / "check_identity.py")
check_identity = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("check_identity", check_identity)
_spec.loader.exec_module(check_identity)

SCRIPT = """
import os, signal, sys
from mpi4py import MPI
from hpcprep.steps import Step, register_step
from hpcprep.cli import main

@register_step
class Explode(Step):
    op = "explode"
    def apply(self, chunk):
        if os.environ.get("KILL_IN_APPLY") == "1" and MPI.COMM_WORLD.Get_rank() == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return chunk, {}

main(sys.argv[1:])
"""

# every step that fits, over two layers (one with rejects); dedup's state is per rank
CONFIG = """\
seed = 3
[input]
paths = ["d.csv"]
features = ["x0", "x1", "x2", "x3"]
label = "y"
categorical = ["c", "k"]
chunk_rows = 500
[[standardize]]
rejects = true
steps = [
  { op = "dedup" },
  { op = "outliers", method = "zscore", threshold = 3.0 },
  { op = "impute", strategy = "median" },
  { op = "categorical", columns = ["c"], min_count = 2 },
  { op = "categorical", columns = ["k"], encoding = "codes" },
  { op = "scale", method = "robust" },
]
[[standardize]]
steps = [
  { op = "outliers", method = "quantile" },
  { op = "scale", method = "minmax" },
  { op = "select", min_variance = 0.0001 },
  { op = "reduce", tolerance = 0.01 },
  { op = "scale" },
  { op = "explode" },
]
[[sample]]
op = "shuffle"
[output]
path = "out"
"""
#: A third layer that fits nothing: in a layered layout its rank waits for the fit boundary
#: before it receives anything.
LAYERED_EXTRA = '\n[[standardize]]\nsteps = [{ op = "dropna" }]\n'
LAYERED = ["layout.fused=false", "layout.input=1", "layout.standardize=[1, 1, 1]",
           "layout.sample=[1]"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    import pandas as pd

    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(3)
    n = 3000
    df = pd.DataFrame({f"x{i}": np.round(rng.normal(size=n), 2) for i in range(4)})
    df.loc[rng.uniform(size=n) < 0.05, "x1"] = np.nan
    df["c"] = rng.choice(["a", "b", "c", "d", ""], n)
    df["k"] = rng.choice(["p", "q", "r"], n)
    df["y"] = rng.integers(0, 3, n)
    pd.concat([df, df.iloc[:200]]).to_csv(root / "d.csv", index=False)
    (root / "run.py").write_text(SCRIPT)
    write_config(root / "c.toml", CONFIG)
    write_config(root / "layered.toml", CONFIG + LAYERED_EXTRA)
    return root


def run(work, n, *args, check=True, env=None, monkeypatch=None, sets=()):
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    try:
        argv = [str(work / "run.py"), "run", *args]
        for s in sets:
            argv += ["--set", s]
        return mpirun(n, argv, cwd=work, module=False, check=check, timeout=120)
    finally:
        for key in env or {}:
            monkeypatch.delenv(key)


def same_output(a, b) -> list[str]:
    return check_identity.differences(check_identity.digest(a), check_identity.digest(b))


def stop_after_fit(work, monkeypatch, n, cfg="c.toml", out="out", sets=()):
    """A run stopped at the fit boundary by the stop file: exit 75, checkpoint kept, no output."""
    (work / "stop").write_text("")
    proc = run(work, n, cfg, "--set", f"output.path={out}", check=False, sets=sets,
               env={"HPCPREP_STOP_FILE": str(work / "stop")}, monkeypatch=monkeypatch)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "hpcprep: stopped: after the fit passes" in proc.stdout + proc.stderr
    ckpt = work / f".{out}.checkpoint"
    assert is_checkpoint(str(ckpt))
    left = sorted(p for p in os.listdir(work) if p.startswith(f".{out}") or p == out)
    assert left == [f".{out}.checkpoint"]     # no output, no temporary folder, no lock
    return ckpt


def test_stopped_after_fit_resumes_identically_at_1_and_3_ranks_and_at_another_count(
        work, monkeypatch):
    refs = {n: work / f"ref{n}" for n in (1, 2, 3)}
    for n, ref in refs.items():
        run(work, n, "c.toml", "--quiet", "--set", f"output.path={ref.name}")
    for n_stop, n_resume in ((1, 1), (3, 3), (3, 2)):
        out = f"out{n_stop}{n_resume}"
        if n_stop == 1 or n_resume == 3:
            ckpt = stop_after_fit(work, monkeypatch, n_stop, out=out)
            assert sorted(p for p in os.listdir(ckpt) if p.endswith(".json")) == \
                ["checkpoint.json", "layer-000.json", "layer-001.json"]
            if n_resume == 3:
                shutil.copytree(ckpt, work / "ckpt3")
        else:   # the checkpoint of the 3-rank stop, resumed at 2 ranks
            shutil.copytree(work / "ckpt3", work / f".{out}.checkpoint")
        # a resumed run does not stop again at the boundary: it has nothing new to save there
        proc = run(work, n_resume, "c.toml", "--resume", "--set", f"output.path={out}",
                   env={"HPCPREP_STOP_FILE": str(work / "stop")}, monkeypatch=monkeypatch)
        assert "resuming from the checkpoint of " in proc.stdout
        assert "fit done, skipping 11 fit pass(es)" in proc.stdout
        assert "pass 1: fit" not in proc.stdout
        assert not (work / f".{out}.checkpoint").exists()   # removed once the run committed
        report = json.loads((work / out / "report.json").read_text())
        assert report["ranks"][0]["resumed"]["skipped_passes"] == 11
        diff = same_output(refs[n_resume], work / out)
        assert all("attrs/config" in d for d in diff), diff   # only the --set output.path line


def test_layered_partial_checkpoint_fits_only_the_missing_layer(work, monkeypatch):
    ref, out = work / "ref-layered", "out-layered"
    run(work, 5, "layered.toml", "--quiet", "--set", f"output.path={ref.name}", sets=LAYERED)
    ckpt = stop_after_fit(work, monkeypatch, 5, "layered.toml", out, sets=LAYERED)
    (ckpt / "layer-001.json").unlink()     # as if killed during layer 1's fit
    proc = run(work, 5, "layered.toml", "--set", f"output.path={out}", sets=LAYERED)
    assert "fitted standardize[0], skipping 6 fit pass(es)" in proc.stdout
    fitted = {}   # layer -> the fit passes timed in this run (layered: no progress lines)
    for rank in json.loads((work / out / "report.json").read_text())["ranks"]:
        for j, layer in rank.get("standardize", {}).items():
            fitted[j] = [k for k in layer["seconds"] if k.startswith("fit")]
    assert fitted["0"] == [] and len(fitted["1"]) == 5 and fitted["2"] == []
    diff = same_output(ref, work / out)
    assert all("attrs/config" in d for d in diff), diff


def test_killed_during_the_exchange_resumes_from_the_fit(work, monkeypatch):
    ref, out = work / "ref-kill", "out-kill"
    run(work, 2, "c.toml", "--quiet", "--set", f"output.path={ref.name}")
    proc = run(work, 2, "c.toml", "--set", f"output.path={out}", check=False,
               env={"KILL_IN_APPLY": "1"}, monkeypatch=monkeypatch)
    assert proc.returncode != 0 and "exchange into sample[0]" in proc.stdout
    assert is_checkpoint(str(work / f".{out}.checkpoint"))
    proc = run(work, 2, "c.toml", "--set", f"output.path={out}")
    assert "warning: took over the lock" in proc.stdout
    assert "resuming from the checkpoint of " in proc.stdout
    assert sorted(p for p in os.listdir(work) if out in p) == [out]
    diff = same_output(ref, work / out)
    assert all("attrs/config" in d for d in diff), diff


def test_a_checkpoint_of_another_run_is_never_used(work, monkeypatch):
    out = "out-other"
    stop_after_fit(work, monkeypatch, 1, out=out)
    proc = run(work, 1, "c.toml", "--resume", "--set", f"output.path={out}", "--set", "seed=4",
               check=False)
    assert proc.returncode == 2
    assert "--resume: cannot resume from " in proc.stderr and "written for another config" in proc.stderr
    assert is_checkpoint(str(work / f".{out}.checkpoint"))    # --resume leaves it as it is
    os.utime(work / "d.csv")     # the input changed since: mtime
    proc = run(work, 1, "c.toml", "--set", f"output.path={out}")
    assert f"not used and removed: input {work / 'd.csv'} is new or changed" in proc.stdout
    assert "pass 1: fit dedup" in proc.stdout and "resuming" not in proc.stdout
    assert not (work / f".{out}.checkpoint").exists()
    proc = run(work, 1, "c.toml", "--resume", "--set", f"output.path={out}-2", check=False)
    assert proc.returncode == 2 and "cannot resume from" in proc.stderr and "there is none" in proc.stderr


def test_a_failed_run_removes_its_checkpoint_and_a_foreign_folder_is_left_alone(work):
    # fails after the fit (every row dropped is too many): the checkpoint goes with the run
    proc = run(work, 1, "c.toml", "--set", "output.path=out-fail", "--set",
               "output.max_drop_fraction=0.001", check=False)
    assert proc.returncode == 2 and "pass 1: fit dedup" in proc.stdout
    assert not [p for p in os.listdir(work) if "out-fail" in p]
    (work / ".out-foreign.checkpoint").mkdir()
    (work / ".out-foreign.checkpoint" / "notes.txt").write_text("mine")
    proc = run(work, 1, "c.toml", "--set", "output.path=out-foreign", check=False)
    assert proc.returncode == 2 and "is not an hpcprep checkpoint" in proc.stderr
    assert (work / ".out-foreign.checkpoint" / "notes.txt").read_text() == "mine"


# ---- in-process --------------------------------------------------------------------------------
def test_fitted_values_round_trip_exactly():
    value = {"a": np.arange(5, dtype=np.int32), "s": np.array(["", "median"], dtype=object),
             "g": np.int64(7), "f": np.float32(0.1), "t": (1, 2.5, None), "l": [True, "x"],
             "u": np.array(["ü€", "b"]), "nan": float("nan"), "d": {"k": {"m": np.ones((2, 3))}}}
    arrays = {}
    tree = json.loads(json.dumps(encode(value, arrays)))
    back = decode(tree, arrays)
    assert back.keys() == value.keys()
    for k in ("a", "u"):
        assert back[k].dtype == value[k].dtype and np.array_equal(back[k], value[k])
    assert back["s"].dtype == object and list(back["s"]) == ["", "median"]
    assert type(back["g"]) is np.int64 and type(back["f"]) is np.float32 and back["f"] == value["f"]
    assert back["t"] == (1, 2.5, None) and back["l"] == [True, "x"] and np.isnan(back["nan"])
    assert np.array_equal(back["d"]["k"]["m"], np.ones((2, 3)))
    with pytest.raises(TypeError, match="cannot checkpoint a value of type"):
        encode({np.dtype("f4"): 1}, {})


def test_row_ids_are_kept_by_the_id_ranges_of_a_ranks_chunks():
    class D:
        def __init__(self, first_id, rows):
            self.first_id, self.rows = first_id, rows

    ranges = id_ranges([D(10, 5), D(0, 5), D(20, 5)])
    assert ranges == [[0, 5], [10, 15], [20, 25]]
    ids = np.array([0, 4, 5, 9, 10, 14, 15, 24, 25])
    assert list(ids_within(ids, ranges)) == [0, 4, 10, 14, 24]
    assert list(ids_within(ids, None)) == list(ids)


def test_only_hpcprep_files_are_removed(tmp_path):
    folder = tmp_path / ".out.checkpoint"
    folder.mkdir()
    (folder / "checkpoint.json").write_text(json.dumps({"format": "hpcprep-checkpoint"}))
    (folder / "layer-000.npz").write_bytes(b"x")
    assert is_checkpoint(str(folder))
    (folder / "keep.txt").write_text("not ours")
    assert not is_checkpoint(str(folder))
    remove_checkpoint(str(folder))
    assert sorted(os.listdir(folder)) == ["keep.txt"]
