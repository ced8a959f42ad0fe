"""Tasks of the assignment program in the run (issue 14 item 3): deadlines and memory caps decide
who reads what; the output does not change; a deadline no plan meets fails before the data pass."""

import json
import os

import numpy as np
import pytest

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.output.verify import read_all

TASKS = ['plan.balance="speeds"', "plan.speeds=[1000.0,1000.0]", 'plan.tasks="files"']


@pytest.fixture(scope="module")
def work(small_raw, tmp_path_factory):
    w = tmp_path_factory.mktemp("tasks")
    os.symlink(small_raw, w / "raw")
    write_config(w / "cfg.toml", BASE_CONFIG.format(chunk_rows=250))
    return w


def run(work, n, name, sets, check=True):
    args = ["run", "cfg.toml", "--quiet", f"--set=output.path={name}"] + [f"--set={s}" for s in sets]
    return mpirun(n, args, cwd=work, check=check)


def assert_same_rows(ref, got) -> None:
    a, b = read_all(str(ref)), read_all(str(got))
    assert set(a) == set(b) == {"ids", "features", "labels"}
    for key in a:
        assert np.array_equal(a[key], b[key]), (got, key)


def report(work, name) -> dict:
    return json.loads((work / name / "report.json").read_text())


def test_a_deadline_moves_the_first_file_to_both_ranks(work):
    run(work, 1, "ref", [])
    # task 0 (the first file, 1000 rows) due at 0.6 s: alone on one rank at 1000 rows/s it takes 1 s
    run(work, 2, "due", TASKS + ["plan.deadlines=[0.6,inf,inf]"])
    plan = report(work, "due")["input_plan"]
    assert [t["rows"] for t in plan["tasks"]] == [1000, 1000, 1000]
    assert plan["tasks"][0]["predicted_finish_s"] <= 0.6 + 1e-9
    task_rows = np.array(plan["task_rows"])
    assert task_rows.sum(axis=0).tolist() == [1000, 1000, 1000]
    assert task_rows[0, 0] > 0 and task_rows[1, 0] > 0, task_rows
    # every rank read what the plan gave it, the first task first
    ranks = report(work, "due")["ranks"]
    assert [r["input"]["rows"] for r in ranks] == plan["rows"] == task_rows.sum(axis=1).tolist()
    for k, chunks in enumerate(plan["assigned"]):
        assert chunks[:2] == sorted(chunks[:2]) and chunks[0] < 4, (k, chunks)   # file 0: chunks 0..3
    # the equal split puts the whole first file on rank 0
    run(work, 2, "equal", [])
    assert report(work, "equal")["input_plan"]["ranges"][0] == [0, 6]
    for name in ("due", "equal"):
        assert_same_rows(work / "ref", work / name)


def test_memory_caps_bound_a_ranks_rows(work, monkeypatch):
    from hpcprep.config import parse_config
    from hpcprep.io.plan import build_input_plan

    monkeypatch.chdir(work)
    cfg = parse_config((work / "cfg.toml").read_text(), "cfg.toml")
    per_row = build_input_plan(cfg.input, 2).bytes_per_row
    cap = 700 * per_row
    run(work, 2, "capped", ['plan.balance="speeds"', "plan.speeds=[1000.0,1000.0]",
                            f"plan.memory=[{cap},\"1GiB\"]"])
    rows = report(work, "capped")["input_plan"]["rows"]
    assert rows[0] <= 700 < 1500 and sum(rows) == 3000, rows
    assert_same_rows(work / "ref", work / "capped")


def test_a_deadline_no_plan_meets_fails_before_the_data_pass(work):
    proc = run(work, 2, "late", TASKS + ["plan.deadlines=[0.4,inf,inf]"], check=False)
    assert proc.returncode != 0
    assert "part-00000.h5" in proc.stderr + proc.stdout and "deadline" in (proc.stderr + proc.stdout).lower()
    assert (proc.stderr + proc.stdout).count("deadline") >= 1
    assert not (work / "late").exists()


