"""Benchmark of the sampling layers (issue 4).

1. Exchange throughput at ``-n 2``: the shuffle's routed ``Alltoallv`` of packed records
   (:meth:`hpcprep.mpi.exchange.Exchanger.records`, as the sampling layer calls it) next to a bare
   mpi4py ``Alltoallv`` of the same bytes with the same counts, in the same run.
2. Out of core: one ``shuffle`` run of a dataset 4x larger than the total memory budget
   (``resources.memory_per_rank``), spilled, next to the same run in memory; output identical;
   peak RSS per rank against its budget.

``run(quick)`` returns a dict; ``python scripts/bench_sampling.py [--quick]`` prints it as JSON
and writes docs/bench/sampling.md.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MIB = 1 << 20


def _exchange_worker(out: str, rows: int, repeats: int) -> None:
    """Under mpiexec: time the shuffle's exchange and a bare Alltoallv of the same layout."""
    from mpi4py import MPI

    from hpcprep.mpi.exchange import Exchanger
    from hpcprep.layers.sample import SampleLayer, record_dtype

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    dt = record_dtype(16, "float32", "int64")
    rec = np.zeros(rows, dt)
    rec["id"] = np.arange(rank * rows, (rank + 1) * rows)
    rec["x"] = np.random.default_rng(rank).normal(size=(rows, 16)).astype(np.float32)
    layer = SampleLayer(0, {"op": "shuffle"}, comm, 0)
    layer.bind([f"f{i}" for i in range(16)], dt)
    routed, counts = layer.route(rec, size)
    sendbuf = routed.view(np.uint8).reshape(-1)
    bcounts = counts * dt.itemsize
    rcounts = np.empty(size, np.int64)
    comm.Alltoall(bcounts, rcounts)
    recvbuf = np.empty(int(rcounts.sum()), np.uint8)
    sd = np.concatenate([[0], np.cumsum(bcounts)[:-1]])
    rd = np.concatenate([[0], np.cumsum(rcounts)[:-1]])
    t_h, t_b, moved = [], [], 0
    exchanger = Exchanger()   # as the run's: the receive buffer is reused between exchanges
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        got, _, sent = exchanger.records(comm, routed, counts, dt)
        exchanger.recycle(got)
        del got
        comm.Barrier()
        t_h.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        comm.Alltoallv([sendbuf, (bcounts.tolist(), sd.tolist()), MPI.BYTE],
                       [recvbuf, (rcounts.tolist(), rd.tolist()), MPI.BYTE])
        comm.Barrier()
        t_b.append(time.perf_counter() - t0)
        moved = sent
    moved = comm.allreduce(moved)
    if rank == 0:
        Path(out).write_text(json.dumps({
            "ranks": size, "rows_per_rank": rows, "record_bytes": dt.itemsize,
            "bytes_between_ranks": moved,
            "hpcprep_seconds_median": float(np.median(t_h)),
            "bare_alltoallv_seconds_median": float(np.median(t_b)),
            "hpcprep_bytes_per_s": moved / float(np.median(t_h)),
            "bare_bytes_per_s": moved / float(np.median(t_b))}))


def _make_input(folder: Path, rows: int, files: int = 4) -> int:
    import h5py

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = rows // files
    for i in range(files):
        n = per if i < files - 1 else rows - per * (files - 1)
        with h5py.File(folder / f"part-{i:03d}.h5", "w") as f:
            x = f.create_dataset("features", (n, 16), dtype="f4")
            y = f.create_dataset("labels", (n,), dtype="i8")
            for lo in range(0, n, 1 << 20):
                hi = min(n, lo + (1 << 20))
                x[lo:hi] = rng.normal(size=(hi - lo, 16)).astype(np.float32)
                y[lo:hi] = rng.integers(0, 4, hi - lo)
    return rows


def _hpcprep_run(work: Path, name: str, budget: str, ranks: int) -> dict:
    cfg = (f'seed = 1\n[input]\npaths = ["raw/*.h5"]\nlabel = "labels"\nchunk_rows = 65536\n'
           f'[[sample]]\nop = "shuffle"\n[output]\npath = "{name}"\n'
           f'[resources]\nmemory_per_rank = "{budget}"\n')
    (work / f"{name}.toml").write_text(cfg)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "mpiexec"), "-n", str(ranks), sys.executable, "-m", "hpcprep", "run",
                    f"{name}.toml", "--quiet"], cwd=work, check=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    rep = json.loads((work / name / "report.json").read_text())
    return {"wall_seconds": wall, "pipeline_seconds": rep["seconds"],
            "peak_rss_mb": [r["peak_rss_mb"] for r in rep["ranks"]],
            "spilled_mb": [r["sample"]["0"]["bytes_spilled"] / MIB for r in rep["ranks"]]}


