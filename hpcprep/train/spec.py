"""The ``[train]`` table: its keys, defaults and checks (``hpcprep train``, docs/train.md)."""

from ..config import seed_check
from ..errors import ConfigError
from ..schema import Param, between, fraction, list_of, non_negative, positive, validate_table
from .emulate import parse_episodes, parse_slowdown, parse_step_cost
from .models import MODELS


#: Largest hidden layer width and batch size (rows per batch, an MPI count).
WIDTH_MAX, BATCH_MAX = 2**20, 2**31 - 1
_batch = between(1, BATCH_MAX, "[1, 2**31 - 1]")


def _widths(value):
    if not all(isinstance(h, int) and not isinstance(h, bool) and 0 < h <= WIDTH_MAX for h in value):
        return "every item must be an integer in [1, 2**20]"
    return None


def _shares(value):
    problem = list_of(int, float)(value)
    if problem:
        return problem
    if value and (min(value) < 0 or sum(value) <= 0):
        return "shares must be >= 0 with a positive sum"
    return None


def _problem(parse):
    """A check that runs ``parse`` and returns its error without the key (validate_value adds it)."""
    def check(value):
        try:
            parse(value)
        except ConfigError as e:
            return str(e).split(": ", 1)[-1] if ": " in str(e) else str(e)
        return None
    return check


TRAIN_SPEC = {
    "model": Param(str, "logreg", choices=tuple(MODELS), doc="logreg (binary), softmax, mlp"),
    "hidden": Param(list, [64], check=_widths, doc="mlp hidden layer widths"),
    "optimizer": Param(str, "sgd", choices=("sgd", "adam"), doc="sgd (with momentum) or adam"),
    "lr": Param(float, 0.1, check=positive, doc="learning rate"),
    "momentum": Param(float, 0.9, check=fraction, doc="sgd momentum"),
    "l2": Param(float, 0.0, check=non_negative, doc="L2 penalty: adds l2 * params to the mean gradient"),
    "epochs": Param(int, 10, check=positive, doc="epochs to train (in total, counting resumed ones)"),
    "batch_size": Param(int, 256, check=_batch, doc="global batch size (all ranks together)"),
    "seed": Param(int, 0, check=seed_check, doc="initial parameters and batch order"),
    "balance": Param(str, "equal", choices=("equal", "adaptive"), doc="per-rank batch sizes"),
    "rebalance_every": Param(int, 20, check=positive, doc="adaptive: steps between re-plan checks"),
    "rebalance_window": Param(int, 20, check=between(1, 10**6, "[1, 10**6]"),
                              doc="adaptive: a rank's speed is its median seconds per sample over its "
                                  "last this many steps"),
    "rebalance_threshold": Param(float, 0.05, check=between(0, 100, "[0, 100]"),
                                 doc="adaptive: least predicted relative speed-up of a step that "
                                     "counts as a change"),
    "rebalance_patience": Param(int, 2, check=between(1, 10**6, "[1, 10**6]"),
                                doc="adaptive: consecutive checks that see a change before a re-plan"),
    "rebalance_max_change": Param(float, 2.0, check=between(1, 1e6, "[1, 1e6]"),
                                  doc="adaptive: one re-plan changes a rank's batch by at most this factor"),
    "rebalance_model": Param(str, "affine", choices=("affine", "proportional"),
                             doc="adaptive: a rank's step time, fixed + per sample (fitted once two "
                                 "batch sizes were seen) or per sample only"),
    "reduce": Param(str, "allreduce", choices=("allreduce", "ordered"),
                    doc="gradient sum: one Allreduce (fast), or in an order fixed by the samples "
                        "(the same bits at any rank count and node layout)"),
    "reduce_block": Param(int, 0, check=between(0, BATCH_MAX, "[0, 2**31 - 1]"),
                          doc="ordered: rows per block, the unit of the fixed order and of the "
                              "batch sizes (0: ceil(batch_size / 64), at least 32)"),
    "shares": Param(list, [], check=_shares,
                    doc="fixed relative per-rank batch shares (default equal; adaptive start)"),
    "emulate_slowdown": Param(dict, {}, check=_problem(parse_slowdown),
                              doc='make ranks slower, e.g. { 1 = 2.0 } (rank 1 takes 2x as long)'),
    "emulate_step_cost": Param(dict, {}, check=_problem(parse_step_cost),
                               doc="add fixed seconds to every step of ranks, e.g. { 1 = 0.05 }"),
    "emulate_episodes": Param(list, [],
                              doc="slow ranks for some steps: [{ rank = 1, factor = 4.0, start = 10, "
                                  "steps = 3 }] (steps 0: to the end)"),
    "split": Param(str, "train", doc="training split when DATASET is a split dataset"),
    "val": Param(str, "", doc="validation: a split name of DATASET or a dataset path; "
                              "'' = the split 'val' if any; 'none' = no validation"),
    "checkpoint_every": Param(int, 1, check=non_negative, doc="epochs between checkpoints (0: only at the end)"),
    "adaptive_comm": Param(bool, False, doc="local SGD with adaptive averaging interval"),
    "threshold": Param(float, 0.01, check=positive, doc="adaptive_comm: relative model spread that halves the interval"),
    "max_interval": Param(int, 64, check=positive, doc="adaptive_comm: longest interval between averages"),
    "device": Param(str, "auto", choices=("auto", "cpu", "gpu"), doc="auto: CuPy on a GPU when present"),
    "eval_batch_size": Param(int, 4096, check=_batch, doc="rows per evaluation batch"),
}


def validate_config(table: dict) -> dict:
    """Validate a ``[train]`` table and fill in defaults (raises ConfigError naming the key)."""
    cfg = validate_table(table, TRAIN_SPEC, "train")
    parse_episodes(cfg["emulate_episodes"])       # its errors name the item's key
    for key in ("emulate_slowdown", "emulate_step_cost"):
        cfg[key] = {str(k): float(v) for k, v in cfg[key].items()}
    if cfg["reduce"] == "ordered" and cfg["adaptive_comm"]:
        raise ConfigError("train.reduce = 'ordered' is for the synchronous step; "
                          "train.adaptive_comm = true averages models with an Allreduce")
    cfg["shares"] = [float(v) for v in cfg["shares"]]
    return cfg
