"""Where the output goes, and what hpcprep may delete there.

A run writes into a fresh temporary folder ``.<name>.tmp-XXXXXXXX`` next to the
output (its owner recorded in ``owner.json``), holds the lock ``.<name>.lock``
from start to end, and at the end exchanges the finished folder with the
previous output in one ``renameat2(RENAME_EXCHANGE)``. It replaces only a
previous hpcprep output or an empty folder, and deletes only the entries
hpcprep writes (docs/FORMAT.md, "Output folder, overwrite and lock").
"""


import fnmatch
import glob
import json
import os
import shutil
import uuid

from ..errors import OutputError
from . import lock
from .generations import (OWNER, exchange, in_the_way, remove_empty_dirs, remove_generation,
                          rename_noreplace)
from .leftovers import clean_leftovers


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

    The object owns what a failed run must undo: :meth:`abandon` removes its
    temporary folder (until :meth:`commit` has swapped it into place) and
    releases its lock. ``cli.main`` calls it on every rank when the run fails
    (:meth:`track` registers it as one of the cleanups of :func:`fail_hard`).

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
        self.lock_path = lock.lock_path(self.path)
        self.owner = None  # the lock's owner record once rank 0 holds it
        self.temp_is_ours = True  # until commit() swaps it into place

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
        self.owner, notes = lock.acquire(self.lock_path, self.path)
        return notes + clean_leftovers(self.path)

    def create(self) -> None:
        """Make the temporary folder, with ``owner.json`` naming this process."""
        os.makedirs(os.path.join(self.temp, "shards"))
        with open(os.path.join(self.temp, OWNER), "w") as fh:
            json.dump(self.owner or lock.this_process(), fh)
            fh.write("\n")

    def track(self, cleanups: list | None = None) -> None:
        """On every rank: register :meth:`abandon` for the failure paths.

        Parameters
        ----------
        cleanups : list, optional
            The run's cleanups (``cli.main`` passes them to :func:`fail_hard`):
            :meth:`abandon` is appended, so a failure on this rank removes the
            temporary folder and releases the lock.
        """
        if cleanups is not None:
            cleanups.append(self.abandon)

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
        remove_empty_dirs(self.join("spill"))
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
                self.temp_is_ours = False
                _move_owner(self.path, old)
                if not atomic:
                    notes.append("warning: renameat2(RENAME_EXCHANGE) is not available here; the "
                                 "output was replaced with two renames")
                notes += remove_generation(old)
            else:
                rename_noreplace(self.temp, self.path)
                self.temp_is_ours = False
                _move_owner(self.path, None)
        except OSError as e:
            raise OutputError(f"output {self.path}: cannot move the new output into place: "
                              f"{e.strerror} ({e.filename})") from None
        self.release()
        return notes

    def release(self) -> None:
        """Remove the lock if it still holds this run's owner record."""
        owner, self.owner = self.owner, None
        lock.release(self.lock_path, owner)

    def committed(self) -> None:
        """On every rank once rank 0 has committed: the temporary name now holds the
        previous generation (or nothing) and the lock is released, so a later failure
        of this rank must touch neither."""
        self.temp_is_ours = False
        self.owner = None

    def abandon(self) -> None:
        """After a failure: remove the temporary folder (unless committed) and release the lock."""
        if self.temp_is_ours:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp_is_ours = False
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


def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


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
