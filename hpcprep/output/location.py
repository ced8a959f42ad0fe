"""Where the output goes: a temporary folder renamed into place only when complete."""

import os
import shutil
import uuid

from ..errors import OutputError

#: Temporary folders of runs in progress, removed by the error handler if the run fails.
ACTIVE_TEMP_DIRS: set[str] = set()


class OutputLocation:
    """The final output folder and the temporary folder a run writes into.

    Parameters
    ----------
    path : str
        Final output folder.
    overwrite : bool
        Replace an existing output at the end of a successful run.
    temp : str, optional
        The temporary folder (rank 0 chooses it and broadcasts it).
    """

    def __init__(self, path: str, overwrite: bool, temp: str | None = None):
        self.path = os.path.abspath(path)
        self.overwrite = overwrite
        parent, name = os.path.split(self.path)
        self.temp = temp or os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")

    def check(self) -> None:
        """Fail before any work if the output exists (without overwrite) or cannot be written."""
        if os.path.exists(self.path) and not self.overwrite:
            raise OutputError(f"output {self.path} already exists; remove it or set "
                              f"output.overwrite = true (--set output.overwrite=true)")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise OutputError(f"output.path: parent folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"output.path: cannot write in {parent}")

    def create(self) -> None:
        os.makedirs(os.path.join(self.temp, "shards"))
        ACTIVE_TEMP_DIRS.add(self.temp)

    def join(self, *parts: str) -> str:
        """A path inside the temporary folder."""
        return os.path.join(self.temp, *parts)

    def commit(self) -> None:
        """Move the finished temporary folder into place (replacing an old output)."""
        old = None
        if os.path.exists(self.path):
            if not self.overwrite:
                raise OutputError(f"output {self.path} appeared while the run was writing")
            old = self.temp + ".old"
            os.rename(self.path, old)
        os.rename(self.temp, self.path)
        ACTIVE_TEMP_DIRS.discard(self.temp)
        if old:
            shutil.rmtree(old, ignore_errors=True)


def remove_temp_dirs(paths=None) -> None:
    """Remove temporary folders of a failed run (best effort)."""
    for p in list(ACTIVE_TEMP_DIRS if paths is None else paths):
        shutil.rmtree(p, ignore_errors=True)
        ACTIVE_TEMP_DIRS.discard(p)
