"""Moving packed row records between ranks: all-to-all in bounded rounds, and one-to-one links.

Rows travel as NumPy structured records (one contiguous buffer, rows grouped by
destination) through the uppercase buffer methods of mpi4py, never pickled.
Exchanges are split into rounds so that no single message exceeds
``max_bytes`` (MPI paths limited to 2**31 elements, mpi4py issues #575/#650).
"""

import sys

import numpy as np
from mpi4py import MPI

from .chunk import Chunk
from .mpi import tags

DEFAULT_MAX_BYTES = 1 << 30

_TYPES: dict[int, MPI.Datatype] = {}


def record_mpi_type(itemsize: int) -> MPI.Datatype:
    """A committed MPI datatype of ``itemsize`` contiguous bytes (cached)."""
    t = _TYPES.get(itemsize)
    if t is None:
        t = MPI.BYTE.Create_contiguous(itemsize).Commit()
        _TYPES[itemsize] = t
    return t


def _as_bytes(records: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(records).view(np.uint8).reshape(-1)


#: The last receive buffer handed out. When its caller has dropped every view of it, the next
#: exchange of a similar size receives into it again: fresh memory costs a page fault per page
#: (about a third of a bare ``Alltoallv`` here), reused memory none.
_RECV_POOL: list = [None]


def _receive_buffer(nbytes: int) -> np.ndarray:
    """``nbytes`` of uint8 to receive into: the pooled buffer if nothing else refers to it."""
    buf = _RECV_POOL[0]
    # references: the pool's list, ``buf`` and getrefcount's argument; any live view adds one
    if buf is not None and nbytes <= buf.nbytes <= 2 * nbytes + (1 << 20) \
            and sys.getrefcount(buf) == 3:
        return buf[:nbytes]
    buf = np.empty(nbytes, np.uint8)
    _RECV_POOL[0] = buf if nbytes >= 1 << 20 else None
    return buf


#: Up to this many ranks, one ``Allgather`` of every rank's send counts (P * P integers) gives
#: each rank its receive counts and the round count at once; beyond it, ``Alltoall`` + ``Allreduce``.
GATHER_COUNTS_MAX_RANKS = 256


def exchange_counts(comm, sendcounts, itemsize: int, max_bytes: int = DEFAULT_MAX_BYTES):
    """Receive counts and the number of rounds of an exchange (collective over ``comm``).

    Parameters
    ----------
    comm : communicator
    sendcounts : array of int64, shape (comm.size,)
        Rows this rank sends to each rank.
    itemsize : int
        Bytes per row.
    max_bytes : int
        Largest message between two ranks in one round.

    Returns
    -------
    recvcounts : ndarray of int64, shape (comm.size,)
    rounds : int
        The same on every rank.
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    sendcounts = np.ascontiguousarray(sendcounts, dtype=np.int64)
    cap = max(1, max_bytes // max(itemsize, 1))
    if size <= GATHER_COUNTS_MAX_RANKS:
        matrix = np.empty((size, size), dtype=np.int64)
        comm.Allgather(sendcounts, matrix)
        recvcounts = matrix[:, rank].copy()
        longest = int(matrix.max(initial=0))
    else:
        recvcounts = np.empty(size, dtype=np.int64)
        comm.Alltoall(sendcounts, recvcounts)
        top = np.array([max(sendcounts.max(initial=0), recvcounts.max(initial=0))], dtype=np.int64)
        comm.Allreduce(MPI.IN_PLACE, top, op=MPI.MAX)
        longest = int(top[0])
    return recvcounts, int(-(-longest // cap))


def exchange_records(comm, records: np.ndarray, sendcounts, dtype: np.dtype,
                     max_bytes: int = DEFAULT_MAX_BYTES, plan=None, skip_self: bool = False):
    """:func:`alltoallv_records` that also returns the receive counts.

    ``plan``: ``(recvcounts, rounds)`` from :func:`exchange_counts` when the caller
    already has them (skips the count exchange). ``skip_self``: this rank's rows
    for itself (its section of ``records``) are not copied through MPI; they are
    missing from ``received`` and ``recvcounts[rank]`` is 0 (the caller uses
    its own section in place).

    Returns
    -------
    received, recvcounts, bytes_to_others
    """
    rank = comm.Get_rank()
    sendcounts = np.array(sendcounts, dtype=np.int64)
    sdispls = np.cumsum(sendcounts) - sendcounts
    if skip_self:
        sendcounts[rank] = 0
    if plan is None:
        plan = exchange_counts(comm, sendcounts, dtype.itemsize, max_bytes)
    recvcounts, rounds = plan
    n_recv = int(recvcounts.sum())
    received = _receive_buffer(n_recv * dtype.itemsize).view(dtype) if n_recv else np.empty(0, dtype)
    cap = max(1, max_bytes // max(dtype.itemsize, 1))
    mpitype = record_mpi_type(dtype.itemsize)
    sendbuf = _as_bytes(records) if len(records) else np.empty(0, np.uint8)
    recvbuf = received.view(np.uint8).reshape(-1) if len(received) else np.empty(0, np.uint8)
    rdispls = np.cumsum(recvcounts) - recvcounts
    if rounds == 1:
        comm.Alltoallv([sendbuf, (sendcounts.tolist(), sdispls.tolist()), mpitype],
                       [recvbuf, (recvcounts.tolist(), rdispls.tolist()), mpitype])
    else:
        for r in range(rounds):
            done = r * cap
            sc = np.clip(sendcounts - done, 0, cap)
            rc = np.clip(recvcounts - done, 0, cap)
            comm.Alltoallv([sendbuf, (sc.tolist(), (sdispls + done).tolist()), mpitype],
                           [recvbuf, (rc.tolist(), (rdispls + done).tolist()), mpitype])
    others = int(sendcounts.sum() - sendcounts[rank]) * dtype.itemsize
    return received, recvcounts, others


def alltoallv_records(comm, records: np.ndarray, sendcounts, dtype: np.dtype,
                      max_bytes: int = DEFAULT_MAX_BYTES):
    """Send records grouped by destination; receive records grouped by source.

    Parameters
    ----------
    comm : communicator
        Every rank of ``comm`` must call this (with zero counts if it has nothing).
    records : structured ndarray
        Rows to send, already ordered so that destination 0's rows come first.
    sendcounts : array of int, shape (comm.size,)
        Rows for each destination.
    dtype : numpy dtype
        The record dtype (the same on every rank; ``records`` may be empty).
    max_bytes : int
        Largest message between two ranks in one round.

    Returns
    -------
    received : structured ndarray
        Rows from every source, in source-rank order.
    bytes_to_others : int
        Bytes this rank sent to ranks other than itself.
    """
    received, _, others = exchange_records(comm, records, sendcounts, dtype, max_bytes)
    return received, others


# ---- one-to-one links (input -> standardize -> standardize) -----------------

_END = None


def send_chunk(comm, dest: int, chunk: Chunk | None, tag: int = tags.CHUNK) -> int:
    """Send a chunk to ``dest`` (header pickled, arrays as raw buffers); None ends the stream.

    Returns the bytes of array data sent.
    """
    if chunk is None:
        comm.send(_END, dest=dest, tag=tag)
        return 0
    arrays = {"ids": chunk.ids, "features": chunk.features}
    if chunk.labels is not None:
        arrays["labels"] = chunk.labels
    if chunk.source_rows is not None:
        arrays["source_rows"] = chunk.source_rows
    arrays.update({f"extra:{k}": v for k, v in chunk.extras.items()})
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    header = {"chunk_id": chunk.chunk_id, "source": chunk.source, "source_start": chunk.source_start,
              "arrays": [(k, v.dtype.str, v.shape) for k, v in arrays.items()]}
    comm.send(header, dest=dest, tag=tag)
    sent = 0
    for v in arrays.values():
        comm.Send(v.view(np.uint8).reshape(-1) if v.size else np.empty(0, np.uint8), dest=dest, tag=tag)
        sent += v.nbytes
    return sent


def recv_chunk(comm, source: int, tag: int = tags.CHUNK) -> Chunk | None:
    """Receive a chunk sent by :func:`send_chunk` (None at the end of the stream)."""
    header = comm.recv(source=source, tag=tag)
    if header is _END:
        return None
    arrays = {}
    for name, dt, shape in header["arrays"]:
        a = np.empty(shape, dtype=np.dtype(dt))
        comm.Recv(a.view(np.uint8).reshape(-1) if a.size else np.empty(0, np.uint8), source=source, tag=tag)
        arrays[name] = a
    return Chunk(
        chunk_id=header["chunk_id"], ids=arrays.pop("ids"), features=arrays.pop("features"),
        labels=arrays.pop("labels", None), source_rows=arrays.pop("source_rows", None),
        extras={k[len("extra:"):]: v for k, v in arrays.items()},
        source=header["source"], source_start=header["source_start"])
