"""Agreeing on errors across ranks, and ending every rank when one fails.

Two mechanisms (DESIGN §6, shared/notes/mpi.md):

* Checks made on one rank before any work (config, input files, output
  folder) go through :func:`root_decides`: rank 0 runs them and broadcasts
  either the result or the error, so every rank stops together and the message
  is printed once, by rank 0.
* Anything else that raises on a rank goes through :func:`fail_hard`: the rank
  prints its message once, removes the run's temporary output and calls
  ``Abort`` so no other rank waits forever in a collective.
* An error that every rank of a sub-communicator raises alike (decided from
  the same collective result, e.g. by a sampling layer's members) is marked
  with :func:`agreed_on`: :func:`fail_hard` then prints it once, from rank 0
  of that communicator, while the rest of the job is ended by ``Abort``.
"""

import os
import sys
import time
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


#: Seconds the other members of an agreed error wait for its printer before ending the job.
AGREED_WAIT_S = 10.0


def agreed_on(comm, exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised alike on every rank of ``comm``, and return it.

    Use it where every rank of ``comm`` decides the error from the same
    collective result, so all of them raise it. :func:`fail_hard` prints it once,
    from rank 0 of ``comm``; the other members wait (at most ``AGREED_WAIT_S``)
    until that rank has printed before the job is aborted.

    Examples
    --------
    >>> raise agreed_on(layer_comm, SamplingError("sample: n = 10 but ..."))  # doctest: +SKIP
    """
    exc.agreed_comm = comm
    return exc


def _wait_for_members(comm, timeout: float) -> None:
    """A barrier over ``comm`` that gives up after ``timeout`` seconds (never hangs a failing job)."""
    req = comm.Ibarrier()
    deadline = time.monotonic() + timeout
    while not req.Test() and time.monotonic() < deadline:
        time.sleep(0.005)


def write_line(text: str, stream=None) -> None:
    """Write one whole line with a single ``write`` call (lines of ranks are not glued together)."""
    stream = stream or sys.stderr
    stream.write(text.rstrip("\n") + "\n")
    stream.flush()


def fail_hard(comm, exc: BaseException, debug: bool = False) -> None:
    """Print ``exc`` once from this rank, remove temporary output, and end the whole job."""
    from .output.location import abandon_run

    rank, size = comm.Get_rank(), comm.Get_size()
    if isinstance(exc, HpcprepError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
        debug = True
    members = getattr(exc, "agreed_comm", None)
    where = f" on rank {rank} of {size}" if size > 1 and members is None else ""
    if members is None or members.Get_rank() == 0:
        if debug:
            write_line("".join(traceback.format_exception(exc)).rstrip())
        write_line(f"hpcprep: error{where}: {text}")
    if members is not None and members.Get_size() > 1:
        _wait_for_members(members, AGREED_WAIT_S)   # its rank 0 has printed
    abandon_run()
    if size > 1:
        comm.Abort(1)
    os._exit(1)