@pytest.mark.parametrize("sets, key", [
    (TASKS + ["plan.deadlines=[1.0,2.0]"], "plan.deadlines"),
    (['plan.tasks="files"'], "plan.balance"),
    (['plan.balance="speeds"', "plan.speeds=[1.0,1.0]", 'plan.memory=["1GiB"]'], "plan.memory"),
    (['plan.balance="calibrate"', "plan.emulate_slowdown={2=1.5}"], "plan.emulate_slowdown.2"),
    (['plan.balance="calibrate"', "plan.emulate_slowdown={1=0.5}"], "plan.emulate_slowdown"),
])
def test_task_config_errors_name_the_key(work, sets, key):
    proc = run(work, 2, "bad", sets, check=False)
    assert proc.returncode != 0 and key in proc.stderr + proc.stdout, proc.stderr


SUBSAMPLED = TASKS + ["plan.deadlines=[0.3,inf,inf]", "plan.min_fractions=[0.5,1,1]"]


def test_a_task_subsampled_to_meet_its_deadline_keeps_exactly_its_planned_rows(work):
    """At 2 x 1000 rows/s the first file (1000 rows) cannot be read by 0.3 s; with min_fraction
    0.5 the plan keeps half of it (w2 = 0: time is all that counts), chosen by key."""
    from hpcprep.kernels.keyed import keyed_hash
    from hpcprep.stages.subsample import SUBSAMPLE_STREAM

    if not (work / "ref").exists():
        run(work, 1, "ref", [])
    run(work, 2, "sub2", SUBSAMPLED)
    run(work, 3, "sub3", [s.replace("[1000.0,1000.0]", "[1000.0,1000.0,1000.0]") for s in SUBSAMPLED])
    rep = report(work, "sub2")
    task = rep["input_plan"]["tasks"][0]
    assert task["kept_rows"] == 500 and task["kept_fraction"] == 0.5
    assert [t["kept_rows"] for t in rep["input_plan"]["tasks"][1:]] == [1000, 1000]
    assert sum(r["input"]["subsampled"] for r in rep["ranks"]) == 500
    dropped = sum(n for reasons in rep["dropped"].values() for n in reasons.values())
    assert rep["rows_out"] + 500 + dropped == rep["rows_in"] == 3000   # every row counted once
    assert "file_task" not in rep["input_plan"]
    # exactly the 500 smallest keys of the first file's ids, and the same rows at any layout
    first = np.arange(1000)
    kept = np.sort(first[np.argsort(keyed_hash(11, SUBSAMPLE_STREAM, first))[:500]])
    ref = read_all(str(work / "ref"))
    mask = (ref["ids"] >= 1000) | np.isin(ref["ids"], kept)
    for name in ("sub2", "sub3"):
        got = read_all(str(work / name))
        assert np.array_equal(got["ids"], ref["ids"][mask]), name
        assert np.array_equal(got["labels"], ref["labels"][mask]), name
    # the scale step fits on the kept rows: features differ from ref's, not between layouts
    assert_same_rows(work / "sub2", work / "sub3")


def test_cuts_move_down_to_the_last_chunk_that_fits_a_cap():
    from hpcprep.stages.tasks import _within_caps

    sizes = np.array([250, 250, 0, 250, 250, 250])
    # rank 0 would take 4 chunks (750 rows) but may hold 600: it keeps 2 (the empty one too: 3)
    assert _within_caps([(0, 4), (4, 6)], sizes, np.array([600.0, np.inf])) == [(0, 3), (3, 6)]
    assert _within_caps([(0, 4), (4, 6)], sizes, np.array([np.inf, np.inf])) == [(0, 4), (4, 6)]
    assert _within_caps([(0, 2), (2, 4), (4, 6)], sizes, np.array([100.0, 1e9, 0.0])) == \
        [(0, 0), (0, 4), (4, 6)]
