"""``categorical``: global vocabularies, rare categories into "other", one-hot features or int64 codes."""

from dataclasses import replace

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError, DataError
from ..schema import Param, fraction, list_of, non_negative
from ._columns import CAT_PREFIX, CODES, categorical_column, categorical_names, names_array
from .base import Step, register_step
from .vocab import LocalCounts, build_vocabulary, hash_codes

#: Encodings whose codes go to the int64 ``codes`` columns of the output, not to the features.
CODE_ENCODINGS = ("codes", "hash")
_NO_VOCAB = (np.zeros(0, dtype="<U1"), np.zeros(0, dtype=np.int64), 0)


@register_step
class Categorical(Step):
    """Encode raw categorical columns into one-hot features or int64 codes.

    Config::

        { op = "categorical", columns = ["color"], encoding = "onehot",
          min_count = 5, min_frequency = 0.0, max_categories = 0, other = "other" }
        { op = "categorical", columns = ["url"], encoding = "hash", buckets = 1048576 }

    The raw values of column ``c`` arrive in ``chunk.extras["cat:c"]`` as str
    (``""`` = missing). ``onehot`` and ``codes`` fit a vocabulary over the whole
    layer without any rank holding every category (:mod:`hpcprep.steps.vocab`:
    partial counts go to an owner rank by hash; integer counts, so independent of
    the layout): the categories with at least ``min_count`` rows and at least
    ``min_frequency`` of the column's non-missing rows, at most ``max_categories``
    of them (most frequent first, ties by code point; 0 = no limit), sorted by
    their Unicode code points; the others go to one ``other`` bucket, placed last
    (present only when some category is left out).

    ``encoding = "onehot"`` appends one 0/1 feature per vocabulary entry, named
    ``c=value`` (``c=<other>`` for the bucket); a missing value gives all zeros.
    ``encoding = "codes"`` gives the index in the vocabulary, ``"hash"`` the
    bucket ``category_hash(value, hash_key) mod buckets`` (no vocabulary, no fit
    pass); both are int64 codes, -1 for a missing value, that go to
    ``chunk.extras["codes"]`` (one column per encoded column, after those of
    earlier steps) and to the output's ``codes`` dataset, not to the features.
    Columns are in the order of ``columns`` (default: every raw categorical
    column, sorted by name). At inference an unseen category maps to the
    ``other`` bucket if there is one, else it is treated as missing.
    """

    op = "categorical"
    needs_fit = True
    changes_values = True
    #: ``encoding = "codes"`` of datasets written before int64 codes: the index as one float
    #: feature named as the column (set by :meth:`set_stats` from such a dataset's stats).
    codes_as_feature = False
    params = {
        "columns": Param(list, [], check=list_of(str), doc="raw categorical columns; empty = all"),
        "encoding": Param(str, "onehot", choices=("onehot", "codes", "hash"),
                          doc="one-hot features, or int64 codes (vocabulary index or hash bucket)"),
        "min_count": Param(int, 1, check=non_negative, doc="rows a category needs to be kept"),
        "min_frequency": Param(float, 0.0, check=fraction,
                               doc="fraction of non-missing rows a category needs to be kept"),
        "max_categories": Param(int, 0, check=non_negative,
                                doc="most categories kept per column, most frequent first; 0 = all"),
        "other": Param(str, "other", doc="name of the bucket of rare categories"),
        "buckets": Param(int, 0, check=non_negative, doc="encoding = \"hash\": number of buckets"),
        "hash_key": Param(int, 0, check=non_negative, doc="encoding = \"hash\": key of the hash"),
    }

    def __init__(self, **config):
        super().__init__(**config)
        hashed = config["encoding"] == "hash"
        if hashed != (config["buckets"] > 0):
            raise ConfigError('categorical.buckets: encoding = "hash" needs buckets >= 1, and '
                              'buckets is only for encoding = "hash"')
        vocab_keys = config["min_count"] != 1 or config["min_frequency"] or config["max_categories"]
        if hashed and vocab_keys:
            raise ConfigError('categorical: min_count, min_frequency and max_categories need a '
                              'vocabulary; encoding = "hash" has none')
        self.needs_fit = not hashed   # a hash needs no vocabulary: no fit pass

    def _columns(self, chunk):
        return list(self.config["columns"]) or categorical_names(chunk)

    def bind(self, feature_names):
        names = super().bind(feature_names)
        if self.config["encoding"] == "hash":
            self.columns_ = list(self.config["columns"])   # empty: every column of the chunk
        return names

    def fit_layer(self, ctx, chunks):
        local, names = {}, None
        for c in chunks:
            cols = self._columns(c)
            if names is None:
                names = cols
            elif cols != names:
                raise DataError(f"categorical: {c.source} has categorical columns {cols}, "
                                f"earlier chunks {names}")
            for name in cols:
                v = categorical_column(c, name, "categorical", self.feature_names_in_)
                local.setdefault(name, LocalCounts()).add(v)
        all_names = [n for n in ctx.comm.allgather(names) if n is not None]
        if any(n != all_names[0] for n in all_names):
            raise DataError(f"categorical: ranks see different categorical columns: {all_names}")
        names = all_names[0] if all_names else list(self.config["columns"])
        cfg, vocab = self.config, {}
        for name in names:
            values, counts = local[name].result() if name in local else _NO_VOCAB[:2]
            vocab[name] = build_vocabulary(ctx.comm, values, counts, cfg["min_count"],
                                           cfg["min_frequency"], cfg["max_categories"])
        self.set_fitted((names, vocab))

    def set_fitted(self, state):
        """``state``: ``(columns, {column: (kept categories, their counts, non-missing rows)})``."""
        names, vocab = state if state is not None else (list(self.config["columns"]), {})
        cfg = self.config
        self.categories_, self.other_, self.counts_, self._kept = {}, {}, {}, {}
        out = list(self.feature_names_in_)
        for name in names:
            kept, counts, total = vocab.get(name, _NO_VOCAB)
            rare = int(counts.sum()) < total
            self.categories_[name] = kept.tolist()
            if rare and cfg["other"] in self.categories_[name]:
                raise DataError(f"categorical: column {name!r} has a category named "
                                f"{cfg['other']!r}, the name of the rare bucket; set other = "
                                f"another name")
            self._kept[name] = kept
            self.other_[name] = rare
            self.counts_[name] = counts.tolist() + ([total - int(counts.sum())] if rare else [])
            if cfg["encoding"] == "onehot":
                out += [f"{name}={v}" for v in self.categories_[name] + [cfg["other"]] * rare]
        self.columns_ = list(names)
        self.feature_names_out_ = out

    def encode(self, name: str, values: np.ndarray) -> np.ndarray:
        """Codes (float64, NaN = missing) of raw values of column ``name``."""
        return encode_codes(np.asarray(values, dtype=str), self._kept[name], self.other_[name])

    def codes(self, name: str, values: np.ndarray) -> np.ndarray:
        """int64 codes of raw values of column ``name`` (-1 = missing): vocabulary index or bucket."""
        cfg = self.config
        if cfg["encoding"] == "hash":
            return hash_codes(values, cfg["buckets"], cfg["hash_key"])
        return encode_index(np.asarray(values, dtype=str), self._kept[name], self.other_[name])

    @property
    def writes_codes(self) -> bool:
        """Whether the step gives int64 codes (``chunk.extras["codes"]``) rather than features."""
        return self.config["encoding"] in CODE_ENCODINGS and not self.codes_as_feature

    def apply(self, chunk):
        enc = self.config["encoding"]
        columns = self._columns(chunk) if enc == "hash" else self.columns_
        if not columns:
            return chunk, {}
        raw = {name: categorical_column(chunk, name, "categorical", self.feature_names_in_)
               for name in columns}
        if self.writes_codes:
            return with_codes(chunk, [self.codes(name, v) for name, v in raw.items()]), {}
        parts = [chunk.features]
        for name, v in raw.items():
            parts.append(codes_to_features(self.encode(name, v),
                                           len(self.categories_[name]) + self.other_[name],
                                           enc, chunk.features.dtype))
        return chunk.with_features(np.hstack(parts)), {}

    def stats(self):
        enc = self.config["encoding"]
        out = {"feature_names_in": names_array(self.feature_names_in_),
               "columns": names_array(self.columns_),
               "onehot": np.bool_(enc == "onehot")}
        if enc != "onehot":
            out["encoding"] = enc
        if enc == "hash":
            out["buckets"] = np.int64(self.config["buckets"])
            out["hash_key"] = np.int64(self.config["hash_key"])
            return out
        for name in self.columns_:
            out[f"categories/{name}"] = names_array(self.categories_[name])
            out[f"other/{name}"] = np.bool_(self.other_[name])
            out[f"counts/{name}"] = np.array(self.counts_[name], dtype=np.int64)
        return out

    def set_stats(self, stats):
        enc = self.config["encoding"]
        if enc == "hash":
            if (int(stats["buckets"]), int(stats["hash_key"])) != (self.config["buckets"],
                                                                   self.config["hash_key"]):
                raise DataError("categorical: stats and config disagree on buckets or hash_key")
            return
        names, vocab = [str(c) for c in np.atleast_1d(stats["columns"])], {}
        for name in names:
            kept = np.asarray(stats[f"categories/{name}"], dtype=str)
            counts = np.asarray(stats[f"counts/{name}"], dtype=np.int64)
            vocab[name] = (kept, counts[:len(kept)], int(counts.sum()))
        self.set_fitted((names, vocab))
        if enc == "codes" and "encoding" not in stats:   # written before int64 codes
            self.codes_as_feature = True
            self.feature_names_out_ += names


