"""Benchmark the plan of the input stage: equal split vs the assignment program on slowed ranks.

Usage::

    python scripts/bench_input_plan.py            # 3 input ranks slowed 1x / 1.5x / 2x, 4.8M rows
    python scripts/bench_input_plan.py --quick    # 300k rows, one repeat
    python scripts/bench_input_plan.py --json out.json

Real ``hpcprep run`` processes (``mpiexec -n 3``, fused) read the same HDF5 input
with ``plan.emulate_slowdown = {1 = 1.5, 2 = 2.0}`` (a slowed rank sleeps after each
read), once with ``plan.balance = "equal"`` and once with ``"calibrate"`` (each rank
times 0.3 s of reads of rows it has not read before, rank 0 solves, the chunks follow
the speeds). The input stage's makespan is the largest ``seconds.read`` over the ranks
(report.json); the plan predicts each rank's finish from the calibration (rows /
calibrated rows per second), and ``predicted / measured`` compares it with that rank's
``seconds.read``. The ideal ratio, equal / plan, is ``mean(speed) / min(speed)`` = 1.44
for speeds 1, 1/1.5, 1/2 (2 cores carry 3 ranks: the sleeping ranks free the cores, so
the figure is near the ideal only while reading dominates).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SLOWDOWN = {"1": 1.5, "2": 2.0}

CONFIG = """seed = 1
[input]
paths = ["raw/*.h5"]
label = "labels"
chunk_rows = {chunk_rows}
[plan]
balance = "{balance}"
calibration_rows = {calibration_rows}
emulate_slowdown = {{ 1 = 1.5, 2 = 2.0 }}
[output]
path = "out-{balance}"
overwrite = true
"""


def _hpcprep(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([str(BIN / "mpiexec"), "-n", "3", sys.executable, "-m", "hpcprep", *args],
                   cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=900)


def one_run(work: Path, balance: str, chunk_rows: int) -> dict:
    """Run once; the input stage's makespan and, with a plan, its prediction per rank."""
    (work / f"{balance}.toml").write_text(CONFIG.format(balance=balance, chunk_rows=chunk_rows,
                                                        calibration_rows=chunk_rows))
    _hpcprep(["run", f"{balance}.toml", "--quiet"], work)
    report = json.loads((work / f"out-{balance}" / "report.json").read_text())
    read = [r["seconds"]["read"] for r in report["ranks"]]
    plan = report["input_plan"]
    rows = [r["input"]["rows"] for r in report["ranks"] if "input" in r]
    return {"makespan_s": max(read), "read_s": read, "rows": rows,
            "predicted_s": plan.get("predicted_finish_s"), "speeds": plan.get("speeds")}


def run(quick: bool) -> dict:
    """Equal split vs plan, ``repeats`` interleaved pairs; ratios paired within a repeat."""
    rows, repeats = (300_000, 1) if quick else (4_800_000, 3)
    chunk_rows = rows // 60
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _hpcprep(["generate", "--out", "raw", "--quiet", "--rows", str(rows), "--features", "16", "--files", "6",
                  "--seed", "3"], work)
        pairs = [(one_run(work, "equal", chunk_rows), one_run(work, "calibrate", chunk_rows))
                 for _ in range(repeats)]
    ratios = [e["makespan_s"] / p["makespan_s"] for e, p in pairs]
    accuracy = [pred / read for _, p in pairs for pred, read in zip(p["predicted_s"], p["read_s"])]
    speeds = [1.0, 1 / 1.5, 1 / 2.0]
    return {"rows": rows, "slowdown": SLOWDOWN, "pairs": pairs,
            "ratio_equal_over_plan": _spread(ratios),
            "predicted_over_measured": _spread(accuracy),
            "ideal_ratio": sum(speeds) / len(speeds) / min(speeds)}


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values), "unit": "x"}


def _numbers(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def markdown(result: dict) -> str:
    lines = ["| run | makespan s | read s per rank | rows per rank | predicted s per rank "
             "| predicted / measured |", "|---|---|---|---|---|---|"]
    for k, (e, p) in enumerate(result["pairs"]):
        for name, r in (("equal", e), ("plan", p)):
            pred = _numbers(r["predicted_s"]) if r["predicted_s"] else "-"
            ratio = _numbers([a / b for a, b in zip(r["predicted_s"], r["read_s"])]) \
                if r["predicted_s"] else "-"
            rows = ", ".join(f"{v / 1e6:.2f}M" for v in r["rows"])
            lines.append(f"| {name} #{k + 1} | {r['makespan_s']:.2f} | {_numbers(r['read_s'])} | "
                         f"{rows} | {pred} | {ratio} |")
    q = result["ratio_equal_over_plan"]
    a = result["predicted_over_measured"]
    lines.append(f"\nequal / plan makespan: {q['min']:.2f} / **{q['median']:.2f}** / {q['max']:.2f} "
                 f"(ideal {result['ideal_ratio']:.2f}); predicted / measured per rank: "
                 f"{a['min']:.2f} / **{a['median']:.2f}** / {a['max']:.2f} (n = {a['n']})")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    res = run(args.quick)
    print(markdown(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
