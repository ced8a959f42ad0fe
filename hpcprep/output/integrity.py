"""Checking a dataset's files against its manifest: shards and the master file.

A shard must be a regular file holding only plain datasets that match the
manifest (names, rows, columns, dtypes; the CRC-32 when asked); the master
``data.h5`` must hold virtual datasets whose sources are exactly the manifest's
shards. Each check returns a problem line (``"<path>: <what is wrong>"``) or None.
"""

import os

import h5py
import numpy as np

from ..errors import DataError
from .pinned import ShardFiles
from .reader import FILE_ERRORS, column_names, confined, one_line, read_manifest
from .shards import shard_crc32


def _layout_problem(man: dict) -> str | None:
    pos = 0
    for k, s in enumerate(man["shards"]):
        if s["start"] != pos:
            return f"manifest.json: shard {k} starts at {s['start']}, expected {pos}"
        pos += s["rows"]
    if pos != man["rows"]:
        return f"manifest.json: shards hold {pos} rows, the manifest says {man['rows']}"
    return None


def _plain(f: h5py.File, virtual=()) -> str | None:
    """None when everything in ``f`` is reached by hard links and every dataset is plain
    (no external storage; virtual only for the names in ``virtual``)."""
    bad = []

    def visit(name, link):
        if not isinstance(link, h5py.HardLink):
            kind = {h5py.SoftLink: "a soft link", h5py.ExternalLink: "an external link"}
            bad.append(f"'{name}' is {kind.get(type(link), 'a link')} (only plain datasets are read)")
            return True
        obj = f[name]
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual and name not in virtual:
                bad.append(f"'{name}' is a virtual dataset (only plain datasets are read)")
            elif obj.id.get_create_plist().get_external_count():
                bad.append(f"'{name}' uses external storage (only plain datasets are read)")
        return True if bad else None

    f.visititems_links(visit)
    return bad[0] if bad else None


def _columns_problem(f: h5py.File, man: dict, rows: int) -> str | None:
    """The shard's datasets against the manifest: names, rows, columns, dtypes."""
    dtypes = {"ids": ("iu", None), "features": ("fiu", man["feature_dtype"]),
              "labels": ("biuf", man["label_dtype"]), "weights": ("f", None),
              "codes": ("i", "int64")}
    widths = {"features": man["n_features"], "codes": len(man.get("code_names", []))}
    for name in column_names(man):
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            return f"dataset '{name}' is missing"
        shape = ds.shape or ()
        if shape[:1] != (rows,):
            return f"'{name}' has {shape[0] if shape else 'no'} rows, the manifest says {rows}"
        want = (rows, widths[name]) if name in widths else (rows,)
        if shape != want:
            return f"'{name}' has shape {shape}, expected {want}"
        kinds, dtype = dtypes[name]
        dt = ds.dtype
        if dt.kind not in kinds or (dtype and (dt.kind, dt.itemsize) !=
                                    (np.dtype(dtype).kind, np.dtype(dtype).itemsize)):
            return f"'{name}' has dtype {dt}, expected {dtype or kinds}"
    return None


def check_shard(files: ShardFiles, man: dict, k: int, checksum: bool) -> str | None:
    """The problem of pinned shard ``k``, or None: plain datasets matching the manifest and,
    with ``checksum``, its CRC-32 (reads the shard once)."""
    s = man["shards"][k]
    rel = s["path"]
    try:
        f = files.h5(k)
        problem = _plain(f) or _columns_problem(f, man, s["rows"])
        if problem:
            return f"{rel}: {problem}"
        if checksum:
            crc = shard_crc32(f, column_names(man))[1]
            if crc != s["crc32"]:
                return f"{rel}: crc32 {crc} does not match the manifest's {s['crc32']}"
    except FILE_ERRORS as e:
        return f"{rel}: cannot read shard {k}: {one_line(e)}"
    return None


