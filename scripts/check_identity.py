"""Byte-identity guard: the same configs give the same outputs with the code of REV and the working tree.

Usage::

    .venv/bin/python scripts/check_identity.py              # against HEAD, every config, -n 1 and -n 3
    .venv/bin/python scripts/check_identity.py --base HEAD~1 --only ref1,bootstrap --sizes 3

The code of ``REV`` is extracted with ``git archive`` into a temporary folder and run with
``PYTHONPATH`` pointing there; the working tree runs with ``PYTHONPATH`` at the repository
root. Both run every config in folders of the same relative layout (the config text, which
the master file stores, is the same). Inputs are generated once, by the code of ``REV``.

Compared (docs/ARCHITECTURE.md, "Changing code without changing outputs"): every HDF5 file of
the output (shards, ``data.h5``, ``rejects.h5``) by content — datasets' dtype, shape and
values, attributes, virtual sources; not file bytes, HDF5 stores times — every
``manifest.json`` without ``hpcprep_version``, and the row and drop counts of
``report.json``. Prints one line per config and size; exits 1 on any difference.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEED = 7
ROWS = 20_000
FEATURES = 32

REF1_STEPS = ('{ op = "dropna" }, { op = "dedup" }, '
              '{ op = "outliers", method = "zscore", threshold = 6.0 }, '
              '{ op = "scale", method = "standard" }')

#: name -> (input, config body after the [input] paths, world sizes, extra --set options).
#: ``{h5}`` / ``{csv}`` are replaced by the generated inputs' glob patterns.
CONFIGS = {
    # scripts/bench.py REF-1, small
    "ref1": ("h5", f'label = "labels"\n[[standardize]]\nsteps = [{REF1_STEPS}]\n'
                   '[[sample]]\nop = "shuffle"\n', (1, 3), []),
    # scripts/bench.py "memory": the same under a small budget (spilled runs, out of core)
    "ref1-spill": ("h5", f'label = "labels"\n[[standardize]]\nsteps = [{REF1_STEPS}]\n'
                         '[[sample]]\nop = "shuffle"\n[resources]\nmemory_per_rank = "384KiB"\n',
                   (1, 3), []),
    # README quickstart
    "quickstart": ("h5", 'features = "features"\nlabel = "labels"\n[[standardize]]\n'
                         f'steps = [{REF1_STEPS}]\n'
                         '[[sample]]\nop = "split"\nsplits = { train = 0.9, val = 0.1 }\n', (1, 3), []),
    "quickstart-layered": ("h5", 'features = "features"\nlabel = "labels"\n[[standardize]]\n'
                                 f'steps = [{REF1_STEPS}]\n'
                                 '[[sample]]\nop = "split"\nsplits = { train = 0.9, val = 0.1 }\n',
                           (3,), ["layout.fused=false", "layout.input=1", "layout.standardize=[1]",
                                  "layout.sample=[1]"]),
    "csv-rejects": ("csv", 'features = ["a", "b", "c"]\nlabel = "y"\nrejects = true\n'
                           '[[standardize]]\nrejects = true\n'
                           'steps = [{ op = "dropna" }, { op = "dedup" }, '
                           '{ op = "outliers", method = "zscore", threshold = 3.0 }, '
                           '{ op = "scale", method = "standard" }]\n'
                           '[[sample]]\nop = "shuffle"\n', (1, 3), []),
    "split-stratified": ("h5", 'label = "labels"\n[[standardize]]\nsteps = [{ op = "dropna" }]\n'
                               '[[sample]]\nop = "split"\nstratify = true\n'
                               'splits = { train = 0.7, val = 0.2, test = 0.1 }\n', (1, 3), []),
    # three sampling layers (exchanges between layers), the last one routed by splitters
    # (re-routed in rounds), under a small budget
    "bootstrap": ("h5", 'label = "labels"\n[[standardize]]\nsteps = [{ op = "dropna" }]\n'
                        '[[sample]]\nop = "bootstrap"\n[[sample]]\nop = "shuffle"\n'
                        '[[sample]]\nop = "weighted"\nweight = "f0"\nnonpositive = "exclude"\n'
                        'fraction = 0.5\n[resources]\nmemory_per_rank = "384KiB"\n', (1, 3), []),
}

#: Keys of manifest.json that name the code, not the data.
MANIFEST_SKIP = {"hpcprep_version"}
#: Attributes of HDF5 objects that name the code or the time, not the data.
ATTR_SKIP = {"hpcprep_version"}


# ---- inputs ----------------------------------------------------------------------------------
def make_inputs(work: Path, code: Path, rows: int = ROWS) -> dict:
    """Generate the HDF5 input (hpcprep generate of ``code``) and a CSV with bad records; their globs."""
    h5 = work / "raw"
    run([str(BIN / "mpiexec"), "-n", "1", sys.executable, "-m", "hpcprep", "generate", "--rows",
         str(rows), "--features", str(FEATURES), "--files", "2", "--out", str(h5), "--seed", str(SEED),
         "--quiet"], work, {"PYTHONPATH": str(code)})
    csv = work / "csv"
    csv.mkdir()
    rng = np.random.default_rng(SEED)
    for f in range(2):
        lines = ["a,b,c,y,note"]
        for i in range(3000):
            a, b, c = rng.standard_normal(3).round(4)
            row = [str(a), str(b), str(c), str(int(rng.integers(0, 3))), "x"]
            r = rng.random()
            if r < 0.02:
                row[1] = ""                      # missing: dropped by dropna
            elif r < 0.04:
                row[0] = "oops"                  # unparsable: dropped by the reader
            elif r < 0.05:
                row = row[:3]                    # wrong field count
            elif r < 0.08 and i:
                row = lines[-1].split(",")       # duplicate of the previous record
            lines.append(",".join(row))
        (csv / f"part-{f}.csv").write_text("\n".join(lines) + "\n")
    return {"h5": str(h5 / "part-*.h5"), "csv": str(csv / "part-*.csv")}


def config_text(name: str, inputs: dict) -> str:
    kind, body, _, _ = CONFIGS[name]
    head, rest = body.split("\n[[", 1)     # [input] keys, then the tables
    return (f"seed = {SEED}\n[input]\npaths = [{json.dumps(inputs[kind])}]\n{head}\n[[{rest}"
            '[output]\npath = "out"\noverwrite = true\n')


# ---- running ---------------------------------------------------------------------------------
def run(cmd, cwd: Path, env_extra: dict) -> None:
    env = dict(os.environ, **env_extra)
    env.pop("PYTHONSTARTUP", None)
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} (in {cwd}) failed, rc {p.returncode}:\n{p.stdout}{p.stderr}")


def run_config(name: str, n: int, code: Path, folder: Path, inputs: dict) -> Path:
    """Run config ``name`` at ``-n n`` with the package at ``code`` in ``folder``; the output folder."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(config_text(name, inputs))
    cmd = [str(BIN / "mpiexec"), "-n", str(n), sys.executable, "-m", "hpcprep", "run", "config.toml",
           "--quiet"]
    for opt in CONFIGS[name][3]:
        cmd += ["--set", opt]
    run(cmd, folder, {"PYTHONPATH": str(code)})
    return folder / "out"


