"""A whole pipeline run on the GPU writes the same datasets as on the CPU (needs CuPy and a GPU)."""

import os

import numpy as np
import pytest

from conftest import BASE_CONFIG, mpirun, write_config
from hpcprep.output.verify import read_all


def _gpu_present() -> str | None:
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 - any import failure means no GPU path here
        return f"CuPy is not importable ({type(e).__name__})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy imports but no GPU is visible"
    except Exception as e:  # noqa: BLE001
        return f"CuPy imports but no GPU answers ({e})"
    return None


def test_device_auto_on_cpu_reports_cpu(small_raw, tmp_path):
    import json

    os.symlink(small_raw, tmp_path / "raw")
    cfg = write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=500))
    mpirun(2, ["run", cfg, "--quiet", "--set", "resources.device=\"auto\""], cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    kinds = [r["device"]["device"] for r in report["ranks"]]
    assert kinds == (["gpu", "gpu"] if _gpu_present() is None else ["cpu", "cpu"])


def test_gpu_run_equals_cpu_run(small_raw, tmp_path):
    why = _gpu_present()
    if why is not None:
        pytest.skip(f"no GPU: {why}")
    os.symlink(small_raw, tmp_path / "raw")
    cfg = write_config(tmp_path / "cfg.toml", BASE_CONFIG.format(chunk_rows=250))
    for device in ("cpu", "gpu"):
        mpirun(2, ["run", cfg, "--quiet", f"--set=output.path={device}",
                   f"--set=resources.device=\"{device}\""], cwd=tmp_path)
    cpu, gpu = read_all(tmp_path / "cpu"), read_all(tmp_path / "gpu")
    for key in ("ids", "features", "labels"):
        assert np.array_equal(cpu[key], gpu[key]), key
