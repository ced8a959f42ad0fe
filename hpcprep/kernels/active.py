"""The hot kernels of one rank's run, on the array module its device gives (no module state).

Rows stay in host memory between stages (pip's MPICH is not CUDA-aware); on a
rank bound to a GPU the random keys of the rows and the local sort by key run
as CuPy kernels on device copies of the key columns. The twins are
bit-identical (tests/test_kernels_parity.py), so the output is the same.

The run holds one :class:`Kernels` (``RunContext.kernels``, chosen from
``resources.device``) and hands it to the sampling layers, their row stores
and their modes; :data:`HOST` is the CPU one, the default everywhere.
"""

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .keyed import keyed_hash
from .select import key_order


@dataclass(frozen=True)
class Kernels:
    """Host-in, host-out kernels that run on ``xp`` (``numpy``, or ``cupy`` on a GPU rank)."""

    xp: ModuleType = np

    @property
    def on_gpu(self) -> bool:
        return self.xp is not np

    def keys(self, seed: int, stream: int, ids: np.ndarray) -> np.ndarray:
        """Random uint64 keys of host row ids (:func:`~hpcprep.kernels.keyed.keyed_hash`), on the host."""
        if not self.on_gpu or len(ids) == 0:
            return keyed_hash(seed, stream, ids)
        return self.xp.asnumpy(keyed_hash(seed, stream, self.xp.asarray(ids)))

    def order(self, keys: np.ndarray) -> np.ndarray:
        """Ascending order of host keys (:func:`~hpcprep.kernels.select.key_order`), on the host."""
        if not self.on_gpu or len(keys) == 0:
            return key_order(keys)
        return self.xp.asnumpy(key_order(self.xp.asarray(keys)))


#: The CPU kernels (ranks without a GPU; tests and tools that build layers directly).
HOST = Kernels()
