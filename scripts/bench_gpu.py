"""GPU benchmark (issue 18): each kernel vs the device's copy bandwidth, and REF-1 on GPU ranks.

``run(quick) -> dict`` is the ``gpu`` case of ``scripts/bench.py`` (run in a child process, and
only where ``hpcprep.device.probe_gpu`` finds a GPU); ``scripts/gpu_check.sh`` runs it on the
GPU machine. What it measures, in one run on one machine:

Figures: ``copy`` (device->device, counted as bytes read + written, the kernels' unit;
host<->device from pinned memory and through ``cupy.asarray`` / ``asnumpy``, as ``Kernels``
moves a chunk today); ``kernels`` (each twin on device-resident inputs, CUDA events: bytes
read + written per second and its fraction of the device->device rate, goal >= 0.6; the sorts
and ``moments_of`` are not one streaming pass; the NumPy twin on one core beside it);
``product_path`` (``Kernels(cupy).keys`` / ``.order`` on one chunk, host in and out, vs
``HOST``); ``ref1`` (REF-1 of scripts/bench.py with ``resources.device`` "gpu" vs "cpu" at
``-n 1`` and ``-n 16``, every rank sharing the one GPU, vs the NumPy script and the I/O floor:
interleaved repeats, paired ratios, outputs checked, GPU byte-identical to CPU).

Command line::

    python scripts/bench_gpu.py --env env.json       # device, driver, CUDA, CuPy, MPI (exit 2: no GPU)
    python scripts/bench_gpu.py --render bench.json  # Markdown tables of a bench.json's gpu case
    python scripts/bench_gpu.py --selftest out.json  # this code with NumPy on the CPU, tiny sizes;
                                                     # checks the logic, gives no GPU figure
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mpi4py

mpi4py.rc.initialize = False       # this process launches mpiexec jobs: it must not be an MPI process
import numpy as np  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]
import bench  # noqa: E402  (scripts/bench.py: run_timed, Suite, summarize, jsonable)

FEATURES = 32
CHUNK_ROWS = 262_144               # input.chunk_rows' default: one chunk of the product path
COPY_GOAL = 0.6                    # issue 18: each kernel >= 60% of the copy bandwidth
#: (1-D rows, matrix rows x FEATURES, copy MiB, repeats) per mode
SIZES = {"full": (1 << 26, 1 << 22, 1024, 10), "quick": (1 << 24, 1 << 20, 256, 5),
         "cpu": (1 << 22, 1 << 18, 0, 2), "selftest": (1 << 14, 1 << 12, 4, 2)}


# ---- device and versions ---------------------------------------------------------------------

def _nvidia_smi() -> dict:
    import subprocess

    q = "name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.mem"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        return {"error": (out.stderr or out.stdout).strip()[-300:] or f"exit {out.returncode}"}
    return dict(zip(q.split(","), (v.strip() for v in lines[0].split(","))))


def device_info(mpi: bool = False) -> dict:
    """The GPU (``probe_gpu``, nvidia-smi, CUDA runtime and driver, CuPy) and the versions.

    ``mpi`` also asks mpi4py for the MPI library (that initializes MPI in this process).
    """
    from hpcprep.device import probe_gpu

    info = {"python": sys.version.split()[0], "python_executable": sys.executable,
            "versions": {n: bench._dist_version(n) for n in ("numpy", "h5py", "mpi4py", "mpich", "pyarrow",
                                                  "cupy-cuda13x", "cupy-cuda12x", "cvxpy", "torch")},
            "probe": probe_gpu(0), "nvidia_smi": _nvidia_smi()}
    if info["probe"]["ok"]:
        import cupy

        rt = cupy.cuda.runtime
        p = rt.getDeviceProperties(info["probe"]["device_id"])
        info["cuda"] = {"cupy": cupy.__version__, "runtime": rt.runtimeGetVersion(),
                        "driver": rt.driverGetVersion(), "name": info["probe"]["name"],
                        "compute_capability": f"{p['major']}.{p['minor']}",
                        "multiprocessors": p["multiProcessorCount"],
                        "memory_gib": round(p["totalGlobalMem"] / 2**30, 1)}
    if mpi:
        from mpi4py import MPI

        info["mpi_library"] = MPI.Get_library_version().strip().splitlines()[0]
    return info


# ---- timing ----------------------------------------------------------------------------------

def timer(xp):
    """``measure(fn, repeats) -> seconds list``: CUDA events on CuPy, wall clock on NumPy."""
    def measure(fn, repeats):
        fn()                               # compiles the kernel, fills the memory pool
        if xp is not np:
            xp.cuda.get_current_stream().synchronize()
        out = []
        for _ in range(repeats):
            if xp is np:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
                continue
            a, b = xp.cuda.Event(), xp.cuda.Event()
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(xp.cuda.get_elapsed_time(a, b) / 1e3)
        return out
    return measure


def stats(seconds, nbytes) -> dict:
    return {"seconds": bench.summarize(seconds), "bytes": nbytes,
            "gb_per_s": nbytes / statistics.median(seconds) / 1e9}


def copy_rates(xp, mib: int, repeats: int) -> dict:
    """Device->device, host<->device (pinned, pageable) copy rates of ``mib`` MiB."""
    n = mib << 20
    measure = timer(xp)
    if xp is np:      # the self-test: the same bookkeeping on host copies
        a, b = np.ones(n, np.uint8), np.empty(n, np.uint8)
        return {"d2d": stats(measure(lambda: np.copyto(b, a), repeats), 2 * n)}
    rt, stream = xp.cuda.runtime, xp.cuda.get_current_stream()
    src, dst = xp.ones(n, xp.uint8), xp.empty(n, xp.uint8)
    pinned = xp.cuda.alloc_pinned_memory(n)
    host = np.frombuffer(pinned, np.uint8, n)
    host[:] = 1
    pageable = np.ones(n, np.uint8)

    def memcpy(to, frm, kind):
        return lambda: rt.memcpyAsync(to, frm, n, kind, stream.ptr)
    out = {"d2d": stats(measure(memcpy(dst.data.ptr, src.data.ptr, 3), repeats), 2 * n),
           "h2d_pinned": stats(measure(memcpy(dst.data.ptr, host.ctypes.data, 1), repeats), n),
           "d2h_pinned": stats(measure(memcpy(host.ctypes.data, src.data.ptr, 2), repeats), n),
           "h2d_pageable": stats(measure(lambda: xp.asarray(pageable), repeats), n),
           "d2h_pageable": stats(measure(lambda: xp.asnumpy(src), repeats), n)}
    return out


# ---- kernels ---------------------------------------------------------------------------------

def kernel_cases(xp, n1: int, n2: int) -> list:
    """``(name, rows, fn, bytes read + written)`` of every kernel twin, inputs on ``xp``."""
    from hpcprep.kernels import (aes_keys, det_log, destination_order, gather_rows, key_order,
                                 key_range_owner, keyed_hash, moments_of, multiply_add,
                                 pack_rows, poisson1_multiplicity, repeat_indices, row_hash,
                                 scale_clip)
    from hpcprep.layers.sample import record_dtype

    ids = xp.arange(n1, dtype=xp.int64)
    keys = keyed_hash(7, 1, ids)
    dest = key_range_owner(keys, 64)
    u = (keys >> xp.uint64(11)).astype(xp.float64) * 2.0**-53 + 2.0**-54      # in (0, 1)
    w = u * 4 + 0.5
    m = poisson1_multiplicity(keys)
    x = ((keyed_hash(3, 2, xp.arange(n2 * FEATURES, dtype=xp.int64)) >> xp.uint64(40)
          ).astype(xp.float64) * 2.0**-24 - 0.5).astype(xp.float32).reshape(n2, FEATURES)
    dt = record_dtype(FEATURES, "float32", "int64")
    cols = [("id", ids[:n2]), ("x", x), ("y", ids[:n2] % 3)]
    order = key_order(keys[:n2])
    rec = pack_rows(cols, dt)
    mean, scale = np.full(FEATURES, 0.1), np.full(FEATURES, 0.3)
    item, cells = dt.itemsize, n2 * FEATURES
    return [
        ("keyed_hash", n1, lambda: keyed_hash(7, 1, ids), 16 * n1),
        ("key_range_owner", n1, lambda: key_range_owner(keys, 64), 16 * n1),
        ("key_order (sort)", n1, lambda: key_order(keys), 16 * n1),
        ("destination_order (sort)", n1, lambda: destination_order(dest, 64), 16 * n1),
        ("pack_rows", n2, lambda: pack_rows(cols, dt, order), 2 * n2 * item + 8 * n2),
        ("gather_rows", n2, lambda: gather_rows(rec, order), 2 * n2 * item + 8 * n2),
        ("moments_of", n2, lambda: moments_of(x), 4 * cells),
        ("scale_clip", n2, lambda: scale_clip(x, mean, scale, -6.0, 6.0), 8 * cells),
        ("multiply_add", n2, lambda: multiply_add(x, scale, mean), 8 * cells),
        ("row_hash", n2, lambda: row_hash(x), 4 * cells + 8 * n2),
        ("det_log", n1, lambda: det_log(u), 16 * n1),
        ("aes_keys", n1, lambda: aes_keys(keys, w), 24 * n1),
        ("poisson1_multiplicity", n1, lambda: poisson1_multiplicity(keys), (8 + m.itemsize) * n1),
        ("repeat_indices", n1, lambda: repeat_indices(m), m.itemsize * n1 + 8 * int(m.sum())),
    ]


def kernel_rates(xp, mode: str) -> dict:
    """Each kernel's time and bytes/s at the sizes of ``mode`` (see :data:`SIZES`)."""
    n1, n2, _, repeats = SIZES[mode]
    measure = timer(xp)
    out = {}
    for name, rows, fn, nbytes in kernel_cases(xp, n1, n2):
        try:
            out[name] = {"rows": rows, **stats(measure(fn, repeats), nbytes)}
        except Exception as e:  # noqa: BLE001 - a kernel that fails is a figure missing, not the end
            out[name] = {"rows": rows, "error": f"{type(e).__name__}: {e}"[:1000]}
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()
    return out


