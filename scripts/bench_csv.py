"""Benchmark: hpcprep on CSV, .csv.gz and Parquet against pandas, Polars and pyarrow, whole process.

Every engine does the same work, each in its own process (wall time and peak
RSS of the whole process, interpreter start-up and imports included): read 8
float columns, drop rows with a missing value, standard-scale each column
(population std), shuffle, write the features (float32) to HDF5.

- ``hpcprep -n 1`` / ``-n 2``: ``hpcprep run`` under mpiexec (fused), steps
  dropna + scale, a shuffle; peak RSS is the largest rank's (report.json).
- ``pandas``: ``pandas.read_csv(engine="pyarrow", on_bad_lines="skip")``,
  ``to_numeric(errors="coerce")`` on columns that did not read as numbers,
  then NumPy and h5py.
- ``polars`` (when installed; never a test dependency): ``read_csv`` with
  ``ignore_errors`` and Float64 columns, ``drop_nulls``, expressions, ``sample``.
- ``pyarrow``: (Parquet only) ``pyarrow.parquet.read_table(columns=...)``,
  then NumPy and h5py.

Files (generated; 2M rows x 8 floats, about 300 MB as CSV; 50k rows with
``quick``): ``clean``; ``messy`` (1% of values missing in several spellings,
0.05% unparsable, 0.02% of lines with a wrong field count); ``quoted`` (every
field quoted); ``clean.csv.gz``; ``clean.parquet`` (row groups of 256k rows).

Usage: ``python scripts/bench_csv.py [--quick] [--repeats N]`` prints a JSON
report; ``scripts/bench.py --cases csv`` runs it as a module case.
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
COLUMNS = [f"f{i}" for i in range(8)]
NA = ["", "NA", "NaN", "null", "None"]
SEED = 1

#: The baselines' work after reading, in one child process (argv: engine, path, out).
BASELINE = r'''
import json, resource, sys
import h5py, numpy as np
engine, path, out = sys.argv[1:4]
cols = [f"f{i}" for i in range(8)]
na = ["", "NA", "NaN", "null", "None"]
if engine == "polars":
    import polars as pl
    df = pl.read_csv(path, columns=cols, null_values=na, ignore_errors=True,
                     truncate_ragged_lines=True, schema_overrides={c: pl.Float64 for c in cols})
    df = df.drop_nulls()
    df = df.select([(pl.col(c) - pl.col(c).mean()) / pl.col(c).std(ddof=0) for c in cols])
    x = df.sample(fraction=1.0, shuffle=True, seed=1).to_numpy().astype(np.float32)
else:
    if engine == "pyarrow":
        import pyarrow.parquet as pq
        x = pq.read_table(path, columns=cols).to_pandas().to_numpy(np.float64)
    else:
        import pandas as pd
        df = pd.read_csv(path, engine="pyarrow", usecols=cols, na_values=na,
                         keep_default_na=False, on_bad_lines="skip")
        for c in cols:
            if df[c].dtype.kind not in "fiu":
                df[c] = pd.to_numeric(df[c], errors="coerce")
        x = df[cols].to_numpy(np.float64)
    x = x[~np.isnan(x).any(axis=1)]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = x[np.random.default_rng(1).permutation(len(x))].astype(np.float32)
with h5py.File(out, "w") as f:
    f["features"] = x
print(json.dumps({"rows": len(x),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

CONFIG = """seed = 1
[input]
paths = [{path}]
features = {features}
chunk_rows = {chunk_rows}
[[standardize]]
steps = [{{ op = "dropna" }}, {{ op = "scale" }}]
[[sample]]
op = "shuffle"
[output]
path = "out"
overwrite = true
"""


# ---- data --------------------------------------------------------------------------------------

def _values(rng, n):
    return rng.normal(size=(n, 8)) * rng.uniform(0.5, 50, size=8) + rng.uniform(-10, 10, size=8)


def make_csv(path: str, n: int, kind: str) -> None:
    """Write ``n`` rows of the 8 float columns (``kind``: clean, messy or quoted)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(SEED)
    style = "all_valid" if kind == "quoted" else "none"
    with open(path, "wb") as f:
        for s in range(0, n, 200_000):
            m = min(200_000, n - s)
            x = _values(rng, m)
            cols = [pa.array(x[:, j]).cast(pa.string()) for j in range(8)]
            if kind == "messy":
                r = rng.random((m, 8))
                for j in range(8):
                    na = pa.array(np.array(NA[:4])[rng.integers(0, 4, m)])
                    cols[j] = pc.if_else(pa.array(r[:, j] < 0.01), na, cols[j])
                    cols[j] = pc.if_else(pa.array((r[:, j] >= 0.01) & (r[:, j] < 0.0105)), "n/a?",
                                         cols[j])
            sink = pa.BufferOutputStream()
            pacsv.write_csv(pa.table(cols, names=COLUMNS), sink, pacsv.WriteOptions(
                include_header=s == 0, quoting_style=style))
            f.write(sink.getvalue().to_pybytes())
            if kind == "messy":   # 0.02% of lines with a wrong field count
                f.write(b"1.5,2.5,3.5\n" * max(1, m // 5000))


def make_inputs(folder: str, n: int) -> dict:
    """The benchmark's input files: name -> path."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    paths = {}
    for kind in ("clean", "messy", "quoted"):
        paths[kind] = os.path.join(folder, kind, "data.csv")
        os.makedirs(os.path.dirname(paths[kind]))
        make_csv(paths[kind], n, kind)
    paths["gzip"] = os.path.join(folder, "gzip", "data.csv.gz")
    os.makedirs(os.path.dirname(paths["gzip"]))
    with open(paths["clean"], "rb") as src, pa.output_stream(paths["gzip"], compression="gzip") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    paths["parquet"] = os.path.join(folder, "parquet", "data.parquet")
    os.makedirs(os.path.dirname(paths["parquet"]))
    table = pacsv.read_csv(paths["clean"])
    pq.write_table(table, paths["parquet"], row_group_size=256 * 1024)
    return paths


# ---- runs --------------------------------------------------------------------------------------

def _mpiexec() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec") or "mpiexec"


def _env() -> dict:
    env = dict(os.environ)
    for k in ("MPIR_CVAR_ENABLE_HEAVY_YIELD", "MPIR_CVAR_ASYNC_PROGRESS", "MPI4PY_RC_THREAD_LEVEL"):
        env.pop(k, None)
    env["PYTHONPATH"] = os.path.abspath(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_hpcprep(path: str, ranks: int, work: str, chunk_rows: int) -> dict:
    """One ``hpcprep run`` of ``path``: wall seconds, peak RSS of the largest rank, rows out."""
    cfg = os.path.join(work, f"hp{ranks}.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(path=json.dumps(path), features=json.dumps(COLUMNS),
                              chunk_rows=chunk_rows))
    out = os.path.join(work, f"out-hp{ranks}")
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "hpcprep", "run", cfg, "--quiet",
           "--set", f"output.path={json.dumps(out)}"]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=work, env=_env(), check=True, capture_output=True, timeout=3600)
    wall = time.perf_counter() - t
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    ranks_ = rep.get("ranks") or [rep]
    rows = rep.get("rows_out", rep.get("output", {}).get("rows"))
    shutil.rmtree(out)
    return {"seconds": wall, "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks_), "rows": rows}


def run_baseline(engine: str, path: str, work: str) -> dict:
    """One baseline process (``BASELINE``): wall seconds, its peak RSS, rows out."""
    out = os.path.join(work, f"out-{engine}.h5")
    # The child's own ru_maxrss would include this (larger) process's, inherited through
    # fork and exec; /usr/bin/time, a small process, starts it and reads its peak instead.
    timer = shutil.which("time") or "/usr/bin/time"
    cmd = [sys.executable, "-c", BASELINE, engine, path, out]
    use_timer = os.path.exists(timer)
    t = time.perf_counter()
    done = subprocess.run(([timer, "-f", "maxrss_kb=%M"] if use_timer else []) + cmd, cwd=work,
                          env=_env(), check=True, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t
    os.unlink(out)
    res = json.loads(done.stdout.strip().splitlines()[-1])
    if use_timer:
        kb = [ln for ln in done.stderr.splitlines() if ln.startswith("maxrss_kb=")][-1]
        res["peak_rss_mb"] = int(kb.split("=")[1]) / 1024
    return {"seconds": wall, **res}


def summarize(values) -> dict:
    vals = [float(v) for v in values]
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals),
            "values": vals}


def engines_for(name: str, have_polars: bool) -> list:
    """(label, how) of the engines measured on input ``name``."""
    if name == "parquet":
        return [("hpcprep -n 1", 1), ("pyarrow", "pyarrow")]
    if name == "gzip":
        return [("hpcprep -n 1", 1), ("pandas (pyarrow)", "pandas")]
    out = [("hpcprep -n 1", 1), ("hpcprep -n 2", 2), ("pandas (pyarrow)", "pandas")]
    return out + ([("polars", "polars")] if have_polars else [])


def measure(name: str, path: str, work: str, repeats: int, chunk_rows: int, have_polars: bool) -> dict:
    """Every engine on one input, repeats interleaved (so machine load hits all alike)."""
    runs = {label: [] for label, _ in engines_for(name, have_polars)}
    for _ in range(repeats):
        for label, how in engines_for(name, have_polars):
            if isinstance(how, int):
                runs[label].append(run_hpcprep(path, how, work, chunk_rows))
            else:
                runs[label].append(run_baseline(how, path, work))
    entry = {"bytes": os.path.getsize(path), "engines": {}}
    for label, rs in runs.items():
        entry["engines"][label] = {"seconds": summarize([r["seconds"] for r in rs]),
                                   "peak_rss_mb": summarize([r["peak_rss_mb"] for r in rs]),
                                   "rows": rs[-1]["rows"]}
    return entry


def goals(files: dict) -> list:
    """The issue's speed goals, evaluated on the medians."""
    def med(name, label):
        e = files.get(name, {}).get("engines", {}).get(label)
        return e["seconds"]["median"] if e else None

    out = []
    for name in ("clean", "messy", "quoted", "gzip"):
        hp, pd_ = med(name, "hpcprep -n 1"), med(name, "pandas (pyarrow)")
        if hp and pd_:
            out.append({"goal": f"{name}: hpcprep -n 1 at least as fast as pandas (pyarrow)",
                        "ratio": pd_ / hp, "met": hp <= pd_})
        hp2, pl = med(name, "hpcprep -n 2"), med(name, "polars")
        if hp2 and pl:
            out.append({"goal": f"{name}: hpcprep -n 2 at least as fast as polars",
                        "ratio": pl / hp2, "met": hp2 <= pl})
    hp, pa_ = med("parquet", "hpcprep -n 1"), med("parquet", "pyarrow")
    if hp and pa_:
        out.append({"goal": "parquet: hpcprep -n 1 at least 0.8x pyarrow.parquet.read_table + work",
                    "ratio": pa_ / hp, "met": pa_ / hp >= 0.8})
    return out


def run(quick: bool, repeats: int | None = None) -> dict:
    """Measure every engine on every input; see the module docstring.

    Parameters
    ----------
    quick : bool
        50k rows and one repeat (a smoke run) instead of 2M rows and two.
    repeats : int, optional
        Override the number of repeats.

    Returns
    -------
    dict
        The machine, the sizes, per input and engine the wall seconds and peak
        RSS (min / median / max), and the goals with their ratios.
    """
    n = 50_000 if quick else 2_000_000
    repeats = repeats or (1 if quick else 2)
    chunk_rows = 262_144
    have_polars = importlib.util.find_spec("polars") is not None
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version(), "loadavg_before": os.getloadavg()},
              "rows": n, "columns": len(COLUMNS), "repeats": repeats, "chunk_rows": chunk_rows,
              "polars": have_polars, "files": {}}
    with tempfile.TemporaryDirectory(prefix="hpcprep-bench-csv-") as tmp:
        paths = make_inputs(tmp, n)
        for name, path in paths.items():
            report["files"][name] = measure(name, path, os.path.dirname(path), repeats, chunk_rows,
                                            have_polars)
    report["machine"]["loadavg_after"] = os.getloadavg()
    report["goals"] = goals(report["files"])
    return report


def table(report: dict) -> str:
    """A Markdown table of the medians (for docs/BENCHMARKS.md and docs/csv.md)."""
    rows = ["| input | MB | engine | wall s (min / median / max) | peak RSS MB (median) | rows out |",
            "|---|---:|---|---|---:|---:|"]
    for name, entry in report["files"].items():
        for label, e in entry["engines"].items():
            s = e["seconds"]
            rows.append(f"| {name} | {entry['bytes'] / 1e6:.0f} | {label} | {s['min']:.2f} / "
                        f"**{s['median']:.2f}** / {s['max']:.2f} | {e['peak_rss_mb']['median']:.0f} "
                        f"| {e['rows']:,} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50k rows, one repeat")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--table", action="store_true", help="print a Markdown table after the JSON")
    args = ap.parse_args(argv)
    from bench import compile_package

    compile_package()
    report = run(args.quick, args.repeats)
    print(json.dumps(report, indent=2))
    if args.table:
        print(table(report))
        for g in report["goals"]:
            print(f"- {g['goal']}: {g['ratio']:.2f}x ({'met' if g['met'] else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
