"""Pinned shard files: a reader keeps reading the generation it opened.

:class:`ShardFiles` opens every shard file (``os.open``) when the dataset is
opened and keeps the descriptors; HDF5 opens ``/proc/self/fd/<fd>`` on Linux
(or, once the file was deleted, which HDF5 cannot open by name, reads the
descriptor through :class:`PreadFile`), so a reader keeps reading the generation
it opened after the folder is replaced, and forked workers (a torch DataLoader)
reach the same files.
"""

import io
import os
import stat
import sys
import threading
from pathlib import Path

import h5py

from ..errors import DataError
from .reader import confined

#: HDF5 can open a pinned descriptor by name (Linux); elsewhere shards are opened by path.
PROC_FD = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


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
        self._datasets = {}
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
            return self._h5_locked(k)

    def _h5_locked(self, k: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: the parent's HDF5 handles are not ours
            self._h5, self._datasets, self._pid = {}, {}, os.getpid()
        f = self._h5.get(k)
        if f is None:
            f = self._h5[k] = self._open(k)
        return f

    def dataset(self, k: int, name: str) -> h5py.Dataset:
        """Dataset ``name`` of pinned shard ``k``, looked up once per process (a lookup per
        batch cost as much as the read of a small batch)."""
        with self._lock:
            f = self._h5_locked(k)   # first: after a fork it drops the parent's datasets too
            ds = self._datasets.get((k, name))
            if ds is None:
                ds = self._datasets[(k, name)] = f[name]
            return ds

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
            self._h5, self._datasets = {}, {}
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
