"""hpcprep: messy raw data -> clean, standardized, shuffled HDF5 -> data-parallel training, with MPI.

The public API is importable from here; submodules load on first use so that
``import hpcprep`` stays cheap (no MPI initialisation, no cvxpy import).
"""

__version__ = "0.1.0"

_EXPORTS = {
    # running the pipeline
    "parse_config": "hpcprep.config",
    "run_pipeline": "hpcprep.pipeline",
    "generate": "hpcprep.generate",
    "Progress": "hpcprep.progress",
    # output
    "open_dataset": "hpcprep.loader",
    "Dataset": "hpcprep.loader",
    "verify_dataset": "hpcprep.output.verify",
    "read_all": "hpcprep.output.verify",
    "Transform": "hpcprep.transform",
    # extension points
    "Step": "hpcprep.steps",
    "register_step": "hpcprep.steps",
    "SampleMode": "hpcprep.sampling",
    "register_mode": "hpcprep.sampling",
    "Chunk": "hpcprep.chunk",
    # assignment program
    "AssignProblem": "hpcprep.assign",
    "solve": "hpcprep.assign",
    "rows_by_speed": "hpcprep.assign",
    "batch_sizes": "hpcprep.assign",
    # training
    "train": "hpcprep.train",
    # device
    "select_device": "hpcprep.device",
    # errors
    "HpcprepError": "hpcprep.errors",
    "ConfigError": "hpcprep.errors",
    "DataError": "hpcprep.errors",
    "OutputError": "hpcprep.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcprep' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
