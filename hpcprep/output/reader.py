"""Opening an hpcprep dataset safely: the one reader of ``manifest.json``, shards and master.

Every reader goes through here (:func:`hpcprep.open_dataset`, :func:`verify_dataset`
and ``hpcprep inspect``, :func:`read_all`), so all of them refuse the same things
(docs/FORMAT.md, "Readers"):

* a ``manifest.json`` that is not JSON, lacks a key or holds a value of the wrong type;
* a path of the dataset (split folder, master, shard) that is absolute, holds ``..``
  or resolves, symlinks followed, outside the dataset folder;
* a shard that is not a regular file, holds anything but plain datasets (soft or
  external links, external storage, virtual datasets), or whose datasets do not
  match the manifest (names, rows, columns, dtypes; the CRC-32 when asked);
* a master ``data.h5`` whose virtual sources are not exactly the manifest's shards.

A problem is one line ``"<path relative to the dataset folder>: <what is wrong>"``;
:func:`in_folder` and :func:`describe` make an error message of them.

Three modules: this one reads and checks ``manifest.json`` and confines every path
of the dataset to its folder; :mod:`hpcprep.output.pinned` keeps the shard files
open (:class:`~hpcprep.output.pinned.ShardFiles`), so a reader keeps reading the
generation it opened after the folder is replaced; :mod:`hpcprep.output.integrity`
checks shards and master against the manifest
(:func:`~hpcprep.output.integrity.open_shards`,
:func:`~hpcprep.output.integrity.check_master`).
"""

import json
import os
import stat
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError

_MANIFEST_MAX_BYTES = 1 << 26
_NONE = type(None)
#: key -> allowed type(s) of a format_version 1 manifest (int means int, not bool)
_KEYS = {"format": str, "format_version": int, "rows": int, "n_features": int,
         "feature_names": list, "feature_dtype": str, "label": bool, "label_dtype": (str, _NONE),
         "weights": bool, "master": (str, _NONE), "shards": list, "splits": dict}
_SHARD_KEYS = {"path": str, "start": int, "rows": int, "crc32": int}
#: errors h5py and the OS raise on a damaged or unreadable file
FILE_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError)


# -- the manifest -------------------------------------------------------------------------------
def _typed(value, want) -> bool:
    wants = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool):
        return bool in wants
    return isinstance(value, wants)


def _type_name(want) -> str:
    wants = want if isinstance(want, tuple) else (want,)
    names = {str: "a string", int: "an integer", bool: "true/false", list: "a list",
             dict: "an object", _NONE: "null"}
    return " or ".join(names[w] for w in wants)


def _keys(obj: dict, spec: dict, where: str) -> None:
    for key, want in spec.items():
        if key not in obj:
            raise DataError(f"{where}key '{key}' is missing")
        if not _typed(obj[key], want):
            raise DataError(f"{where}'{key}' = {_short(obj[key])} is not {_type_name(want)}")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dtype(text: str, kinds: str, key: str, where: str) -> np.dtype:
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.kind not in kinds or dt.shape:
        raise DataError(f"{where}'{key}' = {_short(text)} is not a numeric dtype")
    return dt


def check_manifest(man, mpath) -> dict:
    """Check a parsed manifest against format_version 1 (docs/FORMAT.md); return it.

    Raises
    ------
    DataError
        Naming ``mpath`` and the first key that is missing or wrong.
    """
    where = f"{mpath}: "
    if not isinstance(man, dict):
        raise DataError(f"{where}not a JSON object")
    if man.get("format") != "hpcprep-dataset":
        raise DataError(f"{where}not an hpcprep dataset manifest (format = {_short(man.get('format'))})")
    _keys(man, _KEYS, where)
    if man["format_version"] != 1:
        raise DataError(f"{where}format_version {man['format_version']} is not supported (1)")
    for key in ("rows", "n_features"):
        if man[key] < 0:
            raise DataError(f"{where}'{key}' = {man[key]} is negative")
    names = man["feature_names"]
    if len(names) != man["n_features"] or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}'feature_names' must be {man['n_features']} strings")
    codes = man.get("code_names", [])
    if not isinstance(codes, list) or not all(isinstance(n, str) for n in codes):
        raise DataError(f"{where}'code_names' must be a list of strings")
    _dtype(man["feature_dtype"], "fiu", "feature_dtype", where)
    if man["label"]:
        if not isinstance(man["label_dtype"], str):
            raise DataError(f"{where}'label_dtype' must name the labels' dtype")
        _dtype(man["label_dtype"], "biuf", "label_dtype", where)
    for k, s in enumerate(man["shards"]):
        at = f"{where}shards[{k}]: "
        if not isinstance(s, dict):
            raise DataError(f"{at}not an object")
        _keys(s, _SHARD_KEYS, at)
        if s["start"] < 0 or s["rows"] < 0 or not 0 <= s["crc32"] < 2**32:
            raise DataError(f"{at}start, rows must be >= 0 and crc32 in [0, 2**32)")
    if not all(isinstance(v, str) for v in man["splits"].values()):
        raise DataError(f"{where}'splits' must map names to folder names")
    if man["splits"] and man["shards"]:
        raise DataError(f"{where}a dataset has either splits or shards, not both")
    if not man["splits"] and man["master"] is None:
        raise DataError(f"{where}'master' is null in a dataset without splits")
    return man


