"""The sample stage: route rows into the sampling layers (all-to-all), sort, select, spill.

Producers (the ranks holding the standardize stage's streams) route each
chunk's rows by random key to the first sampling layer's ranks, one chunk per
exchange round; each later layer receives the previous layer's output the same
way, one block per round, so no rank holds more than a block in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.classes import output_codes
from ..layers.sample import SampleLayer, record_dtype
from ..mpi.exchange import rounds


@dataclass
class Sampled:
    """What the sample stage hands on: the layers, and the rows' feature names and record dtype."""

    layers: list[SampleLayer]
    names: list[str]
    rdt: np.dtype | None


class SampleStage:
    """This rank's part of every sampling layer (a rank outside a layer's group skips it)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.layers = [SampleLayer(i, t, ctx.topo.sample_comms[i], ctx.seed, ctx.budget,
                                   ctx.spill_dir, ctx.exchanger, ctx.kernels)
                       for i, t in enumerate(ctx.cfg.sample)]
        self.names: list[str] = []
        self.rdt: np.dtype | None = None

    def run(self, upstream) -> Sampled:
        """Exchange ``upstream``'s stream (a :class:`Standardized`) into the layers, layer by layer."""
        self.names = upstream.names
        if all(link is None for link in self.ctx.topo.links):
            return Sampled(self.layers, self.names, self.rdt)   # e.g. a layered input rank
        with self.ctx.clock("sample"):
            self._exchange_into_first(upstream.stream)
            for li, layer in enumerate(self.layers):
                if layer.comm is not None:
                    self._finish_layer(li, layer)
                if li + 1 < len(self.layers):
                    self._exchange_between(li)
        return Sampled(self.layers, self.names, self.rdt)

    def _finish_layer(self, li: int, layer: SampleLayer) -> None:
        layer.finish(self.rdt)
        log = self.ctx.layer_log(layer.comm)
        for w in layer.mode.warnings:
            log(f"warning: sample[{li}] {w}")
        spilled = layer.comm.allreduce(layer.bytes_spilled)
        log(f"sample[{li}] {layer.mode.op}: {layer.total_in:,} rows in, {layer.total_out:,} out"
            + (f", {spilled / 2**20:,.1f} MiB spilled" if spilled else ""))

    def _record_dtype(self, names) -> np.dtype:
        from ..steps.categorical import code_columns

        cfg = self.ctx.cfg
        copies = any(t["op"] == "bootstrap" for t in cfg.sample)
        return record_dtype(len(names), cfg.output.dtype, self.ctx.plan.label_dtype,
                            weights=bool(cfg.input.weight), copies=copies,
                            codes=len(code_columns(cfg)))

    def _exchange_into_first(self, stream) -> None:
        """One round per chunk of the producers (until every producer has run out)."""
        ctx, topo = self.ctx, self.ctx.topo
        link = topo.links[0]
        if link is None:
            return
        producers = topo.producers_of(0)
        layer = self._agree_on_rows(link, 0, producers[0])
        cons_link = topo.link_ranks(0, topo.sample_ranks[0])
        chunks = stream.iterate(final=True) if ctx.rank in producers else ()
        if ctx.plan.label_classes is not None:
            chunks = map(output_codes, chunks)
        ctx.progress.log(f"exchange into sample[0]: {len(producers)} producer(s), "
                         f"{len(cons_link)} sampling rank(s)")
        me = link.Get_rank()
        own_part = cons_link.index(me) if me in cons_link else None
        for chunk in rounds(link, chunks, None):
            routed, counts, own = layer.route_chunk(chunk, len(cons_link), own_part)
            del chunk
            self._send_routed(link, layer, routed, counts, cons_link, own)
        layer.exchange_done(link)

    def _exchange_between(self, li: int) -> None:
        """Route sampling layer ``li``'s rows into layer ``li + 1`` (one round per block)."""
        topo = self.ctx.topo
        link = topo.links[li + 1]
        if link is None:
            return
        src = self.layers[li]
        dst = self._agree_on_rows(link, li + 1, topo.sample_ranks[li][0])
        cons_link = topo.link_ranks(li + 1, topo.sample_ranks[li + 1])
        blocks = src.outputs[0].blocks() if src.outputs is not None else ()
        for blk in rounds(link, blocks, np.empty(0, self.rdt)):
            routed, counts = dst.route(blk, len(cons_link))
            del blk
            self._send_routed(link, dst, routed, counts, cons_link)
        dst.exchange_done(link)

    def _agree_on_rows(self, link, layer_index: int, producer: int) -> SampleLayer:
        """Broadcast the feature names from a producer over ``link``; bind the consuming layer."""
        root = self.ctx.topo.link_ranks(layer_index, [producer])[0]
        self.names = link.bcast(self.names if link.Get_rank() == root else None, root=root)
        self.rdt = self._record_dtype(self.names)
        layer = self.layers[layer_index]
        layer.bind(self.names, self.rdt)
        return layer

    def _send_routed(self, link, layer: SampleLayer, routed, counts, cons_link, own=None) -> None:
        """Send rows grouped by consumer; a consumer keeps its own rows without copying them through MPI.

        ``own``: this rank's rows, packed apart (``routed`` lacks them); else
        they are ``routed``'s section for this rank.
        """
        me = link.Get_rank()
        sendcounts = np.zeros(link.Get_size(), dtype=np.int64)
        sendcounts[cons_link] = counts
        if own is not None:
            sendcounts[me] = 0          # not in the send buffer
        elif sendcounts[me]:
            lo = int(sendcounts[:me].sum())
            own = routed[lo:lo + int(sendcounts[me])]
        with self.ctx.clock("exchange"):
            received, recvcounts, sent = self.ctx.exchanger.records(link, routed, sendcounts,
                                                                    self.rdt, skip_self=True)
        layer.bytes_sent += sent
        if me in cons_link:
            layer.receive_sections(received, recvcounts, own, me)
        if me not in cons_link or layer.copies_received:
            self.ctx.exchanger.recycle(received)
        del routed, own, received