def product_path(xp, repeats: int, rows: int = CHUNK_ROWS) -> dict:
    """``Kernels.keys`` / ``.order`` on one chunk, host in and host out: device vs host."""
    from hpcprep.kernels import HOST, Kernels

    on = Kernels(xp)
    ids = np.arange(rows, dtype=np.int64) * 3 + 1
    keys = HOST.keys(11, 2, ids)
    wall = timer(np)
    out = {"rows": rows}
    for name, f, arg in (("keys", "keys", (11, 2, ids)), ("order", "order", (keys,))):
        dev = statistics.median(wall(lambda: getattr(on, f)(*arg), repeats))
        host = statistics.median(wall(lambda: getattr(HOST, f)(*arg), repeats))
        out[name] = {"device_seconds": dev, "host_seconds": host, "host_over_device": host / dev}
    return out


# ---- REF-1 -----------------------------------------------------------------------------------

def ref1_variants(suite, cfg, inputs, steps, many: int, gpu: str) -> dict:
    """REF-1's runs: ``key -> (label, ranks, make(out) -> command)``; hpcprep's first on CPU."""
    scripts = [sys.executable, str(SCRIPTS / "ref_numpy.py")]
    on = "the GPU" if gpu == "gpu" else "the CPU (self-test stand-in for the GPU)"

    def hp(n, device):
        return lambda out: suite.hpcprep_cmd(n, cfg, out) + ["--set", f'resources.device="{device}"']
    return {
        "hpcprep_n1_cpu": ("hpcprep -n 1, CPU", 1, hp(1, "cpu")),
        "hpcprep_n1_gpu": (f"hpcprep -n 1, {on}", 1, hp(1, gpu)),
        f"hpcprep_n{many}_cpu": (f"hpcprep -n {many}, CPU ranks", many, hp(many, "cpu")),
        f"hpcprep_n{many}_gpu": (f"hpcprep -n {many}, every rank on {on}", many, hp(many, gpu)),
        "numpy": ("NumPy + h5py expert script (1 process)", 1,
                  lambda out: [*scripts, "--out", str(out), "--seed", "7", "--steps",
                               ",".join(steps), "--threshold", "6.0", *inputs]),
        "io_floor": ("I/O floor (h5py read + write, 1 process)", 1,
                     lambda out: [sys.executable, str(SCRIPTS / "io_floor.py"), "--out", str(out),
                                  *inputs]),
    }


