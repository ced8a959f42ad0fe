"""What hpcprep may delete, one run per output, leftovers of dead runs (issue 12, items 6, 8, 9).

Runs go through mpiexec; the rules about paths, locks and temporary folders are
also tested in-process on real folders.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.config import parse_config
from hpcprep.errors import ConfigError, OutputError
from hpcprep.output import generations as gen
from hpcprep.output import leftovers as left
from hpcprep.output import location as loc
from hpcprep.output import lock
from hpcprep.output.verify import read_all


def make_run(tmp_path, small_raw, extra: str = "") -> str:
    """A work folder with a link to the shared raw data and a config writing ``out``."""
    os.symlink(small_raw, tmp_path / "raw")
    return write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=400) + extra)


def dead_owner() -> dict:
    """The owner record of an ended process (if its pid is reused, the start time differs)."""
    child = subprocess.Popen(["sleep", "30"])
    owner = dict(lock.this_process(), pid=child.pid, start=lock.process_start(child.pid))
    child.kill()
    child.wait()
    assert lock.is_alive(owner) is False
    return owner


def failed_once(proc, needle: str) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and text.count(needle) == 1, text
    return text


def temp_folders(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if ".tmp-" in p)


# ---- item 6: overwrite deletes only what hpcprep wrote -------------------------------------
def test_overwrite_keeps_an_unrelated_folder(tmp_path, small_raw):
    cfg = make_run(tmp_path, small_raw, "overwrite = true\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("keep me")
    proc = mpirun(2, ["run", cfg], cwd=tmp_path, check=False)
    text = failed_once(proc, "is not an hpcprep output (no manifest.json; it holds thesis.tex)")
    assert str(tmp_path / "out") in text
    assert (tmp_path / "out" / "thesis.tex").read_text() == "keep me"
    assert temp_folders(tmp_path) == [] and not (tmp_path / ".out.lock").exists()


def test_input_folder_as_output_is_rejected(tmp_path):
    from hpcprep.generate import generate

    generate(str(tmp_path / "raw"), 50, 3, 2, seed=1, quiet=True)
    before = sorted(os.listdir(tmp_path / "raw"))
    cfg = write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=400).replace(
        'path = "out"', 'path = "raw"\noverwrite = true'))
    proc = mpirun(3, ["run", cfg], cwd=tmp_path, check=False)
    failed_once(proc, f"output {tmp_path / 'raw'} is the input folder")
    assert sorted(os.listdir(tmp_path / "raw")) == before


@pytest.mark.parametrize("path, needle", [
    ("", "output.path: empty"),
    ("   ", "output.path: empty"),
    (".", "the working directory"),
    ("sub/..", "the working directory"),
    ("..", "the working directory or a folder above it"),
    ("/", "the root of the file system"),
])
def test_output_path_that_would_delete_the_working_directory(tmp_path, monkeypatch, path, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    text = f'[input]\npaths = ["raw/*.h5"]\n[output]\npath = "{path}"\noverwrite = true\n'
    with pytest.raises(ConfigError, match=needle):
        parse_config(text, "t.toml")


def overlap(out, patterns, files=()):
    loc.check_not_input(str(out), [str(p) for p in patterns], [str(f) for f in files])


def test_output_overlapping_the_input_is_rejected(tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "a.csv").write_text("x\n1\n")
    glob_ = raw / "*.csv"
    with pytest.raises(OutputError, match="is the input file"):
        overlap(raw / "a.csv", [raw / "a.csv"], [raw / "a.csv"])
    with pytest.raises(OutputError, match="holds the input folder"):
        overlap(tmp_path / "data", [glob_], [raw / "a.csv"])
    with pytest.raises(OutputError, match="is the input folder"):
        overlap(raw, [glob_])
    with pytest.raises(OutputError, match="where input.paths .* would read it"):
        overlap(raw / "out", [raw / "*"])
    with pytest.raises(OutputError, match="where input.paths .* would read it"):
        overlap(raw / "out", [tmp_path / "data" / "*" / "*" / "*.csv"])
    os.symlink(raw, tmp_path / "link")  # real paths are compared
    with pytest.raises(OutputError, match="is the input folder"):
        overlap(tmp_path / "link", [glob_])
    overlap(raw / "out", [glob_], [raw / "a.csv"])  # raw/*.csv never reads raw/out/...
    overlap(raw / "out", [tmp_path / "data" / "*" / "*.csv"])
    overlap(tmp_path / "out", [glob_], [raw / "a.csv"])


def test_what_is_in_the_way_is_named_and_kept(tmp_path):
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "file", tmp_path / "link")
    ds = tmp_path / "ds"
    (ds / "shards").mkdir(parents=True)
    (ds / "manifest.json").write_text(json.dumps({"format": "hpcprep-dataset", "splits": {}}))
    (ds / "shards" / "part-00000.h5").write_bytes(b"")
    (ds / "shards" / "notes.txt").write_text("mine")
    (ds / "mine").mkdir()
    for path, needle in [("file", "is a file"), ("link", "is a symbolic link"),
                         ("ds", "holds entries hpcprep did not write: mine/, shards/")]:
        with pytest.raises(OutputError, match=needle):
            loc.OutputLocation(str(tmp_path / path), overwrite=True).check()
    assert (ds / "shards" / "notes.txt").exists() and (tmp_path / "file").read_text() == "x"
    (ds / "empty").mkdir()
    # an old generation that changed during the run: only hpcprep's entries go, the rest is named
    notes = gen.remove_generation(str(ds))
    assert "mine/" in notes[0] and "shards/" in notes[0]
    assert sorted(os.listdir(ds)) == ["empty", "mine", "shards"]
    assert sorted(os.listdir(ds / "shards")) == ["notes.txt", "part-00000.h5"]


def test_overwrite_of_a_previous_output_leaves_nothing_else(tmp_path, small_raw):
    cfg = make_run(tmp_path, small_raw, "overwrite = true\n[[sample]]\nop = \"split\"\n"
                                        "splits = { train = 0.8, val = 0.2 }\n"
                                        "[resources]\nmemory_per_rank = \"64KiB\"\n")
    mpirun(3, ["run", cfg, "--quiet"], cwd=tmp_path)
    assert sorted(os.listdir(tmp_path / "out")) == ["manifest.json", "report.json", "shards",
                                                    "train", "val"]
    (tmp_path / "out" / "spill" / "rank-00001").mkdir(parents=True)  # as older versions left it
    cfg2 = write_config(tmp_path / "cfg2.toml", BASE_CONFIG.format(chunk_rows=400) +
                        "overwrite = true\n")
    mpirun(2, ["run", cfg2, "--quiet"], cwd=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["cfg.toml", "cfg2.toml", "out", "raw"]
    assert sorted(os.listdir(tmp_path / "out")) == ["data.h5", "manifest.json", "report.json",
                                                    "shards"]
    assert len(read_all(tmp_path / "out")["ids"]) > 0


# ---- item 8: one run per output, atomic generation swap -----------------------------------
def test_a_live_lock_stops_the_run_at_once(tmp_path, small_raw):
    cfg = make_run(tmp_path, small_raw)
    holder = lock.this_process()  # this test process: alive
    (tmp_path / ".out.lock").write_text(json.dumps(holder))
    proc = mpirun(2, ["run", cfg], cwd=tmp_path, check=False)
    failed_once(proc, f"is in use by another hpcprep run: pid {os.getpid()} on host "
                      f"{holder['host']} since {holder['started_at']}")
    assert json.loads((tmp_path / ".out.lock").read_text()) == holder
    assert not (tmp_path / "out").exists() and temp_folders(tmp_path) == []


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    path = str(tmp_path / ".out.lock")
    (tmp_path / ".out.lock").write_text(json.dumps(dict(lock.this_process(), host="node-b17")))
    with pytest.raises(OutputError, match=f"locked by a run on host node-b17 .* if it is really "
                                          f"gone, remove {path}"):
        lock.acquire(path, str(tmp_path / "out"))
    assert os.path.exists(path)


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, small_raw):
    cfg = make_run(tmp_path, small_raw)
    stale = dead_owner()
    (tmp_path / ".out.lock").write_text(json.dumps(stale))
    proc = mpirun(2, ["run", cfg], cwd=tmp_path)
    assert f"warning: took over the lock {tmp_path / '.out.lock'} of a run that is gone " \
           f"(pid {stale['pid']}" in proc.stdout
    assert not (tmp_path / ".out.lock").exists()  # released at commit


def test_lock_and_temp_are_released_when_a_rank_fails(tmp_path, small_raw):
    cfg = make_run(tmp_path, small_raw)
    write_config(cfg, open(cfg).read().replace('{ op = "dropna" }', '{ op = "explode" }'))
    script = tmp_path / "faulty.py"
    script.write_text(STEP_SCRIPT.format(action='raise RuntimeError("boom on purpose")', rank=1))
    proc = mpirun(3, [str(script), "run", cfg, "--quiet"], cwd=tmp_path, check=False,
                  module=False, timeout=60)
    failed_once(proc, "error on rank 1 of 3: RuntimeError: boom on purpose")
    assert not (tmp_path / ".out.lock").exists()  # rank 1 released rank 0's lock
    assert temp_folders(tmp_path) == []


def test_the_location_is_the_run_s_cleanup_and_spares_a_committed_output(tmp_path):
    """No module-level registry: the run's OutputLocation is its own cleanup (issue 13)."""
    from hpcprep.mpi.agree import run_cleanups

    out = tmp_path / "out"
    for commit in (False, True):
        location, cleanups = loc.OutputLocation(str(out), overwrite=False), []
        location.acquire()
        location.create()
        location.track(cleanups)
        assert cleanups == [location.abandon] and os.path.isdir(location.temp)
        if commit:
            location.commit()
        run_cleanups(cleanups)
        assert temp_folders(tmp_path) == [] and not os.path.exists(location.lock_path)
        assert out.is_dir() == commit  # a committed output is never removed by a late failure


