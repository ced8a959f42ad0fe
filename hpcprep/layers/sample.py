"""A sampling layer: random keys, routing (key range or splitters), bucketed sort, selection.

Rows reach a member of the layer in pieces (:meth:`SampleLayer.receive`) and go
into a :class:`~hpcprep.layers.spill.RowStore`, which spills sorted runs to
disk past the rank's budget. :meth:`SampleLayer.finish` then (for modes with
non-uniform keys) re-routes rows by splitters chosen from a sample of keys,
learns the rank's global position, and streams the rank's sorted rows bucket
by bucket through the mode's selection into one
:class:`~hpcprep.layers.spill.BlockSeq` per output (per split).
"""

import time

import numpy as np
from mpi4py import MPI

from ..mpi.agree import agreed_on
from ..mpi.exchange import Exchanger, rounds
from ..kernels.active import HOST, Kernels
from ..kernels.pack import gather_rows, pack_rows
from ..kernels.route import destination_order, key_range_owner
from ..sampling import SamplingError, SelectContext, make_mode
from ..sampling.modes import SampleMode
from ..steps._columns import CODES
from .spill import BlockSeq, RowStore

#: Random streams of sampling layers start here (other purposes use smaller numbers).
SAMPLE_STREAM = 1 << 32

#: Shares of ``resources.memory_per_rank``: rows buffered before a run is spilled,
#: rows per bucket read back, selected rows held before they go to block files.
RUN_SHARE, BUCKET_SHARE, OUTPUT_SHARE = 1 / 3, 1 / 8, 1 / 3

#: Splitter sample: keys per rank per member of the layer.
SAMPLES_PER_RANK = 32

#: Fine key ranges per member of a ``range``-routed layer: producers send rows grouped by fine
#: range, the receiving store keeps each range apart, and ``finish`` sorts and releases them
#: range after range (joined into blocks of a few MiB), so the rank never holds its rows twice.
FINE_PER_RANK = 64


def record_dtype(n_features: int, feature_dtype: str, label_dtype: str | None,
                 weights: bool = False, copies: bool = False, codes: int = 0) -> np.dtype:
    """The packed row record that travels between ranks: id, features, [label], [weight],
    [``codes`` int64 category codes, field ``k``], [copy tag]."""
    fields = [("id", "<i8"), ("x", np.dtype(feature_dtype).str, (n_features,))]
    if label_dtype is not None:
        fields.append(("y", np.dtype(label_dtype).str))
    if weights:
        fields.append(("w", "<f8"))
    if codes:
        fields.append(("k", "<i8", (codes,)))
    if copies:
        fields.append(("c", "<u8"))
    return np.dtype(fields)


def _columns(chunk, dtype: np.dtype) -> list:
    """``(field, column)`` of the record fields that come from the chunk (all but the copy tag)."""
    cols = [("id", np.asarray(chunk.ids)), ("x", chunk.features)]
    if "y" in dtype.names:
        cols.append(("y", chunk.labels))
    if "w" in dtype.names:
        if "weight" not in chunk.extras:
            raise RuntimeError("input.weight is set but the reader gave no weight column")
        cols.append(("w", chunk.extras["weight"]))
    if "k" in dtype.names:
        codes = chunk.extras.get(CODES)
        if codes is None or codes.shape[1:] != dtype["k"].shape:
            raise RuntimeError(f"{chunk.source}: {dtype['k'].shape[0]} code column(s) expected, the "
                               f"steps gave {None if codes is None else codes.shape[1]}")
        cols.append(("k", codes))
    return cols


def chunk_to_records(chunk, dtype: np.dtype) -> np.ndarray:
    """Pack a chunk's rows into records of ``dtype`` (copy tags start at 0)."""
    return pack_rows(_columns(chunk, dtype), dtype)


