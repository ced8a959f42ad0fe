"""CSV input through the whole pipeline: byte ranges over input ranks, malformed lines counted."""

import json
import os

import h5py
import numpy as np
import pytest

from conftest import mpirun, write_config
from hpcprep.output.verify import read_all

CONFIG = """\
seed = 1
[input]
paths = ["in*.csv"]
features = ["a", "b", "c"]
label = "y"
chunk_rows = 60
[[standardize]]
steps = [{ op = "dropna" }, { op = "scale" }]
[output]
path = "out"
"""


def write_messy_csv(folder):
    """Two CSV files with quoted fields, missing values, short lines and unparsable numbers."""
    rng = np.random.default_rng(0)
    bad_lines = []
    for f in range(2):
        lines = ["a,b,c,cat,y"]
        for i in range(400):
            if i % 97 == 5:
                lines.append("1,2")
                bad_lines.append((f, len(lines)))
            elif i % 89 == 3:
                lines.append("x,2,3,q,1")
                bad_lines.append((f, len(lines)))
            else:
                b = "" if i % 50 == 0 else f"{rng.normal():.6f}"
                lines.append(f'{rng.normal():.6f},{b},{rng.normal() * 3 + 1:.4f},"c,{i % 3}",{i % 2}')
        end = "\r\n" if f else "\n"
        (folder / f"in{f}.csv").write_text(end.join(lines) + ("" if f else "\n"))
    return bad_lines


@pytest.fixture(scope="module")
def csv_runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("csv")
    bad = write_messy_csv(work)
    cfg = write_config(work / "cfg.toml", CONFIG)
    layouts = {"n1": (1, []), "n3": (3, []),
               "layered": (4, ["layout.fused=false", "layout.input=1", "layout.standardize=[1]",
                               "layout.sample=[2]"])}
    for name, (n, sets) in layouts.items():
        mpirun(n, ["run", cfg, "--quiet", f"--set=output.path={name}"] + [f"--set={s}" for s in sets],
               cwd=work)
    return work, bad


def test_same_output_for_every_layout(csv_runs):
    work, _ = csv_runs
    ref = read_all(work / "n1")
    for name in ("n3", "layered"):
        got = read_all(work / name)
        for key in ("ids", "features", "labels"):
            assert np.array_equal(got[key], ref[key]), (name, key)


def test_arrow_threads_are_the_ranks_share_of_the_cores(csv_runs):
    work, _ = csv_runs
    visible = len(os.sched_getaffinity(0))
    for name, ranks_on_node in (("n1", 1), ("n3", 3)):
        report = json.loads((work / name / "report.json").read_text())
        for r in report["ranks"]:
            if "input" in r["roles"]:
                assert r["input"]["arrow_threads"] == max(1, visible // ranks_on_node), name


def test_values_and_counts_match_a_reference(csv_runs):
    work, bad = csv_runs
    rows, ids = [], []
    for f in range(2):
        lines = (work / f"in{f}.csv").read_text().splitlines()[1:]
        for i, line in enumerate(lines):
            fields = line.split(",")  # the quoted field "c,k" only shifts the last index
            rid = f * 400 + i
            try:
                a, b, c = float(fields[0]), float(fields[1]) if fields[1] else np.nan, float(fields[2])
            except (ValueError, IndexError):
                continue
            if np.isnan(b):
                continue
            rows.append((a, b, c, float(fields[-1])))
            ids.append(rid)
    ref = np.array(rows)
    x = ref[:, :3]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    got = read_all(work / "n3")
    order = np.argsort(got["ids"])
    assert np.array_equal(got["ids"][order], ids)
    np.testing.assert_allclose(got["features"][order], x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["labels"][order], ref[:, 3])
    with h5py.File(work / "n3" / "data.h5") as f:
        counts = json.loads(f.attrs["counts"])
        assert f.attrs["rows_in"] == 800
    assert sum(counts["input"].values()) == len(bad)
    assert counts["0.0.dropna"]["missing value"] == 800 - len(bad) - len(ids)


def test_on_bad_row_error_names_file_and_line(tmp_path):
    bad = write_messy_csv(tmp_path)
    cfg = write_config(tmp_path / "cfg.toml", CONFIG.replace("chunk_rows = 60",
                                                               "chunk_rows = 60\non_bad_row = \"error\""))
    proc = mpirun(2, ["run", cfg], cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode != 0
    f, line = bad[0]
    assert f"in{f}.csv" in proc.stderr and f"line {line}" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_column_is_a_clear_error(tmp_path):
    write_messy_csv(tmp_path)
    cfg = write_config(tmp_path / "cfg.toml", CONFIG.replace('"c"]', '"nosuch"]'))
    proc = mpirun(2, ["run", cfg], cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2
    assert "in0.csv: the header has no column 'nosuch'" in proc.stderr
