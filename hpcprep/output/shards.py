"""Writing one shard file from a rank's records."""

import zlib

import h5py
import numpy as np

from ..steps.moments import Moments

_SLICE_ROWS = 1 << 16


def write_shard(path: str, records: np.ndarray, feature_names: list[str]) -> dict:
    """Write ``records`` (fields id, x, [y], [w]) as datasets ids, features, [labels], [weights].

    Columns are written in slices so that no full contiguous copy of the shard
    is made. Returns ``{"rows", "crc32", "moments"}``; the checksum chains the
    raw bytes of ids, features, labels, weights in that order (docs/FORMAT.md).
    """
    n = len(records)
    names = {"id": "ids", "x": "features", "y": "labels", "w": "weights"}
    crc = 0
    moments = None
    with h5py.File(path, "w") as f:
        for field in ("id", "x", "y", "w"):
            if field not in records.dtype.names:
                continue
            sub = records.dtype[field]
            shape, base = (n, *sub.shape), sub.base
            ds = f.create_dataset(names[field], shape=shape, dtype=base)
            if field == "x":
                ds.attrs["feature_names"] = np.array(feature_names, dtype=h5py.string_dtype())
            for lo in range(0, n, _SLICE_ROWS):
                block = np.ascontiguousarray(records[field][lo:lo + _SLICE_ROWS])
                ds[lo:lo + len(block)] = block
                crc = zlib.crc32(block, crc)
                if field == "x" and len(block):
                    m = Moments.of(block)
                    moments = m if moments is None else moments.merge(m)
    return {"rows": n, "crc32": crc, "moments": moments}


def shard_crc32(path: str) -> tuple[int, int]:
    """Recompute ``(rows, crc32)`` of a shard file as :func:`write_shard` defines it."""
    crc, rows = 0, 0
    with h5py.File(path, "r") as f:
        rows = f["ids"].shape[0]
        for name in ("ids", "features", "labels", "weights"):
            if name not in f:
                continue
            ds = f[name]
            for lo in range(0, rows, _SLICE_ROWS):
                crc = zlib.crc32(np.ascontiguousarray(ds[lo:lo + _SLICE_ROWS]), crc)
    return rows, crc


class ShardWriter:
    """A shard written piece by piece at known offsets (rows may arrive out of order).

    Parameters
    ----------
    path : str
    rows : int
        Rows the shard will hold.
    dtype : numpy dtype
        Record dtype (fields id, x, [y], [w]; other fields are not written).
    feature_names : list of str
    """

    def __init__(self, path: str, rows: int, dtype: np.dtype, feature_names: list[str]):
        self.path, self.rows = path, int(rows)
        self.fields = [f for f in ("id", "x", "y", "w") if f in dtype.names]
        self._f = h5py.File(path, "w")
        names = {"id": "ids", "x": "features", "y": "labels", "w": "weights"}
        self._ds = {}
        for field in self.fields:
            sub = dtype[field]
            ds = self._f.create_dataset(names[field], shape=(self.rows, *sub.shape), dtype=sub.base)
            if field == "x":
                ds.attrs["feature_names"] = np.array(feature_names, dtype=h5py.string_dtype())
            self._ds[field] = ds
        self.written = 0

    def write_at(self, offset: int, records: np.ndarray) -> None:
        """Write ``records`` at rows ``offset .. offset + len(records)``."""
        n = len(records)
        if not n:
            return
        if offset < 0 or offset + n > self.rows:
            raise RuntimeError(f"{self.path}: rows {offset}..{offset + n} outside 0..{self.rows}")
        for field, ds in self._ds.items():
            ds[offset:offset + n] = np.ascontiguousarray(records[field])
        self.written += n

    def close(self) -> dict:
        """Close the file; return ``{"rows", "crc32", "moments"}`` as :func:`write_shard` does."""
        self._f.close()
        if self.written != self.rows:
            raise RuntimeError(f"{self.path}: {self.written} rows written, {self.rows} planned")
        crc, moments = 0, None
        with h5py.File(self.path, "r") as f:
            for name in ("ids", "features", "labels", "weights"):
                if name not in f:
                    continue
                ds = f[name]
                for lo in range(0, self.rows, _SLICE_ROWS):
                    block = np.ascontiguousarray(ds[lo:lo + _SLICE_ROWS])
                    crc = zlib.crc32(block, crc)
                    if name == "features" and len(block):
                        m = Moments.of(block)
                        moments = m if moments is None else moments.merge(m)
        return {"rows": self.rows, "crc32": crc, "moments": moments}
