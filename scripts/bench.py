"""hpcprep benchmark suite: every headline figure next to a baseline measured in the same run.

Usage::

    python scripts/bench.py --quick --out bench.json     # CI smoke run, < 2 minutes on 2 cores
    python scripts/bench.py --out bench.json             # full mode (docs/BENCHMARKS.md)
    python scripts/bench.py --cases ref1,memory --repeats 5 --workdir /tmp/hb --keep

Cases
-----
``ref1``
    REF-1 end to end: a generated HDF5 input (N rows x 32 float32 features + int64 label, with
    the generator's NaNs, outliers and duplicates) through dropna -> dedup -> outliers (|z| > 6)
    -> standard scale -> shuffle -> HDF5, by ``hpcprep run`` at ``-n 1`` and ``-n 2`` (fused),
    and in full mode layered at ``-n 4`` (oversubscribed on 2 cores), against
    ``scripts/ref_numpy.py`` (expert single-process NumPy + h5py, same output rows in the same
    order) and ``scripts/io_floor.py`` (read the input + write an output of the same size with
    h5py, no processing). Repeats are interleaved (rotating order) and ratios are paired
    within a repeat, so load from other processes hits baseline and candidate alike. After the
    timings the outputs are compared: same ids in the same order, labels equal, features within
    1e-6 (relative, absolute below 1), and hpcprep byte-identical across rank counts/layouts.
``memory``
    (full mode) issue 2's figure: peak RSS per rank at ``-n 2`` on a generated dataset of
    >= 1 GiB vs that rank's share of the input bytes (goal < 2.5x).
``loader``
    The PyTorch loader (``Dataset.torch``, one process) vs plain h5py reading the same shards
    in the same batches in the same run, in order and in the shuffled epoch order: rows/s,
    GB/s, paired ratios (goal >= 0.8x); and the block size vs mixing trade-off of the shuffle.
    "not available" without PyTorch.
``sampling``, ``csv``, ``assign``, ``train``
    The other developers' modules ``scripts/bench_<name>.py``, each exposing
    ``run(quick: bool) -> dict``, imported with importlib in a child process (isolation:
    their MPI, memory and prints stay out of this process) and recorded as they return.
    A missing module is recorded as "not available"; a module that raises, exits or times out
    fails the suite (non-zero exit) after everything else has run.
``gpu``
    Only where a GPU is present (``hpcprep.device.probe_gpu``); otherwise "no GPU" and the reason.

Every timed figure has min / median / max over the repeats (and the raw values) in bench.json,
with the machine (CPU model, cores, memory, OS, load average before and after each case) and
the versions (Python, NumPy, h5py/HDF5, mpi4py, MPI library, cvxpy, pandas, hpcprep, git commit).
Targets (hpcprep >= 1.5x NumPy, within 2x of the I/O floor, exchange >= 80% of bare Alltoallv)
are evaluated and reported in full mode, never enforced: the exit status says only whether
every case ran.

Benchmark processes get the environment without ``MPIR_CVAR_ENABLE_HEAVY_YIELD``,
``MPIR_CVAR_ASYNC_PROGRESS`` and ``MPI4PY_RC_THREAD_LEVEL`` (docs: /work/shared/notes/mpi.md).
Work files go under a temporary folder in /tmp (``--workdir`` to choose and keep it).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(ROOT))

SCHEMA = "hpcprep-bench/1"
FEATURES = 32
SEED = 7
OUTLIER_THRESHOLD = 6.0

#: REF-1's steps in order: (name in ref_numpy.py, hpcprep step table). Steps hpcprep does not
#: have yet are left out of both sides and listed in bench.json ("steps_missing").
REF1_STEPS = [
    ("dropna", {"op": "dropna"}),
    ("dedup", {"op": "dedup"}),
    ("outliers", {"op": "outliers", "method": "zscore", "threshold": OUTLIER_THRESHOLD}),
    ("scale", {"op": "scale", "method": "standard"}),
]

#: Module cases: case name -> (module in scripts/, what it measures).
MODULE_CASES = {
    "sampling": ("bench_sampling", "shuffle exchange vs bare Alltoallv of the same bytes; "
                                   "out of core (spilled) vs in memory"),
    "csv": ("bench_csv", "whole runs on CSV, .csv.gz and Parquet vs pandas (pyarrow engine), Polars, pyarrow"),
    "assign": ("bench_assign", "assignment program solve times; equal split vs plan makespan"),
    "input_plan": ("bench_input_plan", "input stage makespan, equal split vs plan, ranks slowed "
                                       "1x / 1.5x / 2x (real hpcprep runs)"),
    "train": ("bench_train", "equal / ideal / adaptive batch sizes with a 2x straggler; transient "
                             "interference"),
}

ALL_CASES = ["ref1", "memory", "scaling", "loader", *MODULE_CASES, "gpu"]

#: Environment variables removed from every benchmark process (see notes/mpi.md).
SCRUBBED_ENV = ("MPIR_CVAR_ENABLE_HEAVY_YIELD", "MPIR_CVAR_ASYNC_PROGRESS", "MPI4PY_RC_THREAD_LEVEL")


# ---- small helpers --------------------------------------------------------------------------

def summarize(values) -> dict:
    """min / median / max (and n, the raw values) of a list of numbers."""
    vals = [float(v) for v in values]
    if not vals:
        return {"min": None, "median": None, "max": None, "n": 0, "values": []}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals),
            "n": len(vals), "values": vals}


def jsonable(obj):
    """Plain JSON types only (NumPy scalars/arrays converted; NaN and inf become None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):          # numpy arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def bench_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def compile_package() -> None:
    """Write hpcprep's bytecode as ``pip install`` does, so every timed process starts as a
    user's would: an editable install under PYTHONDONTWRITEBYTECODE=1 (these machines)
    would otherwise compile every module in every process (~0.35 s of CPU each)."""
    import compileall

    compileall.compile_dir(str(ROOT / "hpcprep"), quiet=1)


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        raise RuntimeError("mpiexec not found next to this Python nor on PATH "
                           "(install the venv as the README says: pip install -e . mpich)")
    return found


def loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


class CaseFailed(RuntimeError):
    pass


def _limit_data(nbytes):
    """preexec_fn: cap the child's data segment (heap + private mappings) at ``nbytes``."""
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))
    return apply


def run_cmd(cmd, cwd, timeout, what, memory_limit=0) -> tuple[float, str]:
    """Run a command; return (wall seconds, stdout). Raises CaseFailed with the output tail.

    ``memory_limit`` (bytes, per process) turns a runaway process into a MemoryError in that
    process instead of the kernel's OOM killer choosing a victim on a shared machine.
    """
    wall, _, out = run_timed(cmd, cwd, timeout, what, memory_limit)
    return wall, out


