"""Benchmark the plan of the input stage: equal split vs the assignment program on slowed ranks.

Usage::

    python scripts/bench_input_plan.py            # 3 input ranks slowed 1x / 1.5x / 2x, 4.8M rows
    python scripts/bench_input_plan.py --quick    # 300k rows, one repeat
    python scripts/bench_input_plan.py --json out.json

Real ``hpcprep run`` processes (``mpiexec -n 3``, fused) read the same HDF5 input
with ``plan.emulate_slowdown = {1 = 1.5, 2 = 2.0}`` (a slowed rank sleeps after each
read), once with ``plan.balance = "equal"`` and once with ``"calibrate"`` (each rank
times a read, rank 0 solves, the chunks follow the speeds). The input stage's
makespan is the largest ``seconds.read`` over the ranks (report.json); the plan
predicts each rank's finish from the calibration. The ideal ratio, equal / plan,
is ``mean(speed) / min(speed)`` = 1.44 for speeds 1, 1/1.5, 1/2 (2 cores carry 3
ranks: the sleeping ranks free the cores, so the figure is near the ideal only
while reading dominates).
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
    return {"makespan_s": max(read), "read_s": read, "rows": plan.get("rows"),
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
    speeds = [1.0, 1 / 1.5, 1 / 2.0]
    return {"rows": rows, "slowdown": SLOWDOWN, "pairs": pairs,
            "ratio_equal_over_plan": {"min": min(ratios), "median": statistics.median(ratios),
                                      "max": max(ratios), "n": len(ratios), "unit": "x"},
            "ideal_ratio": sum(speeds) / len(speeds) / min(speeds)}


def markdown(result: dict) -> str:
    lines = ["| run | makespan s | read s per rank | rows per rank | predicted s per rank |",
             "|---|---|---|---|---|"]
    for k, (e, p) in enumerate(result["pairs"]):
        for name, r in (("equal", e), ("plan", p)):
            pred = ", ".join(f"{v:.2f}" for v in r["predicted_s"]) if r["predicted_s"] else "-"
            lines.append(f"| {name} #{k + 1} | {r['makespan_s']:.2f} | "
                         f"{', '.join(f'{v:.2f}' for v in r['read_s'])} | {r['rows']} | {pred} |")
    q = result["ratio_equal_over_plan"]
    lines.append(f"\nequal / plan makespan: {q['min']:.2f} / **{q['median']:.2f}** / {q['max']:.2f} "
                 f"(ideal {result['ideal_ratio']:.2f})")
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
