"""Rank groups: the input layer, the standardization layers and the sampling layers.

``COMM_WORLD`` (or any communicator given) is split per ``[layout]``. With
``fused = true`` every rank is in every group. With a layered layout the groups
are disjoint: input ranks first, then each standardization layer, then each
sampling layer, in world-rank order. Input rank i feeds standardization rank i
of the first layer, and so on one by one; the last producing layer and every
sampling layer are connected fully to the next sampling layer through a *link*
communicator holding both groups.
"""

from dataclasses import dataclass, field

from mpi4py import MPI

from .config import LayoutConfig


@dataclass
class Topology:
    """Which world ranks form each group, and this rank's communicators.

    Attributes
    ----------
    world : communicator
    fused : bool
    input_ranks : list of int
    std_ranks : list of list of int
        World ranks of each standardization layer.
    sample_ranks : list of list of int
        World ranks of each sampling layer.
    input_comm, std_comms, sample_comms
        This rank's communicator of each group (None where it is not a member).
    links : list of communicator or None
        ``links[l]``: the producers of sampling layer ``l`` together with its members.
    """

    world: object
    fused: bool
    input_ranks: list[int]
    std_ranks: list[list[int]]
    sample_ranks: list[list[int]]
    input_comm: object = None
    std_comms: list = field(default_factory=list)
    sample_comms: list = field(default_factory=list)
    links: list = field(default_factory=list)

    @property
    def rank(self) -> int:
        return self.world.Get_rank()

    def producers_of(self, layer: int) -> list[int]:
        """World ranks that send rows into sampling layer ``layer``."""
        if layer > 0:
            return self.sample_ranks[layer - 1]
        return self.std_ranks[-1] if self.std_ranks else self.input_ranks

    def upstream_of_std(self, layer: int) -> list[int]:
        """World ranks feeding standardization layer ``layer`` one by one."""
        return self.std_ranks[layer - 1] if layer > 0 else self.input_ranks

    def link_ranks(self, layer: int, world_ranks: list[int]) -> list[int]:
        """Positions in ``links[layer]`` of the given world ranks."""
        members = sorted(set(self.producers_of(layer)) | set(self.sample_ranks[layer]))
        return [members.index(r) for r in world_ranks]

    def roles(self) -> list[str]:
        """Names of the groups this rank belongs to (for the report)."""
        r = self.rank
        out = ["input"] if r in self.input_ranks else []
        out += [f"standardize[{i}]" for i, g in enumerate(self.std_ranks) if r in g]
        out += [f"sample[{i}]" for i, g in enumerate(self.sample_ranks) if r in g]
        return out


def build_topology(world, layout: LayoutConfig, n_std: int, n_sample: int) -> Topology:
    """Split ``world`` into rank groups (collective over ``world``).

    Parameters
    ----------
    world : communicator
    layout : LayoutConfig
        The validated ``[layout]`` table (already checked against the world size).
    n_std, n_sample : int
        Number of standardization and sampling layers.
    """
    size, rank = world.Get_size(), world.Get_rank()
    if layout.fused:
        everyone = list(range(size))
        topo = Topology(world, True, everyone, [everyone] * n_std, [everyone] * n_sample)
        topo.input_comm = world.Dup()
        topo.std_comms = [world.Dup() for _ in range(n_std)]
        topo.sample_comms = [world.Dup() for _ in range(n_sample)]
        topo.links = [world.Dup() for _ in range(n_sample)]
        return topo
    sizes = [layout.input, *layout.standardize, *layout.sample]
    groups, first = [], 0
    for n in sizes:
        groups.append(list(range(first, first + n)))
        first += n
    topo = Topology(world, False, groups[0], groups[1:1 + n_std], groups[1 + n_std:])
    color = next(i for i, g in enumerate(groups) if rank in g)
    mine = world.Split(color, rank)
    topo.input_comm = mine if color == 0 else None
    topo.std_comms = [mine if color == 1 + i else None for i in range(n_std)]
    topo.sample_comms = [mine if color == 1 + n_std + i else None for i in range(n_sample)]
    for layer in range(n_sample):
        members = set(topo.producers_of(layer)) | set(topo.sample_ranks[layer])
        link = world.Split(0 if rank in members else MPI.UNDEFINED, rank)
        topo.links.append(link if rank in members else None)
    return topo
