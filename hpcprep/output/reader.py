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

Shards are pinned: :class:`ShardFiles` opens every shard file (``os.open``) when the
dataset is opened and keeps the descriptors; HDF5 opens ``/proc/self/fd/<fd>`` on
Linux (or, once the file was deleted, which HDF5 cannot open by name, reads the
descriptor through :class:`PreadFile`), so a reader keeps reading the generation it
opened after the folder is replaced, and forked workers (a torch DataLoader) reach
the same files.
"""

import io
import json
import os
import stat
import sys
import threading
from pathlib import Path, PurePosixPath

import h5py
import numpy as np

from ..errors import DataError
from .shards import shard_crc32

#: HDF5 can open a pinned descriptor by name (Linux); elsewhere shards are opened by path.
PROC_FD = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")

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
    """The datasets of each shard, in checksum order: ids, features, [labels], [weights]."""
    return ["ids", "features"] + ["labels"] * bool(man["label"]) + ["weights"] * bool(man["weights"])


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


# -- the shards -------------------------------------------------------------------------------------
class ShardFiles:
    """The shard files of one dataset generation, pinned by open descriptors.

    :meth:`pin` opens shard k (``os.open``, read-only) and keeps the descriptor;
    :meth:`h5` opens it with HDF5 through ``/proc/self/fd/<fd>`` (Linux; the path
    elsewhere), once per process: a forked child (a torch DataLoader worker) opens
    its own handle to the same inode. :meth:`close` closes handles and descriptors.
    """

    def __init__(self, folder, manifest: dict):
        self.folder = Path(folder)
        self.rels = [s["path"] for s in manifest["shards"]]
        self.fds: list = [None] * len(self.rels)
        self._inodes: list = [None] * len(self.rels)
        self._h5 = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def pin(self, k: int) -> str | None:
        """Open shard ``k`` and keep it open; a problem when it cannot be or may not be."""
        rel = self.rels[k]
        try:
            path = confined(self.folder, rel, f"shard {k} path", "manifest.json")
        except DataError as e:
            return str(e)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return f"{rel}: missing"
        except OSError as e:
            return f"{rel}: cannot open: {e.strerror or e}"
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return f"{rel}: not a regular file"
        self.fds[k], self._inodes[k] = fd, (st.st_dev, st.st_ino)
        return None

    def _name(self, k: int) -> str:
        if not PROC_FD:
            return str(self.folder / self.rels[k])
        fd = self.fds[k]
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._inodes[k]:  # not the descriptor we opened (not forked?)
            raise DataError(f"{self.folder / self.rels[k]}: descriptor {fd} is not the pinned "
                            f"shard in this process (only forked processes inherit it)")
        return f"/proc/self/fd/{fd}"

    def h5(self, k: int) -> h5py.File:
        """The open HDF5 file of pinned shard ``k`` (this process's handle)."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's HDF5 handles are not ours
                self._h5, self._pid = {}, os.getpid()
            f = self._h5.get(k)
            if f is None:
                f = self._h5[k] = self._open(k)
            return f

    def _open(self, k: int) -> h5py.File:
        name = self._name(k)
        try:
            return h5py.File(name, "r")
        except OSError:
            if not PROC_FD or os.fstat(self.fds[k]).st_nlink:
                raise
        # replaced and deleted since it was pinned: HDF5 resolves the name /proc gives
        # ("... (deleted)") and fails, so it reads the descriptor itself
        return h5py.File(PreadFile(self.fds[k]), "r")

    def close(self) -> None:
        """Close the HDF5 handles (this process's) and the pinned descriptors."""
        with self._lock:
            if self._pid == os.getpid():
                for f in self._h5.values():
                    f.close()
            self._h5 = {}
            fds, self.fds = self.fds, [None] * len(self.rels)
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def __del__(self):
        for fd in getattr(self, "fds", ()):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


class PreadFile(io.RawIOBase):
    """A read-only file object over a descriptor, with its own position (``os.preadv``):
    processes and handles that share the pinned descriptor never move each other's offset.
    It does not close the descriptor."""

    def __init__(self, fd: int):
        super().__init__()
        self._fd, self._pos = fd, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos,
                io.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buf) -> int:
        n = os.preadv(self._fd, [buf], self._pos)
        self._pos += n
        return n


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
              "labels": ("biuf", man["label_dtype"]), "weights": ("f", None)}
    for name in column_names(man):
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            return f"dataset '{name}' is missing"
        shape = ds.shape or ()
        if shape[:1] != (rows,):
            return f"'{name}' has {shape[0] if shape else 'no'} rows, the manifest says {rows}"
        want = (rows, man["n_features"]) if name == "features" else (rows,)
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

    Returns
    -------
    (ShardFiles, list of str)
        The pinned files (close them) and the problems, relative to ``folder``.
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
    return files, problems


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