def open_shards(folder, man: dict, checksum: bool, rank: int = 0, size: int = 1):
    """Pin every shard of a dataset and check this rank's part of them.

    Every shard is pinned; shards ``k % size == rank`` are checked (:func:`check_shard`).
    The manifest is read again after pinning: if it changed, the folder was replaced
    while it was being opened and the pinned files may mix generations.

    The master file is checked too (:func:`check_master`), by one rank.

    Returns
    -------
    (ShardFiles, list of str, bool)
        The pinned files (close them), the problems, relative to ``folder``, and whether
        the master passed (True where another rank checks it).
    """
    files = ShardFiles(folder, man)
    problems = [p for p in [_layout_problem(man)] if p]
    for k in range(len(files.rels)):
        problem = files.pin(k)
        if problem:
            problems.append(problem)
    try:
        again = read_manifest(folder)
    except DataError:
        again = None
    if again != man:
        problems.insert(0, "manifest.json: the dataset was replaced while it was being opened; "
                           "open it again")
    for k in range(rank, len(files.rels), size):
        if files.fds[k] is not None:
            problem = check_shard(files, man, k, checksum)
            if problem:
                problems.append(problem)
    master = check_master(folder, man) if rank == len(files.rels) % size else None
    return files, problems + [master] * bool(master), master is None


# -- the master ----------------------------------------------------------------------------------
def _sources(ds: h5py.Dataset) -> list[tuple]:
    """``(file, dataset, first row, rows)`` of each mapping of a virtual dataset; first row
    and rows are -1 unless the mapping covers whole rows of the virtual dataset and a
    whole source (all of it, or a selection of as many points starting at 0: the shard
    checks make sure the source holds exactly ``rows`` rows)."""
    out = []
    tail = ds.shape[1:]
    width = int(np.prod(tail, dtype=np.int64))
    for m in ds.virtual_sources():
        (a, *lo), (b, *hi) = m.vspace.get_select_bounds()
        rows = b - a + 1
        whole = m.vspace.get_select_npoints() == rows * width and not any(lo) \
            and tuple(h + 1 for h in hi) == tail
        src = m.src_space
        if src.get_select_type() != h5py.h5s.SEL_ALL:
            whole = whole and src.get_select_npoints() == rows * width \
                and not any(src.get_select_bounds()[0])
        name = m.dset_name[1:] if m.dset_name.startswith("/") else m.dset_name
        out.append((m.file_name, name, int(a), int(rows)) if whole else (m.file_name, name, -1, -1))
    return sorted(out)


def _master_problem(f: h5py.File, man: dict) -> str | None:
    names = column_names(man)
    problem = _plain(f, virtual=names)
    if problem:
        return problem
    for name in names:
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            return f"dataset '{name}' is missing"
        if (ds.shape or (None,))[0] != man["rows"]:
            return f"'{name}' has {(ds.shape or (0,))[0]} rows, the manifest says {man['rows']}"
        want = sorted((s["path"], name, s["start"], s["rows"]) for s in man["shards"] if s["rows"])
        got = _sources(ds) if ds.is_virtual else None
        if got is None and want:
            return f"'{name}' is not a virtual dataset over the shards"
        if got is not None and got != want:
            odd = [g for g in got if g not in want] or want
            return (f"'{name}' maps {odd[0][0]!r} ({odd[0][1]!r}), not exactly the manifest's "
                    f"shards (only those are read)")
    return None


def check_master(folder, man: dict) -> str | None:
    """The problem of the master file, or None: inside the folder, plain but for the
    virtual ``ids``/``features``/``labels``/``weights``, whose sources are exactly the
    manifest's shards, row for row."""
    rel = man["master"]
    try:
        path = confined(folder, rel, "master", "manifest.json")
    except DataError as e:
        return str(e)
    if not os.path.lexists(path):
        return f"{rel}: missing"
    if not path.is_file():
        return f"{rel}: not a regular file"
    try:
        with h5py.File(path, "r") as f:
            problem = _master_problem(f, man)
    except FILE_ERRORS as e:
        return f"{rel}: cannot read: {one_line(e)}"
    return f"{rel}: {problem}" if problem else None