def _same_output(a: Path, b: Path) -> bool:
    import h5py

    with h5py.File(a / "data.h5") as fa, h5py.File(b / "data.h5") as fb:
        n = fa["ids"].shape[0]
        if fb["ids"].shape[0] != n:
            return False
        for lo in range(0, n, 1 << 20):
            for k in ("ids", "features", "labels"):
                if not np.array_equal(fa[k][lo:lo + (1 << 20)], fb[k][lo:lo + (1 << 20)]):
                    return False
    return True


def run(quick: bool = False) -> dict:
    """Run both benchmarks; return their figures.

    Parameters
    ----------
    quick : bool
        Smaller sizes (exchange: 200k rows per rank; out of core: 64 MiB per rank budget).
    """
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        tmp = Path(tmp)
        out = tmp / "exchange.json"
        rows = 200_000 if quick else 1_000_000
        subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, __file__, "--exchange-worker",
                        str(out), str(rows), "5"], check=True, timeout=600)
        result["exchange"] = json.loads(out.read_text())
        budget_mib = 64 if quick else 128
        ranks = 2
        record = 80 + 8  # id + 16 float32 + label, and the sort key
        rows = 4 * ranks * budget_mib * MIB // record
        _make_input(tmp / "raw", rows)
        spilled = _hpcprep_run(tmp, "spilled", f"{budget_mib}MiB", ranks)
        memory = _hpcprep_run(tmp, "memory", "16GiB", ranks)
        result["out_of_core"] = {
            "ranks": ranks, "memory_per_rank_mib": budget_mib, "rows": rows,
            "dataset_mib": rows * record / MIB, "total_budget_mib": ranks * budget_mib,
            "spilled": spilled, "in_memory": memory,
            "peak_rss_over_budget": max(spilled["peak_rss_mb"]) / budget_mib,
            "identical_output": _same_output(tmp / "spilled", tmp / "memory")}
        shutil.rmtree(tmp / "raw", ignore_errors=True)
    return result


def _markdown(r: dict, quick: bool) -> str:
    e, o = r["exchange"], r["out_of_core"]
    return f"""# Sampling benchmark

`python scripts/bench_sampling.py{' --quick' if quick else ''}` on this machine (2 cores, MPICH from pip).

## Shuffle exchange at -n 2

| | median seconds | bytes/s |
|---|---|---|
| hpcprep `alltoallv_records` (shuffle routing, packed records) | {e['hpcprep_seconds_median']:.4f} | {e['hpcprep_bytes_per_s'] / MIB:,.0f} MiB/s |
| bare mpi4py `Alltoallv` (same bytes, same counts) | {e['bare_alltoallv_seconds_median']:.4f} | {e['bare_bytes_per_s'] / MIB:,.0f} MiB/s |

{e['rows_per_rank']:,} rows per rank, {e['record_bytes']} bytes per record,
{e['bytes_between_ranks'] / MIB:,.1f} MiB moved between ranks per exchange; median of 5.

## Out of core (shuffle, -n {o['ranks']})

Dataset {o['dataset_mib']:,.0f} MiB ({o['rows']:,} rows of 88 bytes with key) = 4x the total
budget of {o['total_budget_mib']} MiB ({o['memory_per_rank_mib']} MiB per rank).

| run | wall s (mpiexec) | pipeline s | peak RSS per rank (MiB) | spilled per rank (MiB) |
|---|---|---|---|---|
| spilled (`memory_per_rank = "{o['memory_per_rank_mib']}MiB"`) | {o['spilled']['wall_seconds']:.1f} | {o['spilled']['pipeline_seconds']:.1f} | {', '.join(f'{v:.0f}' for v in o['spilled']['peak_rss_mb'])} | {', '.join(f'{v:.0f}' for v in o['spilled']['spilled_mb'])} |
| in memory (`memory_per_rank = "16GiB"`) | {o['in_memory']['wall_seconds']:.1f} | {o['in_memory']['pipeline_seconds']:.1f} | {', '.join(f'{v:.0f}' for v in o['in_memory']['peak_rss_mb'])} | 0 |

Peak RSS / budget (spilled): {o['peak_rss_over_budget']:.2f}. Output identical: {o['identical_output']}.
"""


def _main(argv) -> int:
    if argv[:1] == ["--exchange-worker"]:
        _exchange_worker(argv[1], int(argv[2]), int(argv[3]))
        return 0
    quick = "--quick" in argv
    r = run(quick)
    print(json.dumps(r, indent=2))
    out = ROOT / "docs" / "bench" / "sampling.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_markdown(r, quick))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
