"""Device selection and import safety of the GPU path (runs with CuPy absent)."""

import importlib
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
from mpi4py import MPI

import hpcprep.kernels
from hpcprep.device import DEVICE_CHOICES, local_rank_and_size, probe_gpu, select_device
from hpcprep.errors import ConfigError, HpcprepError

KERNEL_MODULES = sorted(m.name for m in pkgutil.iter_modules(hpcprep.kernels.__path__,
                                                             "hpcprep.kernels."))


def _gpu_usable() -> bool:
    return probe_gpu(0)["ok"]


def test_kernel_modules_import_without_cupy():
    """Importing every kernel module and hpcprep.device never imports CuPy."""
    code = (
        "import sys, importlib\n"
        f"for m in {KERNEL_MODULES + ['hpcprep.device']!r}:\n"
        "    importlib.import_module(m)\n"
        "assert 'cupy' not in sys.modules, 'cupy imported at module import'\n"
        "assert 'mpi4py.MPI' not in sys.modules, 'MPI initialized at module import'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert {"hpcprep.kernels.gpu", "hpcprep.kernels.mpi_buffers", "hpcprep.kernels.select"} <= set(KERNEL_MODULES)


def test_gpu_kernel_getters_need_cupy_only_when_called():
    mod = importlib.import_module("hpcprep.kernels.gpu")
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(ImportError):
            mod.keyed_hash_kernel()


@pytest.mark.parametrize("comm", [MPI.COMM_SELF, MPI.COMM_WORLD], ids=["self", "world"])
def test_cpu_and_auto(comm):
    info = select_device(comm, "cpu")
    assert info.kind == "cpu" and info.xp is np and info.reason == ""
    local_rank, local_size = local_rank_and_size(comm)
    assert (info.local_rank, info.local_size) == (local_rank, local_size)
    auto = select_device(comm, "auto")
    if _gpu_usable():
        assert auto.kind == "gpu" and auto.xp.__name__ == "cupy"
    else:
        assert auto.kind == "cpu" and auto.xp is np and auto.reason
    rep = auto.report()
    assert rep["device"] == auto.kind and rep["requested"] == "auto" and "xp" not in rep
    import json
    json.dumps(rep)


@pytest.mark.skipif(_gpu_usable(), reason="this machine has a usable GPU")
def test_gpu_without_one_is_a_clear_error():
    with pytest.raises(HpcprepError) as e:
        select_device(MPI.COMM_WORLD, "gpu")
    msg = str(e.value)
    assert "resources.device = 'gpu'" in msg and "rank 0" in msg
    if importlib.util.find_spec("cupy") is None:
        assert "CuPy is not installed" in msg and "pip install -e .[gpu]" in msg


def test_bad_choice_is_a_config_error():
    with pytest.raises(ConfigError, match="resources.device"):
        select_device(MPI.COMM_SELF, "tpu")
    assert DEVICE_CHOICES == ("auto", "cpu", "gpu")