def run_timed(cmd, cwd, timeout, what, memory_limit=0) -> tuple[float, float, str]:
    """:func:`run_cmd`, and the CPU seconds (user + system) of the whole process tree.

    The CPU time of every descendant that was waited for (mpiexec's ranks through its
    proxies) adds up in this process's ``RUSAGE_CHILDREN``; its growth over the call is the
    command's.
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=bench_env(), capture_output=True, text=True,
                           timeout=timeout, preexec_fn=_limit_data(memory_limit) if memory_limit else None)
    except subprocess.TimeoutExpired as e:
        raise CaseFailed(f"{what}: timed out after {timeout:.0f} s: {' '.join(map(str, cmd))}") from e
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stdout[-2000:] + "\n" + p.stderr[-3000:]).strip()
        raise CaseFailed(f"{what}: exit {p.returncode}: {' '.join(map(str, cmd))}\n{tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stdout


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


# ---- machine and versions -------------------------------------------------------------------

def _file_field(path: str, key: str, sep: str) -> str | None:
    """The value after ``sep`` on the first line of ``path`` starting with ``key`` (None if absent)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(sep, 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    info = {"hostname": platform.node(), "os": platform.platform(), "kernel": platform.release(),
            "arch": platform.machine(), "cores": os.cpu_count()}
    try:
        info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    info["cpu_model"] = _file_field("/proc/cpuinfo", "model name", ":") or platform.processor() or None
    mem = _file_field("/proc/meminfo", "MemTotal", ":")
    if mem:
        info["memory_gib"] = round(int(mem.split()[0]) / 1024**2, 2)
    distro = _file_field("/etc/os-release", "PRETTY_NAME", "=")
    if distro:
        info["distribution"] = distro.strip('"')
    info["loadavg_at_start"] = loadavg()
    return info


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    import h5py
    import numpy as np

    import hpcprep

    v = {"python": platform.python_version(), "python_executable": sys.executable,
         "numpy": np.__version__, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
         "mpi4py": _dist_version("mpi4py"), "cvxpy": _dist_version("cvxpy"),
         "pandas": _dist_version("pandas"), "hpcprep": hpcprep.__version__}
    # The MPI library version from a child: this process never initializes MPI, so that the
    # mpiexec jobs it starts are plain launches.
    try:
        out = subprocess.run([sys.executable, "-c",
                              "import mpi4py; mpi4py.rc.initialize = False\n"
                              "from mpi4py import MPI\n"
                              "print(MPI.Get_library_version().strip().splitlines()[0])\n"
                              "print('%d.%d' % MPI.Get_version())"],
                             capture_output=True, text=True, timeout=60, env=bench_env())
        lines = out.stdout.strip().splitlines()
        v["mpi_library"] = lines[0] if lines else out.stderr.strip()[-200:]
        v["mpi_standard"] = lines[1] if len(lines) > 1 else None
    except (OSError, subprocess.TimeoutExpired) as e:
        v["mpi_library"] = f"unknown ({e})"
    try:
        v["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True, timeout=30).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, timeout=30).stdout
        v["git_dirty"] = bool(status.strip())
    except (OSError, subprocess.TimeoutExpired):
        v["git_commit"], v["git_dirty"] = None, None
    return v


def loader_bench(workdir, quick: bool) -> dict:
    """Run in a child process by ``case_loader``: the torch loader vs plain h5py, same shards.

    A dataset of N rows x 32 float32 + int64 labels in 4 uneven shards; batches of 4096 rows.
    Plain h5py opens the shards and slices ``f["features"][a:b]`` / ``f["labels"][a:b]`` for
    the same row ranges the loader reads (in order, and the shuffled epoch's ranges);
    the loader iterates ``Dataset.torch(...)`` (world size 1, prefetch thread) to tensors.
    Variants are interleaved with a rotating order and ratios paired within a repeat.
    """
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return {"status": "not available", "reason": f"PyTorch is not installed ({e}); pip install -e .[torch]"}
    import h5py
    import numpy as np

    from hpcprep.loader import open_dataset
    from hpcprep.train.synth import write_dataset

    rows = 200_000 if quick else 4_000_000
    batch, repeats = 4096, (3 if quick else 5)
    shards = [rows * k // 10 for k in (1, 4, 2)]
    shards.append(rows - sum(shards))
    rng = np.random.default_rng(SEED)
    path = write_dataset(Path(workdir) / f"loader-{rows}", rng.standard_normal((rows, FEATURES), dtype=np.float32),
                         rng.integers(0, 2, rows), shards)
    nbytes = rows * (FEATURES * 4 + 8)
    ds = open_dataset(path, verify=False)
    starts = np.cumsum([0] + shards)
    files = [h5py.File(path / f"shards/part-{k:05d}.h5", "r") for k in range(len(shards))]

    def plain(plan):
        for ranges in plan:
            parts = []
            for a, b in ranges:
                for k in range(len(shards)):
                    lo, hi = max(a, starts[k]), min(b, starts[k + 1])
                    if hi > lo:
                        f = files[k]
                        parts.append((f["features"][lo - starts[k]:hi - starts[k]],
                                      f["labels"][lo - starts[k]:hi - starts[k]]))
            x = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
            torch.from_numpy(x)

    def loader(seed):
        for x, y in ds.torch(batch, shuffle_seed=seed, remainder="uneven", rank=0, world_size=1):
            pass

    plans = {seed: list(ds.torch(batch, shuffle_seed=seed, remainder="uneven", rank=0,
                                 world_size=1).batch_ranges()) for seed in (None, 1)}
    variants = {"plain_h5py_in_order": lambda: plain(plans[None]), "loader_in_order": lambda: loader(None),
                "plain_h5py_shuffled": lambda: plain(plans[1]), "loader_shuffled": lambda: loader(1)}
    names = list(variants)
    secs = {v: [] for v in names}
    loader(None)                                   # warm the page cache and the imports
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for v in order:
            t0 = time.perf_counter()
            variants[v]()
            secs[v].append(time.perf_counter() - t0)
    runs = {v: {"seconds": summarize(secs[v]), "rows_per_s": [rows / t for t in secs[v]],
                "gb_per_s": [nbytes / t / 1e9 for t in secs[v]]} for v in names}
    ratio = {o: [p / q for p, q in zip(secs[f"plain_h5py_{o}"], secs[f"loader_{o}"])]
             for o in ("in_order", "shuffled")}
    # the shuffle's block size: reads per batch and rows/s vs how well the batches mix
    blocks = []
    for block in (64, 512, 4096, 32768):
        it = ds.torch(batch, shuffle_seed=1, remainder="uneven", rank=0, world_size=1, block_rows=block)
        plan = list(it.batch_ranges())
        where = [np.empty(rows, np.int64) for _ in range(2)]
        for e in range(2):
            for k, ranges in enumerate(it.batch_ranges(epoch=e)):
                for a, b in ranges:
                    where[e][a:b] = k

        def pairs(key):
            c = np.unique(key, return_counts=True)[1].astype(np.float64)
            return float((c * (c - 1)).sum())
        t0 = time.perf_counter()
        for _ in it:
            pass
        loader_secs = time.perf_counter() - t0
        blocks.append({"block_rows": block, "reads_per_batch": sum(map(len, plan)) / len(plan),
                       "rows_per_s": rows / loader_secs,
                       # of two rows in one batch in epoch 0, the chance they share one in epoch 1
                       "batch_mates_kept": pairs(where[0] * len(plan) + where[1]) / pairs(where[0]),
                       "fully_random_expectation": (batch - 1) / (rows - 1)})
    for f in files:
        f.close()
    ds.close()
    return {"rows": rows, "features": FEATURES, "batch_rows": batch, "bytes": nbytes, "shards": shards,
            "repeats": repeats, "runs": runs, "ratio": {o: summarize(v)["values"] for o, v in ratio.items()},
            "ratio_summary": {o: summarize(v) for o, v in ratio.items()}, "block_size": blocks}


# ---- the suite ---------------------------------------------------------------------------------

class Suite:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.figures: list[dict] = []
        self.cases: dict[str, dict] = {}
        self.failures: list[str] = []
        self.targets: list[dict] = []

    def figure(self, case, name, values, unit, note="", **extra):
        fig = {"case": case, "name": name, "unit": unit, **summarize(values), **extra}
        if note:
            fig["note"] = note
        self.figures.append(fig)
        return fig

    def log(self, text):
        sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {text}\n")
        sys.stderr.flush()

    def run_case(self, name, fn):
        t0 = time.perf_counter()
        load0 = loadavg()
        self.log(f"case {name} ...")
        try:
            entry = fn()
        except Exception as e:  # noqa: BLE001 - record, go on, fail at the end
            entry = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                     "traceback": traceback.format_exc()}
            self.failures.append(f"{name}: {type(e).__name__}: {str(e)[:2000]}")
            self.log(f"case {name} FAILED: {e}")
        entry.setdefault("status", "ok")
        entry["seconds"] = time.perf_counter() - t0
        entry["loadavg_before"], entry["loadavg_after"] = load0, loadavg()
        self.cases[name] = entry
        self.log(f"case {name}: {entry['status']} in {entry['seconds']:.1f} s")

    # ---- REF-1 -------------------------------------------------------------------------------
    def generate(self, rows, files, name) -> Path:
        """Generate (or reuse, when --workdir holds it) REF-1's input; return its folder."""
        data = Path(self.args.workdir) / name
        truth = data / "truth.json"
        if truth.exists():
            t = json.loads(truth.read_text())
            if t.get("rows") == rows and t.get("n_features") == FEATURES and len(t["files"]) == files:
                return data
            shutil.rmtree(data)
        n = 2 if rows >= 100_000 else 1
        run_cmd([mpiexec(), "-n", str(n), sys.executable, "-m", "hpcprep", "generate", "--rows",
                 str(rows), "--features", str(FEATURES), "--files", str(files), "--out", str(data),
                 "--seed", str(SEED), "--quiet"], self.args.workdir, 1800, "generate")
        return data

    def ref1_steps(self):
        """REF-1's steps that hpcprep has (validated), and the names of those it lacks.

        Asked of a child process: importing the steps imports mpi4py, and this process must not
        initialize MPI (it launches mpiexec jobs).
        """
        code = ("import json, sys\n"
                "from hpcprep.steps import STEPS, make_step\n"
                "out = {}\n"
                "for name, t in json.loads(sys.argv[1]):\n"
                "    if t['op'] not in STEPS:\n"
                "        out[name] = 'missing'\n"
                "        continue\n"
                "    try:\n"
                "        make_step(dict(t), 'REF-1 ' + name)\n"
                "        out[name] = 'ok'\n"
                "    except Exception as e:\n"
                "        out[name] = 'invalid: %s' % e\n"
                "print(json.dumps(out))\n")
        _, stdout = run_cmd([sys.executable, "-c", code, json.dumps(REF1_STEPS)], ROOT, 120,
                            "REF-1 step check")
        status = last_json_line(stdout)
        bad = {k: v for k, v in status.items() if v.startswith("invalid")}
        if bad:
            raise CaseFailed(f"REF-1 step tables no longer valid: {bad}")
        have = [(name, table) for name, table in REF1_STEPS if status.get(name) == "ok"]
        missing = [name for name, _ in REF1_STEPS if status.get(name) == "missing"]
        return have, missing

    def write_config(self, data: Path, steps, path: Path, budget=None) -> Path:
        def toml_value(v):
            return json.dumps(v) if isinstance(v, str) else repr(v).lower() if isinstance(v, bool) else repr(v)

        tables = ", ".join("{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in t.items()) + "}"
                           for _, t in steps)
        text = (f"seed = {SEED}\n\n[input]\npaths = [{json.dumps(str(data / 'part-*.h5'))}]\n"
                f"label = \"labels\"\n\n[[standardize]]\nsteps = [{tables}]\n\n"
                f"[[sample]]\nop = \"shuffle\"\n\n[output]\npath = \"out\"\noverwrite = true\n")
        if budget:
            text += f"\n[resources]\nmemory_per_rank = \"{budget}\"\n"
        path.write_text(text)
        return path

    def hpcprep_cmd(self, n, cfg, out, layered=False):
        cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "hpcprep", "run", str(cfg), "--quiet",
               "--set", f"output.path={json.dumps(str(out))}"]
        if layered:
            # 1 input + 1 standardization + (n - 2) sampling ranks
            cmd += ["--set", "layout.fused=false", "--set", "layout.input=1",
                    "--set", "layout.standardize=[1]", "--set", f"layout.sample=[{n - 2}]"]
        return cmd

    def case_ref1(self) -> dict:
        a = self.args
        rows = a.rows or (200_000 if self.quick else 4_000_000)
        files = a.files or (2 if rows <= 1_000_000 else 4)
        repeats = a.repeats or (2 if self.quick else 3)
        work = Path(a.workdir)
        t0 = time.perf_counter()
        data = self.generate(rows, files, f"ref1-{rows}")
        gen_s = time.perf_counter() - t0
        steps, missing = self.ref1_steps()
        cfg = self.write_config(data, steps, work / "ref1.toml")
        step_names = [s for s, _ in steps]
        inputs = sorted(str(p) for p in data.glob("part-*.h5"))
        input_bytes = rows * (FEATURES * 4 + 8)
        timeout = 300 if self.quick else 1800
        cores = os.cpu_count() or 1

        variants = {
            "io_floor": ("I/O floor (h5py read + write, 1 process)", 1,
                         lambda out: [sys.executable, str(SCRIPTS / "io_floor.py"), "--out", str(out), *inputs]),
            "numpy": ("NumPy + h5py expert script (1 process)", 1,
                      lambda out: [sys.executable, str(SCRIPTS / "ref_numpy.py"), "--out", str(out),
                                   "--seed", str(SEED), "--steps", ",".join(step_names),
                                   "--threshold", str(OUTLIER_THRESHOLD), *inputs]),
            "hpcprep_n1": ("hpcprep -n 1 fused", 1, lambda out: self.hpcprep_cmd(1, cfg, out)),
            "hpcprep_n2": ("hpcprep -n 2 fused", 2, lambda out: self.hpcprep_cmd(2, cfg, out)),
        }
        if not self.quick and not a.no_layered:
            over = 4 > cores
            variants["hpcprep_n4_layered"] = (
                "hpcprep -n 4 layered (1 input, 1 standardize, 2 sample)"
                + (f" [oversubscribed: 4 ranks on {cores} cores]" if over else ""), 4,
                lambda out: self.hpcprep_cmd(4, cfg, out, layered=True))
        outs = {k: work / (f"out-{k}.h5" if k in ("io_floor", "numpy") else f"out-{k}") for k in variants}
        wall = {k: [] for k in variants}
        cpu = {k: [] for k in variants}       # user + system seconds of every process of the run
        inner = {k: [] for k in variants}
        rss = {k: [] for k in variants}       # max over ranks, per repeat
        rss_ranks = {k: [] for k in variants}  # per repeat: list per rank
        phases = {k: [] for k in variants}
        rows_out = {}
        order = list(variants)
        for r in range(repeats):
            rot = order[r % len(order):] + order[:r % len(order)]
            for k in rot:
                label, _, make = variants[k]
                self.log(f"  ref1 repeat {r + 1}/{repeats}: {label}")
                w, c, stdout = run_timed(make(outs[k]), work, timeout, f"ref1 {k}")
                wall[k].append(w)
                cpu[k].append(c)
                if k.startswith("hpcprep"):
                    rep = json.loads((outs[k] / "report.json").read_text())
                    inner[k].append(rep["seconds"])
                    per_rank = [rk["peak_rss_mb"] for rk in sorted(rep["ranks"], key=lambda x: x["rank"])]
                    rss_ranks[k].append(per_rank)
                    rss[k].append(max(per_rank))
                    rows_out[k] = rep["rows_out"]
                    phases[k].append({f"rank{rk['rank']}": rk["seconds"] for rk in rep["ranks"]})
                else:
                    rep = last_json_line(stdout)
                    inner[k].append(rep["seconds"])
                    rss[k].append(rep["peak_rss_mb"])
                    rss_ranks[k].append([rep["peak_rss_mb"]])
                    rows_out[k] = rep.get("rows_out", rep.get("rows"))
                    phases[k].append(rep.get("phases", {}))
        # figures
        case = "ref1"
        res = {"rows": rows, "features": FEATURES, "files": files, "input_bytes": input_bytes,
               "generate_seconds": gen_s, "repeats": repeats, "steps": step_names,
               "steps_missing": missing, "config": cfg.read_text(), "variants": {}}
        if missing:
            res["note"] = (f"steps not in hpcprep yet, left out of both sides: {', '.join(missing)}")
        for k, (label, nranks, _) in variants.items():
            v = {"label": label, "ranks": nranks, "wall_seconds": summarize(wall[k]),
                 "cpu_seconds": summarize(cpu[k]),
                 "internal_seconds": summarize(inner[k]), "peak_rss_mb_max_rank": summarize(rss[k]),
                 "peak_rss_mb_per_rank": rss_ranks[k], "phases": phases[k], "rows_out": rows_out.get(k)}
            v["rows_per_s"] = summarize([rows / s for s in wall[k]])
            v["input_gb_per_s"] = summarize([input_bytes / s / 1e9 for s in wall[k]])
            res["variants"][k] = v
            self.figure(case, f"{label}: wall", wall[k], "s")
            self.figure(case, f"{label}: CPU seconds (user + system, all processes)", cpu[k], "s")
            self.figure(case, f"{label}: in-process seconds", inner[k], "s",
                        note="report.json seconds / the script's own timer: no interpreter start, imports, MPI init")
            self.figure(case, f"{label}: rows/s", [rows / s for s in wall[k]], "rows/s")
            self.figure(case, f"{label}: input GB/s", [input_bytes / s / 1e9 for s in wall[k]], "GB/s")
            self.figure(case, f"{label}: peak RSS (max rank)", rss[k], "MB")
        # paired ratios (same repeat round)
        ratios = {}
        for k in variants:
            if not k.startswith("hpcprep"):
                continue
            for base in ("numpy", "io_floor"):
                name = f"{k}/{base}"
                # throughput ratio = baseline time / hpcprep time (> 1: hpcprep faster)
                vals = [b / h for h, b in zip(wall[k], wall[base])]
                vals_in = [b / h for h, b in zip(inner[k], inner[base])]
                ratios[name] = {"wall": summarize(vals), "internal": summarize(vals_in)}
                if base == "numpy":
                    # CPU seconds per row: hpcprep's over the script's (same rows; < 1: less CPU)
                    ratios[name]["cpu"] = summarize([h / b for h, b in zip(cpu[k], cpu[base])])
                    self.figure(case, f"CPU seconds {k} / numpy", [h / b for h, b in zip(cpu[k], cpu[base])],
                                "x", note="all processes, paired per repeat (< 1: hpcprep uses less CPU)")
                self.figure(case, f"throughput ratio {k} / {base}", vals, "x",
                            note="baseline wall / hpcprep wall, paired per repeat (>1: hpcprep faster)")
        res["ratios"] = ratios
        res["checks"] = self.ref1_checks(outs, variants)
        if a.profile:
            res["profile"] = self.profile_hpcprep(cfg, work, Path(a.profile))
        failed = [c for c in res["checks"] if not c["ok"]]
        if failed:
            raise CaseFailed("REF-1 output check failed: " + "; ".join(c["what"] + ": " + c["detail"]
                                                                       for c in failed))
        if not self.quick:
            self.ref1_targets(ratios)
        if not a.keep_outputs:
            for k, p in outs.items():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists():
                    p.unlink()
        return res

    def ref1_targets(self, ratios) -> None:
        """The goals of issue 17 (performance), medians of the paired ratios."""
        for k, goal in (("hpcprep_n2", 2.0), ("hpcprep_n1", 1.0)):
            med = ratios[f"{k}/numpy"]["wall"]["median"]
            self.targets.append({"target": f"REF-1 {k.replace('hpcprep_n', 'hpcprep -n ')} >= {goal}x "
                                           f"NumPy throughput", "value": med, "goal": goal, "met": med >= goal})
        med = ratios["hpcprep_n2/numpy"]["cpu"]["median"]
        self.targets.append({"target": "REF-1 CPU seconds of hpcprep -n 2 (all ranks) <= 1.1x the NumPy "
                                       "script's", "value": med, "goal": 1.1, "met": med <= 1.1})
        med_f = ratios["hpcprep_n2/io_floor"]["wall"]["median"]
        self.targets.append({"target": "REF-1 hpcprep -n 2 within 2x of the I/O floor",
                             "value": 1 / med_f if med_f else None, "goal": 2.0,
                             "met": bool(med_f) and 1 / med_f <= 2.0,
                             "note": "value = hpcprep wall / I/O floor wall (median of pairs)"})

    def profile_hpcprep(self, cfg, work, dest: Path, n=2, top=25) -> dict:
        """One more ``hpcprep -n 2`` run under cProfile (one .prof per rank in ``dest``); top functions."""
        import io
        import pstats

        dest.mkdir(parents=True, exist_ok=True)
        child = (
            "import cProfile, os, sys\n"
            "rank = os.environ.get('PMI_RANK') or os.environ.get('OMPI_COMM_WORLD_RANK') or '0'\n"
            "sys.argv = ['hpcprep'] + sys.argv[1:]\n"
            "from hpcprep.cli import main\n"
            "pr = cProfile.Profile(); pr.enable()\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"finally:\n    pr.disable(); pr.dump_stats(os.path.join({str(dest)!r}, f'rank{{rank}}.prof'))\n")
        cmd = self.hpcprep_cmd(n, cfg, work / "out-profile")
        i = cmd.index("-m")
        cmd[i:i + 2] = ["-c", child]
        wall, _ = run_cmd(cmd, work, 1800, "profile hpcprep")
        shutil.rmtree(work / "out-profile", ignore_errors=True)
        out = {"ranks": n, "wall_seconds": wall, "dir": str(dest), "top_tottime": {}}
        for r in range(n):
            buf = io.StringIO()
            st = pstats.Stats(str(dest / f"rank{r}.prof"), stream=buf)
            st.sort_stats("tottime").print_stats(top)
            (dest / f"rank{r}.txt").write_text(buf.getvalue())
            rows = []
            for (file, line, func), (cc, nc, tt, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]:
                rows.append({"function": f"{os.path.relpath(file, ROOT) if file.startswith(str(ROOT)) else file}"
                                         f":{line}({func})", "calls": nc, "tottime": tt, "cumtime": ct})
            out["top_tottime"][f"rank{r}"] = rows
            out.setdefault("total_seconds", {})[f"rank{r}"] = st.total_tt
        self.log(f"  profile: {dest}/rank*.prof and rank*.txt")
        return out

    def ref1_checks(self, outs, variants) -> list:
        """Same ids in the same order, equal labels, features within 1e-6; hpcprep layouts identical."""
        import h5py
        import numpy as np

        checks = []
        ref = outs["numpy"]
        hp_keys = [k for k in variants if k.startswith("hpcprep")]
        block = 1 << 20

        def open_hp(k):
            return h5py.File(outs[k] / "data.h5", "r")

        with h5py.File(ref, "r") as fr:
            n_ref = fr["ids"].shape[0]
            for k in hp_keys:
                with open_hp(k) as fh:
                    n = fh["ids"].shape[0]
                    ok, detail = n == n_ref, f"rows {n} vs NumPy {n_ref}"
                    max_abs = max_scaled = 0.0
                    if ok:
                        for lo in range(0, n, block):
                            hi = min(n, lo + block)
                            if not np.array_equal(fh["ids"][lo:hi], fr["ids"][lo:hi]):
                                ok, detail = False, f"ids differ in rows {lo}..{hi}"
                                break
                            if not np.array_equal(fh["labels"][lo:hi], fr["labels"][lo:hi]):
                                ok, detail = False, f"labels differ in rows {lo}..{hi}"
                                break
                            a = fh["features"][lo:hi].astype(np.float64)
                            b = fr["features"][lo:hi].astype(np.float64)
                            diff = np.abs(a - b)
                            if diff.size:
                                max_abs = max(max_abs, float(diff.max()))
                                max_scaled = max(max_scaled, float((diff / np.maximum(np.abs(b), 1.0)).max()))
                        if ok:
                            ok = max_scaled <= 1e-6
                            detail = (f"{n} rows, same ids in the same order, labels equal; features: max "
                                      f"|diff| {max_abs:.3g}, max |diff|/max(|ref|,1) {max_scaled:.3g} "
                                      f"(limit 1e-6)")
                checks.append({"what": f"{k} vs NumPy script", "ok": bool(ok), "detail": detail,
                               "max_abs_diff": max_abs, "max_rel_diff": max_scaled})
        base = "hpcprep_n2" if "hpcprep_n2" in hp_keys else hp_keys[0]
        for k in hp_keys:
            if k == base:
                continue
            same = True
            with open_hp(base) as fa, open_hp(k) as fb:
                for name in ("ids", "features", "labels"):
                    if fa[name].shape != fb[name].shape:
                        same = False
                        break
                    for lo in range(0, fa[name].shape[0], block):
                        if fa[name][lo:lo + block].tobytes() != fb[name][lo:lo + block].tobytes():
                            same = False
                            break
            checks.append({"what": f"{k} vs {base}", "ok": same,
                           "detail": "byte-identical datasets" if same else "datasets differ"})
        return checks

    # ---- memory (issue 2) ------------------------------------------------------------------------
    def case_memory(self) -> dict:
        if self.quick and not self.args.memory_rows:
            return {"status": "skipped", "reason": "full mode only (>= 1 GiB of input)"}
        rows = self.args.memory_rows or 8_000_000
        files = 8
        work = Path(self.args.workdir)
        data = self.generate(rows, files, f"mem-{rows}")
        steps, missing = self.ref1_steps()
        cfg = self.write_config(data, steps, work / "memory.toml")
        out = work / "out-memory"
        input_bytes = rows * (FEATURES * 4 + 8)
        share = input_bytes / 2
        reps = 2 if not self.quick else 1
        per_rank, walls = [], []
        for r in range(reps):
            w, _ = run_cmd(self.hpcprep_cmd(2, cfg, out), work, 1800, "memory hpcprep -n 2")
            rep = json.loads((out / "report.json").read_text())
            per_rank.append([rk["peak_rss_mb"] for rk in sorted(rep["ranks"], key=lambda x: x["rank"])])
            walls.append(w)
            shutil.rmtree(out, ignore_errors=True)
        ratio = [max(p) * 2**20 / share for p in per_rank]
        self.figure("memory", f"peak RSS per rank, -n 2, {rows:,} rows ({input_bytes / 2**30:.2f} GiB)",
                    [max(p) for p in per_rank], "MB")
        self.figure("memory", "peak RSS (max rank) / rank's share of input", ratio, "x",
                    note="goal <= 2x (issue 17; 2.5x in issue 2)")
        self.targets.append({"target": "peak RSS per rank <= 2x its share of the input (-n 2, >= 1 GiB)",
                             "value": statistics.median(ratio), "goal": 2.0,
                             "met": statistics.median(ratio) <= 2.0})
        return {"rows": rows, "input_bytes": input_bytes, "input_gib": input_bytes / 2**30,
                "share_bytes_per_rank": share, "peak_rss_mb_per_rank": per_rank,
                "ratio_max_rank_to_share": summarize(ratio), "wall_seconds": summarize(walls),
                "steps": [s for s, _ in steps], "steps_missing": missing,
                "memory_per_rank_budget": "2GiB (default)"}

    # ---- cost over rows (issue 17) ----------------------------------------------------------------
    def case_scaling(self) -> dict:
        """REF-1 at ``-n 2`` on 2**20, 2**22 and 2**24 rows: time per row, and whether a rank spilled."""
        if self.quick and not self.args.scaling_rows:
            return {"status": "skipped", "reason": "full mode only (up to 2**24 rows, 2.3 GB of input)"}
        sizes = [int(v) for v in self.args.scaling_rows.split(",")] if self.args.scaling_rows \
            else [1 << 20, 1 << 22, 1 << 24]
        work = Path(self.args.workdir)
        steps, _ = self.ref1_steps()
        runs = []
        for rows in sizes:
            data = self.generate(rows, 4 if rows > 1_000_000 else 2, f"scale-{rows}")
            cfg = self.write_config(data, steps, work / f"scale-{rows}.toml")
            out = work / f"out-scale-{rows}"
            self.log(f"  scaling: hpcprep -n 2 on {rows:,} rows")
            wall, cpu, _ = run_timed(self.hpcprep_cmd(2, cfg, out), work, 3600, f"scaling {rows}")
            rep = json.loads((out / "report.json").read_text())
            spilled = sum(s.get("bytes_spilled", 0) for rk in rep["ranks"]
                          for s in rk.get("sample", {}).values())
            runs.append({"rows": rows, "wall_seconds": wall, "cpu_seconds": cpu,
                         "us_per_row": wall / rows * 1e6, "cpu_us_per_row": cpu / rows * 1e6,
                         "bytes_spilled": spilled,
                         "peak_rss_mb_max_rank": max(rk["peak_rss_mb"] for rk in rep["ranks"]),
                         "seconds_by_stage": {f"rank{rk['rank']}": rk["seconds"] for rk in rep["ranks"]}})
            shutil.rmtree(out, ignore_errors=True)
        best = min(r["us_per_row"] for r in runs)
        for r in runs:
            r["per_row_vs_best"] = r["us_per_row"] / best
            self.figure("scaling", f"-n 2, {r['rows']:,} rows: time per row", [r["us_per_row"]], "us",
                        note=f"{r['per_row_vs_best']:.2f}x the best; spilled {r['bytes_spilled'] / 2**20:.0f} MiB")
        worst = max(r["per_row_vs_best"] for r in runs)
        self.targets.append({"target": "time per row within 15% over 2**20 .. 2**24 rows (-n 2)",
                             "value": worst, "goal": 1.15, "met": worst <= 1.15,
                             "note": "value = slowest per-row time / fastest"})
        return {"runs": runs, "steps": [s for s, _ in steps]}

    # ---- the PyTorch loader (issue 16) ------------------------------------------------------------
    def case_loader(self) -> dict:
        result_file = Path(self.args.workdir) / "loader-result.json"
        child = (f"import json, sys; sys.path.insert(0, {str(SCRIPTS)!r}); sys.path.insert(0, {str(ROOT)!r})\n"
                 f"import bench\n"
                 f"res = bench.loader_bench({str(self.args.workdir)!r}, quick={self.quick!r})\n"
                 f"open({str(result_file)!r}, 'w').write(json.dumps(bench.jsonable(res), allow_nan=False))\n")
        run_cmd([sys.executable, "-c", child], self.args.workdir, 600 if self.quick else 3600,
                "loader benchmark")
        res = json.loads(result_file.read_text())
        if res.get("status") == "not available":
            return res
        for name, unit in (("rows_per_s", "rows/s"), ("gb_per_s", "GB/s")):
            for v, vals in res["runs"].items():
                self.figure("loader", f"{v} {name}", vals[name], unit)
        for order in ("in_order", "shuffled"):
            self.figure("loader", f"loader / plain h5py ({order})", res["ratio"][order], "x",
                        note="paired within a repeat; goal >= 0.8x")
            if not self.quick:
                med = statistics.median(res["ratio"][order])
                self.targets.append({"target": f"torch loader >= 0.8x plain h5py read ({order})",
                                     "value": med, "goal": 0.8, "met": med >= 0.8})
        return res

    # ---- other developers' modules --------------------------------------------------------------
    def case_module(self, case) -> dict:
        module, what = MODULE_CASES[case]
        path = SCRIPTS / f"{module}.py"
        if not path.exists():
            return {"status": "not available", "module": f"scripts/{module}.py", "measures": what,
                    "reason": f"scripts/{module}.py is not in this tree yet"}
        result_file = Path(self.args.workdir) / f"{module}-result.json"
        child = (
            "import importlib, json, sys\n"
            f"sys.path.insert(0, {str(SCRIPTS)!r}); sys.path.insert(0, {str(ROOT)!r})\n"
            f"mod = importlib.import_module({module!r})\n"
            f"res = mod.run(quick={self.quick!r})\n"
            f"sys.path.insert(0, {str(SCRIPTS)!r}); from bench import jsonable\n"
            f"open({str(result_file)!r}, 'w').write(json.dumps(jsonable(res), allow_nan=False))\n")
        timeout = self.args.module_timeout or (240 if self.quick else 3600)
        if result_file.exists():
            result_file.unlink()
        limit = int(self.args.module_memory_gib * 2**30) if self.args.module_memory_gib else 0
        wall, stdout = run_cmd([sys.executable, "-c", child], self.args.workdir, timeout,
                               f"scripts/{module}.py run(quick={self.quick})", memory_limit=limit)
        result = json.loads(result_file.read_text())
        found = list(find_summaries(result))
        for path_, leaf in found:
            self.figures.append({"case": case, "name": path_, "unit": leaf.get("unit", ""),
                                 "min": leaf.get("min"), "median": leaf.get("median"),
                                 "max": leaf.get("max"), "n": leaf.get("n"), "from_module": True})
        if not found:
            # no min/median/max triples: show the module's headline scalars as single values
            for path_, value in headline_scalars(result):
                self.figures.append({"case": case, "name": path_, "unit": "", "min": None, "median": value,
                                     "max": None, "n": None, "from_module": True, "single_value": True})
        self.module_target(case, result)
        return {"module": f"scripts/{module}.py", "measures": what, "wall_seconds": wall,
                "result": result}

    def module_target(self, case, result):
        """The exchange target, when the sampling module reports the fraction of bare Alltoallv."""
        if case != "sampling" or self.quick:
            return
        ex = result.get("exchange") if isinstance(result, dict) else None
        value, source = None, None
        if isinstance(ex, dict) and ex.get("hpcprep_bytes_per_s") and ex.get("bare_bytes_per_s"):
            value = ex["hpcprep_bytes_per_s"] / ex["bare_bytes_per_s"]
            source = "exchange.hpcprep_bytes_per_s / exchange.bare_bytes_per_s"
        else:
            for path_, v in walk(result):
                if isinstance(v, (int, float)) and "fraction" in path_.lower() and "alltoallv" in path_.lower():
                    value, source = v, path_
                    break
        if value is not None:
            self.targets.append({"target": "shuffle exchange >= 80% of bare Alltoallv (bytes/s)",
                                 "value": value, "goal": 0.8, "met": value >= 0.8, "source": source})

    def case_gpu(self) -> dict:
        out = subprocess.run([sys.executable, "-c",
                              "import json; from hpcprep.device import probe_gpu; "
                              "print(json.dumps(probe_gpu(0)))"],
                             capture_output=True, text=True, timeout=120, env=bench_env(), cwd=ROOT)
        try:
            probe = last_json_line(out.stdout)
        except ValueError:
            probe = {"ok": False, "reason": f"probe failed: {out.stderr.strip()[-500:]}"}
        if not probe.get("ok"):
            return {"status": "no GPU", "reason": probe.get("reason"), "probe": probe}
        if (SCRIPTS / "bench_gpu.py").exists():
            MODULE_CASES["gpu"] = ("bench_gpu", "kernels and pipeline, GPU vs CPU")
            res = self.case_module("gpu")
            res["probe"] = probe
            return res
        return {"status": "not available", "probe": probe,
                "reason": "a GPU is present but scripts/bench_gpu.py does not exist yet"}


_STAT = re.compile(r"^(?:(?P<pre>.*?)_)?(?P<stat>min|median|max)(?:_(?P<post>.*))?$")


def find_summaries(obj, prefix=""):
    """(path, figure) for every min/median/max triple in a module's result.

    Recognized: a dict with keys ``min``, ``median``, ``max``; and keys sharing a stem in one
    dict, such as ``seconds_min``/``seconds_median``/``seconds_max`` or ``min_s``/``median_s``/``max_s``.
    """
    def num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) or v is None

    if isinstance(obj, dict):
        if {"min", "median", "max"} <= set(obj) and all(num(obj[k]) for k in ("min", "median", "max")):
            yield prefix or "(value)", {k: obj.get(k) for k in ("min", "median", "max", "n", "unit")}
            return
        stems = {}
        for k, v in obj.items():
            m = _STAT.match(str(k))
            if m and num(v):
                stem = "_".join(x for x in (m["pre"], m["post"]) if x)
                stems.setdefault(stem, {})[m["stat"]] = v
        for stem, st in stems.items():
            if {"min", "median", "max"} <= set(st):
                unit = "s" if stem in ("seconds", "s", "time") or stem.endswith("_s") else ""
                yield f"{prefix}.{stem}" if prefix else stem, {**st, "unit": unit}
        for k, v in obj.items():
            if isinstance(v, (dict, list)):
                yield from find_summaries(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            label = None
            if isinstance(v, dict):
                label = next((f"{key}={v[key]}" for key in ("name", "case", "label", "kind", "file")
                              if isinstance(v.get(key), (str, int))), None)
            yield from find_summaries(v, f"{prefix}[{label or i}]")


_HEADLINE = re.compile(r"median|ratio|per_s|share|fraction|speedup|seconds|rss|identical", re.I)
_ITEM_FIGURE = re.compile(r"^(first_s|resolve_s|equal_s|plan_s|closed_form_s|ratio|.*seconds.*|.*per_s|.*median.*)$")


def _item_label(item: dict) -> str:
    parts = [f"{k}={v}" for k, v in item.items()
             if isinstance(v, (str, int)) and not isinstance(v, bool) and not k.endswith("_s")
             and k not in ("status", "auto_method")]
    return ",".join(parts[:4])


def headline_scalars(result, limit=60, prefix=""):
    """A module's headline figures without min/median/max: numeric leaves named like figures.

    Dict leaves whose names look like figures (median, ratio, per_s, share, seconds, ...), and in
    lists of dicts (one dict per configuration) the timing/ratio fields of each item, labelled by
    the item's identifying fields (workers=8,tasks=16,...).
    """
    out = []
    if isinstance(result, dict):
        for k, v in result.items():
            path_ = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if _HEADLINE.search(str(k)):
                    out.append((path_, float(v)))
            elif isinstance(v, bool):
                if _HEADLINE.search(str(k)):
                    out.append((path_, float(v)))
            elif isinstance(v, dict):
                out += headline_scalars(v, limit, path_)
            elif isinstance(v, list) and v and all(isinstance(i, dict) for i in v):
                for item in v:
                    label = _item_label(item)
                    for kk, vv in item.items():
                        if isinstance(vv, (int, float)) and not isinstance(vv, bool) and _ITEM_FIGURE.match(kk):
                            out.append((f"{path_}[{label}].{kk}", float(vv)))
    return out[:limit]


def walk(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


# ---- output --------------------------------------------------------------------------------------

def fmt(v, unit=""):
    if v is None:
        return "-"
    if unit == "rows/s":
        return f"{v:,.0f}"
    if abs(v) >= 1e5:
        return f"{v:.3g}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def table(doc: dict, max_module_rows: int = 40) -> str:
    lines = [f"hpcprep bench ({doc['mode']}) on {doc['machine'].get('cpu_model')}, "
             f"{doc['machine'].get('cores')} cores, {doc['machine'].get('memory_gib')} GiB, "
             f"commit {str(doc['versions'].get('git_commit'))[:10]}",
             f"{'case':<9} {'figure':<70} {'min':>11} {'median':>11} {'max':>11}  unit"]
    lines.append("-" * len(lines[1]))
    per_case = {}
    for f in doc["figures"]:
        per_case.setdefault(f["case"], []).append(f)
    for case, entry in doc["cases"].items():
        figs = per_case.get(case, [])
        if entry.get("status") not in ("ok",) or not figs:
            reason = entry.get("reason") or entry.get("error") or ("see bench.json" if entry.get("status") == "ok" else "")
            lines.append(f"{case:<9} {entry.get('status')}: {str(reason).splitlines()[0][:100] if reason else ''}")
            if entry.get("status") != "ok":
                continue
        shown = figs if not any(f.get("from_module") for f in figs) else figs[:max_module_rows]
        for f in shown:
            lines.append(f"{case:<9} {f['name'][:70]:<70} {fmt(f['min'], f['unit']):>11} "
                         f"{fmt(f['median'], f['unit']):>11} {fmt(f['max'], f['unit']):>11}  {f['unit']}")
        if len(shown) < len(figs):
            lines.append(f"{case:<9} ... {len(figs) - len(shown)} more figures in bench.json")
    ref = doc["cases"].get("ref1", {})
    for c in ref.get("checks", []):
        lines.append(f"check     {'OK  ' if c['ok'] else 'FAIL'} {c['what']}: {c['detail']}")
    for t in doc["targets"]:
        v = t.get("value")
        lines.append(f"target    {'MET   ' if t['met'] else 'MISSED'} {t['target']}: "
                     f"{fmt(v) if isinstance(v, (int, float)) else v} (goal {t['goal']})")
    if doc["mode"] == "quick":
        lines.append("targets   not evaluated in quick mode (CI smoke run; no thresholds)")
    return "\n".join(lines)


def _mmm(st, unit="", digits=None):
    if not st or st.get("median") is None:
        return "-"
    return f"{fmt(st['min'], unit)} / **{fmt(st['median'], unit)}** / {fmt(st['max'], unit)}"


def markdown(doc: dict) -> str:
    """The run as Markdown tables (for docs/BENCHMARKS.md): machine, REF-1, checks, memory, modules, targets."""
    m, v = doc["machine"], doc["versions"]
    out = [f"Run: `{doc.get('command', '')}` ({doc['mode']} mode), {doc.get('started')}, "
           f"{doc.get('seconds', 0):.0f} s; load average at start {m.get('loadavg_at_start')}, "
           f"at end {m.get('loadavg_at_end')}.", "",
           f"Machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, "
           f"{m.get('distribution') or ''} ({m.get('os')}).", "",
           f"Versions: Python {v.get('python')}, NumPy {v.get('numpy')}, h5py {v.get('h5py')} "
           f"(HDF5 {v.get('hdf5')}), mpi4py {v.get('mpi4py')}, {v.get('mpi_library')}, cvxpy "
           f"{v.get('cvxpy')}, pandas {v.get('pandas')}, hpcprep {v.get('hpcprep')} at "
           f"`{str(v.get('git_commit'))[:12]}`{' (+ uncommitted changes)' if v.get('git_dirty') else ''}.", ""]
    ref = doc["cases"].get("ref1")
    if ref and ref.get("status") == "ok":
        out += [f"### REF-1: {ref['rows']:,} rows x {ref['features']} float32 features + int64 label "
                f"({ref['input_bytes'] / 1e9:.3f} GB of input, {ref['files']} files), "
                f"{ref['repeats']} interleaved repeats",
                "", f"Steps: {' -> '.join(ref['steps'])} -> shuffle -> HDF5"
                + (f" (not in hpcprep yet: {', '.join(ref['steps_missing'])})" if ref.get("steps_missing") else ""),
                "", "min / **median** / max over the repeats. Throughput ratios are baseline wall time / "
                "hpcprep wall time, paired within a repeat (> 1: hpcprep is faster).", "",
                "| run | wall s | in-process s | rows/s (median) | input GB/s (median) | peak RSS MB per rank (median run) "
                "| x NumPy throughput | x I/O-floor throughput |",
                "|---|---|---|---|---|---|---|---|"]
        for k, var in ref["variants"].items():
            per_rank = var.get("peak_rss_mb_per_rank") or []
            rss = "-"
            if per_rank:
                srt = sorted(per_rank, key=max)
                rss = ", ".join(f"{x:.0f}" for x in srt[len(srt) // 2])
            r_np = ref["ratios"].get(f"{k}/numpy", {}).get("wall")
            r_fl = ref["ratios"].get(f"{k}/io_floor", {}).get("wall")
            out.append(f"| {var['label']} | {_mmm(var['wall_seconds'])} | {_mmm(var['internal_seconds'])} | "
                       f"{fmt(var['rows_per_s']['median'], 'rows/s')} | {fmt(var['input_gb_per_s']['median'])} | "
                       f"{rss} | {_mmm(r_np)} | {_mmm(r_fl)} |")
        out.append("")
        for c in ref.get("checks", []):
            out.append(f"- check {'OK' if c['ok'] else 'FAILED'}: {c['what']}: {c['detail']}")
        out.append("")
    mem = doc["cases"].get("memory")
    if mem and mem.get("status") == "ok":
        out += [f"### Memory (issue 2): hpcprep -n 2 on {mem['rows']:,} rows ({mem['input_gib']:.2f} GiB of input)",
                "", f"Peak RSS per rank (MB, per run): {mem['peak_rss_mb_per_rank']}; each rank's share of "
                f"the input: {mem['share_bytes_per_rank'] / 2**20:.0f} MiB; max rank / share: "
                f"{_mmm(mem['ratio_max_rank_to_share'])} (goal < 2.5x).", ""]
    mods = [(c, e) for c, e in doc["cases"].items() if c not in ("ref1", "memory")]
    if mods:
        out += ["### Other cases", "", "| case | status | figure | min / **median** / max | unit |", "|---|---|---|---|---|"]
        for c, e in mods:
            figs = [f for f in doc["figures"] if f["case"] == c]
            if not figs:
                reason = e.get("reason") or e.get("error") or "figures in bench.json"
                out.append(f"| {c} | {e.get('status')} | {str(reason).splitlines()[0][:120]} | | |")
            for f in figs:
                out.append(f"| {c} | {e.get('status')} | {f['name']} | {_mmm(f, f['unit'])} | {f['unit']} |")
        out.append("")
    if doc.get("targets"):
        out += ["### Targets", "", "| target | value | goal | met |", "|---|---|---|---|"]
        for t in doc["targets"]:
            val = t.get("value")
            out.append(f"| {t['target']} | {fmt(val) if isinstance(val, (int, float)) else val} | {t['goal']} | "
                       f"{'yes' if t['met'] else '**no**'} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="hpcprep benchmark suite (see the module docstring)")
    p.add_argument("--quick", action="store_true", help="CI smoke run: small sizes, < 2 minutes")
    p.add_argument("--out", default="bench.json", help="where to write the JSON (default bench.json)")
    p.add_argument("--cases", default=",".join(ALL_CASES),
                   help=f"comma-separated subset of {','.join(ALL_CASES)}")
    p.add_argument("--repeats", type=int, default=0, help="REF-1 repeats (default 2 quick, 3 full)")
    p.add_argument("--rows", type=int, default=0, help="REF-1 rows (default 200k quick, 4M full)")
    p.add_argument("--files", type=int, default=0, help="REF-1 input files (default 2, or 4 above 1M rows)")
    p.add_argument("--memory-rows", type=int, default=0, help="memory case rows (default 8M, full mode)")
    p.add_argument("--scaling-rows", default="",
                   help="scaling case row counts, comma-separated (default 2**20,2**22,2**24, full mode)")
    p.add_argument("--no-layered", action="store_true", help="skip REF-1's layered -n 4 run")
    p.add_argument("--module-timeout", type=float, default=0, help="seconds per module case")
    mem_gib = (machine().get("memory_gib") or 0)
    p.add_argument("--module-memory-gib", type=float, default=round(0.6 * mem_gib, 1),
                   help="data-segment limit per process of a module case (default 60%% of RAM; 0 = none)")
    p.add_argument("--workdir", default="", help="work folder (default: a temporary folder in /tmp, removed)")
    p.add_argument("--keep-outputs", action="store_true", help="keep REF-1's outputs in the work folder")
    p.add_argument("--profile", default="", metavar="DIR",
                   help="after REF-1's timings, profile one hpcprep -n 2 run (cProfile per rank) into DIR")
    p.add_argument("--markdown", default="", metavar="PATH",
                   help="also write the run as Markdown tables to PATH (for docs/BENCHMARKS.md)")
    p.add_argument("--render", default="", metavar="BENCH_JSON",
                   help="do not run: print the Markdown tables of an existing bench.json")
    args = p.parse_args(argv)
    if args.render:
        sys.stdout.write(markdown(json.loads(Path(args.render).read_text())) + "\n")
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}; known: {', '.join(ALL_CASES)}")
    compile_package()
    own_workdir = not args.workdir
    if own_workdir:
        args.workdir = tempfile.mkdtemp(prefix="hpcprep-bench-", dir="/tmp" if os.path.isdir("/tmp") else None)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.perf_counter()
    suite = Suite(args)
    doc = {"schema": SCHEMA, "mode": "quick" if args.quick else "full",
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
           "machine": machine(), "versions": versions(),
           "environment": {"scrubbed": [k for k in SCRUBBED_ENV if k in os.environ],
                           "mpiexec": mpiexec()}}
    try:
        for case in cases:
            fn = {"ref1": suite.case_ref1, "memory": suite.case_memory, "scaling": suite.case_scaling,
                  "loader": suite.case_loader, "gpu": suite.case_gpu}.get(case) or (lambda c=case: suite.case_module(c))
            suite.run_case(case, fn)
    finally:
        if own_workdir:
            shutil.rmtree(args.workdir, ignore_errors=True)
    doc["machine"]["loadavg_at_end"] = loadavg()
    doc.update(seconds=time.perf_counter() - t0, cases=suite.cases, figures=suite.figures,
               targets=suite.targets, failures=suite.failures, ok=not suite.failures)
    doc = jsonable(doc)
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, args.out)
    if args.markdown:
        Path(args.markdown).write_text(markdown(doc) + "\n")
    sys.stdout.write(table(doc) + "\n")
    sys.stdout.write(f"wrote {args.out} in {doc['seconds']:.0f} s"
                     + (f"; {len(suite.failures)} case(s) FAILED" if suite.failures else "") + "\n")
    for f in suite.failures:
        sys.stdout.write(f"FAILED {f}\n")
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main())
