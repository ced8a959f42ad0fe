"""Benchmark: hpcprep's CSV range parser against pandas.read_csv on the same file.

Three generated files with 16 numeric columns and 1 categorical column:
``clean`` (plain numbers), ``messy`` (5% missing values in several spellings,
0.13% bad numbers, 3% of lines with a quoted categorical value) and ``quoted``
(clean numbers, every categorical value quoted: the csv-module path). Each is parsed
whole, in one process, by :func:`hpcprep.io.csv_parse.parse_range` over the ranges
of :func:`~hpcprep.io.csv_split.split_byte_ranges` and by ``pandas.read_csv``.

Usage: ``python scripts/bench_csv.py [--quick]`` prints a JSON report.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpcprep.io.csv_parse import parse_range  # noqa: E402
from hpcprep.io.csv_records import DEFAULT_NA_VALUES  # noqa: E402
from hpcprep.io.csv_split import read_header, split_byte_ranges  # noqa: E402

CATS = np.array(["alpha", "beta", "gamma", "delta"])


def make_file(path: str, n: int, kind: str, seed: int = 0) -> None:
    """Write ``n`` rows of 16 numeric columns and one categorical column."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        f.write(",".join([f"f{i}" for i in range(16)] + ["cat"]) + "\n")
        step = 50_000
        for s in range(0, n, step):
            m = min(step, n - s)
            vals = np.char.mod("%.6f", rng.normal(size=(m, 16)) * 100).astype(object)
            cats = CATS[rng.integers(0, 4, m)].astype(object)
            if kind == "quoted":
                cats = '"' + cats + '"'
            if kind == "messy":
                r = rng.random((m, 16))
                vals[r < 0.05] = rng.choice(["", "NA", "null", "NaN"], size=int((r < 0.05).sum()))
                vals[(r >= 0.05) & (r < 0.0513)] = "n/a?"
                quoted = rng.random(m) < 0.03
                cats[quoted] = '"' + cats[quoted] + ', x"'
            f.write("".join(",".join(row) + "," + c + "\n" for row, c in zip(vals.tolist(), cats.tolist())))


def _ours(path: str, chunk_bytes: int) -> int:
    header, _ = read_header(path)
    n = 0
    for s, e in split_byte_ranges(path, chunk_bytes):
        b = parse_range(path, s, e, header=header, features=header[:16], categorical=["cat"],
                        first_line=2)
        n += len(b)
    return n


def _pandas(path: str) -> int:
    import pandas as pd

    df = pd.read_csv(path, na_values=list(DEFAULT_NA_VALUES), keep_default_na=False)
    return len(df)


def _times(fn, repeats: int) -> tuple[list[float], int]:
    out, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = fn()
        out.append(time.perf_counter() - t)
    return out, n


def run(quick: bool) -> dict:
    """Measure rows/s of ours and pandas on a clean, a messy and a fully quoted file.

    Parameters
    ----------
    quick : bool
        100k rows instead of 1M (a smoke run; the documented numbers use 1M).

    Returns
    -------
    dict
        Machine, and per file: size, rows, seconds (min/median/max of 3 runs)
        and rows/s at the median, for ``ours`` and ``pandas``.
    """
    n = 100_000 if quick else 1_000_000
    repeats = 3
    chunk_bytes = 16 << 20
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "rows": n, "repeats": repeats, "chunk_bytes": chunk_bytes, "files": {},
    }
    try:
        import pandas as pd
        report["machine"]["pandas"] = pd.__version__
    except ImportError:
        pd = None
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("clean", "messy", "quoted"):
            path = os.path.join(tmp, f"{kind}.csv")
            make_file(path, n, kind)
            entry = {"bytes": os.path.getsize(path)}
            engines = {"ours": lambda: _ours(path, chunk_bytes)}
            if pd is not None:
                engines["pandas"] = lambda: _pandas(path)
            for name, fn in engines.items():
                secs, rows = _times(fn, repeats)
                med = statistics.median(secs)
                entry[name] = {"rows": rows, "seconds_min": min(secs), "seconds_median": med,
                               "seconds_max": max(secs), "rows_per_s_median": rows / med,
                               "rows_per_s_best": rows / min(secs)}
            report["files"][kind] = entry
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