class SampleLayer:
    """One ``[[sample]]`` table.

    Every rank builds every layer (to route rows into it); only the layer's
    members have ``comm`` and hold rows.

    Parameters
    ----------
    index : int
        Position of the layer in the chain.
    table : dict
        The validated ``[[sample]]`` table.
    comm : communicator or None
        The layer's members (None on other ranks).
    seed : int
    budget : int
        ``resources.memory_per_rank`` in bytes.
    spill_dir : str
        This rank's spill folder.
    exchanger : Exchanger, optional
        The run's exchanger (a new one if not given).
    kernels : Kernels
        The run's kernels (random keys, sort by key), handed to the store and the mode.
    """

    def __init__(self, index: int, table: dict, comm, seed: int, budget: int = 1 << 31,
                 spill_dir: str = "spill", exchanger: Exchanger | None = None,
                 kernels: Kernels = HOST):
        self.index, self.table, self.comm, self.seed = index, table, comm, seed
        self.exchanger, self.kernels = exchanger or Exchanger(), kernels
        self.budget, self.spill_dir = int(budget), spill_dir
        self.mode = make_mode(table, kernels)
        self.stream = SAMPLE_STREAM + index
        self.dtype: np.dtype | None = None
        self.store: RowStore | None = None
        self.outputs: list[BlockSeq] | None = None
        self.start = self.total_in = self.total_out = 0
        self.totals_out: list[int] = []
        self.rows_offered = 0       # rows this rank routed into the layer (as a producer)
        self.rows_received = self.rows_out_local = 0
        self.bytes_sent = 0
        self.bytes_spilled = 0
        self.classes_in: dict = {}
        self.classes_out: list[dict] = []
        self.offered_total = self.excluded_total = 0
        self.seconds: dict[str, float] = {}

    @property
    def output_names(self) -> list[str] | None:
        """Split names, or None for a single output."""
        return self.mode.splits

    def bind(self, feature_names: list[str], dtype: np.dtype) -> None:
        """Learn the record layout (every rank of the link, before routing)."""
        if self.dtype is not None:
            return
        self.dtype = dtype
        self.mode.bind(list(feature_names), dtype)
        if self.comm is not None:
            if self.fine_per_rank > 1:
                P, p, F = self.comm.Get_size(), self.comm.Get_rank(), self.fine_per_rank

                def fine(keys):
                    return np.clip(key_range_owner(keys, P * F) - p * F, 0, F - 1)
                self.store = RowStore(dtype, self.budget * RUN_SHARE, self.spill_dir, f"s{self.index}",
                                      fine=fine, n_fine=F, kernels=self.kernels)
            else:
                self.store = RowStore(dtype, self.budget * RUN_SHARE, self.spill_dir, f"s{self.index}",
                                      kernels=self.kernels)

    @property
    def fine_per_rank(self) -> int:
        """Fine key ranges per member (1 where the store's keys are not the routing keys)."""
        return FINE_PER_RANK if self.mode.routing == "range" else 1

    @property
    def copies_received(self) -> bool:
        """True when :meth:`receive_sections` keeps copies only (the store cuts every section
        into fine key ranges), so the exchange's receive buffer may be reused."""
        return self.fine_per_rank > 1

    def keys_of(self, records: np.ndarray) -> np.ndarray:
        return self.mode.keys(self.seed, self.stream, records["id"], records)

    def _routing_order(self, keys: np.ndarray, n_parts: int, fine: bool = False):
        """Row order grouped by member, then by fine key range; rows per member (``fine``: and
        rows per fine range, shape ``(n_parts, F)``).

        Fine range ``g`` of ``n_parts * F`` lies in member ``g // F``'s range
        (:func:`~hpcprep.kernels.route.key_range_owner`).
        """
        F = self.fine_per_rank
        order, counts = destination_order(key_range_owner(keys, n_parts * F), n_parts * F)
        per_fine = counts.reshape(n_parts, F)
        return (order, per_fine.sum(axis=1)) + ((per_fine,) if fine else ())

    def route(self, records: np.ndarray, n_parts: int):
        """Order ``records`` by the member they go to; return them and the counts per member."""
        self.rows_offered += len(records)
        records = self.mode.expand(self.seed, self.stream, records)
        if self.mode.routing == "range":
            keys = self.keys_of(records)
        else:
            keys = self.mode.route_keys(self.seed, self.stream, records)
        order, counts = self._routing_order(keys, n_parts)
        return gather_rows(records, order), counts

    def _keys_from_ids(self) -> bool:
        """Routing keys of fresh rows (copy tag 0) are ``kernels.keys(seed, stream, id)``, and rows
        enter unchanged."""
        mode = type(self.mode)
        if mode.expand is not SampleMode.expand:
            return False
        if self.mode.routing == "range":
            return mode.keys is SampleMode.keys
        return mode.route_keys is SampleMode.route_keys

    def route_chunk(self, chunk, n_parts: int, own_part: int | None = None):
        """Pack a chunk's rows straight into a send buffer ordered by member; and the counts.

        The same rows and order as ``route(chunk_to_records(chunk))``, but each row
        is gathered once, column by column in slices, into the buffer that is sent.

        Returns
        -------
        routed, counts, own
            With ``own_part`` (the member that is this rank), member ``own_part``'s
            rows are left out of ``routed`` (``counts`` still counts them) and
            packed into ``own``: one array per fine key range, in order, that the
            store keeps as they are (one copy of those rows less). Else ``own`` is None.
        """
        if chunk is None:
            return np.empty(0, self.dtype), np.zeros(n_parts, np.int64), None
        if not self._keys_from_ids():
            return *self.route(chunk_to_records(chunk, self.dtype), n_parts), None
        self.rows_offered += len(chunk)
        keys = self.kernels.keys(self.seed, self.stream, np.asarray(chunk.ids))
        order, counts, per_fine = self._routing_order(keys, n_parts, fine=True)
        cols = _columns(chunk, self.dtype)
        if own_part is None:
            return pack_rows(cols, self.dtype, order), counts, None
        lo = int(counts[:own_part].sum())
        hi = lo + int(counts[own_part])
        cuts = lo + np.concatenate(([0], np.cumsum(per_fine[own_part])))
        own = [pack_rows(cols, self.dtype, order[a:b])
               for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()) if b > a]
        return pack_rows(cols, self.dtype, np.concatenate((order[:lo], order[hi:]))), counts, own

    def receive(self, records: np.ndarray, owned: bool = False) -> None:
        """Keep ``records`` (``owned``: handed over, see :meth:`RowStore.add`)."""
        self.rows_received += len(records)
        self.store.add(records, self.keys_of(records), owned)

    def receive_sections(self, received: np.ndarray, counts, own=None, own_index: int = -1) -> None:
        """Keep what one exchange brought: ``received`` (sections of ``counts`` rows by source).

        ``own``: this rank's rows for itself (not sent through MPI), taken as the
        section of source ``own_index``: a view of the send buffer (copied), or
        a list of arrays that are handed over (:meth:`route_chunk`). Sections
        are handed to the store one by one (each is grouped by fine key range,
        so the store cuts it by slicing).
        """
        counts = [int(c) for c in counts]
        if own is not None and own_index >= 0:
            counts[own_index] = 0
        if self.fine_per_rank == 1:   # one piece, kept whole (the buffer is not recycled)
            self.receive(received)
            if own is not None:
                self._receive_own(own)
            return
        at = 0
        for s, c in enumerate(counts):
            if s == own_index and own is not None:
                self._receive_own(own)
            if c:
                self.receive(received[at:at + c])
                at += c

    def _receive_own(self, own) -> None:
        if isinstance(own, list):
            for piece in own:
                self.receive(piece, owned=True)
        else:
            self.receive(own)

    def exchange_done(self, link) -> None:
        """Sum what the producers offered (collective over the link, once per exchange)."""
        got = link.allreduce(np.array([self.rows_offered, self.mode.excluded], dtype=np.int64))
        self.offered_total, self.excluded_total = int(got[0]), int(got[1])

    # ---- finishing: (re-route), position, selection ---------------------------------
    def _splitters(self) -> np.ndarray:
        comm = self.comm
        size = comm.Get_size()
        keys, weight = self.store.sample_keys(SAMPLES_PER_RANK * size)
        gathered = comm.allgather((keys, weight))
        allk = np.concatenate([g[0] for g in gathered])
        allw = np.concatenate([np.full(len(g[0]), g[1]) for g in gathered])
        if len(allk) == 0:
            return np.zeros(size - 1, dtype=np.uint64)
        order = np.argsort(allk, kind="stable")
        allk, cum = allk[order], np.cumsum(allw[order])
        targets = cum[-1] * np.arange(1, size) / size
        return allk[np.minimum(np.searchsorted(cum, targets, side="left"), len(allk) - 1)]

    def _redistribute(self) -> None:
        """Sample sort: re-route this layer's rows among its members by splitters."""
        comm = self.comm
        splitters = self._splitters()
        old = self.store
        self.store = RowStore(self.dtype, self.budget * RUN_SHARE, self.spill_dir, f"s{self.index}r",
                              kernels=self.kernels)
        nothing = (np.empty(0, self.dtype), np.empty(0, np.uint64))
        for rec, keys in rounds(comm, old.buckets(self.budget * BUCKET_SHARE), nothing):
            dest = np.searchsorted(splitters, keys, side="right")
            counts = np.bincount(dest, minlength=comm.Get_size()).astype(np.int64)
            got, _, sent = self.exchanger.records(comm, rec, counts, self.dtype)
            self.bytes_sent += sent
            del rec, keys
            self.store.add(got, self.keys_of(got))
        self.bytes_spilled += old.bytes_spilled

    def finish(self, dtype: np.dtype | None = None) -> None:
        """Sort what this member holds and apply the mode's selection (collective over ``comm``)."""
        t0 = time.perf_counter()
        if self.dtype is None:
            self.bind([], dtype)
        comm = self.comm
        if self.mode.routing == "splitters":
            self._redistribute()
            self.seconds["reroute"] = time.perf_counter() - t0
        store = self.store
        labelled = "y" in self.dtype.names and self.dtype["y"].kind in "iu"
        classes = None
        if labelled:
            local = sorted(store.class_counts)
            classes = np.array(sorted(set().union(*comm.allgather(local))), dtype=self.dtype["y"])
        counts = np.zeros(1 + (0 if classes is None else len(classes)), dtype=np.int64)
        counts[0] = store.rows
        if classes is not None:
            for i, v in enumerate(classes.tolist()):
                counts[1 + i] = store.class_counts.get(v, 0)
        start = np.zeros_like(counts)
        comm.Exscan(counts, start)
        if comm.Get_rank() == 0:
            start[:] = 0
        total = np.zeros_like(counts)
        comm.Allreduce(counts, total)
        self.start, self.total_in = int(start[0]), int(total[0])
        if classes is not None:
            self.classes_in = {str(v): int(t) for v, t in zip(classes.tolist(), total[1:].tolist())}
        ctx = SelectContext(comm, self.start, self.total_in, self.seed, self.stream, classes,
                            None if classes is None else total[1:].copy(),
                            None if classes is None else start[1:].copy())
        try:
            self.mode.prepare(ctx)
        except SamplingError as e:   # decided from the layer's global counts: alike on every member
            raise agreed_on(comm, e) from None
        n_out = len(self.output_names or [None])
        self.outputs = [BlockSeq(self.dtype, self.budget * OUTPUT_SHARE, self.spill_dir,
                                 f"s{self.index}o{i}") for i in range(n_out)]
        spilled = store.bytes_spilled
        for rec, keys in store.buckets(self.budget * BUCKET_SHARE):
            parts = self.mode.partition(ctx, rec, keys)
            ctx.advance(rec)
            del rec, keys
            for out, part in zip(self.outputs, parts):
                out.append(part)
        self.bytes_spilled += spilled
        self.rows_out_local = sum(o.rows for o in self.outputs)
        outs = np.array([o.rows for o in self.outputs], dtype=np.int64)
        comm.Allreduce(MPI.IN_PLACE, outs)
        self.totals_out = [int(v) for v in outs]
        self.total_out = int(outs.sum())
        if classes is not None:
            self.classes_out = []
            for o in self.outputs:
                c = np.array([o.class_counts.get(v, 0) for v in classes.tolist()], dtype=np.int64)
                comm.Allreduce(MPI.IN_PLACE, c)
                self.classes_out.append({str(v): int(t) for v, t in zip(classes.tolist(), c.tolist())})
        self.seconds["sort+select"] = time.perf_counter() - t0

    def report(self) -> dict:
        summary = self.mode.summary(self.offered_total, self.total_out)
        summary["rows_sorted"] = self.total_in
        if self.excluded_total:
            summary["excluded"] = self.excluded_total
        if self.output_names:
            summary["splits"] = dict(zip(self.output_names, self.totals_out))
        if self.classes_in:
            summary["classes_in"] = self.classes_in
            if self.output_names:
                summary["classes_out"] = dict(zip(self.output_names, self.classes_out))
            elif self.classes_out:
                summary["classes_out"] = self.classes_out[0]
        return {"rows_in": self.rows_received, "rows_out": self.rows_out_local,
                "bytes_sent": self.bytes_sent, "bytes_spilled": self.bytes_spilled,
                "seconds": self.seconds, "mode": summary}
