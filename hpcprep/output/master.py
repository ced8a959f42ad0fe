"""The master file ``data.h5`` (virtual datasets over the shards) and ``manifest.json``."""

import json
import os

import h5py
import numpy as np

from .. import __version__
from .shards import DATASETS


def write_master(location, record_dtype: np.dtype, shards: list[dict], feature_names: list[str],
                 attrs: dict, stats: dict, step_stats: dict, code_names=None) -> None:
    """Write ``data.h5`` in the temporary folder.

    Parameters
    ----------
    location : OutputLocation
    record_dtype : numpy dtype
        The row record (fields id, x, [y], [w], [k]: the int64 codes).
    shards : list of dict
        ``{"path", "start", "rows"}`` per shard in order (paths relative to the dataset folder).
    feature_names : list of str
    attrs : dict
        Attributes of the root group (JSON-encoded when not scalar or str).
    stats : dict of str -> ndarray
        ``/stats`` datasets (mean, std of the output features; ``label_classes``, a list
        of str, is stored as strings).
    step_stats : dict of str -> dict of str -> ndarray
        Fitted parameters per step label, stored as ``/stats/<label>/<name>``.
    code_names : list of str, optional
        Names of the code columns (attribute ``code_names`` of ``codes``).
    """
    total = sum(s["rows"] for s in shards)
    with h5py.File(location.join("data.h5"), "w") as f:
        for field in record_dtype.names:
            if field not in DATASETS:
                continue  # transit-only fields (bootstrap copy tags) are not part of the format
            sub = record_dtype[field]
            name = DATASETS[field]
            shape, base = (total, *sub.shape), sub.base
            nonempty = [s for s in shards if s["rows"]]
            if not nonempty:
                f.create_dataset(name, shape=shape, dtype=base)
                continue
            layout = h5py.VirtualLayout(shape=shape, dtype=base)
            for s in nonempty:
                src = h5py.VirtualSource(s["path"], name, shape=(s["rows"], *sub.shape))
                layout[s["start"]:s["start"] + s["rows"]] = src
            fill = np.nan if base.kind == "f" else -1 if field == "k" else 0
            f.create_virtual_dataset(name, layout, fillvalue=fill)
        f["features"].attrs["feature_names"] = np.array(feature_names, dtype=h5py.string_dtype())
        if "k" in record_dtype.names:
            f["codes"].attrs["code_names"] = np.array(list(code_names or []), dtype=h5py.string_dtype())
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        g = f.create_group("stats")
        g["feature_names"] = np.array(feature_names, dtype=h5py.string_dtype())
        for key, value in stats.items():
            g[key] = np.array(value, dtype=h5py.string_dtype()) if key == "label_classes" else value
        for label, params in step_stats.items():
            sg = g.create_group(label)
            for key, value in params.items():
                sg[key] = value


def write_json(path: str, obj) -> None:
    """Write JSON and flush it to disk."""
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=_jsonable)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def manifest(record_dtype, shards, feature_names, seed, splits=None, label_classes=None,
             code_names=None) -> dict:
    """The manifest dict of docs/FORMAT.md (``label_classes`` only for class labels,
    ``code_names`` only when the records carry codes)."""
    has_y = "y" in record_dtype.names
    out = {
        "format": "hpcprep-dataset",
        "format_version": 1,
        "hpcprep_version": __version__,
        "rows": int(sum(s["rows"] for s in shards)),
        "n_features": int(record_dtype["x"].shape[0]),
        "feature_names": list(feature_names),
        "feature_dtype": record_dtype["x"].base.name,
        "label": has_y,
        "label_dtype": record_dtype["y"].name if has_y else None,
        "weights": "w" in record_dtype.names,
        "seed": seed,
        "master": "data.h5",
        "shards": [{"path": s["path"], "start": int(s["start"]), "rows": int(s["rows"]),
                    "crc32": int(s["crc32"])} for s in shards],
        "splits": splits or {},
    }
    if label_classes is not None:
        out["label_classes"] = list(label_classes)
    if "k" in record_dtype.names:
        out["code_names"] = list(code_names or [])
    return out
