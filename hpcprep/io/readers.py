"""Chunk readers: one hyperslab (HDF5) or memory-mapped slice (.npy) at a time."""

import h5py
import numpy as np

from ..chunk import Chunk
from .plan import ChunkDesc, npy_label_path


class ChunkReader:
    """Reads chunks of the planned input, keeping the current file open.

    Parameters
    ----------
    inp : dict
        The validated ``[input]`` table.
    feature_dtype : str
        dtype the features are converted to (float32 or float64).
    label_dtype : str or None
        dtype of the labels (int64 or float64), None without a label.
    """

    def __init__(self, inp: dict, feature_dtype: str, label_dtype: str | None):
        self.inp = inp
        self.fdt = np.dtype(feature_dtype)
        self.ldt = None if label_dtype is None else np.dtype(label_dtype)
        self._path = None
        self._handle = None

    def read(self, desc: ChunkDesc) -> Chunk:
        """Read one chunk: features, labels and global ids."""
        sl = slice(desc.start, desc.stop)
        label = self.inp["label"]
        if desc.format == "hdf5":
            f = self._open_hdf5(desc.path)
            x = f[self.inp["features"]][sl]
            y = f[label][sl] if label else None
        else:
            x = np.array(np.load(desc.path, mmap_mode="r")[sl])
            y = np.array(np.load(npy_label_path(desc.path, label), mmap_mode="r")[sl]) if label else None
        ids = np.arange(desc.first_id, desc.first_id + desc.rows, dtype=np.int64)
        return Chunk(
            chunk_id=desc.chunk_id,
            ids=ids,
            features=x.astype(self.fdt, copy=False),
            labels=None if y is None else y.astype(self.ldt, copy=False),
            source=desc.path,
            source_start=desc.start,
        )

    def _open_hdf5(self, path):
        if self._path != path:
            self.close()
            self._handle = h5py.File(path, "r")
            self._path = path
        return self._handle

    def close(self):
        if self._handle is not None:
            self._handle.close()
        self._handle, self._path = None, None


def read_chunk(desc: ChunkDesc, inp: dict, feature_dtype: str, label_dtype: str | None) -> Chunk:
    """Read a single chunk (opens and closes the file)."""
    reader = ChunkReader(inp, feature_dtype, label_dtype)
    try:
        return reader.read(desc)
    finally:
        reader.close()
