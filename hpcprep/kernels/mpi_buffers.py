"""Whether the MPI library is CUDA-aware (reported per rank by :mod:`hpcprep.device`).

mpi4py accepts any object with ``__cuda_array_interface__`` (CuPy arrays) as a
buffer, but only a CUDA-aware MPI may dereference a device pointer. Rows travel
between ranks in host memory (:mod:`hpcprep.mpi.exchange`); the answer is
reported so that a future device-buffer path knows what the library allows.
"""

import ctypes
import functools
import os
from dataclasses import dataclass

from ..errors import HpcprepError

#: Environment variable forcing the answer: "1"/"true" or "0"/"false".
ENV_OVERRIDE = "HPCPREP_CUDA_AWARE_MPI"

#: Launcher/library settings that switch on device buffers in known MPIs,
#: used only when the library cannot be asked.
ENV_HINTS = {
    "MPICH_GPU_SUPPORT_ENABLED": ("1",),              # Cray MPICH
    "MV2_USE_CUDA": ("1",),                           # MVAPICH2
    "OMPI_MCA_opal_cuda_support": ("1", "true"),      # Open MPI (built with CUDA)
}


@dataclass(frozen=True)
class CudaAwareness:
    """Whether MPI takes device buffers, and how that was found out."""

    aware: bool
    source: str


def _truthy(v: str) -> bool | None:
    v = v.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    return None


@functools.cache
def detect_cuda_aware_mpi() -> CudaAwareness:
    """Find out whether the MPI library is CUDA-aware (cached per process).

    In order: the ``HPCPREP_CUDA_AWARE_MPI`` override; mpi4py's
    ``MPI.Query_cuda_support()`` where mpi4py provides it; the library's
    ``MPIX_Query_cuda_support()`` (Open MPI, MPICH >= 4) looked up with
    ctypes; the environment hints in :data:`ENV_HINTS`; else False.

    Returns
    -------
    CudaAwareness
    """
    env = os.environ.get(ENV_OVERRIDE)
    if env is not None:
        val = _truthy(env)
        if val is None:
            raise HpcprepError(f"{ENV_OVERRIDE}={env!r}: use 1/true or 0/false")
        return CudaAwareness(val, f"environment {ENV_OVERRIDE}={env}")
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None:
        try:
            return CudaAwareness(bool(query()), "mpi4py MPI.Query_cuda_support()")
        except Exception:  # noqa: BLE001 - not implemented by this MPI: ask elsewhere
            pass
    try:
        fn = ctypes.CDLL(None).MPIX_Query_cuda_support
        fn.restype = ctypes.c_int
        fn.argtypes = []
        return CudaAwareness(bool(fn()), "MPIX_Query_cuda_support()")
    except (AttributeError, OSError):
        pass
    for name, values in ENV_HINTS.items():
        if os.environ.get(name, "").strip().lower() in values:
            return CudaAwareness(True, f"environment hint {name}={os.environ[name]}")
    return CudaAwareness(False, "no CUDA support reported by the MPI library (default)")
