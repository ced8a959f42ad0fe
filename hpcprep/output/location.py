"""Where the output goes, and what hpcprep may delete there.

A run writes into a fresh temporary folder ``.<name>.tmp-XXXXXXXX`` next to the
output (its owner recorded in ``owner.json``), holds the lock ``.<name>.lock``
from start to end, and at the end exchanges the finished folder with the
previous output in one ``renameat2(RENAME_EXCHANGE)``. It replaces only a
previous hpcprep output or an empty folder, and deletes only the entries
hpcprep writes (docs/FORMAT.md, "Output folder, overwrite and lock").
"""

import ctypes
import ctypes.util
import errno
import fnmatch
import glob
import json
import os
import re
import shutil
import uuid

from ..errors import OutputError
from . import lock

#: Temporary folders of runs in progress, removed by the error handler if the run fails.
ACTIVE_TEMP_DIRS: set[str] = set()

OWNER = "owner.json"
#: Files hpcprep writes at the top of a dataset folder (owner.json only in a temporary one).
DATASET_FILES = frozenset({"manifest.json", "data.h5", "report.json", "rejects.h5", OWNER})
SHARD_NAME = re.compile(r"part-\d{5,}\.h5")
SPILL_NAME = re.compile(r"rank-\d{5,}")


def output_path_problem(path: str, folder=None) -> str | None:
    """Why ``path`` can never be an output folder: ``/``, or ``folder`` (default: the working
    directory) or a folder above it."""
    real = os.path.realpath(path)
    here = os.path.realpath(folder or os.getcwd())
    if real == os.path.dirname(real):
        return f"resolves to {real}, the root of the file system"
    if _within(here, real):
        what = "the working directory" if folder is None else "the base folder of the config"
        return f"resolves to {real}, {what}" + ("" if here == real else " or a folder above it")
    return None


