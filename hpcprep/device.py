"""Device selection: which rank computes on which GPU, or on the CPU.

``resources.device`` is ``"auto"``, ``"cpu"`` or ``"gpu"``. A rank's local
rank comes from the MPI shared-memory split of the communicator (so it works
under any launcher), and it binds GPU ``local_rank % n_gpus`` of the GPUs it
can see. ``auto`` uses the GPU when CuPy imports and a device answers (a
small kernel runs on it), else the CPU. ``gpu`` on a rank without one is an
error on every rank, naming the ranks and why.
"""

import socket
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from .errors import ConfigError, HpcprepError

DEVICE_CHOICES = ("auto", "cpu", "gpu")


@dataclass
class DeviceInfo:
    """What a rank computes on.

    Attributes
    ----------
    kind : str
        ``"cpu"`` or ``"gpu"``.
    xp : module
        ``numpy`` or ``cupy``: the array module of this rank's kernels.
    requested : str
        The configured ``resources.device``.
    rank, local_rank, local_size : int
        Rank in the communicator, and in the node's shared-memory group.
    hostname : str
    device_id : int or None
        CUDA device ordinal bound by this rank (among the visible devices).
    n_gpus : int
        Visible CUDA devices on this rank (0 when CuPy or CUDA is missing).
    name : str
        GPU name, or ``"cpu"``.
    reason : str
        Why the CPU was used when a GPU was allowed ("" otherwise).
    cuda_aware_mpi : bool or None
        For a GPU rank: whether MPI takes device buffers (else staged via host).
    """

    kind: str
    xp: ModuleType
    requested: str
    rank: int
    local_rank: int
    local_size: int
    hostname: str
    device_id: int | None = None
    n_gpus: int = 0
    name: str = "cpu"
    reason: str = ""
    cuda_aware_mpi: bool | None = None
    extra: dict = field(default_factory=dict)

    def report(self) -> dict:
        """JSON-ready dict for the run report (everything except the module)."""
        return {
            "device": self.kind, "requested": self.requested, "rank": self.rank,
            "local_rank": self.local_rank, "local_size": self.local_size,
            "hostname": self.hostname, "device_id": self.device_id,
            "n_gpus": self.n_gpus, "name": self.name, "reason": self.reason,
            "cuda_aware_mpi": self.cuda_aware_mpi, **self.extra,
        }


def local_rank_and_size(comm) -> tuple[int, int]:
    """This rank's position among the ranks of ``comm`` sharing its node (collective)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return local.Get_rank(), local.Get_size()
    finally:
        local.Free()


def probe_gpu(local_rank: int) -> dict:
    """Try to bind GPU ``local_rank % n_gpus`` and run a kernel on it (this rank only).

    Returns
    -------
    dict
        ``ok`` (bool), ``reason`` (str, why not), ``n_gpus``, ``device_id``, ``name``.
    """
    out = {"ok": False, "reason": "", "n_gpus": 0, "device_id": None, "name": "cpu"}
    try:
        import cupy
    except ImportError as e:
        out["reason"] = f"CuPy is not installed (pip install -e .[gpu]): {e}"
        return out
    except Exception as e:  # noqa: BLE001 - a broken CuPy install is a reason, not a crash
        out["reason"] = f"CuPy failed to import: {type(e).__name__}: {e}"
        return out
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError: no driver / no device
        out["reason"] = f"no CUDA device: {type(e).__name__}: {e}"
        return out
    out["n_gpus"] = n
    if n == 0:
        out["reason"] = "no CUDA device visible (CUDA_VISIBLE_DEVICES?)"
        return out
    dev = local_rank % n
    try:
        cupy.cuda.Device(dev).use()
        if int(cupy.arange(4, dtype=cupy.int64).sum()) != 6:
            raise RuntimeError("a test kernel gave a wrong result")
        props = cupy.cuda.runtime.getDeviceProperties(dev)
        name = props.get("name", b"")
        out["name"] = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    except Exception as e:  # noqa: BLE001 - device present but not usable
        out["reason"] = f"CUDA device {dev} does not answer: {type(e).__name__}: {e}"
        return out
    out.update(ok=True, device_id=dev)
    return out


def select_device(comm, requested: str = "auto") -> DeviceInfo:
    """Choose this rank's device (collective over ``comm``).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank of it calls this together.
    requested : {"auto", "cpu", "gpu"}
        ``resources.device``.

    Returns
    -------
    DeviceInfo
        ``xp`` is ``cupy`` (bound to device ``device_id``) or ``numpy``.

    Raises
    ------
    ConfigError
        If ``requested`` is not one of the choices.
    HpcprepError
        On every rank, if ``requested == "gpu"`` and any rank has no usable GPU;
        the message names those ranks, their hosts and why.
    """
    if requested not in DEVICE_CHOICES:
        raise ConfigError(f"resources.device = {requested!r}: allowed values are "
                          f"{', '.join(repr(c) for c in DEVICE_CHOICES)}")
    rank = comm.Get_rank()
    local_rank, local_size = local_rank_and_size(comm)
    host = socket.gethostname()
    info = DeviceInfo(kind="cpu", xp=np, requested=requested, rank=rank,
                      local_rank=local_rank, local_size=local_size, hostname=host)
    if requested == "cpu":
        return info
    probe = probe_gpu(local_rank)
    info.n_gpus = probe["n_gpus"]
    if requested == "gpu":
        failed = [(r, h, why) for r, h, ok, why in
                  comm.allgather((rank, host, probe["ok"], probe["reason"])) if not ok]
        if failed:
            lines = "; ".join(f"rank {r} on {h}: {why}" for r, h, why in failed)
            raise HpcprepError(f"resources.device = 'gpu' but {len(failed)} rank(s) have no "
                               f"usable GPU: {lines}")
    if not probe["ok"]:
        info.reason = probe["reason"]
        return info
    import cupy

    from .kernels.mpi_buffers import detect_cuda_aware_mpi

    aware = detect_cuda_aware_mpi()
    info.kind, info.xp = "gpu", cupy
    info.device_id, info.name = probe["device_id"], probe["name"]
    info.cuda_aware_mpi = aware.aware
    info.extra["cuda_aware_mpi_source"] = aware.source
    return info
