"""``categorical``: global vocabularies, rare categories into "other", codes or one-hot features."""

import numpy as np

from ..errors import DataError
from ..schema import Param, fraction, list_of, non_negative
from ._columns import CAT_PREFIX, categorical_column, categorical_names, names_array
from .base import Step, register_step
from .sketch import allmerge


def _merge_counts(a: dict, b: dict) -> dict:
    out = {}
    for name in sorted(set(a) | set(b)):
        ca, cb = a.get(name, {}), b.get(name, {})
        out[name] = {k: ca.get(k, 0) + cb.get(k, 0) for k in set(ca) | set(cb)}
    return out


@register_step
class Categorical(Step):
    """Encode raw categorical columns into numeric features, with a global vocabulary.

    Config::

        { op = "categorical", columns = ["color"], encoding = "onehot",
          min_count = 5, min_frequency = 0.0, other = "other" }

    The raw values of column ``c`` arrive in ``chunk.extras["cat:c"]`` as str
    (``""`` = missing). Fit counts every category over the whole layer (per
    rank, then one ``allgather``; integer counts, so independent of the
    layout). The vocabulary is the categories with at least ``min_count``
    rows and at least ``min_frequency`` of the column's non-missing rows,
    sorted by their Unicode code points; the others go to one ``other``
    bucket, placed last (present only when some category is rare).

    ``encoding = "onehot"`` appends one 0/1 feature per vocabulary entry,
    named ``c=value`` (``c=<other>`` for the bucket); a missing value gives all
    zeros. ``encoding = "codes"`` appends one feature ``c`` holding the index
    in the vocabulary, NaN for a missing value. New features follow the
    existing ones, columns in the order of ``columns`` (default: every raw
    categorical column, sorted by name). At inference an unseen category maps
    to the ``other`` bucket if there is one, else it is treated as missing.
    """

    op = "categorical"
    needs_fit = True
    params = {
        "columns": Param(list, [], check=list_of(str), doc="raw categorical columns; empty = all"),
        "encoding": Param(str, "onehot", choices=("onehot", "codes"), doc="how categories become features"),
        "min_count": Param(int, 1, check=non_negative, doc="rows a category needs to be kept"),
        "min_frequency": Param(float, 0.0, check=fraction,
                               doc="fraction of non-missing rows a category needs to be kept"),
        "other": Param(str, "other", doc="name of the bucket of rare categories"),
    }

    def _columns(self, chunk):
        return list(self.config["columns"]) or categorical_names(chunk)

    def fit_layer(self, ctx, chunks):
        local = None
        names = None
        for c in chunks:
            cols = self._columns(c)
            if names is None:
                names = cols
            elif cols != names:
                raise DataError(f"categorical: {c.source} has categorical columns {cols}, "
                                f"earlier chunks {names}")
            counts = {}
            for name in cols:
                v = categorical_column(c, name, "categorical", self.feature_names_in_)
                u, n = np.unique(v[v != ""], return_counts=True)
                counts[name] = dict(zip(u.tolist(), n.tolist()))
            local = counts if local is None else _merge_counts(local, counts)
        all_names = [n for n in ctx.comm.allgather(names) if n is not None]
        if any(n != all_names[0] for n in all_names):
            raise DataError(f"categorical: ranks see different categorical columns: {all_names}")
        self.set_fitted((all_names[0] if all_names else list(self.config["columns"]),
                         allmerge(ctx.comm, local, _merge_counts) or {}))

    def set_fitted(self, state):
        names, counts = state if state is not None else (list(self.config["columns"]), {})
        cfg = self.config
        self.categories_, self.other_, self.counts_ = {}, {}, {}
        out = list(self.feature_names_in_)
        for name in names:
            c = counts.get(name, {})
            total = sum(c.values())
            cats = sorted(c)
            kept = [k for k in cats if c[k] >= cfg["min_count"] and c[k] >= cfg["min_frequency"] * total]
            rare = len(kept) < len(cats)
            if rare and cfg["other"] in kept:
                raise DataError(f"categorical: column {name!r} has a category named "
                                f"{cfg['other']!r}, the name of the rare bucket; set other = "
                                f"another name")
            self.categories_[name] = kept
            self.other_[name] = rare
            self.counts_[name] = [c[k] for k in kept] + ([sum(c[k] for k in cats if k not in kept)]
                                                         if rare else [])
            vocab = kept + ([cfg["other"]] if rare else [])
            if cfg["encoding"] == "onehot":
                out += [f"{name}={v}" for v in vocab]
            else:
                out.append(name)
        self.columns_ = list(names)
        self.feature_names_out_ = out

    def encode(self, name: str, values: np.ndarray) -> np.ndarray:
        """Codes (float64, NaN = missing) of raw values of column ``name``."""
        kept = np.array(self.categories_[name], dtype=str)
        v = np.asarray(values, dtype=str)
        return encode_codes(v, kept, self.other_[name])

    def apply(self, chunk):
        if not self.columns_:
            return chunk, {}
        parts = [chunk.features]
        for name in self.columns_:
            codes = self.encode(name, categorical_column(chunk, name, "categorical",
                                                         self.feature_names_in_))
            parts.append(codes_to_features(codes, len(self.categories_[name]) + self.other_[name],
                                           self.config["encoding"], chunk.features.dtype))
        return chunk.with_features(np.hstack(parts)), {}

    def stats(self):
        out = {"feature_names_in": names_array(self.feature_names_in_),
               "columns": names_array(self.columns_),
               "onehot": np.bool_(self.config["encoding"] == "onehot")}
        for name in self.columns_:
            out[f"categories/{name}"] = names_array(self.categories_[name])
            out[f"other/{name}"] = np.bool_(self.other_[name])
            out[f"counts/{name}"] = np.array(self.counts_[name], dtype=np.int64)
        return out


def encode_codes(values: np.ndarray, kept: np.ndarray, other: bool) -> np.ndarray:
    """Index of each value in the sorted ``kept`` (``len(kept)`` = other bucket; NaN = missing)."""
    codes = np.full(len(values), np.nan)
    if len(kept):
        pos = np.searchsorted(kept, values)
        posc = np.minimum(pos, len(kept) - 1)
        hit = (pos < len(kept)) & (kept[posc] == values)
        codes[hit] = pos[hit]
    else:
        hit = np.zeros(len(values), dtype=bool)
    if other:
        codes[~hit & (values != "")] = len(kept)
    return codes


def codes_to_features(codes: np.ndarray, width: int, encoding: str, dtype) -> np.ndarray:
    """Codes as one feature (``codes``) or ``width`` 0/1 features (``onehot``)."""
    if encoding == "codes":
        return codes.astype(dtype)[:, None]
    out = np.zeros((len(codes), width), dtype=dtype)
    ok = ~np.isnan(codes)
    out[np.flatnonzero(ok), codes[ok].astype(np.intp)] = 1
    return out


__all__ = ["Categorical", "CAT_PREFIX", "encode_codes", "codes_to_features"]
