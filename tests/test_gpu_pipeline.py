"""A whole pipeline run on the GPU writes the same datasets as on the CPU (needs CuPy and a GPU).

Without a GPU every test here but the first skips, with the reason. scripts/gpu_check.sh runs
this file on the GPU machine (docs/gpu.md, "Running the GPU checks"), where a skip is a failure.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BASE_CONFIG, MPIEXEC, PYTHON, REPO, mpirun, write_config
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


# ---- the bench configs, and GPU and CPU ranks in one run ---------------------------------------
# scripts/check_identity.py's configs (REF-1, spilled, quickstart, layered, CSV with rejects,
# stratified split, bootstrap -> shuffle -> weighted), run here at -n 3 on the GPU and on the CPU.

_ci_spec = importlib.util.spec_from_file_location("check_identity", REPO / "scripts" / "check_identity.py")
check_identity = importlib.util.module_from_spec(_ci_spec)
sys.modules.setdefault("check_identity", check_identity)
_ci_spec.loader.exec_module(check_identity)

RANKS = 3


@pytest.fixture(scope="module")
def identity_work(tmp_path_factory):
    """A work folder with check_identity's inputs, and a cache of the all-CPU outputs by config."""
    why = _gpu_present()
    if why is not None:
        pytest.skip(f"no GPU: {why}")
    work = tmp_path_factory.mktemp("gpu-identity")
    return {"work": work, "inputs": check_identity.make_inputs(work, REPO), "cpu": {}}


def _launch(name: str, folder: Path, inputs: dict, ranks: list[str]) -> Path:
    """Run config ``name`` with one MPMD segment per rank: ``ranks[i]`` is rank i's
    ``resources.device``, or ``"auto-cpu"`` for ``auto`` with no GPU visible to that rank."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(check_identity.config_text(name, inputs))
    cmd = [MPIEXEC]
    for i, device in enumerate(ranks):
        hide = ["env", "CUDA_VISIBLE_DEVICES=-1"] if device == "auto-cpu" else []
        args = ["run", "config.toml", "--quiet", "--set",
                f'resources.device="{device.removesuffix("-cpu")}"']
        for opt in check_identity.CONFIGS[name][3]:
            args += ["--set", opt]
        cmd += [":"] * bool(i) + ["-n", "1", *hide, PYTHON, "-m", "hpcprep", *args]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return folder / "out"


def _cpu_output(ctx: dict, name: str) -> Path:
    if name not in ctx["cpu"]:
        ctx["cpu"][name] = _launch(name, ctx["work"] / f"{name}-cpu", ctx["inputs"], ["cpu"] * RANKS)
    return ctx["cpu"][name]


def _without_device(v):
    """``v`` with the ``# --set resources.device=...`` line of stored config texts removed."""
    if isinstance(v, dict):
        return {k: _without_device(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_without_device(x) for x in v]
    return re.sub(r"(?m)^# --set resources\.device=.*\n", "", v) if isinstance(v, str) else v


def _differences(a: Path, b: Path) -> list[str]:
    """check_identity's comparison of two outputs; the device override is the only allowed change."""
    digest = check_identity.digest
    return check_identity.differences(_without_device(digest(a)), _without_device(digest(b)))


def _devices(out: Path) -> list[str]:
    report = json.loads((out / "report.json").read_text())
    return [r["device"]["device"] for r in sorted(report["ranks"], key=lambda r: r["rank"])]


@pytest.mark.parametrize("name", list(check_identity.CONFIGS))
def test_bench_configs_on_the_gpu_equal_the_cpu(identity_work, name):
    """Every output file, by content (check_identity's digest), is the same with GPU ranks."""
    gpu = _launch(name, identity_work["work"] / f"{name}-gpu", identity_work["inputs"],
                  ["gpu"] * RANKS)
    assert _devices(gpu) == ["gpu"] * RANKS
    cpu = _cpu_output(identity_work, name)
    assert _differences(cpu, gpu) == []


@pytest.mark.parametrize("name", ["ref1", "bootstrap"])
def test_gpu_and_cpu_ranks_in_one_run(identity_work, name):
    """``auto`` with rank 1 seeing no GPU: ranks 0 and 2 compute on the GPU, rank 1 on the CPU,
    and the output is the all-CPU run's (REF-1; and three sampling layers, spilled)."""
    mixed = _launch(name, identity_work["work"] / f"{name}-mixed", identity_work["inputs"],
                    ["auto", "auto-cpu", "auto"])
    assert _devices(mixed) == ["gpu", "cpu", "gpu"]
    cpu = _cpu_output(identity_work, name)
    assert _differences(cpu, mixed) == []