def test_a_late_failure_on_another_rank_spares_what_the_swap_left(tmp_path):
    """After the commit the temporary name is no longer the run's (the swap put the previous
    generation there): a rank failing then must leave whatever is at that name alone."""
    out = tmp_path / "out"
    root = loc.OutputLocation(str(out), overwrite=True)
    root.check()
    root.acquire()
    root.create()
    other = loc.OutputLocation(str(out), overwrite=True, temp=root.temp)   # another rank's view
    root.commit()
    os.makedirs(root.temp)                   # e.g. a foreign file that raced into the old generation
    (Path(root.temp) / "notes.txt").write_text("not hpcprep's")
    other.committed()
    other.abandon()
    assert (Path(root.temp) / "notes.txt").exists()
    assert out.is_dir()


def test_agreed_error_after_the_lock_releases_it(tmp_path, small_raw):
    from hpcprep.device import probe_gpu

    if probe_gpu(0)["ok"]:
        pytest.skip("the agreed error here is 'no GPU'")
    cfg = make_run(tmp_path, small_raw)
    proc = mpirun(2, ["run", cfg, "--set", "resources.device=gpu"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert not (tmp_path / ".out.lock").exists() and temp_folders(tmp_path) == []


def test_a_reader_of_the_old_generation_reads_it_whole(tmp_path, small_raw):
    cfg = make_run(tmp_path, small_raw, "overwrite = true\n")
    mpirun(3, ["run", cfg, "--quiet"], cwd=tmp_path)
    old = read_all(tmp_path / "out")
    shards = sorted((tmp_path / "out" / "shards").iterdir())
    files = [h5py.File(p, "r") for p in shards]  # a reader holds the shards it opened
    try:
        mpirun(2, ["run", cfg, "--quiet", "--set", "seed=12"],
               cwd=tmp_path)
        new = read_all(tmp_path / "out")
        assert not np.array_equal(new["ids"], old["ids"])  # the new generation is in place
        ids = np.concatenate([f["ids"][()] for f in files])
        x = np.concatenate([f["features"][()] for f in files])
        assert np.array_equal(ids, old["ids"]) and np.array_equal(x, old["features"])
    finally:
        for f in files:
            f.close()
    assert sorted(os.listdir(tmp_path)) == ["cfg.toml", "out", "raw"]


def test_exchange_swaps_two_folders(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text(name)
    old, atomic = gen.exchange(str(tmp_path / "a"), str(tmp_path / "b"))
    assert atomic and old == str(tmp_path / "a")
    assert (tmp_path / "b" / "x").read_text() == "a" and (tmp_path / "a" / "x").read_text() == "b"
    monkeypatch.setattr(gen, "_renameat2", lambda: None)  # a C library without renameat2
    old, atomic = gen.exchange(str(tmp_path / "a"), str(tmp_path / "b"))
    assert not atomic and (tmp_path / "b" / "x").read_text() == "b"
    assert (tmp_path / "a.old" / "x").read_text() == "a" and not (tmp_path / "a").exists()


# ---- item 9: leftovers of dead runs ------------------------------------------------------
STEP_SCRIPT = """
import os, signal, sys
from mpi4py import MPI
from hpcprep.steps import Step, register_step
from hpcprep.cli import main

@register_step
class Explode(Step):
    op = "explode"
    def apply(self, chunk):
        if MPI.COMM_WORLD.Get_rank() == {rank}:
            {action}
        return chunk, {{}}

main(sys.argv[1:])
"""


def test_kill_9_leaves_leftovers_that_inspect_lists_and_the_next_run_removes(tmp_path, small_raw):
    cfg = make_run(tmp_path, small_raw, "overwrite = true\n")
    mpirun(2, ["run", cfg, "--quiet"], cwd=tmp_path)
    before = read_all(tmp_path / "out")
    script = tmp_path / "killed.py"
    script.write_text(STEP_SCRIPT.format(action="os.kill(os.getpid(), signal.SIGKILL)", rank=0))
    killed = write_config(tmp_path / "killed.toml", open(cfg).read().replace(
        '{ op = "dropna" }', '{ op = "explode" }'))
    proc = mpirun(2, [str(script), "run", killed, "--quiet"], cwd=tmp_path, check=False,
                  module=False, timeout=60)
    assert proc.returncode != 0
    [temp] = temp_folders(tmp_path)
    owner = json.loads((tmp_path / temp / "owner.json").read_text())
    assert owner["host"] and owner["pid"] and (tmp_path / ".out.lock").exists()

    shown = mpirun(1, ["inspect", "out"], cwd=tmp_path).stdout
    assert f"leftover temporary folder {tmp_path / temp} (" in shown
    assert f"its run is gone (pid {owner['pid']} on host {owner['host']}" in shown
    assert f"lock {tmp_path / '.out.lock'}: held by pid {owner['pid']}" in shown

    proc = mpirun(2, ["run", cfg], cwd=tmp_path)
    assert "warning: took over the lock" in proc.stdout
    assert "removed 1 temporary folder(s) of dead runs next to the output, " in proc.stdout
    assert f"{temp} (pid {owner['pid']}" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["cfg.toml", "killed.py", "killed.toml", "out", "raw"]
    after = read_all(tmp_path / "out")   # the rerun gives the same dataset, byte for byte
    assert sorted(after) == sorted(before)
    assert all(after[k].tobytes() == before[k].tobytes() for k in before)


def test_temp_folders_of_live_or_unknown_runs_are_left_alone(tmp_path):
    out = tmp_path / "out"
    folders = {"dead": dead_owner(), "live": lock.this_process(),
               "other": dict(lock.this_process(), host="node-b17"), "old": None}
    for name, owner in folders.items():
        (tmp_path / f".out.tmp-{name}").mkdir()
        (tmp_path / f".out.tmp-{name}" / "data").write_bytes(b"\0" * 2**20)
        if owner:
            (tmp_path / f".out.tmp-{name}" / "owner.json").write_text(json.dumps(owner))
    (tmp_path / ".other.tmp-dead").mkdir()  # another output's: not looked at
    notes = left.clean_leftovers(str(out))
    assert notes[0].startswith("removed 1 temporary folder(s) of dead runs next to the output, "
                               "1.0 MiB freed: .out.tmp-dead")
    assert sorted(temp_folders(tmp_path)) == [".other.tmp-dead", ".out.tmp-live", ".out.tmp-old",
                                              ".out.tmp-other"]
    text = "\n".join(notes[1:])
    assert "tmp-live alone: its run still works" in text
    assert "tmp-old alone: no owner.json" in text
    assert "tmp-other alone: its run is on another host" in text and "node-b17" in text
    listed = left.describe_leftovers(str(out))
    assert len(listed) == 3 and all(line.startswith("leftover temporary folder") for line in listed)
    shutil.rmtree(tmp_path / ".out.tmp-live")