def extract(rev: str, dest: Path) -> Path:
    """The package of ``rev`` (``git archive``) under ``dest``."""
    archive = dest / "rev.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", rev, "hpcprep"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest / "code", filter="data")
    return dest / "code"


# ---- what is compared ------------------------------------------------------------------------
def _value(v):
    """A comparable form of an attribute value."""
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                if v.dtype.kind != "O" else [str(x) for x in v.ravel()])
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v.item() if isinstance(v, np.generic) else v


def _attrs(obj) -> dict:
    return {k: _value(obj.attrs[k]) for k in sorted(obj.attrs) if k not in ATTR_SKIP}


def _space(space):
    """Shape and selected bounds of a dataspace (None for an empty selection)."""
    try:
        bounds = space.get_select_bounds()
    except ValueError:      # nothing selected
        bounds = None
    return space.shape, space.get_select_type(), bounds


def h5_digest(path: Path) -> dict:
    """Every group and dataset of an HDF5 file: attributes, dtype, shape, values, virtual sources."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {"attrs": _attrs(f)}

        def visit(name, obj):
            entry = {"attrs": _attrs(obj)}
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                entry.update(dtype=obj.dtype.str, shape=obj.shape)
                entry["sha256"] = (hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
                                   if obj.dtype.kind != "O" else [str(x) for x in np.ravel(data)])
                if obj.is_virtual:
                    entry["sources"] = [(s.file_name, s.dset_name, _space(s.vspace), _space(s.src_space))
                                        for s in obj.virtual_sources()]
            out[name] = entry

        f.visititems(visit)
    return out


def report_counts(report: dict) -> dict:
    """The row and drop counts of report.json (not times, versions or bytes)."""
    ranks = [{"input": {k: r.get("input", {}).get(k) for k in ("chunks", "rows", "dropped")},
              "standardize": {k: v.get("dropped") for k, v in r.get("standardize", {}).items()},
              "sample": {k: (v.get("rows_in"), v.get("rows_out"), v.get("mode"))
                         for k, v in r.get("sample", {}).items()}} for r in report["ranks"]]
    return {"rows_in": report["rows_in"], "rows_out": report["rows_out"],
            "dropped": report["dropped"], "sampling": report["sampling"],
            "input": report.get("input"), "ranks": ranks}


def digest(out: Path) -> dict:
    """What must not change, of every file of an output folder, by relative path."""
    d = {}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if p.suffix == ".h5":
            d[rel] = h5_digest(p)
        elif p.name == "manifest.json":
            d[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k not in MANIFEST_SKIP}
        elif p.name == "report.json":
            d[rel] = report_counts(json.loads(p.read_text()))
        elif p.is_file():
            d[rel] = "file"
    return d


def differences(a: dict, b: dict, where: str = "") -> list[str]:
    """Paths (file / object / key) where two digests differ (at most a few per subtree)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'base' if k in a else 'new'}")
            else:
                out += differences(a[k], b[k], f"{where}/{k}")
        return out
    return [] if a == b else [f"{where}: {_short(a)} != {_short(b)}"]


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


