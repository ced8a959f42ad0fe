"""``split``: named splits of the shuffled order (train/val/test), optionally stratified.

Row at global position ``q`` goes to split ``i`` when
``b[i-1] <= q < b[i]`` with ``b[i] = round_half_up(F_i * N)`` and ``F_i`` the
cumulative fraction of the first ``i + 1`` splits. With ``stratify = true`` the
same cut is made within each class (``q`` = position within the class,
``N`` = the class's rows). Fractions summing to less than 1 drop the rest.
"""

import re
from fractions import Fraction

import numpy as np

from ..errors import ConfigError
from ..schema import Param
from .modes import SampleMode, register_mode


def split_bounds(total: int, fractions) -> np.ndarray:
    """Cut positions ``b`` (one per split) of ``total`` rows, in exact rational arithmetic."""
    cum, out = Fraction(0), []
    for f in fractions:
        cum += Fraction(f)
        out.append(int(cum * int(total) + Fraction(1, 2)))
    if out and abs(float(cum) - 1.0) < 1e-9:
        out[-1] = int(total)
    return np.minimum(np.array(out, dtype=np.int64), int(total))


def split_index(positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Split of each row from its position; ``len(bounds)`` means no split (dropped)."""
    return np.searchsorted(bounds, positions, side="right")


def _check_splits(v):
    if not v:
        return "give at least one split, e.g. { train = 0.8, val = 0.2 }"
    for name, f in v.items():
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name) or name in ("shards",):
            return f"split name {name!r}: use letters, digits, _ and -"
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            return f"split {name!r} = {f!r}: a fraction between 0 and 1"
    if sum(Fraction(f) for f in v.values()) > 1 + Fraction(1, 10**9):
        return "fractions sum to more than 1"
    return None


@register_mode
class Split(SampleMode):
    """``split``: ``splits = { train = 0.8, val = 0.1, test = 0.1 }``, each written as its own dataset."""

    op = "split"
    params = {
        "splits": Param(dict, check=_check_splits, doc="split name -> fraction of the rows, in order"),
        "stratify": Param(bool, False, doc="cut within each class of the label"),
    }

    def __init__(self, **config):
        super().__init__(**config)
        self.splits = list(config["splits"])
        self.fractions = [float(f) for f in config["splits"].values()]

    @classmethod
    def check(cls, body, where):
        if "shards" in body["splits"]:
            raise ConfigError(f"{where}.splits: 'shards' cannot name a split")

    def prepare(self, ctx):
        if self.config["stratify"]:
            self.bounds = np.array([split_bounds(t, self.fractions) for t in ctx.class_totals.tolist()],
                                   dtype=np.int64).reshape(len(ctx.class_totals), len(self.splits))
        else:
            self.bounds = split_bounds(ctx.total, self.fractions)

    def partition(self, ctx, records, keys):
        n = len(records)
        if self.config["stratify"]:
            if not n:
                return [records[:0] for _ in self.splits]
            codes = ctx.class_codes(records)
            pos = ctx.class_positions(codes)
            which = (pos[:, None] >= self.bounds[codes]).sum(axis=1)
        else:
            which = split_index(ctx.start + np.arange(n, dtype=np.int64), self.bounds)
        return [records[which == i] for i in range(len(self.splits))]
