"""``validate``: per-column rules; rows breaking a rule are dropped and counted."""

import numpy as np

from ..errors import ConfigError
from ..schema import Param, list_of, validate_table
from ._columns import categorical_column
from .base import Step, drop_rows, register_step

RULE = {
    "min": Param(float, None, doc="smallest allowed value (numeric columns)"),
    "max": Param(float, None, doc="largest allowed value (numeric columns)"),
    "allow_nan": Param(bool, True, doc="whether a missing value (and ±inf) is allowed"),
    "allowed": Param(list, None, check=list_of(str), doc="allowed categories (categorical columns)"),
}


def _check_rules(rules):
    if not isinstance(rules, dict):
        return "expected a table { column = { min = ..., max = ..., allow_nan = ..., allowed = [...] } }"
    for name, rule in rules.items():
        try:
            r = validate_table(rule, RULE, f"rules.{name}")
        except ConfigError as e:
            return str(e)
        if r["min"] is not None and r["max"] is not None and r["min"] > r["max"]:
            return f"rules.{name}: min {r['min']} > max {r['max']}"
    return None


@register_step
class Validate(Step):
    """Drop rows that break a per-column rule.

    Config::

        { op = "validate", rules = { f0 = { min = 0, max = 100 },
                                     f1 = { allow_nan = false },
                                     color = { allowed = ["red", "blue"] } } }

    A rule names a feature (numeric) or a raw categorical column. ``min`` /
    ``max`` bound numeric values (inclusive); ``allow_nan = false`` rejects a
    missing value (NaN, or ``""`` for a categorical column); ``allowed`` lists
    the categories a categorical column may take. ±inf is never a valid
    value of a numeric column with a rule that checks something (``min``,
    ``max`` or ``allow_nan = false``): it is rejected as ``"<column>
    non-finite"``, whatever the bounds. A missing value never breaks ``min``,
    ``max`` or ``allowed`` (only ``allow_nan``). A row breaking several rules
    is counted once, under the first broken rule in the order the rules are
    written (columns in order; missing, non-finite, below min, above max, not
    allowed). Reasons read ``"<column> missing"``, ``"<column> non-finite"``,
    ``"<column> < min"``, ``"<column> > max"``, ``"<column> not allowed"``.
    """

    op = "validate"
    params = {
        "rules": Param(dict, check=_check_rules, doc="column -> { min, max, allow_nan, allowed }"),
    }

    def __init__(self, **config):
        super().__init__(**config)
        self.rules_ = {name: validate_table(rule, RULE, f"validate.rules.{name}")
                       for name, rule in config["rules"].items()}

    def bind(self, feature_names):
        names = super().bind(feature_names)
        for name, rule in self.rules_.items():
            if name in feature_names and rule["allowed"] is not None:
                raise ConfigError(f"validate.rules.{name}.allowed: {name!r} is a numeric feature; "
                                  f"allowed applies to categorical columns (use min/max)")
        return names

    def _masks(self, chunk):
        masks = {}
        for name, rule in self.rules_.items():
            if name in self.feature_names_in_:
                v = chunk.features[:, self.feature_names_in_.index(name)]
                if not rule["allow_nan"]:
                    masks[f"{name} missing"] = np.isnan(v)
                if not rule["allow_nan"] or rule["min"] is not None or rule["max"] is not None:
                    masks[f"{name} non-finite"] = np.isinf(v)
                if rule["min"] is not None:
                    masks[f"{name} < min"] = v < rule["min"]
                if rule["max"] is not None:
                    masks[f"{name} > max"] = v > rule["max"]
            else:
                v = categorical_column(chunk, name, "validate.rules", self.feature_names_in_)
                if rule["min"] is not None or rule["max"] is not None:
                    raise ConfigError(f"validate.rules.{name}: min/max apply to numeric features; "
                                      f"{name!r} is categorical (use allowed)")
                missing = v == ""
                if not rule["allow_nan"]:
                    masks[f"{name} missing"] = missing
                if rule["allowed"] is not None:
                    masks[f"{name} not allowed"] = ~missing & ~np.isin(v, rule["allowed"])
        return masks

    def apply(self, chunk):
        out, dropped, _ = self.apply_rejects(chunk)
        return out, dropped

    def apply_rejects(self, chunk):
        return drop_rows(chunk, self._masks(chunk))

    def stats(self):
        return {}