def _read_regular(path, limit: int) -> bytes:
    """The bytes of a regular file (never blocks on a FIFO or device), at most ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{path}: not a regular file")
        if st.st_size > limit:
            raise DataError(f"{path}: {st.st_size} bytes, too large for a manifest")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit + 1)
    finally:
        os.close(fd)


def read_manifest(folder) -> dict:
    """The checked manifest of the dataset folder ``folder`` (see :func:`check_manifest`).

    Raises
    ------
    DataError
        No folder or no ``manifest.json`` (an incomplete dataset), a manifest that
        cannot be read, is not JSON or does not match the format; the message names it.
    """
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not os.path.lexists(mpath):
        hint = "the dataset is incomplete or still being written" if folder.is_dir() \
            else "no such folder"
        raise DataError(f"{mpath}: no manifest.json ({hint})")
    confined(folder, "manifest.json", "manifest", mpath)
    try:
        text = _read_regular(mpath, _MANIFEST_MAX_BYTES)
        man = json.loads(text)
    except OSError as e:
        raise DataError(f"{mpath}: cannot read: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:
        raise DataError(f"{mpath}: not valid JSON ({one_line(e)})") from None
    return check_manifest(man, mpath)


def resolve(path, split=None, leaf: bool = True) -> tuple[Path, dict]:
    """The folder and checked manifest of a dataset, or of its split ``split``.

    With ``leaf`` (the default), a split dataset opened without a split is an error
    that lists the splits. A split folder must resolve inside the dataset folder.
    """
    folder = Path(path)
    man = read_manifest(folder)
    splits = man["splits"]
    if split is not None:
        if split not in splits:
            raise DataError(f"{folder}: no split {split!r} (splits: {', '.join(sorted(splits)) or 'none'})")
        folder = confined(folder, splits[split], f"split {split!r} folder", folder / "manifest.json")
        man = read_manifest(folder)
        if man["splits"]:
            raise DataError(f"{folder / 'manifest.json'}: a split holds splits of its own")
    elif splits and leaf:
        raise DataError(f"{folder}: a split dataset; name a split ({', '.join(sorted(splits))})")
    return folder, man


def confined(folder, rel, what: str, source) -> Path:
    """``folder / rel``, when ``rel`` is a relative path without ``..`` that stays inside ``folder``.

    Raises
    ------
    DataError
        ``"<source>: <what> '<rel>' ..."`` for an absolute path, a ``..`` part, or a
        path whose real path (symlinks followed) leaves the real path of ``folder``.
    """
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise DataError(f"{source}: {what} {_short(rel)} is not a path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or os.path.isabs(rel) or ".." in pure.parts:
        raise DataError(f"{source}: {what} {rel!r} leaves the dataset folder "
                        f"(absolute paths and '..' are refused)")
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, rel))
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise DataError(f"{source}: {what} {rel!r} resolves to {real}, outside the dataset "
                        f"folder {root}")
    return Path(folder) / rel


def column_names(man: dict) -> list[str]:
    """The datasets of each shard, in checksum order: ids, features, [labels], [weights], [codes]."""
    return ["ids", "features"] + ["labels"] * bool(man["label"]) + ["weights"] * bool(man["weights"]) \
        + ["codes"] * ("code_names" in man)


def one_line(exc) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def in_folder(folder, problems: list[str]) -> list[str]:
    """Problems relative to ``folder`` as messages naming the whole path."""
    return [f"{folder}{os.sep}{p}" for p in problems]


def describe(messages: list[str], show: int = 3) -> str:
    """One error line from messages: the first ``show`` distinct ones and how many more."""
    seen = list(dict.fromkeys(messages))
    more = f" (and {len(seen) - show} more)" if len(seen) > show else ""
    return "; ".join(seen[:show]) + more