# ---- main ------------------------------------------------------------------------------------
def check(base: str, names: list[str], sizes: set[int], work: Path, rows: int = ROWS) -> int:
    base_code = extract(base, work)
    inputs = make_inputs(work, base_code, rows)
    failed = 0
    for name in names:
        for n in CONFIGS[name][2]:
            if n not in sizes:
                continue
            t0 = time.perf_counter()
            outs = [run_config(name, n, code, work / side / f"{name}-n{n}", inputs)
                    for side, code in (("base", base_code), ("new", ROOT))]
            diff = differences(digest(outs[0]), digest(outs[1]))
            failed += bool(diff)
            status = "identical" if not diff else f"DIFFERENT ({len(diff)}): " + "; ".join(diff[:3])
            print(f"{name:20s} -n {n}: {status} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare against (default HEAD)")
    ap.add_argument("--only", default="", help=f"comma-separated configs of {', '.join(CONFIGS)}")
    ap.add_argument("--sizes", default="1,3", help="world sizes to run (default 1,3)")
    ap.add_argument("--rows", type=int, default=ROWS, help=f"rows of the HDF5 input (default {ROWS})")
    ap.add_argument("--keep", default="", help="work in this folder and keep it")
    a = ap.parse_args(argv)
    names = [s for s in a.only.split(",") if s] or list(CONFIGS)
    unknown = [s for s in names if s not in CONFIGS]
    if unknown:
        ap.error(f"unknown config(s) {unknown}; known: {', '.join(CONFIGS)}")
    sizes = {int(s) for s in a.sizes.split(",")}
    if a.keep:
        work = Path(a.keep)
        work.mkdir(parents=True, exist_ok=False)
        return check(a.base, names, sizes, work.resolve(), a.rows)
    with tempfile.TemporaryDirectory(prefix="hpcprep-identity-") as tmp:
        return check(a.base, names, sizes, Path(tmp), a.rows)


if __name__ == "__main__":
    sys.exit(main())
