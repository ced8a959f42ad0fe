"""16 and 32 ranks (oversubscribed on a small machine) write the same dataset as one rank.

Layout bugs that 1-4 ranks hide show up here: input ranks without a chunk (30 chunks for 32
ranks), sampling ranks with a handful of rows, a layered layout whose layers differ in size.
Small data, so the cost is the start-up of the ranks (~10-25 s per run on 2 cores).
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import mpirun, write_config

pytest.importorskip("h5py")

from hpcprep.output.verify import read_all  # noqa: E402

CONFIG = """\
seed = 11
[input]
paths = ["raw/*.h5"]
label = "labels"
chunk_rows = 100
[[standardize]]
steps = [{ op = "dropna" }, { op = "scale" }]
[[sample]]
op = "shuffle"
[[sample]]
op = "split"
splits = { train = 0.8, val = 0.2 }
[output]
path = "out"
"""

#: name -> (ranks, extra --set options)
RUNS = {
    "fused-16": (16, []),
    "fused-32": (32, []),
    "layered-16": (16, ["layout.fused=false", "layout.input=5", "layout.standardize=[5]",
                        "layout.sample=[3,3]"]),
}


def run(n: int, cwd, out: str, sets: list[str]):
    """``mpiexec -n N hpcprep run c.toml``. With more ranks than cores, waiting ranks yield
    the CPU (MPIR_CVAR_ENABLE_HEAVY_YIELD; see ../shared/notes/mpi.md)."""
    args = [a for s in [f'output.path="{out}"', *sets] for a in ("--set", s)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")
        mpirun(n, ["run", "c.toml", "--quiet", *args], cwd, timeout=240)


def read_splits(out) -> dict:
    """Every split's ids/features/labels, read from the shards (checksums checked)."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {split: read_all(out / rel) for split, rel in sorted(manifest["splits"].items())}


@pytest.fixture(scope="module")
def work(tmp_path_factory, small_raw):
    d = tmp_path_factory.mktemp("many-ranks")
    os.symlink(small_raw, d / "raw")
    write_config(d / "c.toml", CONFIG)
    run(1, d, "out-1", [])
    return d


@pytest.mark.parametrize("name", list(RUNS))
def test_many_ranks_same_as_one(work, name):
    n, sets = RUNS[name]
    run(n, work, f"out-{name}", sets)
    want, got = read_splits(work / "out-1"), read_splits(work / f"out-{name}")
    assert sorted(got) == sorted(want) == ["train", "val"]
    for split in want:
        assert sorted(got[split]) == sorted(want[split]), split
        assert len(want[split]["ids"]) > 0
        for column, a in want[split].items():
            b = got[split][column]
            assert (b.dtype, b.shape) == (a.dtype, a.shape), (split, column)
            assert b.tobytes() == a.tobytes(), f"{name}: {split}/{column} differs from -n 1"
    report = json.loads((work / f"out-{name}" / "report.json").read_text())
    assert len(report["ranks"]) == n
    shards = sum(len(json.loads((work / f"out-{name}" / rel / "manifest.json").read_text())["shards"])
                 for rel in ("train", "val"))
    assert shards == 2 * (3 if name.startswith("layered") else n)
