"""One run per output: a lock file next to it, and who owns a run's files.

A run is identified by host, pid and the process start time (from
``/proc/<pid>/stat``), so a pid reused by another process after the run died
does not look like the run. The lock ``<parent>/.<name>.lock`` is created with
``O_CREAT | O_EXCL`` and holds that identity as JSON (docs/FORMAT.md).
"""

import datetime
import json
import os
import socket
import time

from ..errors import OutputError


def lock_path(path: str) -> str:
    """``<parent>/.<name>.lock`` of the output folder ``path``."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.lock")


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot; None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()  # the command name may hold spaces
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return None


def this_process() -> dict:
    """The owner record of this process: host, pid, start time, boot id, started_at (ISO time)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid),
            "boot": _boot_id(),
            "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def same_owner(a: dict | None, b: dict | None) -> bool:
    keys = ("host", "pid", "start", "boot")
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in keys)


def is_alive(owner: dict) -> bool | None:
    """Whether the process of an owner record still runs; None when it ran on another host."""
    if owner.get("host") != socket.gethostname():
        return None
    boot = _boot_id()
    if boot and owner.get("boot") and owner["boot"] != boot:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        start = process_start(pid)
        return start is not None and owner.get("start") in (None, start)
    try:  # no /proc: the pid alone has to do
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(owner: dict) -> str:
    """``pid P on host H since T`` for messages."""
    return (f"pid {owner.get('pid')} on host {owner.get('host')} "
            f"since {owner.get('started_at', 'an unknown time')}")


def read_owner(path: str, wait: float = 2.0) -> dict | None:
    """The owner record in ``path`` (a lock or owner.json); None if the file is gone.

    A lock is written right after it is created; an empty or partial one is read
    again for up to ``wait`` seconds before it counts as unreadable.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path) as fh:
                owner = json.load(fh)
            if isinstance(owner, dict):
                return owner
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            raise OutputError(f"{path}: unreadable lock or owner file; if no hpcprep run uses this "
                              f"output, remove it")
        time.sleep(0.05)


def _create(path: str, owner: dict) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as fh:
        json.dump(owner, fh)
        fh.write("\n")


def acquire(path: str, output: str) -> tuple[dict, list[str]]:
    """Take the lock ``path`` of the output folder ``output`` for this process.

    Returns
    -------
    (owner, notes) : the owner record written into the lock (give it to :func:`release`),
        and warning lines (a stale lock of a dead run on this host was taken over).

    Raises
    ------
    OutputError
        Naming the holder, when a live run holds the lock or a run on another host does.
    """
    me, notes = this_process(), []
    for _ in range(5):
        try:
            _create(path, me)
        except FileExistsError:
            pass
        else:
            return me, notes
        holder = read_owner(path)
        if holder is None:
            continue
        alive = is_alive(holder)
        if alive:
            raise OutputError(f"output {output} is in use by another hpcprep run: "
                              f"{describe(holder)} (lock {path})")
        if alive is None:
            raise OutputError(f"output {output} is locked by a run on host {holder.get('host')} "
                              f"({describe(holder)}); hpcprep cannot tell from "
                              f"{socket.gethostname()} whether it still runs: if it is really "
                              f"gone, remove {path}")
        _take_over(path, holder)
        notes.append(f"warning: took over the lock {path} of a run that is gone "
                     f"({describe(holder)})")
    raise OutputError(f"could not take the lock {path}: other runs keep taking it")


def _take_over(path: str, stale: dict) -> None:
    """Remove the lock of a dead run, unless another run replaced it meanwhile.

    A short-lived guard file created with O_EXCL makes check-and-remove atomic
    between runs that find the same stale lock at once.
    """
    guard = path + ".takeover"
    deadline = time.monotonic() + 10.0
    while True:
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            if time.monotonic() > deadline:  # a run died holding the guard (a few µs long)
                _unlink(guard)
            time.sleep(0.05)
    try:
        if same_owner(read_owner(path), stale):
            _unlink(path)
    finally:
        _unlink(guard)


def release(path: str, mine: dict | None) -> None:
    """Remove the lock ``path`` if it still holds the owner record ``mine`` (None: nothing)."""
    if mine is None:
        return
    try:
        holder = read_owner(path, wait=0)
    except OutputError:
        return
    if same_owner(holder, mine):
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
