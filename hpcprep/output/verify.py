"""Checking a dataset (``verify_dataset``, ``hpcprep inspect``) and reading a small one whole.

All three read through :mod:`hpcprep.output.reader`, the one safe reader that
:func:`hpcprep.open_dataset` uses too.
"""

import json
import os

import h5py
import numpy as np

from ..errors import DataError
from .integrity import open_shards
from .reader import FILE_ERRORS, column_names, describe, in_folder, one_line, read_manifest, resolve

__all__ = ["read_manifest", "verify_dataset", "summarize", "read_all"]


def _check(folder, man: dict, checksums: bool) -> tuple[list[str], bool]:
    """Problems of a dataset without splits (relative to ``folder``), and whether its master is sound."""
    files, problems, master_ok = open_shards(folder, man, checksums)
    files.close()
    return problems, master_ok


def verify_dataset(path, checksums: bool = True) -> dict:
    """Check every shard of a dataset (or every split of a split dataset).

    Parameters
    ----------
    path : path-like
        The dataset folder.
    checksums : bool
        Recompute each shard's crc32 (reads all data once).

    Returns
    -------
    dict
        The manifest, plus ``"problems"``: one line per thing that does not match or
        may not be read (empty if all is well), each starting with the path of the
        file it is about, relative to the dataset folder (``"<split>: ..."`` for a split).

    Raises
    ------
    DataError
        When the manifest (or a split's) is missing, not JSON or malformed, or a split
        folder leaves the dataset folder: there is nothing to check against.
    """
    folder, man = resolve(path, leaf=False)
    return dict(man, problems=_summary(folder, man, checksums, text=False)[1])


def _summary(folder, man: dict, checksums: bool, text: bool = True) -> tuple[list[str], list[str]]:
    """The summary lines (with ``text``) and the problems of a dataset or split dataset."""
    lines = [f"dataset {os.path.abspath(folder)}"]
    if man["splits"]:
        lines.append(f"  splits: {', '.join(man['splits'])}")
        problems = []
        for name in man["splits"]:
            sub_lines, sub_problems = _summary(*resolve(folder, name), checksums, text)
            lines += ["  " + ln for ln in sub_lines]
            problems += [f"{name}: {p}" for p in sub_problems]
    else:
        problems, master_ok = _check(folder, man, checksums)
        if text:
            lines += _describe(folder, man, master_ok)
    if not problems:
        lines.append("verification: OK (every shard present, rows and checksums match the manifest)")
    else:
        lines.append("verification: FAILED\n  " + "\n  ".join(problems))
    return lines, problems


def summarize(path, checksums: bool = True) -> str:
    """Human-readable summary of a dataset: rows, features, shards, stats, counts, verification.

    The last lines are ``verification: OK ...`` or ``verification: FAILED`` and one
    line per problem. Raises DataError (one line naming the file) when the manifest
    cannot be used at all.
    """
    return "\n".join(_summary(*resolve(path, leaf=False), checksums)[0])


def _describe(folder, man: dict, master_ok: bool) -> list[str]:
    """Rows, features, shards and, from a sound master, statistics and drop counts."""
    lines = [f"  rows: {man['rows']:,}   features: {man['n_features']} ({man['feature_dtype']})"
             f"   label: {man['label_dtype'] or 'none'}   seed: {man.get('seed')}"]
    if "code_names" in man:
        codes = man["code_names"]
        lines.append(f"  codes: {len(codes)} int64 column(s) ({', '.join(codes[:8])}"
                     f"{', ...' if len(codes) > 8 else ''})")
    sizes = [s["rows"] for s in man["shards"]]
    lines.append(f"  shards: {len(sizes)} (rows min {min(sizes, default=0):,} / "
                 f"max {max(sizes, default=0):,})")
    if master_ok:
        try:
            lines += _master_lines(os.path.join(folder, man["master"]), man)
        except (*FILE_ERRORS, AttributeError) as e:  # attrs of an unexpected shape
            lines.append(f"  {man['master']}: cannot read the statistics: {one_line(e)}")
    return lines


def _master_lines(master: str, man: dict) -> list[str]:
    lines = []
    with h5py.File(master, "r") as f:
        if "stats" in f and "mean" in f["stats"]:
            mean, std = f["stats/mean"][()], f["stats/std"][()]
            names = man["feature_names"]
            show = min(len(names), 8, len(mean), len(std))
            lines.append("  feature      mean        std")
            for i in range(show):
                lines.append(f"  {names[i]:<10} {mean[i]:>9.4f} {std[i]:>10.4f}")
            if len(names) > show:
                lines.append(f"  ... {len(names) - show} more")
        counts = json.loads(f.attrs.get("counts", "{}"))
        rows_in = f.attrs.get("rows_in")
        if rows_in is not None:
            lines.append(f"  rows in: {int(rows_in):,}   rows out: {man['rows']:,}")
        for label, reasons in counts.items():
            for reason, n in reasons.items():
                lines.append(f"  dropped by {label}: {n:,} ({reason})")
    return lines


def read_all(path) -> dict[str, np.ndarray]:
    """``ids``, ``features``, ``labels`` (and ``weights``, ``codes``) of a (small) dataset, whole.

    Read from the shards after checking them as :func:`hpcprep.open_dataset` does,
    CRC-32 included, and never through the master's virtual datasets (HDF5 reads a
    missing source file as fill values without an error).

    Raises
    ------
    DataError
        Naming the file, when the dataset does not pass the checks.
    """
    folder, man = resolve(path)
    files, problems, _ = open_shards(folder, man, checksum=True)
    try:
        if problems:
            raise DataError(describe(in_folder(folder, problems)))
        out = {}
        for name in column_names(man):
            parts = [files.h5(k)[name][()] for k in range(len(files.rels))]
            out[name] = np.concatenate(parts) if parts else _empty(man, name)
        return out
    finally:
        files.close()


def _empty(man: dict, name: str) -> np.ndarray:
    if name == "features":
        return np.empty((0, man["n_features"]), dtype=man["feature_dtype"])
    if name == "codes":
        return np.empty((0, len(man["code_names"])), dtype=np.int64)
    return np.empty(0, dtype={"ids": "int64", "labels": man["label_dtype"], "weights": "float64"}[name])
