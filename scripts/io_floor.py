"""REF-1 I/O floor: read the input and write an output of the same size with h5py, no processing.

One process reads every input file (features and labels) straight into one preallocated
array each (``read_direct``), then writes them, with the row ids, to one HDF5 file in the
output layout of hpcprep's shards (``features``, ``labels``, ``ids``). Nothing else: no NaN
test, no statistics, no permutation. What REF-1 does beyond this is processing.

Usage::

    python scripts/io_floor.py --out floor.h5 raw/part-*.h5

prints one JSON line: rows, bytes read and written, seconds (read, write, total), peak RSS.
"""

import argparse
import glob
import json
import os
import resource
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ref_numpy import read_all  # noqa: E402


def run(files, out, features="features", label="labels") -> dict:
    t0 = time.perf_counter()
    x, y = read_all(files, features, label)
    t1 = time.perf_counter()
    ids = np.arange(len(x), dtype=np.int64)
    with h5py.File(out, "w") as f:
        f.create_dataset("features", data=x)
        if y is not None:
            f.create_dataset("labels", data=y)
        f.create_dataset("ids", data=ids)
    t2 = time.perf_counter()
    read_bytes = x.nbytes + (y.nbytes if y is not None else 0)
    return {"rows": len(x), "bytes_read": int(read_bytes), "bytes_written": int(read_bytes + ids.nbytes),
            "seconds": t2 - t0, "phases": {"read": t1 - t0, "write": t2 - t1},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="HDF5 files or globs")
    p.add_argument("--out", required=True)
    p.add_argument("--features", default="features")
    p.add_argument("--label", default="labels", help="label dataset; empty = none")
    a = p.parse_args(argv)
    files = sorted({f for pat in a.inputs for f in (glob.glob(pat) or [pat])})
    sys.stdout.write(json.dumps(run(files, a.out, a.features, a.label or None)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