def ref1_once(key, make, out: Path, work: Path) -> dict:
    """One timed run: wall and CPU seconds, the in-process seconds, each rank's device."""
    wall, cpu, stdout = bench.run_timed(make(out), work, 900, f"gpu ref1 {key}")
    if key.startswith("hpcprep"):
        rep = json.loads((out / "report.json").read_text())
        return {"wall": wall, "cpu": cpu, "inner": rep["seconds"], "rows_out": rep["rows_out"],
                "devices": [r["device"]["device"] for r in sorted(rep["ranks"], key=lambda r: r["rank"])]}
    rep = bench.last_json_line(stdout)
    return {"wall": wall, "cpu": cpu, "inner": rep["seconds"], "rows_out": rep.get("rows_out", rep.get("rows"))}


def ref1(mode: str, work: Path) -> dict:
    """REF-1 on this machine: GPU ranks vs CPU ranks vs the NumPy script, interleaved repeats."""
    rows, files, repeats = {"full": (4_000_000, 4, 3), "quick": (1_000_000, 2, 1),
                            "selftest": (20_000, 2, 1)}[mode]
    many = 2 if mode == "selftest" else min(16, os.cpu_count() or 1)
    gpu = "cpu" if mode == "selftest" else "gpu"     # the self-test's stand-in runs on the CPU
    suite = bench.Suite(argparse.Namespace(workdir=str(work), quick=mode != "full"))
    data = suite.generate(rows, files, f"gpu-ref1-{rows}")
    steps, missing = suite.ref1_steps()
    cfg = suite.write_config(data, steps, work / "gpu-ref1.toml")
    inputs = sorted(str(p) for p in data.glob("part-*.h5"))
    variants = ref1_variants(suite, cfg, inputs, [s for s, _ in steps], many, gpu)
    outs = {k: work / (f"gpu-out-{k}" + ("" if k.startswith("hpcprep") else ".h5")) for k in variants}
    runs = {k: [] for k in variants}
    order = list(variants)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:
            suite.log(f"  gpu ref1 repeat {r + 1}/{repeats}: {variants[k][0]}")
            runs[k].append(ref1_once(k, variants[k][2], outs[k], work))
    checks = suite.ref1_checks(outs, variants)
    for k in variants:
        want = "gpu" if k.endswith("_gpu") and gpu == "gpu" else "cpu"
        if k.startswith("hpcprep"):
            seen = sorted({d for run in runs[k] for d in run["devices"]})
            checks.append({"what": f"{k}: every rank on the {want.upper()}", "ok": seen == [want],
                           "detail": f"devices in report.json: {seen}"})
    return {"rows": rows, "features": FEATURES, "files": files, "repeats": repeats, "ranks_many": many,
            "steps": [s for s, _ in steps], "steps_missing": missing, "selftest": mode == "selftest",
            "variants": {k: {"label": v[0], "ranks": v[1], "runs": runs[k]} for k, v in variants.items()},
            "ratios": ref1_ratios(runs, many), "checks": checks}


