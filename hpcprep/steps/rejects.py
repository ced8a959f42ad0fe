"""The rejects file: every row a standardization step dropped, with its step and reason.

With ``[[standardize]] rejects = true`` each rank of the layer appends the rows
its steps drop (final pass only) to its own part file
``<output temp>/rejects.parts/layer-<L>-rank-<R>.h5``; at the end rank 0 merges
the parts into ``rejects.h5`` in the output and removes them.

Layout of ``rejects.h5`` (every dataset sorted by global row id, so the file
is the same for every layout)::

    /ids      int64 (n,)   global row id
    /step     str   (n,)   step label "<layer>.<index>.<op>"
    /reason   str   (n,)   why it was dropped ("missing value", "duplicate", "|z| > 5", ...)
    /file     str   (n,)   input file the row came from
    /row      int64 (n,)   row (HDF5/npy: 0-based row in the file; CSV: the reader's line number)
    /steps/<label>/ids       int64 (n_s,)
    /steps/<label>/features  (n_s, d_s)  the row's features as they entered the step
                                          (attribute feature_names)
    /steps/<label>/labels    (n_s,)       the row's label, if the input has one
    /input/ids     int64 (n_i,)  records the CSV reader dropped (malformed lines), by id
    /input/line    int64 (n_i,)  physical line in the file (header = 1)
    /input/file    str   (n_i,)
    /input/reason  str   (n_i,)  "malformed line: wrong number of fields", ...
    /input/column  str   (n_i,)  the column that did not parse ("" for other reasons)
    /input/text    str   (n_i,)  the raw line, cut to 1024 bytes (invalid UTF-8 as \\xNN)
    attrs: counts (JSON {label: {reason: n}})

Reader drops are also in the flat datasets, with step ``"input"`` and ``row``
the line. The input ranks write them to ``rejects.parts/input-rank-<R>.h5``
when :func:`rejects_enabled` is true.
"""

import glob
import json
import os
import shutil

import h5py
import numpy as np

from ..config import RunConfig

PARTS = "rejects.parts"
INPUT = "input"  # the group of records the reader dropped
_STR = h5py.string_dtype()


class RejectsWriter:
    """Appends the rows dropped on this rank to its part file (opened per write, so nothing stays open).

    Parameters
    ----------
    path : str
        The part file of this rank and layer.
    """

    def __init__(self, path: str):
        self.path = path
        self.rows = 0

    def write(self, label: str, chunk, rejected, feature_names) -> None:
        """Append the rows ``rejected = [(positions, reason), ...]`` of ``chunk`` under ``label``."""
        if not rejected:
            return
        pos = np.concatenate([p for p, _ in rejected])
        if not len(pos):
            return
        reasons = np.concatenate([np.full(len(p), r, dtype=object) for p, r in rejected])
        cols = {
            "ids": chunk.ids[pos],
            "row": chunk.rows_in_source()[pos].astype(np.int64),
            "reason": reasons,
            "file": np.full(len(pos), chunk.source, dtype=object),
            "features": chunk.features[pos],
        }
        if chunk.labels is not None:
            cols["labels"] = chunk.labels[pos]
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with h5py.File(self.path, "a") as f:
            g = f.require_group(label)
            if "feature_names" not in g.attrs:
                g.attrs["feature_names"] = np.array(list(feature_names), dtype=_STR)
            for name, v in cols.items():
                _append(g, name, v)
        self.rows += len(pos)


    def write_records(self, ids, lines, reasons, columns, path: str, texts) -> None:
        """Append records the CSV reader dropped (group ``input``): ids, lines, reasons, raw text."""
        if not len(ids):
            return
        n = len(ids)
        cols = {"ids": np.asarray(ids, np.int64), "row": np.asarray(lines, np.int64),
                "reason": np.array(list(reasons), dtype=object),
                "file": np.full(n, path, dtype=object),
                "column": np.array(list(columns), dtype=object),
                "text": np.array(list(texts), dtype=object)}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with h5py.File(self.path, "a") as f:
            g = f.require_group(INPUT)
            for name, v in cols.items():
                _append(g, name, v)
        self.rows += n


