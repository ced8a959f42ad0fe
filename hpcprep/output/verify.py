"""Checking a dataset against its manifest, and summarizing it (``hpcprep inspect``)."""

import json
import os

import h5py
import numpy as np

from ..errors import OutputError
from .shards import shard_crc32


def read_manifest(path: str) -> dict:
    """The manifest of the dataset folder ``path``; a missing manifest means an incomplete dataset."""
    mpath = os.path.join(path, "manifest.json")
    if not os.path.isdir(path):
        raise OutputError(f"{path}: no such dataset folder")
    if not os.path.exists(mpath):
        raise OutputError(f"{path}: no manifest.json, so the dataset is incomplete (a failed or "
                          f"running job?)")
    with open(mpath) as fh:
        man = json.load(fh)
    if man.get("format") != "hpcprep-dataset":
        raise OutputError(f"{mpath}: not an hpcprep dataset manifest")
    return man


def verify_dataset(path: str, checksums: bool = True) -> dict:
    """Check every shard of a dataset (or every split of a split dataset).

    Parameters
    ----------
    path : str
        The dataset folder.
    checksums : bool
        Recompute each shard's crc32 (reads all data once).

    Returns
    -------
    dict
        The manifest, plus ``"problems"``: a list of what does not match (empty if all is well).
    """
    man = read_manifest(path)
    problems = []
    if man.get("splits"):
        for name, sub in man["splits"].items():
            sub_man = verify_dataset(os.path.join(path, sub), checksums)
            problems += [f"{name}: {p}" for p in sub_man["problems"]]
        man["problems"] = problems
        return man
    position = 0
    for s in man["shards"]:
        spath = os.path.join(path, s["path"])
        if s["start"] != position:
            problems.append(f"{s['path']}: starts at {s['start']}, expected {position}")
        position += s["rows"]
        if not os.path.exists(spath):
            problems.append(f"{s['path']}: missing")
            continue
        if checksums:
            rows, crc = shard_crc32(spath)
        else:
            with h5py.File(spath, "r") as f:
                rows, crc = f["ids"].shape[0], s["crc32"]
        if rows != s["rows"]:
            problems.append(f"{s['path']}: {rows} rows, manifest says {s['rows']}")
        elif crc != s["crc32"]:
            problems.append(f"{s['path']}: checksum {crc} does not match the manifest's {s['crc32']}")
    if position != man["rows"]:
        problems.append(f"shards hold {position} rows, manifest says {man['rows']}")
    master = os.path.join(path, man["master"])
    if not os.path.exists(master):
        problems.append(f"{man['master']}: missing")
    else:
        with h5py.File(master, "r") as f:
            if f["ids"].shape[0] != man["rows"]:
                problems.append(f"{man['master']}: ids has {f['ids'].shape[0]} rows, manifest says {man['rows']}")
    man["problems"] = problems
    return man


def summarize(path: str, checksums: bool = True) -> str:
    """Human-readable summary of a dataset: rows, features, shards, stats, counts, verification."""
    man = verify_dataset(path, checksums)
    lines = [f"dataset {os.path.abspath(path)}"]
    if man.get("splits"):
        lines.append(f"  splits: {', '.join(man['splits'])}")
        for name, sub in man["splits"].items():
            lines += ["  " + ln for ln in summarize(os.path.join(path, sub), checksums).splitlines()]
        lines.append("verification: OK" if not man["problems"] else
                     "verification: FAILED\n  " + "\n  ".join(man["problems"]))
        return "\n".join(lines)
    lines.append(f"  rows: {man['rows']:,}   features: {man['n_features']} ({man['feature_dtype']})"
                 f"   label: {man['label_dtype'] or 'none'}   seed: {man['seed']}")
    sizes = [s["rows"] for s in man["shards"]]
    lines.append(f"  shards: {len(sizes)} (rows min {min(sizes, default=0):,} / max {max(sizes, default=0):,})")
    master = os.path.join(path, man["master"])
    if os.path.exists(master):
        with h5py.File(master, "r") as f:
            if "stats" in f and "mean" in f["stats"]:
                mean, std = f["stats/mean"][()], f["stats/std"][()]
                names = man["feature_names"]
                show = min(len(names), 8)
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
    lines.append("verification: OK (every shard present, rows and checksums match the manifest)"
                 if not man["problems"] else "verification: FAILED\n  " + "\n  ".join(man["problems"]))
    return "\n".join(lines)


def read_all(path: str) -> dict[str, np.ndarray]:
    """Read ids, features, labels of a (small) dataset through its master file, after verifying it."""
    man = verify_dataset(path, checksums=False)
    if man["problems"]:
        raise OutputError(f"{path}: " + "; ".join(man["problems"]))
    with h5py.File(os.path.join(path, man["master"]), "r") as f:
        return {k: f[k][()] for k in ("ids", "features", "labels", "weights") if k in f}