class OutputLocation:
    """The final output folder, its lock, and the temporary folder a run writes into.

    Parameters
    ----------
    path : str
        Final output folder.
    overwrite : bool
        Replace an existing output (a previous hpcprep output or an empty folder)
        at the end of a successful run.
    temp : str, optional
        The temporary folder (rank 0 chooses it and broadcasts it).
    """

    def __init__(self, path: str, overwrite: bool, temp: str | None = None):
        self.path = os.path.abspath(path)
        self.overwrite = overwrite
        parent, name = os.path.split(self.path)
        self.temp = temp or os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        self.lock_path = lock_path(self.path)
        self.owner = None  # the lock's owner record once rank 0 holds it

    def check(self, input_patterns=(), input_files=()) -> None:
        """Fail before any work if the output cannot be used.

        Parameters
        ----------
        input_patterns : list of str
            The configured input globs (absolute).
        input_files : list of str
            The files they matched.

        Raises
        ------
        OutputError
            Naming the path and what is in the way: the output overlaps the
            input, exists without overwrite, or is something hpcprep did not write.
        """
        problem = output_path_problem(self.path)
        if problem:
            raise OutputError(f"output.path {self.path} {problem}; name an output folder of its "
                              f"own")
        check_not_input(self.path, input_patterns, input_files)
        obstacle = in_the_way(self.path)
        if obstacle:
            raise OutputError(f"output {self.path} {obstacle}; hpcprep replaces only a previous "
                              f"hpcprep output or an empty folder: move it away or choose another "
                              f"output.path")
        if os.path.lexists(self.path) and not self.overwrite:
            raise OutputError(f"output {self.path} already exists; remove it or set "
                              f"output.overwrite = true (--set output.overwrite=true)")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise OutputError(f"output.path: parent folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"output.path: cannot write in {parent}")

    def acquire(self) -> list[str]:
        """Take the output's lock, then remove temporary folders of dead runs (rank 0).

        Returns
        -------
        list of str
            Lines to log: a stale lock taken over, temporary folders removed or left alone.
        """
        notes = lock.acquire(self.lock_path, self.path)
        self.owner = lock.HELD_LOCKS[self.lock_path]
        return notes + clean_leftovers(self.path)

    def create(self) -> None:
        """Make the temporary folder, with ``owner.json`` naming this process."""
        os.makedirs(os.path.join(self.temp, "shards"))
        ACTIVE_TEMP_DIRS.add(self.temp)
        with open(os.path.join(self.temp, OWNER), "w") as fh:
            json.dump(self.owner or lock.this_process(), fh)
            fh.write("\n")

    def track(self) -> None:
        """On every rank: remember the temporary folder and the lock, for the failure paths."""
        ACTIVE_TEMP_DIRS.add(self.temp)
        if self.owner:
            lock.adopt(self.lock_path, self.owner)

    def join(self, *parts: str) -> str:
        """A path inside the temporary folder."""
        return os.path.join(self.temp, *parts)

    def commit(self) -> list[str]:
        """Swap the finished temporary folder into place and release the lock.

        A previous output is exchanged atomically with the new one, then only
        the entries hpcprep wrote are deleted from it.

        Returns
        -------
        list of str
            Lines to log (what was left of the previous output, how it was swapped).
        """
        _remove_empty_dirs(self.join("spill"))
        notes = []
        try:
            if os.path.lexists(self.path):
                if not self.overwrite:
                    raise OutputError(f"output {self.path} appeared while the run was writing")
                obstacle = in_the_way(self.path)
                if obstacle:
                    raise OutputError(f"output {self.path} changed while the run was writing: it "
                                      f"{obstacle}")
                old, atomic = exchange(self.temp, self.path)
                ACTIVE_TEMP_DIRS.discard(self.temp)
                _move_owner(self.path, old)
                if not atomic:
                    notes.append("warning: renameat2(RENAME_EXCHANGE) is not available here; the "
                                 "output was replaced with two renames")
                notes += remove_generation(old)
            else:
                rename_noreplace(self.temp, self.path)
                ACTIVE_TEMP_DIRS.discard(self.temp)
                _move_owner(self.path, None)
        except OSError as e:
            raise OutputError(f"output {self.path}: cannot move the new output into place: "
                              f"{e.strerror} ({e.filename})") from None
        self.release()
        return notes

    def release(self) -> None:
        lock.release(self.lock_path)

    def abandon(self) -> None:
        """Remove the temporary folder and release the lock (a failure in rank 0's checks)."""
        remove_temp_dirs([self.temp])
        self.release()


def _move_owner(new: str, old: str | None) -> None:
    """Take ``owner.json`` out of the new output, into the old generation if there is one.

    The old generation now sits under the temporary name: with this run's owner
    record in it, a next run removes it should this one die while deleting it.
    """
    src = os.path.join(new, OWNER)
    try:
        if old:
            os.replace(src, os.path.join(old, OWNER))
        else:
            os.remove(src)
    except FileNotFoundError:
        pass


def lock_path(path: str) -> str:
    """``<parent>/.<name>.lock`` of the output folder ``path``."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.lock")


def remove_temp_dirs(paths=None) -> None:
    """Remove temporary folders of a failed run (best effort)."""
    for p in list(ACTIVE_TEMP_DIRS if paths is None else paths):
        shutil.rmtree(p, ignore_errors=True)
        ACTIVE_TEMP_DIRS.discard(p)


def abandon_run() -> None:
    """After a failure on any rank: remove the run's temporary folders and release its lock."""
    remove_temp_dirs()
    for path in list(lock.HELD_LOCKS):
        lock.release(path)


# ---- what is at the output path --------------------------------------------------------
def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


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


def _remove_empty_dirs(folder: str) -> None:
    """Remove ``folder`` if it holds nothing but empty folders (the spill folders of the ranks)."""
    if not os.path.isdir(folder):
        return
    for root, _, _ in os.walk(folder, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            return


# ---- input and output must not overlap --------------------------------------------------
def _fixed_part(pattern: str) -> tuple[str, list[str]]:
    """The leading folders of a glob without wildcards, and the components after them."""
    parts = os.path.abspath(pattern).split(os.sep)
    k = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
    return os.sep.join(parts[:k]) or os.sep, parts[k:]


def _may_match_below(rest: list[str], rel: list[str]) -> bool:
    """Whether glob components ``rest`` can match ``rel`` or a path inside it."""
    if any("**" in p for p in rest):
        return True
    return len(rel) <= len(rest) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel, rest))


