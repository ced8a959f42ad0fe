"""The files of a checkpoint folder (:mod:`hpcprep.stages.checkpoint`): names, atomic writes,
removal of only what hpcprep wrote, and fitted step attributes as JSON plus arrays (never pickled)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import zlib

import numpy as np

FORMAT = "hpcprep-checkpoint"
INFO = "checkpoint.json"
#: Files hpcprep writes into a checkpoint folder (``.tmp``: one being written).
FILE_NAME = re.compile(r"(checkpoint\.json|layer-\d{3}\.(json|npz)|"
                       r"layer-\d{3}-step-\d{3}-part-\d{5,}\.npy)(\.tmp)?")
#: Step attributes that are caches, rebuilt on use: never saved.
CACHES = frozenset({"_cuts"})
#: Per step op, the attribute holding the sorted global ids of rows of this rank (saved per rank).
ROW_IDS = {"dedup": "drop_ids_"}


def checkpoint_path(output: str) -> str:
    """``<parent>/.<name>.checkpoint`` of the output folder ``output``."""
    parent, name = os.path.split(os.path.abspath(output))
    return os.path.join(parent, f".{name}.checkpoint")


# ---- files -----------------------------------------------------------------------------------
def write_atomic(path: str, write) -> None:
    """Write ``path`` through ``write(fh)`` into ``path.tmp``, then rename it into place."""
    with open(path + ".tmp", "wb") as fh:
        write(fh)
    os.replace(path + ".tmp", path)


def crc32_of(path: str) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def has_file(folder: str, name: str, size: int) -> bool:
    path = os.path.join(folder, name)
    return FILE_NAME.fullmatch(name) is not None and not os.path.islink(path) \
        and os.path.isfile(path) and os.path.getsize(path) == size


def is_checkpoint(folder: str) -> bool:
    """Whether ``folder`` is an hpcprep checkpoint: its ``checkpoint.json`` says so and every
    entry is a file of a checkpoint's names (links are never hpcprep's)."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    if any(not (e.is_file(follow_symlinks=False) and FILE_NAME.fullmatch(e.name))
           for e in os.scandir(folder)):
        return False
    return read_json(os.path.join(folder, INFO)).get("format") == FORMAT


def read_json(path: str) -> dict:
    try:
        with open(path) as fh:
            out = json.load(fh)
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def remove_checkpoint(folder: str) -> None:
    """Delete the files hpcprep wrote in a checkpoint folder, then the folder if it is empty."""
    with contextlib.suppress(OSError):
        for e in os.scandir(folder):
            if e.is_file(follow_symlinks=False) and FILE_NAME.fullmatch(e.name):
                with contextlib.suppress(OSError):
                    os.remove(e.path)
    with contextlib.suppress(OSError):
        os.rmdir(folder)


# ---- fitted attributes <-> JSON + arrays (never pickled) ---------------------------------------
def encode(value, arrays: dict):
    """A JSON tree of ``value``; its arrays go into ``arrays`` (saved with ``np.savez``)."""
    def put(a, tag):
        name = f"a{len(arrays)}"
        arrays[name] = a
        return {tag: name}

    if isinstance(value, np.ndarray):
        if not value.dtype.hasobject:
            return put(value, "$a")
        if all(isinstance(v, str) for v in value.flat):
            return put(value.astype(str), "$o")
    elif isinstance(value, np.generic):
        return put(np.asarray(value), "$g")
    elif value is None or isinstance(value, (bool, int, float, str)):
        return value
    elif isinstance(value, list):
        return [encode(v, arrays) for v in value]
    elif isinstance(value, tuple):
        return {"$t": [encode(v, arrays) for v in value]}
    elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$d": {k: encode(v, arrays) for k, v in value.items()}}
    raise TypeError(f"cannot checkpoint a value of type {type(value).__name__}")


def decode(tree, arrays):
    """The value :func:`encode` saved as ``tree`` (``arrays``: the loaded ``.npz``)."""
    if isinstance(tree, list):
        return [decode(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    (tag, v), = tree.items()
    if tag == "$a":
        return arrays[v]
    if tag == "$o":
        return arrays[v].astype(object)
    if tag == "$g":
        return arrays[v][()]
    if tag == "$t":
        return tuple(decode(x, arrays) for x in v)
    return {k: decode(x, arrays) for k, x in v.items()}


def fitted_state(step) -> dict:
    """The attributes of a fitted step that a checkpoint saves (not its config, caches or
    per-rank row ids)."""
    skip = {"config", "where", ROW_IDS.get(step.op)} | CACHES
    return {k: v for k, v in vars(step).items() if k not in skip}


def id_ranges(descs) -> list[list[int]]:
    """The global id ranges ``[lo, hi)`` of chunks, adjacent ones merged."""
    out: list[list[int]] = []
    for lo, hi in sorted((d.first_id, d.first_id + d.rows) for d in descs):
        if out and out[-1][1] == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    return out


def ids_within(ids: np.ndarray, ranges) -> np.ndarray:
    """The entries of ``ids`` inside any of the sorted, disjoint ``[lo, hi)`` ``ranges``."""
    if ranges is None or not len(ids):
        return ids
    lo = np.array([r[0] for r in ranges], dtype=np.int64)
    hi = np.array([r[1] for r in ranges], dtype=np.int64)
    at = np.searchsorted(lo, ids, side="right") - 1
    return ids[(at >= 0) & (ids < hi[np.maximum(at, 0)])]


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
