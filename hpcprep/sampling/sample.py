"""``sample`` and ``weighted``: exactly k rows without replacement, uniform or by weight.

Both keep the first ``k`` rows of the layer's global key order: with uniform
keys that is a uniform sample without replacement; with A-ES keys
``-log(u)/w`` (Efraimidis–Spirakis) it is a weighted sample without replacement.
"""

import numpy as np

from ..errors import ConfigError
from ..kernels.select import aes_keys
from ..schema import Param
from .modes import SampleMode, SamplingError, exactly_one_size, register_mode, round_half_up, row_keys


def _size_or_unset(v):
    return None if v == -1 or v >= 0 else "must be >= 0"


def _fraction_or_unset(v):
    return None if v == -1 or 0 <= v <= 1 else "must be between 0 and 1"


SIZE_PARAMS = {
    "n": Param(int, -1, check=_size_or_unset, doc="rows to keep (exactly)"),
    "fraction": Param(float, -1.0, check=_fraction_or_unset,
                      doc="share of rows to keep: round_half_up(fraction * N) rows"),
    "if_short": Param(str, "warn", choices=("warn", "error"),
                      doc="n larger than the rows available: keep all rows with a warning, or fail"),
}


def sample_size(total: int, n: int, fraction: float) -> int:
    """Rows to keep out of ``total``: ``n`` (may exceed ``total``), or ``round_half_up(fraction * total)``."""
    return int(n) if n != -1 else round_half_up(fraction, total)


def keep_prefix(start: int, rows: int, k: int) -> int:
    """How many of a bucket's ``rows`` (first at global position ``start``) lie before position ``k``."""
    return max(0, min(rows, k - start))


class _Prefix(SampleMode):
    """Keep the first k rows of the global order."""

    params = SIZE_PARAMS

    @classmethod
    def check(cls, body, where):
        exactly_one_size(body, where)

    def prepare(self, ctx):
        self.k = sample_size(ctx.total, self.config["n"], self.config["fraction"])
        if self.k > ctx.total:
            msg = f"{self.op}: n = {self.k} but the layer has only {ctx.total} rows"
            if self.config["if_short"] == "error":
                raise SamplingError(msg + " (if_short = \"error\")")
            self.warnings.append(msg + f"; keeping all {ctx.total}")
        self.k_realized = min(self.k, ctx.total)

    def select(self, ctx, records, keys):
        return records[:keep_prefix(ctx.start, len(records), self.k)]

    def summary(self, total_in, total_out):
        out = super().summary(total_in, total_out)
        out["requested"] = getattr(self, "k", None)
        return out


@register_mode
class Sample(_Prefix):
    """``sample``: exactly ``n`` (or ``round_half_up(fraction * N)``) rows, uniformly without replacement."""

    op = "sample"


def aes_sort_keys(keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A-ES keys ``-log(u)/w`` as uint64 sort keys (the bits of a non-negative float64 order as it does).

    Parameters
    ----------
    keys : ndarray of uint64
        Uniform random keys of the rows (``u = key_to_unit(key, open_left=True)``).
    weights : ndarray of float
        Positive, finite weights.

    Returns
    -------
    ndarray of uint64
    """
    r = aes_keys(keys, weights) + 0.0          # -0.0 (u = 1) becomes +0.0
    return np.ascontiguousarray(r, dtype=np.float64).view(np.uint64)


@register_mode
class Weighted(_Prefix):
    """``weighted``: ``n`` rows without replacement, inclusion by weight (A-ES keys ``-log(u)/w``).

    The weight is the record's weight column (``weight = ""``) or a feature
    named by ``weight``. Rows whose weight is zero or negative are an error
    (``nonpositive = "error"``) or are excluded before sampling and counted
    (``"exclude"``); NaN or infinite weights are always an error.
    """

    op = "weighted"
    routing = "splitters"
    params = {**SIZE_PARAMS,
              "weight": Param(str, "", doc="feature name holding the weight; empty = the weight column"),
              "nonpositive": Param(str, "error", choices=("error", "exclude"),
                                   doc="rows with weight <= 0: fail, or drop them before sampling")}

    def bind(self, feature_names, dtype):
        name = self.config["weight"]
        if name:
            if name not in feature_names:
                raise ConfigError(f"weighted: weight = {name!r} is not a feature; features: "
                                  f"{', '.join(feature_names)}")
            self._col = feature_names.index(name)
        elif "w" not in dtype.names:
            raise ConfigError("weighted: the input has no weight column (input.weight); "
                              "or name a feature with weight = \"...\"")
        else:
            self._col = None

    def weights(self, records):
        if self._col is None:
            return records["w"].astype(np.float64)
        return records["x"][:, self._col].astype(np.float64)

    def expand(self, seed, layer, records):
        w = self.weights(records)
        bad = ~np.isfinite(w)
        if bad.any():
            raise SamplingError(f"weighted: row id {int(records['id'][bad][0])} has weight "
                                f"{w[bad][0]}; weights must be finite")
        nonpos = w <= 0
        if nonpos.any():
            if self.config["nonpositive"] == "error":
                raise SamplingError(f"weighted: row id {int(records['id'][nonpos][0])} has weight "
                                    f"{w[nonpos][0]} <= 0 (set nonpositive = \"exclude\" to drop such rows)")
            self.excluded += int(nonpos.sum())
            records = records[~nonpos]
        return records

    def keys(self, seed, layer, ids, records):
        return aes_sort_keys(row_keys(seed, layer, records, self.kernels), self.weights(records))
