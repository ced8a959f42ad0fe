"""Resolving the ``columns`` of a step: numeric features by name or index, categorical by name.

Raw categorical columns travel in ``chunk.extras["cat:<name>"]`` as arrays of
str, ``""`` marking a missing value (the CSV reader's convention). Category codes
(``categorical`` with ``encoding = "codes"`` or ``"hash"``) travel in
``chunk.extras["codes"]``, int64 of shape (n, code columns so far).
"""

import numpy as np

from ..errors import ConfigError, DataError

CAT_PREFIX = "cat:"
#: The extras key of the int64 category codes (one column per encoded column, in chain order).
CODES = "codes"


def split_columns(columns, feature_names, op):
    """Split ``columns`` into feature indices and categorical names.

    Parameters
    ----------
    columns : list of str or int
        Names or indices; empty means every feature (and every categorical column).
    feature_names : list of str
    op : str
        The step, for messages.

    Returns
    -------
    features : ndarray of intp, or None
        Indices of the chosen features; None means all of them.
    categorical : list of str, or None
        Chosen names that are not features (looked up in the chunk's
        categorical columns when applied); None means all of them.
    """
    if not columns:
        return None, None
    idx, cats = [], []
    for c in columns:
        if isinstance(c, int):
            if not 0 <= c < len(feature_names):
                raise ConfigError(f"{op}.columns: index {c} out of range 0..{len(feature_names) - 1}")
            idx.append(c)
        elif c in feature_names:
            idx.append(feature_names.index(c))
        else:
            cats.append(c)
    return np.array(idx, dtype=np.intp), cats


def categorical_names(chunk) -> list[str]:
    """Names of the chunk's raw categorical columns, sorted."""
    return sorted(k[len(CAT_PREFIX):] for k in chunk.extras if k.startswith(CAT_PREFIX))


def categorical_column(chunk, name: str, op: str, feature_names=()) -> np.ndarray:
    """The raw values of categorical column ``name`` as an array of str.

    Raises
    ------
    ConfigError
        Naming the column when it is neither a feature nor a categorical column.
    """
    key = CAT_PREFIX + name
    if key not in chunk.extras:
        have = categorical_names(chunk)
        raise ConfigError(f"{op}.columns: no column named {name!r}; features: "
                          f"{', '.join(feature_names) or '(none)'}; categorical: "
                          f"{', '.join(have) or '(none)'}")
    v = chunk.extras[key]
    if v.dtype.kind == "U":
        return v
    if v.dtype.kind == "S":
        try:
            return np.char.decode(v, "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{chunk.source}: categorical column {name!r} is not valid UTF-8") from None
    return np.array(["" if e is None else str(e) for e in v], dtype=str)


def names_array(names) -> np.ndarray:
    """Feature names as an array h5py stores as variable-length strings (for ``stats()``)."""
    import h5py

    return np.array(list(names), dtype=h5py.string_dtype())
