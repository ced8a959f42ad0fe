"""Agreeing on errors across ranks, and ending every rank when one fails: the one way.

Three mechanisms (DESIGN §6, shared/notes/mpi.md):

* A decision made on one rank (config, input files, output folder, a
  checkpoint, a rebalanced split) goes through :func:`root_decides`: the root
  runs it and broadcasts either the result or the error, so every rank raises
  the same :func:`agreed` error, printed once by rank 0 (``cli.main``).
* An error every rank raises alike from the same collective result is made
  with :func:`agreed` (every rank of the job) or marked with :func:`agreed_on`
  (every rank of a sub-communicator): :func:`fail_hard` then prints it once.
* Anything else that raises on a rank goes through :func:`fail_hard`: the rank
  prints its message once, runs the cleanups it is given (the run's temporary
  output) and calls ``Abort`` so no other rank waits forever in a collective.
"""

import functools
import os
import sys
import time
import traceback

from ..errors import HpcprepError


class AgreedError(HpcprepError):
    """An error every rank of the job raises alike (printed once, by rank 0)."""


@functools.cache
def _agreed_type(cls: type) -> type:
    """The subclass of ``cls`` and :class:`AgreedError` (one per class: made once, then reused)."""
    if issubclass(cls, AgreedError):
        return cls
    return type(f"Agreed{cls.__name__}", (AgreedError, cls), {"_plain": cls})


def _plain_type(cls: type) -> type:
    """``cls`` without the agreed mix-in (a module-level class, so it can be pickled)."""
    return cls.__dict__.get("_plain", cls)


def agreed(cls: type = HpcprepError, message: str = "", **attrs) -> HpcprepError:
    """An error raised on every rank alike: an instance of ``cls`` and of :class:`AgreedError`.

    Parameters
    ----------
    cls : type
        A subclass of :class:`HpcprepError` (e.g. ``DataError``), so callers can
        still catch what the error is about.
    message : str
        The one-line message.
    **attrs
        Attributes to set on the error (e.g. ``late_tasks`` of an AssignError).

    Examples
    --------
    >>> err = agreed(ConfigError, "train.lr = -1: must be > 0")   # doctest: +SKIP
    >>> isinstance(err, ConfigError) and isinstance(err, AgreedError)   # doctest: +SKIP
    True
    """
    err = _agreed_type(cls)(message)
    err.__dict__.update(attrs)
    return err


def _outcome(fn, args) -> tuple:
    """``(True, result)`` or ``(False, (class, message, attributes))`` of ``fn(*args)``."""
    try:
        return True, fn(*args)
    except HpcprepError as e:
        attrs = {k: v for k, v in vars(e).items() if k != "agreed_comm"}
        return False, (_plain_type(type(e)), str(e), attrs)


def root_decides(comm, fn, *args, root: int = 0, job_wide: bool = True):
    """Run ``fn(*args)`` on ``root`` only and broadcast its result, or its error, to every rank.

    Parameters
    ----------
    comm : communicator
    fn : callable
        Run on ``root`` only. An :class:`HpcprepError` it raises is raised on every
        rank; any other exception ends the job through :func:`fail_hard`.
    root : int
        The deciding rank of ``comm``.
    job_wide : bool
        True when ``comm`` holds every rank of the job: the error is
        :func:`agreed` (printed once by ``cli.main``, no ``Abort``). False for a
        part of the job: the error is marked :func:`agreed_on` ``comm``.

    Returns
    -------
    The result of ``fn`` on every rank.

    Raises
    ------
    HpcprepError
        On every rank, of the class ``fn`` raised, with the same message and attributes.
    """
    outcome = _outcome(fn, args) if comm.Get_rank() == root else None
    ok, payload = comm.bcast(outcome, root=root)
    if ok:
        return payload
    cls, message, attrs = payload
    if job_wide:
        raise agreed(cls, message, **attrs)
    err = cls(message)
    err.__dict__.update(attrs)
    raise agreed_on(comm, err)


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


def wait_for_members(comm, timeout: float) -> None:
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


def run_cleanups(cleanups) -> None:
    """Call each cleanup in turn; one that fails does not stop the others (a job is ending)."""
    for cleanup in cleanups:
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def fail_hard(comm, exc: BaseException, debug: bool = False, cleanups=()) -> None:
    """Print ``exc`` once from this rank, run ``cleanups``, and end the whole job.

    Parameters
    ----------
    comm : communicator
        Every rank of the job (``Abort`` ends them all).
    exc : BaseException
        The error; one marked :func:`agreed_on` is printed by rank 0 of its communicator only.
    debug : bool
        Print the traceback too (always for errors that are not :class:`HpcprepError`).
    cleanups : sequence of callables
        Called before ``Abort``, e.g. removing the run's temporary output
        (``cli.main`` passes the run's, with
        :meth:`hpcprep.output.location.OutputLocation.abandon`).
    """
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
        wait_for_members(members, AGREED_WAIT_S)   # its rank 0 has printed
    run_cleanups(cleanups)
    if size > 1:
        comm.Abort(1)
    os._exit(1)