def ref1_ratios(runs: dict, many: int) -> dict:
    """Paired wall-time ratios (> 1: the second named is faster)."""
    def paired(slow, fast):
        return [a["wall"] / b["wall"] for a, b in zip(runs[slow], runs[fast])]
    pairs = {f"numpy/{k}": ("numpy", k) for k in runs if k.startswith("hpcprep")}
    pairs.update({f"hpcprep_n{many}_cpu/hpcprep_n1_gpu": (f"hpcprep_n{many}_cpu", "hpcprep_n1_gpu"),
                  "hpcprep_n1_cpu/hpcprep_n1_gpu": ("hpcprep_n1_cpu", "hpcprep_n1_gpu"),
                  f"hpcprep_n{many}_cpu/hpcprep_n{many}_gpu": (f"hpcprep_n{many}_cpu",
                                                               f"hpcprep_n{many}_gpu")})
    return {name: paired(*p) for name, p in pairs.items()}


# ---- the case --------------------------------------------------------------------------------

def goals(res: dict) -> list:
    """Issue 18's goals: each kernel >= 60% of the copy rate; one GPU rank beats 16 CPU ranks.

    Not evaluated (``met`` None) in the self-test, which runs no GPU.
    """
    d2d, r = res["copy"]["d2d"]["gb_per_s"], res["ref1"]
    out = [(f"{name} >= {COPY_GOAL:.0%} of the device->device copy rate", k["gb_per_s"] / d2d,
            lambda v: v >= COPY_GOAL) for name, k in res["kernels"].items() if "error" not in k]
    if "ratios" in r:
        ratio = statistics.median(r["ratios"][f"hpcprep_n{r['ranks_many']}_cpu/hpcprep_n1_gpu"])
        out.append((f"REF-1: hpcprep -n 1 on the GPU faster than -n {r['ranks_many']} on CPU ranks "
                    "(paired wall ratio > 1)", ratio, lambda v: v > 1))
    real = res["mode"] != "selftest"
    return [{"goal": g, "value": v, "met": ok(v) if real else None} for g, v, ok in out]