def rejects_enabled(cfg: RunConfig) -> bool:
    """Whether the run writes ``rejects.h5``: ``input.rejects`` or any layer's ``rejects``."""
    return bool(cfg.input.rejects) or any(t["rejects"] for t in cfg.standardize)


def input_part_path(temp_join, rank: int) -> str:
    """Path of the part file of the records the reader on world rank ``rank`` dropped."""
    return temp_join(PARTS, f"input-rank-{rank:05d}.h5")


def _append(g, name, v):
    dt = _STR if v.dtype == object else v.dtype
    if name not in g:
        g.create_dataset(name, data=v, dtype=dt, maxshape=(None, *v.shape[1:]), chunks=True)
        return
    ds = g[name]
    n = ds.shape[0]
    ds.resize(n + len(v), axis=0)
    ds[n:] = v


def part_path(temp_join, layer: int, rank: int) -> str:
    """Path of the part file of ``layer`` on world rank ``rank`` (``temp_join`` = ``location.join``)."""
    return temp_join(PARTS, f"layer-{layer:03d}-rank-{rank:05d}.h5")


def merge_rejects(parts_dir: str, out_path: str, counts: dict) -> int:
    """Merge every part file under ``parts_dir`` into ``out_path``; remove the parts. Return rows.

    Memory: the merge holds the flat columns of all rejected rows, and the
    feature rows of one step at a time.
    """
    parts = sorted(glob.glob(os.path.join(parts_dir, "*.h5")))
    labels = set()
    flat = {"ids": [], "step": [], "reason": [], "file": [], "row": []}
    for p in parts:
        with h5py.File(p, "r") as f:
            for label in f:
                g = f[label]
                if label != INPUT:
                    labels.add(label)
                n = g["ids"].shape[0]
                flat["ids"].append(g["ids"][()])
                flat["row"].append(g["row"][()])
                flat["reason"].append(g["reason"].asstr()[()].astype(object))
                flat["file"].append(g["file"].asstr()[()].astype(object))
                flat["step"].append(np.full(n, label, dtype=object))
    with h5py.File(out_path, "w") as out:
        cat = {k: (np.concatenate(v) if v else np.empty(0, np.int64 if k in ("ids", "row") else object))
               for k, v in flat.items()}
        order = np.argsort(cat["ids"], kind="stable")
        for k, v in cat.items():
            out.create_dataset(k, data=v[order], dtype=_STR if v.dtype == object else v.dtype)
        out.attrs["counts"] = json.dumps(counts)
        _merge_input(parts, out)
        steps = out.create_group("steps")
        for label in sorted(labels, key=_label_key):
            pieces = {"ids": [], "features": [], "labels": []}
            names = None
            for p in parts:
                with h5py.File(p, "r") as f:
                    if label not in f:
                        continue
                    g = f[label]
                    names = g.attrs["feature_names"]
                    for k in pieces:
                        if k in g:
                            pieces[k].append(g[k][()])
            sg = steps.create_group(label)
            ids = np.concatenate(pieces["ids"])
            o = np.argsort(ids, kind="stable")
            sg["ids"] = ids[o]
            sg["features"] = np.concatenate(pieces["features"])[o]
            if pieces["labels"]:
                sg["labels"] = np.concatenate(pieces["labels"])[o]
            sg["features"].attrs["feature_names"] = np.array(list(names), dtype=_STR)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return int(len(cat["ids"]))


def _merge_input(parts, out) -> None:
    """Write ``/input``: the reader's dropped records of every part, sorted by id."""
    pieces = {k: [] for k in ("ids", "row", "file", "reason", "column", "text")}
    for p in parts:
        with h5py.File(p, "r") as f:
            if INPUT not in f:
                continue
            for k in pieces:
                v = f[INPUT][k]
                pieces[k].append(v[()] if k in ("ids", "row") else v.asstr()[()].astype(object))
    if not pieces["ids"]:
        return
    cat = {k: np.concatenate(v) for k, v in pieces.items()}
    order = np.argsort(cat["ids"], kind="stable")
    g = out.create_group(INPUT)
    for k, v in cat.items():
        g.create_dataset("line" if k == "row" else k, data=v[order],
                         dtype=_STR if v.dtype == object else v.dtype)


def _label_key(label: str):
    layer, index, op = label.split(".", 2)
    return int(layer), int(index), op
