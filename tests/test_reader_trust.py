"""Readers that check (issue 12, items 5, 7, 8, 11): every reader of a dataset goes through
hpcprep.output.reader. Checksums are verified by default, every path stays inside the
dataset folder, a broken file is one line naming it, an open dataset keeps its generation."""

import json
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from conftest import PYTHON, REPO, mpirun
from hpcprep.errors import DataError
from hpcprep.loader import open_dataset
from hpcprep.output.pinned import ShardFiles
from hpcprep.output.reader import read_manifest
from hpcprep.output.verify import read_all, summarize, verify_dataset
from hpcprep.train.synth import make_linear_dataset, write_dataset, write_split_root
from hpcprep.train.trainer import train

SHARDS = [0, 7, 3, 0, 10, 5]
N = sum(SHARDS)
PART = "shards/part-00004.h5"


def data(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, 3)).astype(np.float32), rng.integers(0, 2, N).astype(np.int64))


@pytest.fixture
def ds(tmp_path):
    x, y = data()
    return write_dataset(tmp_path / "ds", x, y, SHARDS, ids=np.arange(N) * 10)


def edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def flip_byte(shard, name="features", at=0):
    """Flip one byte of a dataset's raw data inside the shard file (as a disk error would)."""
    with h5py.File(shard, "r") as f:
        offset = f[name].id.get_offset()
    with open(shard, "r+b") as fh:
        fh.seek(offset + at)
        b = fh.read(1)[0]
        fh.seek(offset + at)
        fh.write(bytes([b ^ 0x10]))


