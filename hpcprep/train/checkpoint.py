"""Training checkpoints in HDF5.

One file holds everything a resumed run needs to continue exactly:

- ``params``: the flat float64 parameter vector, attrs ``names``/``shapes`` (JSON);
- ``optimizer``: the optimizer's flat state vector (rank 0's), and with
  ``adaptive_comm`` ``optimizer_per_rank`` (one row per rank: local optimizers differ);
- attrs: ``epoch`` (epochs completed), ``step``, ``model`` (JSON spec),
  ``optimizer_name``, ``config`` (JSON of the ``[train]`` table), ``rng_state``
  (JSON of the NumPy bit generator state), ``batch_sizes``, ``adaptive_comm`` (JSON),
  ``hpcprep_version``.

Rank 0 writes under a temporary name and renames it into place, so a crash never
leaves a truncated checkpoint. On resume rank 0 reads the file and broadcasts it,
so all ranks start from identical bytes.

Randomness in training is counter-based — the batch order of epoch e is a
function of ``(seed, e)`` and the initial parameters of the seed — so a resumed
run draws the same batches as an uninterrupted one.
"""

import json
import os
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import HpcprepError
from ..mpi.agree import root_decides


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def save(path, comm, *, model, params, optimizer, epoch: int, step: int, config: dict,
         rng_state: dict, batch_sizes, adaptive=None) -> None:
    """Write a checkpoint (collective: every rank calls it; rank 0 writes)."""
    state = np.ascontiguousarray(_host(optimizer.state_vector()), dtype=np.float64)
    per_rank = None
    if adaptive is not None:
        per_rank = np.empty((comm.Get_size(), state.size)) if comm.Get_rank() == 0 else None
        comm.Gather(state, per_rank, root=0)

    def write():   # on rank 0 only
        out = Path(path)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as f:
                d = f.create_dataset("params", data=_host(params))
                d.attrs["names"] = json.dumps(model.layout.names)
                d.attrs["shapes"] = json.dumps([model.layout.shapes[n] for n in model.layout.names])
                f.create_dataset("optimizer", data=state)
                if per_rank is not None:
                    f.create_dataset("optimizer_per_rank", data=per_rank)
                f.attrs["epoch"] = int(epoch)
                f.attrs["step"] = int(step)
                f.attrs["model"] = json.dumps(model.spec())
                f.attrs["optimizer_name"] = optimizer.name
                f.attrs["config"] = json.dumps(config, sort_keys=True)
                f.attrs["rng_state"] = json.dumps(rng_state)
                f.attrs["batch_sizes"] = json.dumps(list(batch_sizes))
                f.attrs["adaptive_comm"] = json.dumps(adaptive)
                f.attrs["hpcprep_version"] = __version__
            os.replace(tmp, out)
        except OSError as e:
            raise HpcprepError(f"cannot write checkpoint {out}: {e}") from None

    root_decides(comm, write)


def read(path) -> dict:
    """Read a checkpoint file into a dict (one process; no MPI)."""
    path = Path(path)
    if not path.is_file():
        raise HpcprepError(f"{path}: no such checkpoint")
    try:
        with h5py.File(path, "r") as f:
            out = {
                "params": f["params"][()],
                "optimizer": f["optimizer"][()],
                "optimizer_per_rank": f["optimizer_per_rank"][()] if "optimizer_per_rank" in f else None,
                "names": json.loads(f["params"].attrs["names"]),
            }
            for key in ("epoch", "step"):
                out[key] = int(f.attrs[key])
            for key in ("model", "config", "rng_state", "batch_sizes", "adaptive_comm"):
                out[key] = json.loads(f.attrs[key])
            out["optimizer_name"] = str(f.attrs["optimizer_name"])
    except (OSError, KeyError, ValueError) as e:
        raise HpcprepError(f"{path}: not a readable hpcprep checkpoint ({e})") from None
    return out


_ARRAYS = ("params", "optimizer", "optimizer_per_rank")


def load(path, comm) -> dict:
    """Read a checkpoint on rank 0 and broadcast it (collective). Errors are raised on every rank.

    The small metadata goes with ``bcast``; the arrays with ``Bcast``.
    """
    ck = {}

    def read_meta():
        ck.update(read(path))
        meta = {k: v for k, v in ck.items() if k not in _ARRAYS}
        meta["shapes"] = {k: None if ck[k] is None else ck[k].shape for k in _ARRAYS}
        return meta

    meta = root_decides(comm, read_meta)
    out = dict(meta)
    for key in _ARRAYS:
        shape = meta["shapes"][key]
        if shape is None:
            out[key] = None
            continue
        buf = np.ascontiguousarray(ck[key], dtype=np.float64) if comm.Get_rank() == 0 \
            else np.empty(shape)
        comm.Bcast(buf, root=0)
        out[key] = buf
    return out


def load_params(path) -> np.ndarray:
    """The flat parameter vector of a checkpoint or final model file."""
    return read(path)["params"]
