"""Apply a run's fitted value transforms to new data (inference).

``Transform.load(out)`` rebuilds, in chain order, the steps of the run that
change *values* — ``impute``, ``scale``, ``outliers`` with ``action = "clip"``,
``categorical``, ``select`` and ``reduce`` — each from its table in the run's
config (the ``config`` attribute of ``data.h5``) and the fitted parameters it
saved under ``/stats/<layer>.<index>.<op>/`` (:meth:`hpcprep.steps.Step.from_stats`),
and applies them with the steps' own ``apply``: the formulas live in the steps
only. Steps that only drop rows (``validate``, ``dropna``, ``dedup``,
``outliers`` with ``action = "drop"``) are not replayed: at inference every row
gets an answer.

Examples
--------
>>> from hpcprep.transform import Transform
>>> t = Transform.load("out")                       # doctest: +SKIP
>>> x_model = t.transform(x_raw, categorical={"color": colors})   # doctest: +SKIP
>>> codes = t.codes({"url": urls})          # int64, as the dataset's codes   # doctest: +SKIP
"""

import os
import tomllib

import h5py
import numpy as np

from .chunk import Chunk
from .config import apply_overrides
from .errors import ConfigError, DataError
from .schema import validate_op_table
from .steps import STEPS
from .steps._columns import CAT_PREFIX, CODES

#: How ``parse_config`` appends ``--set`` overrides to the config text it keeps.
_SET_LINE = "\n# --set "


def _label_key(label):
    layer, index, op = label.split(".", 2)
    return int(layer), int(index), op


def _read(group) -> dict:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            v = obj[()]
            if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype) is not None:
                v = obj.asstr()[()]
            out[name] = v
    group.visititems(visit)
    return out


def _names(values) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(values)]


class Transform:
    """The value steps of a finished run, fitted, in chain order.

    Attributes
    ----------
    fitted_ : list of (str, Step)
        ``(label, step)`` of each replayed step, rebuilt from the saved stats.
    feature_names_in_ : list of str
        Names of the features :meth:`transform` takes (the run's input features).
    feature_names_out_ : list of str
        Names of the output features (those of the dataset).
    """

    def __init__(self, fitted, feature_names_out):
        self.fitted_ = list(fitted)
        self.feature_names_out_ = list(feature_names_out)
        self.feature_names_in_ = (list(self.fitted_[0][1].feature_names_in_) if self.fitted_
                                  else list(feature_names_out))

    @property
    def steps_(self) -> list:
        """``(label, op, fitted parameters)`` of each replayed step (as saved in ``/stats``)."""
        return [(label, step.op, step.stats()) for label, step in self.fitted_]

    @classmethod
    def load(cls, path: str) -> "Transform":
        """Rebuild the fitted value steps of a dataset folder (or its ``data.h5``)."""
        master = os.path.join(path, "data.h5") if os.path.isdir(path) else path
        if not os.path.exists(master):
            raise DataError(f"{path}: no data.h5 (not an hpcprep output folder)")
        with h5py.File(master, "r") as f:
            stats = f.get("stats")
            if stats is None:
                raise DataError(f"{master}: no /stats group")
            names_out = _names(stats["feature_names"][()])
            text = f.attrs.get("config")
            saved = [(label, _read(stats[label]))
                     for label in sorted((k for k in stats if isinstance(stats[k], h5py.Group)),
                                         key=_label_key)]
        tables = _step_tables(master, text)
        steps = [(label, *_validated(master, tables, label), params) for label, params in saved]
        replayed = [s for s in steps if s[1].replayed(s[2])]   # (label, class, table, stats)
        return cls(_fitted(master, replayed, names_out), names_out)

    def transform(self, x, categorical: dict | None = None, dtype=None) -> np.ndarray:
        """Apply every replayed step to the rows of ``x``.

        Parameters
        ----------
        x : array, shape (n, d_in)
            Numeric features, columns as the run's input features (``feature_names_in_``).
        categorical : dict of str -> array of str, optional
            Raw values of each categorical column (needed with a ``categorical`` step;
            ``""`` or None = missing).
        dtype : numpy floating dtype, optional
            The dtype the steps work in, as the pipeline works in the input's feature
            dtype (pass ``np.float32`` for float32 input to get the dataset's values
            bit for bit). Default: float64 throughout.

        Returns
        -------
        ndarray of ``dtype``, shape (n, d_out)
        """
        dtype = np.dtype(np.float64 if dtype is None else dtype)
        if dtype.kind != "f":
            raise TypeError(f"Transform.transform: dtype must be floating, got {dtype}")
        x = np.array(x, dtype=dtype, ndmin=2)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names_in_):
            raise DataError(f"Transform: x has shape {x.shape}; the run's input has "
                            f"{len(self.feature_names_in_)} features: "
                            f"{', '.join(self.feature_names_in_)}")
        return self._apply(x, categorical or {}, codes=False).features

    def codes(self, categorical: dict) -> np.ndarray:
        """The int64 codes of raw categorical values, as the dataset's ``codes`` (-1 = missing).

        Parameters
        ----------
        categorical : dict of str -> array of str
            Raw values of each column a ``categorical`` step with ``encoding = "codes"``
            or ``"hash"`` encodes.

        Returns
        -------
        ndarray of int64, shape (n, len(code_names))
            One column per code column of the dataset, in its order.
        """
        n = len(next(iter(categorical.values()))) if categorical else 0
        chunk = self._apply(np.zeros((n, 0)), categorical, codes=True)
        return chunk.extras.get(CODES, np.zeros((n, 0), dtype=np.int64))

    def _apply(self, x, categorical: dict, codes: bool) -> Chunk:
        """The steps that give int64 codes (``codes``) or all others, applied to ``x`` and the
        raw categorical columns as one chunk."""
        steps = [(label, s) for label, s in self.fitted_ if _writes_codes(s) == codes]
        for label, step in steps:
            for name in step.columns_ if step.op == "categorical" else ():
                if name not in categorical:
                    raise DataError(f"Transform: step {label} needs categorical column {name!r} "
                                    f"(pass categorical={{{name!r}: values}})")
        extras = {CAT_PREFIX + name: np.asarray(v) for name, v in categorical.items()}
        for name, v in extras.items():
            if v.shape != (len(x),):
                raise DataError(f"Transform: categorical column {name[len(CAT_PREFIX):]!r} has "
                                f"shape {v.shape}, expected ({len(x)},)")
        chunk = Chunk(0, np.arange(len(x), dtype=np.int64), x, extras=extras, source="Transform")
        for _, step in steps:
            chunk, _ = step.apply(chunk)
        return chunk


