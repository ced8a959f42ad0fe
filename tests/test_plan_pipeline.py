"""The assignment program in the pipeline: who reads what, shard sizes by speed."""

import json
import os

import numpy as np
import pytest

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.output.verify import read_all, verify_dataset


@pytest.fixture(scope="module")
def planned(small_raw, tmp_path_factory):
    work = tmp_path_factory.mktemp("plan")
    os.symlink(small_raw, work / "raw")
    cfg = write_config(work / "cfg.toml", BASE_CONFIG.format(chunk_rows=100))
    runs = {
        "equal": (3, []),
        "speeds": (3, ["plan.balance=\"speeds\"", "plan.speeds=[4, 1, 1]", "plan.shard_speeds=[1, 2, 1]"]),
        "calibrate": (4, ["plan.balance=\"calibrate\"", "plan.calibration_rows=50"]),
        "layered": (5, ["layout.fused=false", "layout.input=2", "layout.standardize=[2]",
                        "layout.sample=[1]", "plan.balance=\"speeds\"", "plan.speeds=[1, 3]"]),
        # config speeds override the calibration: no calibration read, the plan of "speeds"
        "override": (3, ["plan.balance=\"calibrate\"", "plan.speeds=[4, 1, 1]"]),
    }
    for name, (n, sets) in runs.items():
        mpirun(n, ["run", cfg, "--quiet", f"--set=output.path={name}"] + [f"--set={s}" for s in sets],
               cwd=work)
    return work


def test_plan_changes_who_reads_but_not_the_output(planned):
    ref = read_all(planned / "equal")
    for name in ("speeds", "calibrate", "layered", "override"):
        got = read_all(planned / name)
        for key in ("ids", "features", "labels"):
            assert np.array_equal(got[key], ref[key]), (name, key)


def test_input_rows_follow_speeds(planned):
    report = json.loads((planned / "speeds" / "report.json").read_text())
    plans = [r["input_plan"] for r in report["ranks"]]
    assert all(p == plans[0] for p in plans), "every rank follows the same plan"
    rows = plans[0]["rows"]
    assert sum(rows) == 3000 and rows[0] == 2000 and rows[1] == rows[2] == 500
    layered = json.loads((planned / "layered" / "report.json").read_text())["ranks"][0]["input_plan"]
    # 30 chunks of 100 rows at speeds 1:3: whole chunks, least makespan (700/1 < 2300/3 < 800/1)
    assert layered["rows"] == [700, 2300]
    calib = json.loads((planned / "calibrate" / "report.json").read_text())["ranks"][0]["input_plan"]
    assert calib["balance"] == "calibrate" and len(calib["speeds"]) == 4 and sum(calib["rows"]) == 3000


def test_shard_sizes_follow_speeds(planned):
    sizes = [s["rows"] for s in verify_dataset(planned / "speeds")["shards"]]
    total = sum(sizes)
    assert sizes[1] in (total // 2, total // 2 + 1) and abs(sizes[0] - sizes[2]) <= 1


def test_report_holds_the_solved_plan(planned):
    report = json.loads((planned / "calibrate" / "report.json").read_text())
    top = report["input_plan"]
    assert top["method"] == "closed_form" and top["solver"] == "water-filling"
    assert top["status"] == "optimal" and top["solve_time_s"] > 0 and top["speeds_from"] == "calibration"
    assert set(top["objective"]) == {"makespan", "mean_idle", "accuracy_loss", "total"}
    assert len(top["predicted_finish_s"]) == len(top["measured_finish_s"]) == 4
    assert all(m > 0 for m in top["measured_finish_s"])
    assert all(r["seconds"]["read"] == m for r, m in zip(report["ranks"], top["measured_finish_s"]))
    # predicted finish = the ranges' rows at the planned speeds
    assert top["predicted_finish_s"] == [r / s for r, s in zip(top["rows"], top["speeds"])]
    override = json.loads((planned / "override" / "report.json").read_text())["input_plan"]
    speeds = json.loads((planned / "speeds" / "report.json").read_text())["input_plan"]
    assert override["speeds_from"] == "config" and override["speeds"] == [4.0, 1.0, 1.0]
    assert override["ranges"] == speeds["ranges"]
    layered = json.loads((planned / "layered" / "report.json").read_text())
    assert len(layered["input_plan"]["measured_finish_s"]) == 2
    assert "input_plan" in json.loads((planned / "equal" / "report.json").read_text())
