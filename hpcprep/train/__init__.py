"""Data-parallel training on hpcprep datasets (DESIGN §5, docs/train.md).

Modules: ``models`` (logreg, softmax, mlp with explicit backward passes),
``optim`` (SGD with momentum, Adam), ``metrics`` (loss, accuracy, exact AUC),
``parallel`` (the fused-Allreduce step, adaptive communication), ``balance``
(equal / worker-adaptive batch sizes), ``replan`` (when and how to re-plan them),
``emulate`` (emulated slow ranks), ``checkpoint`` (HDF5), ``trainer`` (the
loop), ``cli`` (``hpcprep train``), ``synth`` (small synthetic datasets).
"""

from .models import MODELS, Layout, make_model
from .optim import make_optimizer
from .spec import TRAIN_SPEC, validate_config

__all__ = ["MODELS", "Layout", "make_model", "make_optimizer", "TRAIN_SPEC", "train", "validate_config"]


def __getattr__(name):
    # the trainer imports MPI: loaded on first use, so that reading a dataset (the torch
    # adapter in train/torch_data.py, under torchrun) needs no MPI
    if name == "train":
        from .trainer import train

        return train
    raise AttributeError(f"module 'hpcprep.train' has no attribute {name!r}")
