"""The standardize stage: the layers' fit passes, and their apply pass as a lazy stream.

In a fused layout every rank runs every layer on its own chunks; in a layered
one a rank of layer ``j`` receives its chunks from its peer upstream, fits
(keeping them in memory or spilled), and sends the applied chunks on. The
last layer's apply pass runs when the sample stage pulls the chunks.

A layer saves its fitted steps right after its fit passes, and a layer saved by
an earlier run of the same config is restored instead of fitted
(:mod:`hpcprep.stages.checkpoint`). Every rank crosses the fit boundary once
(:meth:`~hpcprep.stages.checkpoint.Checkpoint.boundary`) at a point where no
chunk is in flight to it, so a stop there leaves no rank waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..layers.standardize import StandardizeLayer
from ..layers.streams import AppliedStream, ChunkStore, ChunkStream, ReceiveStream
from ..mpi import tags
from ..mpi.exchange import send_chunk


@dataclass
class Standardized:
    """What the standardize stage hands on.

    Attributes
    ----------
    stream : ChunkStream or None
        This rank's chunks into the first sampling layer (None if it sends none).
    names : list of str
        Feature names of those chunks.
    layers : list of StandardizeLayer
        The layers this rank ran (their reports and fitted statistics).
    """

    stream: ChunkStream | None
    names: list[str]
    layers: list[StandardizeLayer] = field(default_factory=list)


def standardize(ctx, reader_stream: ChunkStream | None) -> Standardized:
    """Fit this rank's standardization layers over their input; return the applied stream."""
    if ctx.topo.fused:
        return _fused(ctx, reader_stream)
    return _layered(ctx, reader_stream)


def _make_layer(ctx, j: int, names: list[str]) -> StandardizeLayer:
    from ..steps.rejects import part_path

    table = ctx.cfg.standardize[j]
    layer_comm = ctx.topo.std_comms[j]
    rejects = part_path(ctx.location.join, j, ctx.rank) if table["rejects"] else None
    return StandardizeLayer(j, table, names, layer_comm, ctx.seed, ctx.layer_log(layer_comm), rejects)


def _fit(ctx, layer: StandardizeLayer, stream: ChunkStream, restored: bool) -> None:
    """Fit ``layer`` (its fit passes, then its checkpoint), unless its checkpoint restored it."""
    if layer.needs_passes and not restored:
        with ctx.clock("standardize"):
            layer.fit(stream)
        ctx.checkpoint.save(ctx, layer)


def _fused(ctx, reader_stream: ChunkStream) -> Standardized:
    stream, names, layers = reader_stream, list(ctx.plan.feature_names), []
    for j in range(len(ctx.cfg.standardize)):
        layer = _make_layer(ctx, j, names)
        _fit(ctx, layer, stream, ctx.checkpoint.restore(ctx, layer))
        names = layer.feature_names_out
        stream = AppliedStream(stream, layer, ctx.clock)
        layers.append(layer)
    ctx.checkpoint.boundary(ctx)
    return Standardized(stream, names, layers)


def _layered(ctx, reader_stream: ChunkStream | None) -> Standardized:
    topo, names = ctx.topo, list(ctx.plan.feature_names)
    n_std = len(ctx.cfg.standardize)
    if reader_stream is not None:
        if n_std == 0:
            return Standardized(reader_stream, names)
        _send_stream(ctx, topo.std_ranks[0][ctx.index_in(topo.input_ranks)], reader_stream, names)
        ctx.checkpoint.boundary(ctx)
        return Standardized(None, names)
    out = Standardized(None, names)
    for j in range(n_std):
        if ctx.rank not in topo.std_ranks[j]:
            continue
        if j > ctx.checkpoint.last_to_fit:   # nothing reaches this layer before every fit ends
            ctx.checkpoint.boundary(ctx)
        i = ctx.index_in(topo.std_ranks[j])
        upstream = topo.upstream_of_std(j)[i]
        layer = _make_layer(ctx, j, ctx.comm.recv(source=upstream, tag=tags.FEATURE_NAMES))
        restored = ctx.checkpoint.restore(ctx, layer)
        incoming = ReceiveStream(ctx.comm, upstream, ctx.clock)
        if layer.needs_passes and not restored:
            with ctx.clock("standardize"):
                incoming = incoming.drain_into(ChunkStore(ctx.budget // 2, ctx.spill_dir))
        _fit(ctx, layer, incoming, restored)
        if j == ctx.checkpoint.last_to_fit:
            ctx.checkpoint.boundary(ctx)
        out.names = layer.feature_names_out
        out.layers.append(layer)
        out.stream = AppliedStream(incoming, layer, ctx.clock)
        if j + 1 < n_std:
            _send_stream(ctx, topo.std_ranks[j + 1][i], out.stream, out.names)
            out.stream = None
    ctx.checkpoint.boundary(ctx)   # the ranks of earlier layers (once they sent all) and the others
    return out


def _send_stream(ctx, peer: int, stream: ChunkStream, names: list[str]) -> None:
    """Send the feature names, then every chunk of ``stream``, to the next layer's peer."""
    ctx.comm.send(names, dest=peer, tag=tags.FEATURE_NAMES)
    sent = 0
    for chunk in stream.iterate(final=True):
        with ctx.clock("exchange"):
            sent += send_chunk(ctx.comm, peer, chunk)
        del chunk
    with ctx.clock("exchange"):
        send_chunk(ctx.comm, peer, None)
    ctx.report["bytes_sent_one_to_one"] = ctx.report.get("bytes_sent_one_to_one", 0) + sent