def measure(mode: str, work: Path) -> dict:
    """Every figure of the case (``mode``: full, quick, or selftest with NumPy in place of CuPy)."""
    if mode == "selftest":
        xp = np
    else:
        import cupy as xp
    _, _, mib, repeats = SIZES[mode]
    res = {"mode": mode, "device": device_info(), "copy": copy_rates(xp, mib, repeats)}
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()
    res |= {"kernels": kernel_rates(xp, mode),
           "kernels_numpy_1core": kernel_rates(np, "selftest" if mode == "selftest" else "cpu"),
           "product_path": product_path(xp, repeats)}
    try:
        res["ref1"] = ref1(mode, work)
    except Exception as e:  # noqa: BLE001 - keep the kernel figures; the failure is reported
        res["ref1"] = {"error": f"{type(e).__name__}: {e}"[:4000]}
    res["goals"] = goals(res)
    res["checks_failed"] = [f"kernel {k}: {v['error']}" for k, v in res["kernels"].items() if "error" in v]
    res["checks_failed"] += ([c["what"] for c in res["ref1"]["checks"] if not c["ok"]]
                             if "checks" in res["ref1"] else [f"ref1: {res['ref1']['error'][:300]}"])
    return res


def run(quick: bool = False) -> dict:
    """The ``gpu`` case of scripts/bench.py (cwd: its work folder)."""
    with tempfile.TemporaryDirectory(prefix="gpu-", dir=os.getcwd()) as tmp:
        return measure("quick" if quick else "full", Path(tmp))


# ---- Markdown --------------------------------------------------------------------------------

def _f(v, digits=3):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _mmm(vals):
    return " / ".join([_f(min(vals)), f"**{_f(statistics.median(vals))}**", _f(max(vals))])


def render_device(res: dict, machine: dict) -> list:
    d = res["device"]
    cu, smi = d.get("cuda", {}), d.get("nvidia_smi", {})
    return [f"Device: {cu.get('name', d['probe'].get('name'))}, compute capability "
            f"{cu.get('compute_capability', '-')}, {cu.get('multiprocessors', '-')} SMs, "
            f"{cu.get('memory_gib', '-')} GiB; driver {smi.get('driver_version', '-')} "
            f"(CUDA driver API {cu.get('driver', '-')}), CUDA runtime {cu.get('runtime', '-')}, "
            f"CuPy {cu.get('cupy', '-')}; host: {machine.get('cpu_model', '-')}, "
            f"{machine.get('cores_logical', machine.get('cores', '-'))} cores. "
            f"Python {d['python']}, NumPy {d['versions']['numpy']}, h5py {d['versions']['h5py']}, "
            f"mpi4py {d['versions']['mpi4py']}, MPICH {d['versions']['mpich']}.", ""]


def render_kernels(res: dict) -> list:
    c = res["copy"]
    lines = ["| copy | MiB | GB/s (median) |", "|---|---|---|"]
    for k, v in c.items():
        note = " (read + written)" if k == "d2d" else ""
        lines.append(f"| {k}{note} | {v['bytes'] / (2 if k == 'd2d' else 1) / 2**20:.0f} | "
                     f"{_f(v['gb_per_s'])} |")
    d2d = c["d2d"]["gb_per_s"]
    cpu = res["kernels_numpy_1core"]
    lines += ["", "| kernel | rows | GPU ms (median) | GPU GB/s (read + written) | x d2d copy | "
                  "NumPy 1 core GB/s | GPU / NumPy |", "|---|---|---|---|---|---|---|"]
    for name, k in res["kernels"].items():
        if "error" in k:
            lines.append(f"| `{name}` | {k['rows']:,} | **failed**: {k['error'][:200]} | | | | |")
            continue
        h = cpu.get(name, {}).get("gb_per_s")
        lines.append(f"| `{name}` | {k['rows']:,} | {_f(k['seconds']['median'] * 1e3)} | "
                     f"{_f(k['gb_per_s'])} | {_f(k['gb_per_s'] / d2d, 2)} | {_f(h)} | "
                     f"{_f(k['gb_per_s'] / h if h else None)} |")
    p = res["product_path"]
    lines += ["", f"Product path today, one chunk of {p['rows']:,} rows, host in and host out "
                  "(transfers included):", "",
              "| `Kernels` call | device ms | host (NumPy) ms | host / device |", "|---|---|---|---|"]
    for name in ("keys", "order"):
        v = p[name]
        lines.append(f"| `{name}` | {_f(v['device_seconds'] * 1e3)} | {_f(v['host_seconds'] * 1e3)} | "
                     f"{_f(v['host_over_device'], 2)} |")
    return lines + [""]


