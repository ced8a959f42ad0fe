"""Temporary folders of dead runs next to an output: found, described, removed.

A run's temporary folder ``.<name>.tmp-XXXXXXXX`` holds ``owner.json``; when
that run is gone (on this host) the next run on the same output removes the
folder, and ``hpcprep inspect`` lists it (docs/FORMAT.md).
"""

import os
import shutil

from ..errors import OutputError
from . import lock
from .generations import OWNER


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
    lpath = lock.lock_path(path)
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
