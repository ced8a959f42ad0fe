"""MPI with device buffers: CUDA-aware detection, host staging, row exchange.

mpi4py accepts any object with ``__cuda_array_interface__`` (CuPy arrays) as a
buffer, but only a CUDA-aware MPI may dereference a device pointer. Otherwise
the data goes through pinned (page-locked) host buffers. In both cases the
CuPy stream is synchronized before MPI reads a device buffer: kernels that
write it run asynchronously and MPI does not know about CUDA streams.
"""

import ctypes
import functools
import os
from dataclasses import dataclass

import numpy as np

from ..errors import HpcprepError
from .xp import array_module
from ._util import is_cupy

#: Environment variable forcing the answer: "1"/"true" or "0"/"false".
ENV_OVERRIDE = "HPCPREP_CUDA_AWARE_MPI"

#: Launcher/library settings that switch on device buffers in known MPIs,
#: used only when the library cannot be asked.
ENV_HINTS = {
    "MPICH_GPU_SUPPORT_ENABLED": ("1",),              # Cray MPICH
    "MV2_USE_CUDA": ("1",),                           # MVAPICH2
    "OMPI_MCA_opal_cuda_support": ("1", "true"),      # Open MPI (built with CUDA)
}

_INT_MAX = 2 ** 31 - 1


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


def cuda_aware_mpi() -> bool:
    """True when MPI may be given CuPy arrays directly (see :func:`detect_cuda_aware_mpi`)."""
    return detect_cuda_aware_mpi().aware


def synchronize(arr) -> None:
    """Wait for the work queued on ``arr``'s device (no-op for NumPy arrays)."""
    if type(arr).__module__.startswith("cupy"):
        import cupy

        with arr.device:
            cupy.cuda.get_current_stream().synchronize()


def to_mpi_buffer(arr, cuda_aware: bool | None = None):
    """A buffer MPI may read the contents of ``arr`` from.

    Parameters
    ----------
    arr : array
        NumPy or CuPy array.
    cuda_aware : bool, optional
        Override :func:`cuda_aware_mpi`.

    Returns
    -------
    array
        ``arr`` itself (made C-contiguous) for NumPy, and for CuPy with a
        CUDA-aware MPI after synchronizing its stream; otherwise a pinned host
        copy (``cupyx.empty_pinned``) filled synchronously.
    """
    xp = array_module(arr)
    if not is_cupy(xp):
        return np.ascontiguousarray(arr)
    arr = xp.ascontiguousarray(arr)
    if cuda_aware if cuda_aware is not None else cuda_aware_mpi():
        synchronize(arr)
        return arr
    import cupyx

    host = cupyx.empty_pinned(arr.shape, dtype=arr.dtype)
    arr.get(out=host)
    synchronize(arr)
    return host


def empty_mpi_buffer(shape, dtype, xp, cuda_aware: bool | None = None):
    """A buffer MPI may write ``shape``/``dtype`` data into, for arrays of module ``xp``.

    Returns a NumPy array for NumPy, a CuPy array with a CUDA-aware MPI, else a
    pinned host array; pass the result through :func:`from_mpi_buffer`.
    """
    if not is_cupy(xp):
        return np.empty(shape, dtype=dtype)
    if cuda_aware if cuda_aware is not None else cuda_aware_mpi():
        out = xp.empty(shape, dtype=dtype)
        synchronize(out)
        return out
    import cupyx

    return cupyx.empty_pinned(shape, dtype=dtype)


def from_mpi_buffer(buf, xp):
    """The contents of an MPI buffer as an array of module ``xp``.

    A host buffer is copied to the device when ``xp`` is CuPy; a device buffer
    or a NumPy buffer for NumPy is returned as is.
    """
    if not is_cupy(xp):
        return buf if isinstance(buf, np.ndarray) else xp.asarray(buf)
    if type(buf).__module__.startswith("cupy"):
        return buf
    return xp.asarray(buf)


def _row_type(row_nbytes: int):
    from mpi4py import MPI

    return MPI.BYTE.Create_contiguous(row_nbytes).Commit()


def exchange_rows(comm, buf, send_counts, cuda_aware: bool | None = None):
    """All-to-all exchange of packed rows (collective over ``comm``).

    Rows go as one contiguous MPI datatype of ``row_nbytes`` bytes, so counts
    and displacements are in rows (well below MPI's 2**31 limit for bytes).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    buf : array of uint8, shape (n, row_nbytes)
        Rows grouped by destination (:func:`hpcprep.kernels.pack.pack_by_destination`),
        NumPy or CuPy.
    send_counts : array_like of int, shape (comm.size,)
        Rows for each destination, in order.
    cuda_aware : bool, optional
        Override :func:`cuda_aware_mpi`.

    Returns
    -------
    recv : array of uint8, shape (m, row_nbytes)
        Received rows, grouped by source rank in rank order, same module as ``buf``.
    recv_counts : ndarray of int64, shape (comm.size,)
    """
    xp = array_module(buf)
    size = comm.Get_size()
    scounts = np.ascontiguousarray(send_counts, dtype=np.int64)
    if scounts.shape != (size,) or int(scounts.sum()) != buf.shape[0]:
        raise ValueError(f"send_counts {scounts.tolist()} do not split {buf.shape[0]} rows over {size} ranks")
    rcounts = np.empty(size, dtype=np.int64)
    comm.Alltoall(scounts, rcounts)
    row_nbytes = int(buf.shape[1])
    n_recv = int(rcounts.sum())
    if max(int(scounts.sum()), n_recv) > _INT_MAX:
        raise HpcprepError(f"rank {comm.Get_rank()}: more than {_INT_MAX} rows in one exchange; "
                           "split it into rounds")
    sdispls = np.concatenate(([0], np.cumsum(scounts)[:-1]))
    rdispls = np.concatenate(([0], np.cumsum(rcounts)[:-1]))
    if row_nbytes == 0:
        return xp.empty((n_recv, 0), dtype=xp.uint8), rcounts
    sbuf = to_mpi_buffer(buf, cuda_aware)
    rbuf = empty_mpi_buffer((n_recv, row_nbytes), np.uint8, xp, cuda_aware)
    rowtype = _row_type(row_nbytes)
    try:
        c32 = [a.astype(np.int32) for a in (scounts, sdispls, rcounts, rdispls)]
        comm.Alltoallv([sbuf, (c32[0], c32[1]), rowtype], [rbuf, (c32[2], c32[3]), rowtype])
    finally:
        rowtype.Free()
    return from_mpi_buffer(rbuf, xp), rcounts
