"""The ordered reduction (``train.reduce = "ordered"``): gradients summed in an order fixed
by the samples, not by the ranks nor by the MPI library.

Each global batch of ``L`` rows is cut into *blocks* of ``g`` rows (``train.reduce_block``;
the last block may be shorter): ``C = ceil(L / g)`` blocks, a grid that depends on ``L``
and ``g`` only. The per-rank pieces are cut at block boundaries (the balancer plans in
whole blocks), so every block lies on one rank, which computes the block's sums
``[G, b, L]`` with one ``loss_grad`` call on exactly the block's rows: the same call, the
same bits, whichever rank makes it.

The blocks are then summed along one fixed binary tree over the block indices: node
``(l, j)`` covers blocks ``[j 2^l, (j + 1) 2^l) ∩ [0, C)`` and is the sum ``left + right``
of its children (or its left child alone where the right one is past ``C``). A rank
folds the nodes that lie inside its contiguous range of blocks (at most about
``2 log2 C`` maximal ones remain), sends them to rank 0 (one ``Gatherv``), rank 0 folds
every rank's nodes in block order into the root, and broadcasts it (``Bcast``). The
additions made are those of the tree whatever the split, so the gradient, and the
whole training, are the same bits at any number of ranks, any batch sizes and any node
layout (on the same hardware and BLAS: a block's sums come from that BLAS).

Cost (docs/train.md): one ``loss_grad`` call per block instead of per rank, and rank 0
receives up to ``2 log2 C`` vectors of ``P + 2`` values from every rank instead of one
Allreduce of ``P + 2``.
"""

import numpy as np

#: ``train.reduce_block = 0`` (auto): ``ceil(B / AUTO_BLOCKS)`` rows, at least ``AUTO_MIN_ROWS``
#: (or the whole batch): at most 64 blocks, none so small that its ``P``-sized gradient
#: costs more than its rows (measured, docs/train.md).
AUTO_BLOCKS, AUTO_MIN_ROWS = 64, 32


def block_rows(setting: int, global_batch: int) -> int:
    """Rows per block: ``setting``, or with 0 the auto size (:data:`AUTO_BLOCKS`)."""
    if setting:
        return int(setting)
    return max(-(-int(global_batch) // AUTO_BLOCKS), min(int(global_batch), AUTO_MIN_ROWS))


def to_units(sizes, granule: int) -> list[int]:
    """Per-rank rows -> per-rank blocks of ``granule`` rows (cuts rounded up to a block)."""
    cuts = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
    return np.diff(-(-cuts // granule)).tolist()


def to_rows(units, length: int, granule: int) -> list[int]:
    """Per-rank blocks -> per-rank rows of a global batch of ``length`` rows."""
    cuts = np.minimum(np.concatenate([[0], np.cumsum(np.asarray(units, dtype=np.int64))]) * granule,
                      length)
    return np.diff(cuts).tolist()


def aligned(sizes, granule: int) -> bool:
    """Whether every cut between ranks falls on a block boundary (or at the end)."""
    cuts = np.cumsum(np.asarray(sizes, dtype=np.int64))
    return bool(np.all((cuts % granule == 0) | (cuts == cuts[-1])))


def _height(n_blocks: int) -> int:
    return (n_blocks - 1).bit_length() if n_blocks > 1 else 0


def fold(nodes, n_blocks: int, add=None) -> list:
    """Merge a block-ordered sequence of tree nodes ``(level, j, value)`` bottom-up.

    Two siblings on top of the stack become their parent (``add(left, right)``); a left
    child with no right sibling inside ``[0, n_blocks)`` becomes its parent unchanged. The
    result is the sequence of maximal nodes: one node, the root, when ``nodes`` cover every
    block. With ``add=None`` only the ``(level, j)`` structure is computed (values None).
    """
    top = _height(n_blocks)
    stack = []
    for node in nodes:
        stack.append(node)
        while True:
            level, j, value = stack[-1]
            if level == top:
                break
            if j % 2 == 1 and len(stack) > 1 and stack[-2][:2] == (level, j - 1):
                left = stack[-2][2]
                del stack[-2:]
                stack.append((level + 1, j // 2, None if add is None else add(left, value)))
            elif j % 2 == 0 and (j + 1) << level >= n_blocks:
                stack[-1] = (level + 1, j // 2, value)
            else:
                break
    return stack


def rank_nodes(first: int, stop: int, n_blocks: int) -> list[tuple[int, int]]:
    """The ``(level, j)`` of the maximal nodes a rank holding blocks ``[first, stop)`` sends."""
    return [n[:2] for n in fold([(0, c, None) for c in range(first, stop)], n_blocks)]


class OrderedReduce:
    """Block sums of this rank's piece, folded along the fixed tree; rank 0 finishes the fold.

    Parameters
    ----------
    comm : mpi4py communicator
    model : hpcprep.train.models.Model
    granule : int
        Rows per block.
    xp : module
        ``numpy`` or ``cupy`` (the nodes travel through host memory).
    """

    def __init__(self, comm, model, granule: int, xp=np):
        self.comm, self.model, self.granule, self.xp = comm, model, int(granule), xp
        self.rank = comm.Get_rank()
        self.width = model.size + 2

    def _block(self, params, x, y):
        """``[G, b, L]`` of one block as a new vector."""
        out = self.xp.empty(self.width, dtype=self.xp.float64)
        out[-1] = self.model.loss_grad(params, x, y, out[:-2])
        out[-2] = y.shape[0]
        return out

    def local(self, params, x, y, first: int, n_blocks: int) -> list:
        """This rank's maximal nodes (as :func:`fold` returns them), its rows starting at block ``first``."""
        g, rows = self.granule, 0 if y is None else int(y.shape[0])
        leaves = ((0, first + k, self._block(params, x[s:s + g], y[s:s + g]))
                  for k, s in enumerate(range(0, rows, g)))
        return fold(leaves, n_blocks, add=lambda a, b: a + b)

    def reduce(self, nodes, sizes, out) -> None:
        """Write the root ``[Σ G, B, Σ L]`` into the host vector ``out`` on every rank. Collective;
        ``sizes`` are every rank's rows of this global batch (the same on every rank)."""
        g, n_blocks = self.granule, -(-int(sum(sizes)) // self.granule)
        mine = np.concatenate([np.asarray(_host(v)) for _, _, v in nodes]) if nodes else np.zeros(0)
        if self.rank == 0:
            cuts = np.concatenate([[0], np.cumsum(to_units(sizes, g))])
            layout = [rank_nodes(int(a), int(b), n_blocks) for a, b in zip(cuts[:-1], cuts[1:])]
            counts = [len(nl) * self.width for nl in layout]
            recv = np.empty(sum(counts))
            self.comm.Gatherv(mine, (recv, counts), root=0)
            parts = recv.reshape(-1, self.width)
            seq = [(lv, j, parts[i]) for i, (lv, j) in enumerate(n for nl in layout for n in nl)]
            (root,) = fold(seq, n_blocks, add=lambda a, b: a + b)
            out[...] = root[2]
        else:
            self.comm.Gatherv(mine, None, root=0)
        self.comm.Bcast(out, root=0)


def _host(a):
    return a.get() if hasattr(a, "get") else a