def one_line_error(call, *fragments):
    """``call()`` raises DataError, on one line, naming every fragment."""
    with pytest.raises(DataError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return msg


def inspect(path):
    return subprocess.Popen([PYTHON, "-m", "hpcprep", "inspect", str(path)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ------------------------------------------------------------------ item 5: verified by default
def test_flipped_byte_is_refused_by_default(ds):
    flip_byte(ds / PART, at=5)
    one_line_error(lambda: open_dataset(ds), PART, "crc32")
    one_line_error(lambda: read_all(ds), PART, "crc32")
    assert [p.split(":")[0] for p in verify_dataset(ds)["problems"]] == [PART]
    with open_dataset(ds, verify=False) as d:          # opting out reads it
        assert len(d) == N


def test_read_all_reads_the_shards_never_the_master_fill_values(ds, tmp_path):
    x, y = data()
    got = read_all(ds)
    np.testing.assert_array_equal(got["features"], x)
    np.testing.assert_array_equal(got["ids"], np.arange(N) * 10)
    assert sorted(got) == ["features", "ids", "labels"]
    # a master whose source file is missing reads as fill values through HDF5: refused
    with h5py.File(ds / "data.h5", "a") as f:
        del f["features"]
        layout = h5py.VirtualLayout(shape=(N, 3), dtype=np.float32)
        layout[0:N] = h5py.VirtualSource("shards/gone.h5", "features", shape=(N, 3))
        f.create_virtual_dataset("features", layout, fillvalue=0)
    one_line_error(lambda: read_all(ds), "data.h5", "shards/gone.h5")
    one_line_error(lambda: open_dataset(ds, verify=False), "data.h5", "shards/gone.h5")


def test_training_stops_when_the_loss_is_not_finite(tmp_path):
    x, y = data()
    x[11, 1] = np.nan                                   # a NaN with a matching checksum
    path = write_dataset(tmp_path / "nan", x, y, SHARDS)
    cfg = {"epochs": 2, "batch_size": 4, "val": "none", "device": "cpu"}
    one_line_error(lambda: train(path, cfg, MPI.COMM_SELF, stream=None), "epoch 1, step ",
                   "the loss is not finite")
    cfg["adaptive_comm"] = True                         # local steps: checked at each average
    one_line_error(lambda: train(path, cfg, MPI.COMM_SELF, stream=None), "epoch 1, step ",
                   "not finite")


def test_train_at_3_ranks_refuses_a_corrupt_dataset_and_stops_on_nan(tmp_path):
    work = make_linear_dataset(tmp_path / "lin", n=300, d=4, shards=3)
    flip_byte(work / "train/shards/part-00001.h5", at=2)
    proc = mpirun(3, ["train", str(work), "--set", "train.epochs=1", "--set", "train.device=cpu",
                      "--out", str(tmp_path / "t1")], cwd=tmp_path, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert out.count("part-00001.h5: crc32") == 1, out
    assert "Traceback" not in out
    x, y = data()
    x[3, 0] = np.inf
    with np.errstate(invalid="ignore"):                  # the fixture's std of an inf column
        nan = write_dataset(tmp_path / "inf", x, y, SHARDS)
    proc = mpirun(3, ["train", str(nan), "--set", "train.epochs=1", "--set", "train.batch_size=6",
                      "--set", "train.device=cpu", "--out", str(tmp_path / "t2")],
                  cwd=tmp_path, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert out.count("is not finite") == 1 and "epoch 1, step " in out, out
    assert not (tmp_path / "t2" / "model.h5").exists()


# ------------------------------------------------------------------ item 7: confinement
def outside_copy(ds, tmp_path):
    """A valid copy of shard 4 outside the dataset folder (its checksum matches)."""
    (tmp_path / "outside").mkdir(exist_ok=True)
    return shutil.copy(ds / PART, tmp_path / "outside" / "part.h5")


def _abs_path(ds, tmp):
    out = outside_copy(ds, tmp)
    edit_manifest(ds, lambda m: m["shards"][4].update(path=str(out)))
    return "leaves the dataset folder"


def _dotdot(ds, tmp):
    outside_copy(ds, tmp)
    edit_manifest(ds, lambda m: m["shards"][4].update(path="../outside/part.h5"))
    return "leaves the dataset folder"


def _symlink(ds, tmp):
    out = outside_copy(ds, tmp)
    (ds / PART).unlink()
    os.symlink(out, ds / PART)
    return "outside the dataset folder"


def _rewrite(shard, name, **kwargs):
    with h5py.File(shard, "a") as f:
        data = f[name][()]
        del f[name]
        if "link" in kwargs:
            f[name] = kwargs["link"]
        elif "external" in kwargs:
            kwargs["external"].write_bytes(data.tobytes())
            f.create_dataset(name, shape=data.shape, dtype=data.dtype,
                             external=[(str(kwargs["external"]), 0, data.nbytes)])
        else:
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[:] = h5py.VirtualSource(kwargs["virtual"], name, shape=data.shape)
            f.create_virtual_dataset(name, layout)


def _external_link(ds, tmp):
    _rewrite(ds / PART, "labels", link=h5py.ExternalLink(outside_copy(ds, tmp), "/labels"))
    return "'labels' is an external link"


def _soft_link(ds, tmp):
    with h5py.File(ds / PART, "a") as f:
        f.move("labels", "real_labels")
        f["labels"] = h5py.SoftLink("/real_labels")
    return "'labels' is a soft link"


def _external_storage(ds, tmp):
    (tmp / "outside").mkdir(exist_ok=True)
    _rewrite(ds / PART, "features", external=tmp / "outside" / "raw.bin")   # same bytes
    return "'features' uses external storage"


def _virtual_in_shard(ds, tmp):
    _rewrite(ds / PART, "features", virtual=outside_copy(ds, tmp))
    return "'features' is a virtual dataset"


def _master_source_outside(ds, tmp):
    out = outside_copy(ds, tmp)
    with h5py.File(ds / "data.h5", "a") as f:
        del f["labels"]
        layout = h5py.VirtualLayout(shape=(N,), dtype=np.int64)
        for s in json.loads((ds / "manifest.json").read_text())["shards"]:
            if s["rows"]:
                src = out if s["path"] == PART else s["path"]
                layout[s["start"]:s["start"] + s["rows"]] = h5py.VirtualSource(src, "labels",
                                                                                shape=(s["rows"],))
        f.create_virtual_dataset("labels", layout)
    return "data.h5: 'labels' maps"


def _master_external_link(ds, tmp):
    with h5py.File(ds / "data.h5", "a") as f:
        f["stats/extra"] = h5py.ExternalLink(outside_copy(ds, tmp), "/features")
    return "data.h5: 'stats/extra' is an external link"


def _master_path(ds, tmp):
    shutil.copytree(ds, tmp / "outside")
    edit_manifest(ds, lambda m: m.update(master="../outside/data.h5"))
    return "master '../outside/data.h5' leaves"


CONFINEMENT = [_abs_path, _dotdot, _symlink, _external_link, _soft_link, _external_storage,
               _virtual_in_shard, _master_source_outside, _master_external_link, _master_path]


@pytest.mark.parametrize("case", CONFINEMENT, ids=lambda f: f.__name__.strip("_"))
def test_reads_stay_inside_the_dataset(ds, tmp_path, case):
    what = case(ds, tmp_path)
    for verify in (True, False):
        one_line_error(lambda: open_dataset(ds, verify=verify), what)
    one_line_error(lambda: read_all(ds), what)
    problems = verify_dataset(ds)["problems"]
    assert any(what in p for p in problems), problems
    assert "verification: FAILED" in summarize(ds)


def test_split_folder_outside_is_refused(ds, tmp_path):
    x, y = data()
    write_dataset(tmp_path / "elsewhere", x, y, SHARDS)
    write_dataset(tmp_path / "root/val", x, y, SHARDS)
    root = write_split_root(tmp_path / "root", {"train": "../elsewhere", "val": "val"})
    msg = "split 'train' folder '../elsewhere' leaves the dataset folder"
    one_line_error(lambda: open_dataset(root, split="train"), "root/manifest.json", msg)
    one_line_error(lambda: verify_dataset(root), msg)
    os.symlink(tmp_path / "elsewhere", root / "train")
    edit_manifest(root, lambda m: m["splits"].update(train="train"))
    one_line_error(lambda: open_dataset(root, split="train"), "outside the dataset folder")
    with open_dataset(root, split="val") as d:
        assert len(d) == N


# ------------------------------------------------------------------ item 11: broken files
def _set(key, value):
    return lambda m: m.update({key: value})


def _shard(key, value):
    return lambda m: m["shards"][4].update({key: value})


MANIFEST_EDITS = {
    "rows-string": (_set("rows", "25"), "'rows' = \"25\" is not an integer"),
    "rows-bool": (_set("rows", True), "'rows' = true is not an integer"),
    "rows-wrong": (_set("rows", 24), "shards hold 25 rows, the manifest says 24"),
    "no-shards-key": (lambda m: m.pop("shards"), "key 'shards' is missing"),
    "no-label-key": (lambda m: m.pop("label"), "key 'label' is missing"),
    "shards-object": (_set("shards", {"a": 1}), "'shards' = {\"a\": 1} is not a list"),
    "shard-string": (lambda m: m["shards"].__setitem__(4, "x"), "shards[4]: not an object"),
    "shard-path-int": (_shard("path", 5), "shards[4]: 'path' = 5 is not a string"),
    "shard-crc-huge": (_shard("crc32", 2**40), "crc32 in [0, 2**32)"),
    "shard-start": (_shard("start", 11), "shard 4 starts at 11, expected 10"),
    "shard-no-rows": (lambda m: m["shards"][4].pop("rows"), "shards[4]: key 'rows' is missing"),
    "dtype-object": (_set("feature_dtype", "object"), "'feature_dtype' = \"object\" is not a numeric"),
    "dtype-bogus": (_set("label_dtype", "int77"), "'label_dtype' = \"int77\" is not a numeric"),
    "names": (_set("n_features", 4), "'feature_names' must be 4 strings"),
    "splits-list": (_set("splits", ["a"]), "'splits' = [\"a\"] is not an object"),
    "version": (_set("format_version", 2), "format_version 2 is not supported"),
    "format": (_set("format", "other"), "not an hpcprep dataset manifest"),
    "master-null": (_set("master", None), "'master' is null"),
}


def _text(text):
    def corrupt(ds):
        (ds / "manifest.json").write_text(text(ds))
    return corrupt


MANIFEST_FILES = {
    "not-json": (_text(lambda ds: "{not json"), "manifest.json: not valid JSON"),
    "truncated": (_text(lambda ds: (ds / "manifest.json").read_text()[:100]), "not valid JSON"),
    "array": (_text(lambda ds: "[1, 2]"), "manifest.json: not a JSON object"),
    "deep": (_text(lambda ds: "[" * 100000), "manifest.json: not valid JSON"),
    "empty": (_text(lambda ds: ""), "manifest.json: not valid JSON"),
    "directory": (lambda ds: ((ds / "manifest.json").unlink(), (ds / "manifest.json").mkdir()),
                  "manifest.json: not a regular file"),
    "fifo": (lambda ds: ((ds / "manifest.json").unlink(), os.mkfifo(ds / "manifest.json")),
             "manifest.json: not a regular file"),
    "missing": (lambda ds: (ds / "manifest.json").unlink(), "no manifest.json"),
}


def _truncate(rel, keep):
    def corrupt(ds):
        p = ds / rel
        p.write_bytes(p.read_bytes()[:keep(p.stat().st_size)])
    return corrupt


def _replace_labels(ds):
    with h5py.File(ds / PART, "a") as f:
        del f["labels"]
        f["labels"] = np.array([b"a"] * 10)


FILES = {
    "shard-truncated": (_truncate(PART, lambda n: n // 2), PART + ": cannot read shard 4"),
    "shard-empty": (_truncate(PART, lambda n: 0), PART + ": cannot read shard 4"),
    "shard-garbage": (lambda ds: (ds / PART).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 3000),
                      PART + ": cannot read shard 4"),
    "shard-directory": (lambda ds: ((ds / PART).unlink(), (ds / PART).mkdir()),
                        PART + ": not a regular file"),
    "shard-missing": (lambda ds: (ds / PART).unlink(), PART + ": missing"),
    "shard-labels-text": (_replace_labels, PART + ": 'labels' has dtype |S1"),
    "shard-flipped": (lambda ds: flip_byte(ds / PART, "labels", 3), PART + ": crc32"),
    "master-missing": (lambda ds: (ds / "data.h5").unlink(), "data.h5: missing"),
    "master-truncated": (_truncate("data.h5", lambda n: n // 3), "data.h5: cannot read"),
}


def corruptions():
    cases = {name: (lambda ds, e=edit: edit_manifest(ds, e), frag)
             for name, (edit, frag) in MANIFEST_EDITS.items()}
    return {**cases, **MANIFEST_FILES, **FILES}


CASES = corruptions()


def test_every_corruption_is_one_clean_line(tmp_path):
    """open_dataset raises DataError, never another exception, naming the file in one line;
    inspect prints the same problem (or the error) in one line; never a traceback."""
    x, y = data()
    for name, (corrupt, frag) in CASES.items():
        path = write_dataset(tmp_path / name, x, y, SHARDS)
        corrupt(path)
        for verify in (True, False):
            if verify or "flipped" not in name:
                one_line_error(lambda: open_dataset(path, verify=verify), frag)
        try:
            text = summarize(path)
        except DataError as e:
            assert frag in str(e) and "\n" not in str(e), (name, str(e))
        else:
            assert "verification: FAILED" in text, (name, text)
            assert any(frag in line for line in text.splitlines()), (name, text)


@pytest.mark.parametrize("rank_count", [3])
def test_open_dataset_agrees_on_errors_at_3_ranks(tmp_path, rank_count):
    """A flipped byte that one rank checks: every rank raises the same DataError, none hangs."""
    x, y = data()
    bad = write_dataset(tmp_path / "bad", x, y, SHARDS)
    flip_byte(bad / "shards/part-00005.h5", at=1)        # checked by rank 5 % 3 = 2
    script = tmp_path / "open.py"
    script.write_text(
        "import sys\nfrom mpi4py import MPI\nfrom hpcprep.errors import DataError\n"
        "from hpcprep.loader import open_dataset\n"
        "try:\n    open_dataset(sys.argv[1], comm=MPI.COMM_WORLD)\n"
        "except DataError as e:\n    print(f'rank {MPI.COMM_WORLD.rank}: {e}', flush=True)\n")
    proc = mpirun(rank_count, [str(script), str(bad)], cwd=REPO, timeout=120, module=False)
    lines = proc.stdout.splitlines()
    assert len(lines) == rank_count and len({ln.split(": ", 1)[1] for ln in lines}) == 1, lines
    assert "part-00005.h5: crc32" in lines[0]


INSPECTED = ["not-json", "rows-string", "no-shards-key", "deep", "shard-truncated",
             "shard-garbage", "master-missing", "master-truncated"]


def test_inspect_reports_a_broken_file_in_one_line(tmp_path):
    x, y = data()
    runs = {}
    for name in INSPECTED:
        corrupt, frag = CASES[name]
        path = write_dataset(tmp_path / name, x, y, SHARDS)
        corrupt(path)
        runs[name] = (inspect(path), frag)
    outside = write_dataset(tmp_path / "outside-case", x, y, SHARDS)
    _abs_path(outside, tmp_path)
    runs["outside"] = (inspect(outside), "leaves the dataset folder")
    for name, (proc, frag) in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (name, out, err)
        assert "Traceback" not in out + err, (name, err)
        assert [ln for ln in (out + err).splitlines() if frag in ln], (name, out, err)


# ------------------------------------------------------------------ item 8: one generation
def test_an_open_dataset_keeps_its_generation_after_the_folder_is_replaced(tmp_path):
    xa, ya = data(1)
    xb, yb = data(2)
    path = write_dataset(tmp_path / "out", xa, ya, SHARDS)
    old = open_dataset(path, verify=False)              # no shard opened by HDF5 yet
    fds = [fd for fd in old._shards.fds if fd is not None]
    assert len(fds) == len(SHARDS)
    os.rename(path, tmp_path / "gone")                   # the writer swaps a new generation in
    shutil.rmtree(tmp_path / "gone")                     # and removes the old one
    write_dataset(path, xb, yb, SHARDS)
    x, y = old.read(0, N)
    np.testing.assert_array_equal(x, xa)
    np.testing.assert_array_equal(y, ya)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                         # a forked worker reopens the pinned files
        ok = False
        try:
            ok = np.array_equal(old.read(3, 20)[0], xa[3:20])
        finally:
            os.write(wfd, b"1" if ok else b"0")
            os._exit(0)
    os.close(wfd)
    os.waitpid(pid, 0)
    assert os.read(rfd, 1) == b"1"
    os.close(rfd)
    with open_dataset(path) as new:
        np.testing.assert_array_equal(new.read(0, N)[0], xb)
    old.close()
    for fd in fds:                                       # close() closes the pinned descriptors
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_pinned_shard_reads_after_it_was_deleted(ds):
    """A shard pinned but not yet opened by HDF5 (at several ranks, the shards another
    rank checked) is still read once its file is deleted."""
    x, _ = data()
    files = ShardFiles(ds, read_manifest(ds))
    assert files.pin(4) is None
    (ds / PART).unlink()
    try:
        np.testing.assert_array_equal(files.h5(4)["features"][()], x[10:20])
    finally:
        files.close()


def test_a_failed_open_leaves_no_descriptor_open(ds):
    before = set(os.listdir("/proc/self/fd"))
    flip_byte(ds / PART)
    with pytest.raises(DataError):
        open_dataset(ds)
    assert set(os.listdir("/proc/self/fd")) <= before
