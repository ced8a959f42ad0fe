"""Writing one shard file from a rank's records (:class:`ShardWriter`), and its checksum."""

import zlib

import h5py
import numpy as np

_SLICE_ROWS = 1 << 16
_CRC_SLICE_BYTES = 1 << 24


#: Record field -> shard dataset, in checksum order (docs/FORMAT.md).
DATASETS = {"id": "ids", "x": "features", "y": "labels", "w": "weights", "k": "codes"}


def shard_crc32(source, names=tuple(DATASETS.values())) -> tuple[int, int]:
    """Recompute ``(rows, crc32)`` of a shard as :class:`ShardWriter` writes it (docs/FORMAT.md).

    Parameters
    ----------
    source : str or h5py.File
        The shard's path, or the shard open for reading.
    names : sequence of str
        The datasets to chain, in order; names the file does not hold are skipped.

    The little-endian C-order bytes are read in slices of about 16 MiB, so any
    shard is checked in bounded memory.
    """
    if not isinstance(source, h5py.File):
        with h5py.File(source, "r") as f:
            return shard_crc32(f, names)
    crc, rows = 0, source["ids"].shape[0]
    for name in names:
        if name not in source:
            continue
        ds = source[name]
        step = max(1, _CRC_SLICE_BYTES // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
        for lo in range(0, rows, step):
            a = np.ascontiguousarray(ds[lo:lo + step])
            crc = zlib.crc32(a.astype(a.dtype.newbyteorder("<"), copy=False), crc)
    return rows, crc


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the CRC-32 polynomial (reflected), as zlib's ``multmodp``."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ 0xEDB88320 if b & 1 else b >> 1
    return p


_X2N = [1 << 30]                    # x^(2^k) modulo the polynomial, k = 0 .. 31
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc1 = zlib.crc32(a)``, ``crc2 = zlib.crc32(b)``, ``len2 = len(b)``."""
    p, k, n = 1 << 31, 3, int(len2)  # x^(8 * len2)
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


class ShardWriter:
    """A shard written piece by piece at known offsets (rows may arrive out of order).

    Each field of a piece is copied slice by slice into one reused contiguous
    buffer and written from there (no full-size temporaries). The checksum and
    the moments are computed from those buffers while writing, whatever the
    order of the pieces: a CRC-32 per field and piece, chained in row order with
    :func:`crc32_combine` at :meth:`close`, and the moments of the same
    ``_SLICE_ROWS``-row blocks (aligned to the shard's start) that a re-read of
    the file would give, merged in block order. So :meth:`close` gives the same
    numbers as :func:`shard_crc32` and a re-read, without reading the file.

    Parameters
    ----------
    path : str
    rows : int
        Rows the shard will hold.
    dtype : numpy dtype
        Record dtype (fields id, x, [y], [w], [k]; other fields are not written).
    feature_names : list of str
    """

    def __init__(self, path: str, rows: int, dtype: np.dtype, feature_names: list[str]):
        self.path, self.rows = path, int(rows)
        self.fields = [f for f in DATASETS if f in dtype.names]
        self._f = h5py.File(path, "w")
        self._ds = {}
        self._buf = {}
        self._row_bytes = {f: dtype[f].itemsize for f in self.fields}
        for field in self.fields:
            sub = dtype[field]
            ds = self._f.create_dataset(DATASETS[field], shape=(self.rows, *sub.shape), dtype=sub.base)
            if field == "x":
                ds.attrs["feature_names"] = np.array(feature_names, dtype=h5py.string_dtype())
            self._ds[field] = ds
            self._buf[field] = np.empty((min(self.rows, _SLICE_ROWS), *sub.shape), dtype=sub.base)
        self.written = 0
        self._crc = {f: [] for f in self.fields}   # (offset, rows, crc32 of the field's bytes)
        self._moments: dict[int, object] = {}      # block index -> Moments
        self._partial: dict[int, list] = {}        # block index -> [(offset, x rows copy)]
        d = dtype["x"].shape[0] if "x" in self.fields and dtype["x"].shape else 1
        self.nan_count = np.zeros(d, dtype=np.int64)  # per feature, counted with the moments
        self.inf_count = np.zeros(d, dtype=np.int64)

    def write_at(self, offset: int, records: np.ndarray) -> None:
        """Write ``records`` at rows ``offset .. offset + len(records)``."""
        n = len(records)
        if not n:
            return
        if offset < 0 or offset + n > self.rows:
            raise RuntimeError(f"{self.path}: rows {offset}..{offset + n} outside 0..{self.rows}")
        for field, ds in self._ds.items():
            col, buf = records[field], self._buf[field]
            crc, lo = 0, 0
            while lo < n:
                # slices end on the shard's block boundaries, so full blocks give their moments directly
                at = offset + lo
                hi = min(n, lo + _SLICE_ROWS - at % _SLICE_ROWS)
                m = hi - lo
                block = buf[:m]
                block[...] = col[lo:hi]
                ds[at:at + m] = block
                crc = zlib.crc32(block, crc)
                if field == "x":
                    self._add_moments(at, block)
                lo = hi
            self._crc[field].append((offset, n, crc))
        self.written += n

    def _block_rows(self, b: int) -> int:
        return min(_SLICE_ROWS, self.rows - b * _SLICE_ROWS)

    def _add_moments(self, at: int, block: np.ndarray) -> None:
        """Moments of rows ``at .. at + len(block)`` (within one block of the shard)."""
        b = at // _SLICE_ROWS
        full = self._block_rows(b)
        if len(block) == full:
            self._moments[b] = self._block_moments(block)
            return
        parts = self._partial.setdefault(b, [])
        parts.append((at, block.copy()))
        if sum(len(p[1]) for p in parts) == full:
            parts.sort(key=lambda p: p[0])
            self._moments[b] = self._block_moments(np.concatenate([p[1] for p in parts]))
            del self._partial[b]

    def _block_moments(self, x: np.ndarray):
        """Moments of one whole block of features; counts its NaN and ±inf per feature."""
        from ..steps.moments import Moments   # the writer only: readers need no steps (nor MPI)

        m = Moments.of(x)
        nonfinite = len(x) - m.n.astype(np.int64)   # Moments count the finite values
        if nonfinite.any():   # rare: only then look for infinities
            inf = np.isinf(x).sum(axis=0)
            self.inf_count += inf
            self.nan_count += nonfinite - inf
        return m

    def close(self) -> dict:
        """Close the file; return ``{"rows", "crc32", "moments"}`` (the checksum chains the raw
        bytes of ids, features, labels, weights, codes in that order, docs/FORMAT.md) and ``nan_count``, ``inf_count``: per feature, the NaN and ±inf values written."""
        self._f.close()
        self._buf = {}
        if self.written != self.rows:
            raise RuntimeError(f"{self.path}: {self.written} rows written, {self.rows} planned")
        crc = 0
        for field in self.fields:
            per_row = self._row_bytes[field]
            pieces = sorted(self._crc[field])
            pos = 0
            for off, n, c in pieces:
                if off != pos:
                    raise RuntimeError(f"{self.path}: rows {pos}..{off} of {field} not written once")
                crc = crc32_combine(crc, c, n * per_row)
                pos += n
        if self._partial:
            raise RuntimeError(f"{self.path}: blocks {sorted(self._partial)} written in part")
        moments = None
        for b in sorted(self._moments):
            m = self._moments[b]
            moments = m if moments is None else moments.merge(m)
        return {"rows": self.rows, "crc32": crc, "moments": moments,
                "nan_count": self.nan_count, "inf_count": self.inf_count}
