"""What the stages of one rank's run share: config, communicators, plan, output, clock, report."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..config import RunConfig
from ..kernels.active import HOST, Kernels
from ..mpi.agree import write_line
from ..mpi.exchange import Exchanger
from .checkpoint import Checkpoint

#: Names of the files the stages spill (sorted runs, record blocks, stored chunks, the text
#: of compressed inputs kept while counting).
SPILL_FILE = re.compile(r"s\d+(r|o\d+)?-(run\d{5}\.(rec|key)|block\d{6}-[0-9a-f]+\.rec)"
                        r"|chunk-\d{9}\.npz|inflated-\d{6}\.txt")


class Clock:
    """Seconds by what a rank was doing; every second goes to the innermost open key.

    ``with clock("sample"):`` charges the block to ``sample`` except what a
    nested ``with clock("read"):`` inside it takes, so the keys add up to the
    time spent inside any of them and no second is counted twice. Never yield
    inside a ``with clock(...)`` block: the keys must nest.
    """

    def __init__(self, now=time.perf_counter):
        self.seconds: dict[str, float] = {}
        self._open: list[str] = []
        self._since = 0.0
        self._now = now   # the time source (a fake one in tests)

    @contextmanager
    def __call__(self, key: str):
        self._switch(key)
        try:
            yield
        finally:
            self._switch(None)

    def _switch(self, key: str | None) -> None:
        now = self._now()
        if self._open:
            top = self._open[-1]
            self.seconds[top] = self.seconds.get(top, 0.0) + now - self._since
        if key is None:
            self._open.pop()
        else:
            self._open.append(key)
        self._since = now


@dataclass
class RunContext:
    """One rank's run: what every stage reads, and the report and clock they add to.

    Parameters
    ----------
    cfg : RunConfig
        Validated config.
    comm : communicator
        All ranks of the job.
    topo : Topology
        Which groups this rank belongs to.
    plan : InputPlan
        The broadcast input plan.
    location : OutputLocation
        The output folder being written.
    progress : Progress
        Where rank 0's progress lines go.
    """

    cfg: RunConfig
    comm: object
    topo: object
    plan: object
    location: object
    progress: object
    exchanger: Exchanger = field(default_factory=Exchanger)
    kernels: Kernels = HOST   # the rank's device kernels, set once its device is chosen
    clock: Clock = field(default_factory=Clock)
    report: dict = field(default_factory=dict)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)   # none: fits nothing

    def __post_init__(self):
        self.rank = self.comm.Get_rank()
        self.report.update(rank=self.rank, roles=self.topo.roles(), seconds=self.clock.seconds)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def budget(self) -> int:
        """This rank's memory budget in bytes (``resources.memory_bytes``)."""
        return self.cfg.resources.memory_bytes

    @property
    def spill_dir(self) -> str:
        """This rank's spill folder: ``resources.spill_dir``; else, in a Slurm job, node-local
        scratch (``$SLURM_TMPDIR``, else ``$TMPDIR``); else inside the output's temporary folder."""
        base = (self.cfg.resources.spill_dir or self._node_local_spill()
                or self.location.join("spill"))
        return os.path.join(base, f"rank-{self.rank:05d}")

    def _node_local_spill(self) -> str:
        """A folder on the job's node-local scratch named after this run's temporary folder
        (the same name on every rank, unique per run), or "" outside a Slurm job."""
        scratch = os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR")
        if not (os.environ.get("SLURM_JOB_ID") and scratch):
            return ""
        return os.path.join(scratch, "hpcprep-spill-" + os.path.basename(self.location.temp).lstrip("."))

    def remove_spill(self) -> None:
        """Remove what this rank spilled: its files in its spill folder, the folder when empty,
        and a node-local parent hpcprep named when that is empty too (never anything else)."""
        folder = self.spill_dir
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            if SPILL_FILE.fullmatch(name):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
        for path in (folder, os.path.dirname(folder)):
            if path == folder or os.path.basename(path).startswith("hpcprep-spill-"):
                with contextlib.suppress(OSError):
                    os.rmdir(path)   # only if empty

    def index_in(self, group: list[int]) -> int:
        """This rank's position in ``group`` (world ranks)."""
        return group.index(self.rank)

    def layer_log(self, layer_comm):
        """Log lines of a layer: progress from world rank 0, warnings from the layer's first rank."""
        first = layer_comm.Get_rank() == 0

        def log(message: str) -> None:
            if self.rank == 0:
                self.progress.log(message)
            elif first and message.startswith("warning"):
                write_line(f"[hpcprep rank {self.rank}] {message}", sys.stdout)

        return log
