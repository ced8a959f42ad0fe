"""scripts/check_identity.py: outputs of the working tree equal those of HEAD, and the check can fail."""

import importlib.util
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import PYTHON, REPO

SCRIPT = REPO / "scripts" / "check_identity.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_identity", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_identity", mod)
    spec.loader.exec_module(mod)
    return mod


def _has_git() -> bool:
    return shutil.which("git") is not None and (REPO / ".git").exists()


@pytest.mark.skipif(not _has_git(), reason="needs a git checkout")
def test_working_tree_gives_the_outputs_of_head():
    proc = subprocess.run([PYTHON, str(SCRIPT), "--base", "HEAD", "--only", "ref1", "--sizes", "3",
                           "--rows", "4000"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ref1" in proc.stdout and "identical" in proc.stdout


def _output(folder, values, version="1.0"):
    """A minimal output folder: one shard, a virtual master, a manifest."""
    shards = folder / "shards"
    shards.mkdir(parents=True)
    with h5py.File(shards / "part-00000.h5", "w") as f:
        f["features"] = np.asarray(values, dtype=np.float32)
        f.attrs["hpcprep_version"] = version
    layout = h5py.VirtualLayout(shape=(len(values),), dtype=np.float32)
    layout[:] = h5py.VirtualSource("shards/part-00000.h5", "features", shape=(len(values),))
    with h5py.File(folder / "data.h5", "w") as f:
        f.create_virtual_dataset("features", layout)
        f.attrs["rows"] = len(values)
    (folder / "manifest.json").write_text(json.dumps({"rows": len(values), "hpcprep_version": version}))
    return folder


def test_a_changed_value_is_a_difference_and_versions_are_not(tmp_path):
    mod = _load()
    a = mod.digest(_output(tmp_path / "a", [1.0, 2.0, 3.0], version="1.0"))
    same = mod.digest(_output(tmp_path / "b", [1.0, 2.0, 3.0], version="2.0"))
    changed = mod.digest(_output(tmp_path / "c", [1.0, 2.0, 4.0]))
    assert mod.differences(a, same) == []
    diff = mod.differences(a, changed)
    assert any(d.startswith("/shards/part-00000.h5/features") for d in diff), diff
    assert any(d.startswith("/data.h5/features") for d in diff), diff