def check_not_input(path: str, patterns, files) -> None:
    """Refuse an output folder that is, holds or sits inside what the input reads.

    Raises
    ------
    OutputError
        Naming the output and the input file or ``input.paths`` pattern it overlaps.
    """
    out = os.path.realpath(path)
    for pattern in patterns:
        fixed, rest = _fixed_part(pattern)
        real = os.path.realpath(fixed)
        if _within(real, out):
            what = "is" if real == out else "holds"
            kind = "folder" if os.path.isdir(real) else "file"
            raise OutputError(f"output {path} {what} the input {kind} {fixed} (input.paths "
                              f"{pattern}); write the output elsewhere")
        if _within(out, real) and _may_match_below(rest, os.path.relpath(out, real).split(os.sep)):
            raise OutputError(f"output {path} is inside the input folder {fixed} where input.paths "
                              f"{pattern} would read it; write the output elsewhere")
    for f in files:
        real = os.path.realpath(f)
        if _within(real, out):
            raise OutputError(f"output {path} {'is' if real == out else 'holds'} the input file "
                              f"{f}; write the output elsewhere")


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


# ---- leftovers of dead runs ---------------------------------------------------------------
def _size(folder: str) -> int:
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def leftovers(path: str) -> list[tuple[str, dict | None, bool | None]]:
    """Temporary folders ``.<name>.tmp-*`` next to the output ``path``.

    Returns
    -------
    list of (folder, owner record or None, alive: True / False / None when it cannot be told)
    """
    parent, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.tmp-"
    found = []
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return []
    for entry in entries:
        folder = os.path.join(parent, entry)
        if not entry.startswith(prefix) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        try:
            owner = lock.read_owner(os.path.join(folder, OWNER), wait=0)
        except OutputError:
            owner = None
        found.append((folder, owner, lock.is_alive(owner) if owner else None))
    return found


def _why_kept(owner: dict | None, alive: bool | None) -> str:
    if owner is None:
        return "no owner.json (an older hpcprep?): remove it by hand if no run uses it"
    if alive:
        return f"its run still works ({lock.describe(owner)})"
    return f"its run is on another host ({lock.describe(owner)}): remove it by hand if it is gone"


def clean_leftovers(path: str) -> list[str]:
    """Remove temporary folders of dead runs on this host next to ``path`` (rank 0, lock held).

    Returns
    -------
    list of str
        One line for what was removed (and the space freed), one warning per folder left alone.
    """
    removed, freed, notes = [], 0, []
    for folder, owner, alive in leftovers(path):
        if alive is False:
            freed += _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"{os.path.basename(folder)} ({lock.describe(owner)})")
        else:
            notes.append(f"warning: left the temporary folder {folder} alone: "
                         f"{_why_kept(owner, alive)}")
    if removed:
        notes.insert(0, f"removed {len(removed)} temporary folder(s) of dead runs next to the "
                        f"output, {_mib(freed)} freed: {', '.join(removed)}")
    return notes


def describe_leftovers(path: str) -> list[str]:
    """Lines for ``hpcprep inspect``: temporary folders and a lock next to the dataset ``path``."""
    lines = []
    for folder, owner, alive in leftovers(path):
        if alive is False:
            why = (f"its run is gone ({lock.describe(owner)}): the next run on this output "
                   f"removes it")
        else:
            why = _why_kept(owner, alive)
        lines.append(f"leftover temporary folder {folder} ({_mib(_size(folder))}): {why}")
    lpath = lock_path(path)
    if os.path.lexists(lpath):
        try:
            holder = lock.read_owner(lpath, wait=0)
        except OutputError:
            holder = None
        if holder is None:
            state = "unreadable: remove it if no run uses this output"
        else:
            state = {True: "its run is working",
                     False: "its run is gone: the next run takes it over",
                     None: "its run is on another host"}[lock.is_alive(holder)]
            state = f"held by {lock.describe(holder)}; {state}"
        lines.append(f"lock {lpath}: {state}")
    return lines
