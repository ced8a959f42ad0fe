"""Replayable streams of chunks between the input and standardization layers.

A step that needs global statistics makes its layer read its input more than
once (one pass per fit, then the final pass). Every stream can be iterated
again; ``iterate(final=True)`` is the last iteration, which may release what a
stream kept (and is the one where rows dropped are counted).

A stream that keeps its chunks in memory between passes also takes them back
further processed (:meth:`ChunkStream.keep`): a fit pass hands back each chunk
with the steps fitted so far applied, so the next pass starts from there
instead of re-applying every earlier step to the rows as read.
"""

import os
import time
from collections.abc import Iterator

import numpy as np

from ..chunk import Chunk
from ..mpi.exchange import recv_chunk


class ChunkStream:
    """Base class: a sequence of chunks in chunk-id order that can be iterated again."""

    def iterate(self, final: bool) -> Iterator[Chunk]:
        raise NotImplementedError

    def keep(self, chunk: Chunk) -> None:
        """Replace what is kept of ``chunk.chunk_id`` by ``chunk`` (the same rows, further along).

        Only for a chunk of the current non-final pass. Streams that keep nothing
        ignore it; later passes then get the rows as read again.
        """


class ReaderStream(ChunkStream):
    """The chunks planned for one input rank, read from the files.

    With ``cache=True`` the chunks read in a non-final pass are kept in memory
    so later passes re-read memory, not disk (the caller decides from the
    memory budget).
    """

    def __init__(self, descs, reader, cache: bool, progress=None):
        self.descs, self.reader, self.cache = list(descs), reader, cache
        self._kept: dict[int, Chunk] = {}
        self._rows: dict[int, int] = {}  # rows as read, of the kept chunks (progress lines)
        self.progress = progress
        self.rows_read = 0
        self.bytes_read = 0
        self.dropped: dict[str, int] = {}

    def iterate(self, final):
        for desc in self.descs:
            chunk = self._kept.pop(desc.chunk_id, None) if final else self._kept.get(desc.chunk_id)
            if chunk is None:
                chunk = self.reader.read(desc)
                self.rows_read += len(chunk)
                self.bytes_read += chunk.nbytes
                if self.cache and not final:
                    self._kept[desc.chunk_id] = chunk
                    self._rows[desc.chunk_id] = len(chunk)
            if self.progress is not None:
                self.progress.tick(self._rows.get(desc.chunk_id, len(chunk)))
            if final:
                self._rows.pop(desc.chunk_id, None)
                for reason, n in chunk.dropped.items():
                    self.dropped[reason] = self.dropped.get(reason, 0) + n
            yield chunk
        if final:
            self.reader.close()

    def keep(self, chunk):
        if chunk.chunk_id in self._kept:
            self._kept[chunk.chunk_id] = chunk


class ChunkStore(ChunkStream):
    """Chunks received from the previous layer, in memory up to a budget, then spilled to disk."""

    def __init__(self, budget_bytes: int, spill_dir: str):
        self.budget, self.spill_dir = budget_bytes, spill_dir
        self._items: list = []  # Chunk, or path of a spilled chunk
        self._where: dict[int, int] = {}  # chunk id -> position in _items
        self.in_memory = 0
        self.spilled_bytes = 0

    def add(self, chunk: Chunk):
        self._where[chunk.chunk_id] = len(self._items)
        if self.in_memory + chunk.nbytes <= self.budget:
            self._items.append(chunk)
            self.in_memory += chunk.nbytes
            return
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, f"chunk-{chunk.chunk_id:09d}.npz")
        arrays = {"ids": chunk.ids, "features": chunk.features, "source_rows": chunk.rows_in_source()}
        if chunk.labels is not None:
            arrays["labels"] = chunk.labels
        arrays.update({f"extra_{k}": v for k, v in chunk.extras.items()})
        np.savez(path, **arrays)
        self.spilled_bytes += chunk.nbytes
        self._items.append((path, chunk.chunk_id, chunk.source, chunk.source_start))

    def iterate(self, final):
        for i, item in enumerate(self._items):
            if isinstance(item, Chunk):
                yield item
            else:
                path, cid, source, start = item
                with np.load(path) as z:
                    yield Chunk(chunk_id=cid, ids=z["ids"], features=z["features"],
                                labels=z["labels"] if "labels" in z else None,
                                extras={k[6:]: z[k] for k in z.files if k.startswith("extra_")},
                                source=source, source_start=start, source_rows=z["source_rows"])
                if final:
                    os.remove(path)
            if final:
                self._items[i] = None
        if final:
            self._items = []
            self._where = {}
            self.in_memory = 0

    def keep(self, chunk):
        """Replace a chunk held in memory by ``chunk``.

        A spilled chunk moves into memory if it now fits the budget (the steps
        applied so far may have shrunk the rows held); otherwise its file stays
        as received and the steps are re-applied to it in each pass.
        """
        i = self._where.get(chunk.chunk_id)
        if i is None or self._items[i] is None:
            return
        item = self._items[i]
        if isinstance(item, Chunk):
            self.in_memory += chunk.nbytes - item.nbytes
            self._items[i] = chunk
        elif self.in_memory + chunk.nbytes <= self.budget:
            self._items[i] = chunk
            self.in_memory += chunk.nbytes
            os.remove(item[0])


class ReceiveStream(ChunkStream):
    """Chunks arriving from the peer rank of the previous layer; can be iterated once."""

    def __init__(self, comm, source: int, clock):
        self.comm, self.source, self.clock = comm, source, clock
        self._used = False

    def iterate(self, final):
        if self._used or not final:
            raise RuntimeError("a ReceiveStream is read once, in the final pass")
        self._used = True
        while True:
            with self.clock("exchange"):
                chunk = recv_chunk(self.comm, self.source)
            if chunk is None:
                return
            yield chunk

    def drain_into(self, store: ChunkStore) -> ChunkStore:
        """Receive the whole stream into ``store`` (for layers that need several passes)."""
        for chunk in self.iterate(final=True):
            store.add(chunk)
        return store


class AppliedStream(ChunkStream):
    """The output of a standardization layer: its steps applied to its input stream.

    The final pass is the layer's apply pass: its time is charged to
    ``standardize`` on the run's clock and to the layer's ``seconds["apply"]``
    (a fit pass is timed as a whole by the layer).
    """

    def __init__(self, upstream: ChunkStream, layer, clock):
        self.upstream, self.layer, self.clock = upstream, layer, clock

    def iterate(self, final):
        if not final:
            for chunk in self.upstream.iterate(final):
                yield self.layer.apply_all(chunk, count=False)
            return
        seconds = self.layer.seconds
        for chunk in self.upstream.iterate(final):
            t0 = time.perf_counter()
            with self.clock("standardize"):
                chunk = self.layer.apply_all(chunk, count=True)
            seconds["apply"] = seconds.get("apply", 0.0) + time.perf_counter() - t0
            yield chunk

    def keep(self, chunk):
        # the chunk carries how far each layer got (chunk.stage), so upstream may keep it as is
        self.upstream.keep(chunk)
