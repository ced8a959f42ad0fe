"""The stages' own bookkeeping: the clock that splits a rank's time, and the passes a layer reports."""

from hpcprep.layers.standardize import StandardizeLayer
from hpcprep.stages.context import Clock


class FakeTime:
    """A time source the test moves by hand (no wall-clock timing in tests)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_clock_charges_each_second_to_the_innermost_key():
    now = FakeTime()
    clock = Clock(now)
    with clock("sample"):
        now.t += 2
        with clock("read"):
            now.t += 5
        with clock("exchange"):
            now.t += 1
            with clock("read"):
                now.t += 3
        now.t += 4
    assert clock.seconds == {"sample": 6, "read": 8, "exchange": 1}
    assert sum(clock.seconds.values()) == now.t


def test_clock_closes_keys_on_error():
    clock = Clock()
    try:
        with clock("write"):
            raise ValueError("boom")
    except ValueError:
        pass
    with clock("sample"):
        pass
    assert set(clock.seconds) == {"write", "sample"}


def test_a_layer_without_fitting_steps_reports_its_apply_pass():
    from mpi4py import MPI

    layer = StandardizeLayer(0, {"steps": [{"op": "dropna"}], "rejects": False}, ["a", "b"],
                             MPI.COMM_SELF, 1, lambda m: None)
    assert not layer.needs_passes
    assert layer.report()["passes"] == 1 and layer.report()["pass_reasons"] == ["apply"]


def test_a_run_removes_what_it_spilled_and_nothing_else(small_raw, tmp_path):
    """resources.spill_dir given: the run's spill files and rank folders go, a user's file stays."""
    import json
    import os

    from conftest import BASE_CONFIG, mpirun, write_config

    os.symlink(small_raw, tmp_path / "raw")
    spill = tmp_path / "scratch"
    (spill / "rank-00000").mkdir(parents=True)
    (spill / "rank-00000" / "notes.txt").write_text("the user's")
    cfg = write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=250))
    mpirun(2, ["run", cfg, "--quiet", f"--set=resources.spill_dir={json.dumps(str(spill))}",
               '--set=resources.memory_per_rank="64KiB"'], cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sum(r["sample"]["0"]["bytes_spilled"] for r in report["ranks"]) > 0
    assert sorted(p.name for p in spill.rglob("*")) == ["notes.txt", "rank-00000"]


def test_a_compressed_input_is_read_once_and_leaves_nothing_behind(tmp_path):
    """The text decompressed while counting is read back from the spill folder and removed
    before the commit: the dataset equals the one from the plain file, and holds no spill."""
    import gzip

    import numpy as np

    from conftest import mpirun, write_config
    from hpcprep.output.verify import read_all

    rng = np.random.default_rng(3)
    rows = "\n".join(f"{a:.6f},{b:.6f},{int(c)}" for a, b, c in rng.normal(size=(3000, 3)))
    text = "a,b,y\n" + rows + "\n"
    (tmp_path / "plain.csv").write_text(text)
    (tmp_path / "packed.csv.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("plain.csv", "packed.csv.gz"):
        write_config(tmp_path / f"{name}.toml", f"""seed = 3
[input]
paths = ["{name}"]
features = ["a", "b"]
label = "y"
chunk_rows = 700
[[standardize]]
steps = [{{ op = "scale" }}]
[output]
path = "out-{name}"
""")
        mpirun(2, ["run", f"{name}.toml", "--quiet"], cwd=tmp_path)
    plain, packed = read_all(str(tmp_path / "out-plain.csv")), read_all(str(tmp_path / "out-packed.csv.gz"))
    assert all(np.array_equal(plain[k], packed[k]) for k in plain)
    assert sorted(p.name for p in (tmp_path / "out-packed.csv.gz").iterdir()) == \
        sorted(p.name for p in (tmp_path / "out-plain.csv").iterdir())