def _writes_codes(step) -> bool:
    """Whether a step gives int64 codes (:meth:`Transform.codes`) rather than features."""
    return step.op == "categorical" and step.writes_codes


def _step_tables(master: str, text) -> list:
    """The ``[[standardize]]`` tables of the run's config text, its ``--set`` overrides applied."""
    if not isinstance(text, str):
        raise DataError(f"{master}: no config attribute (the run's config)")
    _, sep, tail = text.rpartition(_SET_LINE)
    sets = tail[:-1].split(" --set ") if sep and tail.endswith("\n") and "\n" not in tail[:-1] \
        else []
    try:
        raw = apply_overrides(tomllib.loads(text), sets)
    except (tomllib.TOMLDecodeError, ConfigError) as e:
        raise DataError(f"{master}: the config attribute does not parse: {e}") from None
    tables = raw.get("standardize", [])
    return tables if isinstance(tables, list) else []


def _validated(master: str, tables: list, label: str):
    """The step class and validated table of ``label`` (``<layer>.<index>.<op>``) in the config."""
    layer, index, op = _label_key(label)
    where = f"standardize[{layer}].steps[{index}]"
    try:
        table = tables[layer]["steps"][index]
    except (IndexError, KeyError, TypeError):
        raise DataError(f"{master}: /stats/{label} has no step {where} in the config attribute") \
            from None
    try:
        cls, config = validate_op_table(table, STEPS, where, "step")
    except ConfigError as e:
        raise DataError(f"{master}: config attribute: {e}") from None
    if cls.op != op:
        raise DataError(f"{master}: /stats/{label} is a {op} step, the config's {where} "
                        f"is {cls.op}")
    return cls, config


def _fitted(master: str, value: list, names_out: list) -> list:
    """Each ``(label, cls, config, stats)`` of ``value`` rebuilt fitted, in chain order.

    The features a step receives are those the step before it gives; the first
    step's are the ``feature_names_in`` of the first step that stored them (steps
    before it keep the names), else the output's. They must be the names each step
    stored, and the chain must end in the output's names.
    """
    names = names_out
    for _, _, _, stats in reversed(value):
        names = _names(stats["feature_names_in"]) if "feature_names_in" in stats else names
    fitted = []
    for label, cls, config, stats in value:
        if "feature_names_in" in stats and _names(stats["feature_names_in"]) != names:
            raise DataError(f"{master}: the replayed steps give features {names} before "
                            f"/stats/{label}, fitted on {_names(stats['feature_names_in'])}")
        try:
            step = cls.from_stats(config, names, stats)
        except KeyError as e:
            raise DataError(f"{master}: /stats/{label} has no {e.args[0]!r} (not what the "
                            f"config's step saves)") from None
        except (DataError, ConfigError) as e:
            raise DataError(f"{master}: /stats/{label}: {e}") from None
        step.where = label
        names = step.feature_names_out_
        fitted.append((label, step))
    if names != names_out:
        raise DataError(f"{master}: the replayed steps give features {names}, the dataset "
                        f"has {names_out}")
    return fitted


__all__ = ["Transform"]
