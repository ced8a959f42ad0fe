"""Apply a run's fitted value transforms to new data (inference).

``Transform.load(out)`` reads ``/stats/<layer>.<index>.<op>/`` of the run's
``data.h5`` and replays, in chain order, the steps that change *values*:
``impute``, ``scale``, ``outliers`` with ``action = "clip"``, ``categorical``,
``select`` and ``reduce``. Steps that only drop rows (``validate``,
``dropna``, ``dedup``, ``outliers`` with ``action = "drop"``) are not replayed:
at inference every row gets an answer.

Examples
--------
>>> from hpcprep.transform import Transform
>>> t = Transform.load("out")                       # doctest: +SKIP
>>> x_model = t.transform(x_raw, categorical={"color": colors})   # doctest: +SKIP
>>> codes = t.codes({"url": urls})          # int64, as the dataset's codes   # doctest: +SKIP
"""

import os

import h5py
import numpy as np

from .errors import DataError
from .steps.categorical import codes_to_features, encode_codes, encode_index
from .steps.vocab import hash_codes

VALUE_OPS = ("impute", "scale", "outliers", "categorical", "select", "reduce")


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


class Transform:
    """The value transforms of a finished run, in chain order.

    Attributes
    ----------
    steps_ : list of (str, str, dict)
        ``(label, op, fitted parameters)`` of each replayed step.
    feature_names_out_ : list of str
        Names of the output features (those of the dataset).
    """

    def __init__(self, steps, feature_names_out):
        self.steps_ = steps
        self.feature_names_out_ = list(feature_names_out)

    @classmethod
    def load(cls, path: str) -> "Transform":
        """Read the fitted parameters from a dataset folder (or its ``data.h5``)."""
        master = os.path.join(path, "data.h5") if os.path.isdir(path) else path
        if not os.path.exists(master):
            raise DataError(f"{path}: no data.h5 (not an hpcprep output folder)")
        steps = []
        with h5py.File(master, "r") as f:
            stats = f.get("stats")
            if stats is None:
                raise DataError(f"{master}: no /stats group")
            names_out = [n.decode() if isinstance(n, bytes) else n for n in stats["feature_names"][()]]
            for label in sorted((k for k in stats if isinstance(stats[k], h5py.Group)), key=_label_key):
                op = _label_key(label)[2]
                params = _read(stats[label])
                if op not in VALUE_OPS or (op == "outliers" and not bool(params.get("clip", False))):
                    continue
                steps.append((label, op, params))
        return cls(steps, names_out)

    def transform(self, x, categorical: dict | None = None, dtype=None) -> np.ndarray:
        """Apply every replayed step to the rows of ``x``.

        Parameters
        ----------
        x : array, shape (n, d_in)
            Numeric features, columns as the run's input features.
        categorical : dict of str -> array of str, optional
            Raw values of each categorical column (needed with a ``categorical`` step).
        dtype : numpy dtype, optional
            Round to this dtype after each step, as the pipeline does with the
            input's feature dtype (pass ``np.float32`` for float32 input to get
            the pipeline's values exactly). Default: float64 throughout.

        Returns
        -------
        ndarray, shape (n, d_out)
        """
        x = np.array(x, dtype=np.float64, copy=True, ndmin=2)
        cast = (lambda a: a.astype(dtype).astype(np.float64)) if dtype is not None else (lambda a: a)
        if dtype is not None:
            x = cast(x)
        for label, op, p in self.steps_:
            x = cast(getattr(self, "_" + op)(x, p, categorical or {}, label))
        return x.astype(dtype) if dtype is not None else x

    @staticmethod
    def _impute(x, p, cats, label):
        nan = np.isnan(x) & p["columns"].astype(bool)
        x[nan] = np.broadcast_to(p["fill"], x.shape)[nan]
        return x

    @staticmethod
    def _scale(x, p, cats, label):
        if "data_min" in p:
            return x * p["scale"] + p["min"]
        if "center" in p:
            return (x - p["center"]) / p["scale"]
        return (x - p["mean"]) / p["std"]

    @staticmethod
    def _outliers(x, p, cats, label):
        return np.clip(x, p["lo"], p["hi"])

    @staticmethod
    def _select(x, p, cats, label):
        return x[:, p["keep"].astype(bool)]

    @staticmethod
    def _reduce(x, p, cats, label):
        return (x - p["mean"]) @ p["components"].T

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
        cols = []
        for label, op, p in self.steps_:
            if op == "categorical" and _int_codes(p):
                cols += [_column_codes(p, name, _values(categorical, name, label))
                         for name in _columns(p, categorical)]
        n = len(next(iter(categorical.values()))) if categorical else 0
        return np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=np.int64)

    @staticmethod
    def _categorical(x, p, cats, label):
        if _int_codes(p):
            return x   # int64 codes, not features: see :meth:`codes`
        encoding, parts = _encoding(p), [x]
        for name in _columns(p, cats):
            kept, other = _vocabulary(p, name)
            codes = encode_codes(_values(cats, name, label), kept, other)
            parts.append(codes_to_features(codes, len(kept) + other, encoding, np.float64))
        return np.hstack(parts)


def _encoding(p: dict) -> str:
    """A categorical step's encoding (datasets written before ``encoding`` was stored: from ``onehot``)."""
    return str(p.get("encoding", "onehot" if bool(p["onehot"]) else "codes"))


def _int_codes(p: dict) -> bool:
    """Whether a categorical step wrote int64 codes (older datasets: codes as a float feature)."""
    return "encoding" in p and _encoding(p) in ("codes", "hash")


def _columns(p: dict, cats: dict) -> list:
    """The step's columns; a hash step with none configured hashes every raw column, sorted."""
    columns = [str(c) for c in np.atleast_1d(p.get("columns", np.array([], dtype=str)))]
    return columns or (sorted(cats) if _encoding(p) == "hash" else [])


def _values(cats: dict, name: str, label: str) -> np.ndarray:
    if name not in cats:
        raise DataError(f"Transform: step {label} needs categorical column {name!r} "
                        f"(pass categorical={{{name!r}: values}})")
    return np.asarray(cats[name], dtype=str)


def _vocabulary(p: dict, name: str):
    kept = np.array(list(np.atleast_1d(p.get(f"categories/{name}", np.array([], dtype=str)))), dtype=str)
    return kept, bool(p[f"other/{name}"])


def _column_codes(p: dict, name: str, values: np.ndarray) -> np.ndarray:
    if _encoding(p) == "hash":
        return hash_codes(values, int(p["buckets"]), int(p["hash_key"]))
    return encode_index(values, *_vocabulary(p, name))


__all__ = ["Transform"]
