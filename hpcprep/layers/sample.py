"""A sampling layer: random keys, routing by key range, local sort, selection."""

import time

import numpy as np
from mpi4py import MPI

from ..kernels.route import bucket_by_destination, key_range_owner, sort_by_key
from ..sampling import SelectContext, make_mode

#: Random streams of sampling layers start here (other purposes use smaller numbers).
SAMPLE_STREAM = 1 << 32


def record_dtype(n_features: int, feature_dtype: str, label_dtype: str | None,
                 weights: bool = False) -> np.dtype:
    """The packed row record that travels between ranks: id, features, [label], [weight]."""
    fields = [("id", "<i8"), ("x", np.dtype(feature_dtype).str, (n_features,))]
    if label_dtype is not None:
        fields.append(("y", np.dtype(label_dtype).str))
    if weights:
        fields.append(("w", "<f8"))
    return np.dtype(fields)


def chunk_to_records(chunk, dtype: np.dtype) -> np.ndarray:
    """Pack a chunk's rows into records of ``dtype``."""
    rec = np.empty(len(chunk), dtype=dtype)
    rec["id"] = chunk.ids
    rec["x"] = chunk.features
    if "y" in dtype.names:
        rec["y"] = chunk.labels
    if "w" in dtype.names:
        rec["w"] = chunk.extras["weight"]
    return rec


class SampleLayer:
    """One ``[[sample]]`` table.

    Every rank builds every layer (to route rows into it); only the layer's
    members have ``comm`` and hold rows.
    """

    def __init__(self, index: int, table: dict, comm, seed: int):
        self.index, self.table, self.comm, self.seed = index, table, comm, seed
        self.mode = make_mode(table)
        self.stream = SAMPLE_STREAM + index
        self.pieces: list[np.ndarray] = []
        self.records: np.ndarray | None = None
        self.start = self.total_in = self.total_out = 0
        self.rows_received = 0
        self.bytes_sent = 0
        self.seconds: dict[str, float] = {}

    def keys_of(self, records: np.ndarray) -> np.ndarray:
        return self.mode.keys(self.seed, self.stream, records["id"], records)

    def route(self, records: np.ndarray, n_parts: int):
        """Order ``records`` by the member that owns their key range; return them and the counts."""
        dest = key_range_owner(self.keys_of(records), n_parts)
        order, counts = bucket_by_destination(dest, n_parts)
        return records[order], counts

    def receive(self, records: np.ndarray) -> None:
        self.pieces.append(records)
        self.rows_received += len(records)

    def finish(self, dtype: np.dtype) -> None:
        """Sort what this member received and apply the mode's selection (collective over ``comm``)."""
        t0 = time.perf_counter()
        if len(self.pieces) == 1:
            records = self.pieces[0]
        else:
            records = np.concatenate(self.pieces) if self.pieces else np.empty(0, dtype)
        self.pieces = []
        keys = self.keys_of(records)
        order = sort_by_key(keys)
        records, keys = records[order], keys[order]
        del order
        n = np.array([len(records)], dtype=np.int64)
        start = np.zeros(1, dtype=np.int64)
        self.comm.Exscan(n, start)
        total = np.zeros(1, dtype=np.int64)
        self.comm.Allreduce(n, total)
        self.start = int(start[0]) if self.comm.Get_rank() else 0
        self.total_in = int(total[0])
        ctx = SelectContext(self.comm, self.start, self.total_in, self.seed, self.index)
        self.records = self.mode.select(ctx, records, keys)
        out = np.array([len(self.records)], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, out)
        self.total_out = int(out[0])
        self.seconds["sort+select"] = time.perf_counter() - t0

    def report(self) -> dict:
        return {"rows_in": self.rows_received, "rows_out": 0 if self.records is None else len(self.records),
                "bytes_sent": self.bytes_sent, "seconds": self.seconds,
                "mode": self.mode.summary(self.total_in, self.total_out)}
