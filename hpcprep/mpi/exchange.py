"""Moving rows between ranks: the records all-to-all in bounded rounds, the rounds loop, one-to-one links.

Rows travel as NumPy structured records (one contiguous buffer, rows grouped by
destination) through the uppercase buffer methods of mpi4py, never pickled.
Exchanges are split into rounds so that no single message exceeds
``max_bytes`` (MPI paths limited to 2**31 elements, mpi4py issues #575/#650).
The run owns one :class:`Exchanger` (its committed datatypes and a spare
receive buffer); :func:`alltoallv_records` is a one-off exchange.
"""

import numpy as np
from mpi4py import MPI

from ..chunk import Chunk
from . import tags

DEFAULT_MAX_BYTES = 1 << 30

#: Receive buffers at least this large are kept for the next exchange when given back.
SPARE_MIN_BYTES = 1 << 20

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


def _as_bytes(records: np.ndarray) -> np.ndarray:
    if not len(records):
        return np.empty(0, np.uint8)
    return np.ascontiguousarray(records).view(np.uint8).reshape(-1)


class Exchanger:
    """The run's record exchanges: committed MPI datatypes and one spare receive buffer.

    Fresh memory costs a page fault per page (about a third of a bare
    ``Alltoallv`` here); a caller that is done with what an exchange brought
    gives it back (:meth:`recycle`) and the next exchange of a similar size
    receives into the same memory.

    Parameters
    ----------
    max_bytes : int
        Largest message between two ranks in one round.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._types: dict[int, MPI.Datatype] = {}
        self._spare: np.ndarray | None = None   # a receive buffer nobody holds
        self._lent: np.ndarray | None = None    # the buffer of the last exchange

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def datatype(self, itemsize: int) -> MPI.Datatype:
        """A committed MPI datatype of ``itemsize`` contiguous bytes (made once per exchanger)."""
        t = self._types.get(itemsize)
        if t is None:
            t = self._types[itemsize] = MPI.BYTE.Create_contiguous(itemsize).Commit()
        return t

    def close(self) -> None:
        """Free the datatypes and the spare buffer."""
        for t in self._types.values():
            t.Free()
        self._types.clear()
        self._spare = self._lent = None

    def _receive_buffer(self, nbytes: int) -> np.ndarray:
        """``nbytes`` of uint8 to receive into: the spare buffer when its size fits."""
        buf, self._spare = self._spare, None
        if buf is None or not nbytes <= buf.nbytes <= 2 * nbytes + SPARE_MIN_BYTES:
            buf = np.empty(nbytes, np.uint8)
        self._lent = buf
        return buf[:nbytes]

    def recycle(self, received: np.ndarray) -> None:
        """Give back what the last exchange brought: the next one may receive into its memory.

        Call it only when neither the caller nor anything ``received`` was handed
        to keeps a view of it.
        """
        owner = received.base if received.base is not None else received
        if owner is self._lent and owner.nbytes >= SPARE_MIN_BYTES:
            self._spare = owner
        self._lent = None

    def records(self, comm, records: np.ndarray, sendcounts, dtype: np.dtype,
                skip_self: bool = False):
        """Send records grouped by destination; receive records grouped by source (collective).

        Parameters
        ----------
        comm : communicator
            Every rank of ``comm`` calls this (with zero counts if it has nothing).
        records : structured ndarray
            Rows to send, destination 0's rows first.
        sendcounts : array of int, shape (comm.size,)
            Rows for each destination.
        dtype : numpy dtype
            The record dtype (the same on every rank; ``records`` may be empty).
        skip_self : bool
            This rank's rows for itself (its section of ``records``) are not copied
            through MPI: they are missing from ``received`` and ``recvcounts[rank]``
            is 0 (the caller uses its own section in place).

        Returns
        -------
        received : structured ndarray
            Rows from every source, in source-rank order.
        recvcounts : ndarray of int64, shape (comm.size,)
        bytes_to_others : int
            Bytes this rank sent to ranks other than itself.
        """
        rank = comm.Get_rank()
        sendcounts = np.array(sendcounts, dtype=np.int64)
        sdispls = np.cumsum(sendcounts) - sendcounts
        if skip_self:
            sendcounts[rank] = 0
        recvcounts, n_rounds = exchange_counts(comm, sendcounts, dtype.itemsize, self.max_bytes)
        n_recv = int(recvcounts.sum())
        received = self._receive_buffer(n_recv * dtype.itemsize).view(dtype) if n_recv \
            else np.empty(0, dtype)
        cap = max(1, self.max_bytes // max(dtype.itemsize, 1))
        mpitype = self.datatype(dtype.itemsize)
        sendbuf, recvbuf = _as_bytes(records), _as_bytes(received)
        rdispls = np.cumsum(recvcounts) - recvcounts
        for r in range(n_rounds):
            done = r * cap
            sc = sendcounts if n_rounds == 1 else np.clip(sendcounts - done, 0, cap)
            rc = recvcounts if n_rounds == 1 else np.clip(recvcounts - done, 0, cap)
            comm.Alltoallv([sendbuf, (sc.tolist(), (sdispls + done).tolist()), mpitype],
                           [recvbuf, (rc.tolist(), (rdispls + done).tolist()), mpitype])
        others = int(sendcounts.sum() - sendcounts[rank]) * dtype.itemsize
        return received, recvcounts, others


def alltoallv_records(comm, records: np.ndarray, sendcounts, dtype: np.dtype,
                      max_bytes: int = DEFAULT_MAX_BYTES):
    """One exchange with a throwaway :class:`Exchanger`: ``(received, recvcounts, bytes_to_others)``."""
    with Exchanger(max_bytes) as ex:
        return ex.records(comm, records, sendcounts, dtype)


def rounds(comm, items, empty):
    """This rank's ``items``, one per round, until every rank of ``comm`` has run out (collective).

    Each round is one ``allreduce``; a rank that has run out takes part with
    ``empty`` while others still have items. The generator holds no item
    while the caller works on it (the caller's ``del`` frees it).

    Examples
    --------
    >>> for block in rounds(comm, store.blocks(), np.empty(0, dtype)):   # doctest: +SKIP
    ...     got, counts, _ = exchanger.records(comm, block, counts_of(block), dtype)
    """
    items = iter(items)
    while True:
        held = [next(items, None)]
        if not comm.allreduce(0 if held[0] is None else 1, op=MPI.MAX):
            return
        yield empty if held[0] is None else held.pop()


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
