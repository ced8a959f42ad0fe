"""What in an output folder is hpcprep's, and how one generation replaces another.

An entry is hpcprep's when its name and kind are those of docs/FORMAT.md; only
those are ever deleted. A new output is swapped in with one
``renameat2(RENAME_EXCHANGE)`` where the system has it (two renames elsewhere).
"""

import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil

OWNER = "owner.json"
#: Files hpcprep writes at the top of a dataset folder (owner.json only in a temporary one).
DATASET_FILES = frozenset({"manifest.json", "data.h5", "report.json", "rejects.h5", OWNER})
SHARD_NAME = re.compile(r"part-\d{5,}\.h5")
SPILL_NAME = re.compile(r"rank-\d{5,}")


def _few(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _manifest(folder: str) -> dict | None:
    """The manifest of an hpcprep dataset folder, or None if it has none."""
    path = os.path.join(folder, "manifest.json")
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path) as fh:
            man = json.load(fh)
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) and man.get("format") == "hpcprep-dataset" else None


def _only(folder: str, pattern: re.Pattern, dirs: bool) -> bool:
    """Whether ``folder`` holds only entries named ``pattern`` (empty folders if ``dirs``)."""
    for e in os.scandir(folder):
        kind = e.is_dir(follow_symlinks=False) if dirs else e.is_file(follow_symlinks=False)
        if not (kind and pattern.fullmatch(e.name)) or (dirs and os.listdir(e.path)):
            return False
    return True


def sort_entries(folder: str, splits: bool = True) -> tuple[list[str], list[str]]:
    """The top-level entries of a dataset folder that hpcprep wrote, and the others.

    An entry is hpcprep's when its name and kind are those of docs/FORMAT.md
    (``manifest.json``, ``data.h5``, ``report.json``, ``rejects.h5``,
    ``shards/part-*.h5``, empty ``spill/rank-*`` folders of older versions, and
    the split folders named in the manifest, of the same shape) and everything
    inside it is too. Links are never hpcprep's.

    Returns
    -------
    (ours, foreign) : two sorted lists of names (foreign folders end with ``/``)
    """
    man = _manifest(folder)
    split_dirs = set()
    if man is not None and splits and isinstance(man.get("splits"), dict):
        split_dirs = {v for v in man["splits"].values()
                      if isinstance(v, str) and v and os.sep not in v and v not in (".", "..")}
    ours, foreign = [], []
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        is_dir = e.is_dir(follow_symlinks=False)
        if e.is_file(follow_symlinks=False):
            mine = e.name in DATASET_FILES
        elif not is_dir:
            mine = False
        elif e.name == "shards":
            mine = _only(e.path, SHARD_NAME, dirs=False)
        elif e.name == "spill":
            mine = _only(e.path, SPILL_NAME, dirs=True)
        elif e.name in split_dirs:
            mine = _manifest(e.path) is not None and not sort_entries(e.path, splits=False)[1]
        else:
            mine = False
        if mine and man is not None:
            ours.append(e.name)
        else:
            foreign.append(e.name + ("/" if is_dir else ""))
    return ours, foreign


def in_the_way(path: str) -> str | None:
    """What at ``path`` hpcprep may not replace (None: nothing, an empty folder or its output)."""
    if os.path.islink(path):
        return f"is a symbolic link (to {os.readlink(path)})"
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        return "is a file, not an output folder"
    ours, foreign = sort_entries(path)
    if not foreign:
        return None
    if _manifest(path) is None:
        return f"is not an hpcprep output (no manifest.json; it holds {_few(foreign)})"
    return f"holds entries hpcprep did not write: {_few(foreign)}"


def remove_generation(folder: str) -> list[str]:
    """Delete what hpcprep wrote in an old output folder, then the folder if it is empty.

    Returns
    -------
    list of str
        A warning naming what was left, if anything was.
    """
    ours, foreign = sort_entries(folder)
    for name in ours:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    try:
        os.rmdir(folder)
    except OSError:
        return [f"warning: the previous output, now {folder}, held entries hpcprep did not write "
                f"and was left there: {_few(foreign or os.listdir(folder))}"]
    return []


def remove_empty_dirs(folder: str) -> None:
    """Remove ``folder`` if it holds nothing but empty folders (the spill folders of the ranks)."""
    if not os.path.isdir(folder):
        return
    for root, _, _ in os.walk(folder, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            return


# ---- the swap ------------------------------------------------------------------------------
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _rename2(src: str, dst: str, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the C library or the file system lacks it."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), src, None, dst)


def exchange(new: str, path: str) -> tuple[str, bool]:
    """Put the folder ``new`` at ``path``, keeping the folder that was there.

    Returns
    -------
    (old, atomic) : where the previous folder is now, and whether one atomic exchange
        did it (else two renames, with a moment without ``path``).
    """
    if _rename2(new, path, RENAME_EXCHANGE):
        return new, True
    old = new + ".old"
    os.rename(path, old)
    os.rename(new, path)
    return old, False


def rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``, failing if ``dst`` appeared (plain rename where unsupported)."""
    if not _rename2(src, dst, RENAME_NOREPLACE):
        os.rename(src, dst)
