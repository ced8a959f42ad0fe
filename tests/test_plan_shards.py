"""Shard sizes by the writers' measured speeds (``plan.shard_speeds = "measured"``, issue 14).

The writers time a calibration write, rank 0 of the writers solves, every writer follows:
a writer emulated 2x slower gets about half the rows of the others, and the dataset (the
shards concatenated) is the default run's. Only the ratio band is asserted, never a time.
"""

import json
import os

import numpy as np
import pytest

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.config import parse_config
from hpcprep.errors import ConfigError
from hpcprep.output.verify import read_all, verify_dataset


@pytest.fixture(scope="module")
def runs(small_raw, tmp_path_factory):
    work = tmp_path_factory.mktemp("shards")
    os.symlink(small_raw, work / "raw")
    cfg = write_config(work / "cfg.toml", BASE_CONFIG.format(chunk_rows=100))
    sets = {"default": [],
            "measured": ['plan.shard_speeds="measured"', "plan.emulate_slowdown={w2=2.0}"]}
    for name, extra in sets.items():
        mpirun(3, ["run", cfg, "--quiet", f"--set=output.path={name}"] + [f"--set={s}" for s in extra],
               cwd=work)
    return work


def test_a_slow_writer_gets_about_half_the_rows_of_the_others(runs):
    shards = [s["rows"] for s in verify_dataset(runs / "measured")["shards"]]
    assert sum(shards) == sum(s["rows"] for s in verify_dataset(runs / "default")["shards"])
    ratio = shards[2] / ((shards[0] + shards[1]) / 2)
    assert 0.25 <= ratio <= 0.8, shards   # 0.5 expected; a generous band, no timing assertion
    report = json.loads((runs / "measured" / "report.json").read_text())
    plans = [r["shard_plan"] for r in report["ranks"]]
    assert all(p == plans[0] for p in plans) and plans[0]["speeds_from"] == "measured"
    assert len(plans[0]["speeds"]) == 3 and plans[0]["speeds"][2] < min(plans[0]["speeds"][:2])
    assert not [f for f in os.listdir(runs / "measured") if f.startswith("calibration")]


def test_measured_shard_sizes_leave_the_dataset_as_the_default_run(runs):
    ref, got = read_all(runs / "default"), read_all(runs / "measured")
    for key in ("ids", "features", "labels"):
        assert np.array_equal(got[key], ref[key]), key
    assert "shard_plan" not in json.loads((runs / "default" / "report.json").read_text())["ranks"][0]


MINIMAL = '[input]\npaths = ["raw/*.h5"]\n'


def parse(overrides, world=3):
    return parse_config(MINIMAL, "test.toml", overrides, world, base_dir="/data")


def test_measured_is_a_valid_shard_speeds():
    assert parse(['plan.shard_speeds="measured"']).plan.shard_speeds == "measured"
    assert parse(["plan.emulate_slowdown={w2=2.0, 1=1.5}"]).plan.emulate_slowdown == {"w2": 2.0, "1": 1.5}


@pytest.mark.parametrize("sets, message", [
    (['plan.shard_speeds="fast"'], 'plan.shard_speeds = \'fast\': expected a list of speeds or "measured"'),
    (["plan.shard_speeds=[1.0, 2.0]"], "plan.shard_speeds = [1.0, 2.0]: needs 3 positive speeds"),
    (["plan.emulate_slowdown={w3=2.0}"], "plan.emulate_slowdown.w3: no writer 3 (writers 0..2)"),
    (["plan.emulate_slowdown={3=2.0}"], "plan.emulate_slowdown.3: no input rank 3 (input ranks 0..2)"),
    (["plan.emulate_slowdown={x1=2.0}"], "plan.emulate_slowdown = {'x1': 2.0}: keys are input rank"),
    (["plan.emulate_slowdown={w=2.0}"], "plan.emulate_slowdown = {'w': 2.0}: keys are input rank"),
])
def test_bad_shard_speeds_and_slowdowns_name_the_key(sets, message):
    with pytest.raises(ConfigError) as info:
        parse(sets)
    assert message in str(info.value)