def encode_index(values: np.ndarray, kept: np.ndarray, other: bool) -> np.ndarray:
    """Index of each value in the sorted ``kept`` (``len(kept)`` = other bucket; -1 = missing)."""
    codes = np.full(len(values), -1, dtype=np.int64)
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


def encode_codes(values: np.ndarray, kept: np.ndarray, other: bool) -> np.ndarray:
    """:func:`encode_index` as float64 with NaN for a missing value (the one-hot path)."""
    idx = encode_index(values, kept, other)
    codes = idx.astype(np.float64)
    codes[idx < 0] = np.nan
    return codes


def codes_to_features(codes: np.ndarray, width: int, encoding: str, dtype) -> np.ndarray:
    """Codes as one feature (``codes``: datasets written before int64 codes) or ``width``
    0/1 features (``onehot``)."""
    if encoding == "codes":
        return codes.astype(dtype)[:, None]
    out = np.zeros((len(codes), width), dtype=dtype)
    ok = ~np.isnan(codes)
    out[np.flatnonzero(ok), codes[ok].astype(np.intp)] = 1
    return out


def with_codes(chunk, columns: list) -> "object":
    """The chunk with int64 code ``columns`` appended to ``chunk.extras["codes"]``."""
    block = np.stack(columns, axis=1) if columns else np.zeros((len(chunk), 0), np.int64)
    old = chunk.extras.get(CODES)
    if old is not None:
        block = np.hstack([old, block])
    return replace(chunk, extras={**chunk.extras, CODES: block})


def code_columns(cfg: RunConfig) -> list[str]:
    """Names of the int64 code columns a run writes (the output's ``codes``), in chain order:
    per ``categorical`` step with ``encoding = "codes"`` or ``"hash"``, its ``columns``
    (default: ``input.categorical``, sorted by name, as the reader hands them)."""
    out = []
    for table in cfg.standardize:
        for step in table["steps"]:
            if step.get("op") == "categorical" and step.get("encoding", "onehot") in CODE_ENCODINGS:
                out += list(step.get("columns") or sorted(cfg.input.categorical))
    return out


__all__ = ["Categorical", "CAT_PREFIX", "CODE_ENCODINGS", "code_columns", "codes_to_features",
           "encode_codes", "encode_index", "with_codes"]
