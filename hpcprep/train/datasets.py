"""The datasets a training run reads: the training split, the validation set, the classes."""

import math
from pathlib import Path

import numpy as np
from mpi4py import MPI

from ..errors import ConfigError, DataError, HpcprepError
from ..loader import open_dataset
from ..mpi.agree import agreed, root_decides
from ..output.reader import read_manifest


def _split_names(path) -> dict:
    try:
        return read_manifest(path)["splits"]
    except HpcprepError:  # open_dataset reports it
        return {}


def train_val_names(dataset, cfg) -> tuple:
    """``(train split, val folder, val split)`` to open (val folder None: no validation)."""
    splits = _split_names(dataset)
    train = cfg["split"] if splits else None
    val_name = cfg["val"]
    if val_name == "none" or (val_name == "" and "val" not in splits):
        return train, None, None
    if val_name == "":
        val_name = "val"
    if val_name in splits:
        return train, dataset, val_name
    if Path(val_name).is_dir():
        return train, val_name, "val" if _split_names(val_name) else None
    raise ConfigError(f"train.val = {val_name!r}: neither a split of {dataset} "
                      f"({', '.join(splits) or 'no splits'}) nor a dataset folder")


def open_train_val(dataset, cfg, comm):
    # rank 0 decides, so every rank makes the same collective open_dataset calls
    train_split, val_path, val_split = root_decides(comm, train_val_names, dataset, cfg)
    train = open_dataset(dataset, split=train_split, comm=comm)
    if train.code_names:   # the same manifest on every rank: every rank raises it
        train.close()
        raise agreed(DataError, f"{dataset}: the dataset has int64 categorical codes "
                                f"({', '.join(train.code_names)}), which hpcprep train's models do "
                                f"not read: train on it through the PyTorch loader "
                                f"(Dataset.torch, docs/train.md) or encode them as onehot")
    if val_path is None:
        return train, None
    try:
        return train, open_dataset(val_path, split=val_split, comm=comm)
    except HpcprepError:
        train.close()
        raise


def count_classes(ds, comm) -> int:
    """Number of classes: max label + 1 over the whole training set (labels must be ints >= 0)."""
    if not ds.has_labels:
        raise agreed(DataError, f"{ds.path}: the dataset has no labels to train on")
    lo, hi, bad = math.inf, -math.inf, 0
    for a in range(ds.start, ds.stop, 1 << 20):
        y = ds.read_labels(a, min(a + (1 << 20), ds.stop))
        if y.size:
            lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
            bad += int(np.count_nonzero(y != np.floor(y)))
    buf = np.array([hi, -lo, bad], dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
    hi, lo, bad = buf[0], -buf[1], buf[2]
    if bad or lo < 0 or not math.isfinite(hi):
        raise agreed(DataError, f"{ds.path}: labels must be class numbers 0, 1, ... "
                                 f"(found min {lo}, max {hi})")
    return int(hi) + 1
