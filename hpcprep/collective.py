"""Agreeing on errors across ranks, and ending every rank when one fails.

Two mechanisms (DESIGN §6, shared/notes/mpi.md):

* Checks made on one rank before any work (config, input files, output
  folder) go through :func:`root_decides`: rank 0 runs them and broadcasts
  either the result or the error, so every rank stops together and the message
  is printed once, by rank 0.
* Anything else that raises on a rank goes through :func:`fail_hard`: the rank
  prints its message once, removes the run's temporary output and calls
  ``Abort`` so no other rank waits forever in a collective.
"""

import os
import sys
import traceback

from .errors import HpcprepError


class AgreedError(HpcprepError):
    """An error every rank knows about (raised on all ranks by :func:`root_decides`)."""

    def __init__(self, message: str, printed_by_root: bool = True):
        super().__init__(message)
        self.printed_by_root = printed_by_root


def root_decides(comm, fn, *args, root: int = 0, **kwargs):
    """Run ``fn`` on ``root`` only and broadcast its result, or its error, to every rank.

    Returns
    -------
    The result of ``fn`` on every rank.

    Raises
    ------
    AgreedError
        On every rank, when ``fn`` raised an :class:`HpcprepError` on the root.
    """
    outcome = None
    if comm.Get_rank() == root:
        try:
            outcome = ("ok", fn(*args, **kwargs))
        except HpcprepError as e:
            outcome = ("error", str(e))
    status, payload = comm.bcast(outcome, root=root)
    if status == "error":
        raise AgreedError(payload)
    return payload


def write_line(text: str, stream=None) -> None:
    """Write one whole line with a single ``write`` call (lines of ranks are not glued together)."""
    stream = stream or sys.stderr
    stream.write(text.rstrip("\n") + "\n")
    stream.flush()


def fail_hard(comm, exc: BaseException, debug: bool = False) -> None:
    """Print ``exc`` once from this rank, remove temporary output, and end the whole job."""
    from .output.location import remove_temp_dirs

    rank, size = comm.Get_rank(), comm.Get_size()
    if isinstance(exc, HpcprepError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
        debug = True
    where = f" on rank {rank} of {size}" if size > 1 else ""
    if debug:
        write_line("".join(traceback.format_exception(exc)).rstrip())
    write_line(f"hpcprep: error{where}: {text}")
    remove_temp_dirs()
    if size > 1:
        comm.Abort(1)
    os._exit(1)
