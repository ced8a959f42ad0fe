"""``stratified``: the ``k_c`` first rows of each class in the global key order."""

import numpy as np

from ..errors import ConfigError
from ..schema import Param
from .modes import SampleMode, SamplingError, register_mode, round_half_up
from .sample import _fraction_or_unset, _size_or_unset


def class_quotas(class_totals, n_per_class: int = -1, fraction: float = -1.0,
                 balance: bool = False) -> np.ndarray:
    """Rows to keep per class.

    Parameters
    ----------
    class_totals : array of int
        Rows of each class in the layer.
    n_per_class : int
        Keep ``min(n_per_class, N_c)`` of each class (``-1``: not given).
    fraction : float
        Keep ``round_half_up(fraction * N_c)`` of each class (``-1``: not given).
    balance : bool
        Keep ``min_c N_c`` of each class (the rarest present class's count).

    Returns
    -------
    ndarray of int64, one quota per class (never above its total).
    """
    totals = np.asarray(class_totals, dtype=np.int64)
    if balance:
        present = totals[totals > 0]
        q = np.full(len(totals), int(present.min()) if len(present) else 0, dtype=np.int64)
    elif n_per_class != -1:
        q = np.full(len(totals), int(n_per_class), dtype=np.int64)
    else:
        q = np.array([round_half_up(fraction, t) for t in totals.tolist()], dtype=np.int64)
    return np.minimum(q, totals)


@register_mode
class Stratified(SampleMode):
    """``stratified``: per class of the integer label, ``n_per_class``, a ``fraction``, or ``balance``.

    The quota of class c is taken from the front of the global key order
    restricted to class c, so the class counts are exact. ``n_per_class``
    above a class's rows keeps the whole class (warning) or fails
    (``if_short = "error"``).
    """

    op = "stratified"
    needs_labels = True
    params = {
        "n_per_class": Param(int, -1, check=_size_or_unset, doc="rows per class"),
        "fraction": Param(float, -1.0, check=_fraction_or_unset, doc="share of each class"),
        "balance": Param(bool, False, doc="every class down to the rarest class's count"),
        "if_short": Param(str, "warn", choices=("warn", "error"),
                          doc="a class smaller than n_per_class: keep it whole with a warning, or fail"),
    }

    @classmethod
    def check(cls, body, where):
        given = [k for k in ("n_per_class", "fraction") if body[k] != -1] + (["balance"] if body["balance"] else [])
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of n_per_class, fraction, balance = true "
                              f"(got {', '.join(given) or 'none'})")

    def prepare(self, ctx):
        c = self.config
        totals = ctx.class_totals
        self.quotas = class_quotas(totals, c["n_per_class"], c["fraction"], c["balance"])
        if c["n_per_class"] != -1:
            short = [(ctx.classes[i], int(totals[i])) for i in range(len(totals)) if totals[i] < c["n_per_class"]]
            if short:
                msg = (f"stratified: n_per_class = {c['n_per_class']} but class(es) "
                       + ", ".join(f"{v} has {t}" for v, t in short))
                if c["if_short"] == "error":
                    raise SamplingError(msg)
                self.warnings.append(msg + "; keeping those classes whole")

    def select(self, ctx, records, keys):
        if not len(records):
            return records
        codes = ctx.class_codes(records)
        return records[ctx.class_positions(codes) < self.quotas[codes]]