def render_ref1(r: dict) -> list:
    if "error" in r:
        return [f"REF-1 **failed**: {r['error']}", ""]
    lines = [f"REF-1, {r['rows']:,} rows x {r['features']} float32 + int64 label, {r['files']} files, "
             f"{r['repeats']} interleaved repeat(s); steps {' -> '.join(r['steps'])} -> shuffle -> HDF5. "
             "min / **median** / max.", "",
             "| run | ranks | devices | wall s | in-process s | rows/s (median) | x NumPy |",
             "|---|---|---|---|---|---|---|"]
    for k, v in r["variants"].items():
        wall = [x["wall"] for x in v["runs"]]
        devs = sorted({d for x in v["runs"] for d in x.get("devices", [])})
        ratio = r["ratios"].get(f"numpy/{k}")
        lines.append(f"| {v['label']} | {v['ranks']} | {', '.join(devs) or '-'} | {_mmm(wall)} | "
                     f"{_mmm([x['inner'] for x in v['runs']])} | {_f(r['rows'] / statistics.median(wall))} | "
                     f"{_mmm(ratio) if ratio else '-'} |")
    lines += ["", "| paired wall ratio (> 1: the second is faster) | min / **median** / max |", "|---|---|"]
    lines += [f"| {k} | {_mmm(v)} |" for k, v in r["ratios"].items() if not k.startswith("numpy/")]
    lines += [""] + [f"- check {'OK' if c['ok'] else '**FAILED**'}: {c['what']}: {c['detail']}"
                     for c in r["checks"]]
    return lines + [""]


def render(doc: dict) -> str:
    """Markdown of a bench.json (its ``gpu`` case) or of a bare :func:`measure` result."""
    machine = doc.get("machine", {})
    case = doc["cases"].get("gpu", {"status": "not run"}) if "cases" in doc else {"result": doc}
    if "result" not in case:
        return f"GPU case: {case.get('status')}: {case.get('reason') or case.get('error')}\n"
    res = case["result"]
    out = []
    if res["mode"] == "selftest":
        out += ["**SELF-TEST ON THE CPU (NumPy in place of CuPy, tiny sizes): checks the benchmark's "
                "code, these are not GPU figures.**", ""]
    out += render_device(res, machine) + render_kernels(res) + render_ref1(res["ref1"])
    out += ["| goal (issue 18) | value | met |", "|---|---|---|"]
    met = {True: "yes", False: "**no**", None: "not evaluated (self-test)"}
    out += [f"| {g['goal']} | {_f(g['value'], 3)} | {met[g['met']]} |" for g in res["goals"]]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--env", metavar="JSON", help="write the device and versions; exit 2 without a GPU")
    g.add_argument("--render", metavar="BENCH_JSON", help="print the Markdown tables of a result")
    g.add_argument("--selftest", metavar="JSON", help="run the case with NumPy on the CPU, tiny sizes")
    a = p.parse_args(argv)
    if a.render:
        sys.stdout.write(render(json.loads(Path(a.render).read_text())))
        return 0
    if a.env:
        info = device_info(mpi=True)
        Path(a.env).write_text(json.dumps(info, indent=1, default=str) + "\n")
        probe = info["probe"]
        print(json.dumps({"gpu": probe["ok"], "name": probe["name"], "reason": probe["reason"],
                          "cuda": info.get("cuda"), "nvidia_smi": info["nvidia_smi"],
                          "mpi": info.get("mpi_library")}, default=str))
        return 0 if probe["ok"] else 2
    with tempfile.TemporaryDirectory(prefix="gpu-selftest-") as tmp:
        res = measure("selftest", Path(tmp))
    Path(a.selftest).write_text(json.dumps(bench.jsonable(res), indent=1, allow_nan=False) + "\n")
    sys.stdout.write(render(res))
    return 1 if res["checks_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
