"""Benchmark: data-parallel training at 2 ranks with rank 1 emulated 2x slower.

Runs ``mpiexec -n 2 python -m hpcprep.train`` three times on the same synthetic
dataset (an mlp, so that a step is compute-bound):

- ``no_straggler``: no slowdown, equal batch sizes;
- ``equal``: rank 1 sleeps to be 2x slower (``train.emulate_slowdown = {1 = 2.0}``),
  equal batch sizes — every step waits for rank 1: about 2x the no-straggler time;
- ``adaptive``: the same straggler with ``train.balance = "adaptive"``: rank 0
  re-solves the batch sizes every ``rebalance_every`` steps. With one of two ranks at
  half speed the ideal is 4/3 of the no-straggler time (throughput 1 + 1/2 instead of 2).

Seconds per epoch are the mean over the epochs after the first (warm-up and the
first rebalances); the three runs are interleaved and repeated (3x, 1x with
--quick) and the fastest repetition of each is reported. The Allreduce share is the Allreduce time of the rank that
computes longest (so it is communication, not waiting) over the epoch time.

Usage: ``python scripts/bench_train.py [--quick]``; writes docs/bench/train.md.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def _train(dataset: Path, out: Path, sets: list[str], timeout: int) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "hpcprep.train", str(dataset), "--out", str(out),
           "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    epochs = summary["epochs"]
    steady = epochs[1:] if len(epochs) > 1 else epochs
    mean = lambda key: sum(e[key] for e in steady) / len(steady)  # noqa: E731
    return {
        "seconds_per_epoch": mean("epoch_seconds"),
        "allreduce_share": mean("allreduce_share"),
        "epoch_seconds": [e["epoch_seconds"] for e in epochs],
        "batch_sizes": epochs[-1]["batch_sizes"],
        "balance_method": epochs[-1]["balance_method"],
        "val_accuracy": epochs[-1]["val_accuracy"],
        "steps_per_epoch": epochs[-1]["steps_per_epoch"],
        "compute_seconds": epochs[-1]["compute_seconds"],
        "allreduce_seconds": epochs[-1]["allreduce_seconds"],
        "wall_seconds": wall,
    }


def run(quick: bool = False) -> dict:
    """Run the three configurations; return the numbers (see the module docstring)."""
    from hpcprep.train.synth import make_linear_dataset

    rows, epochs, repeats = (12000, 3, 1) if quick else (40000, 4, 3)
    d, hidden, batch, every = 64, [512, 512], 2048, 4
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        dataset = make_linear_dataset(tmp / "ds", n=rows, d=d, seed=1, val_fraction=0.1, shards=4)
        base = ["model=mlp", f"hidden={json.dumps(hidden)}", "optimizer=adam", "lr=0.001",
                f"epochs={epochs}", f"batch_size={batch}", "seed=1", "device=cpu", "checkpoint_every=0"]
        configs = {
            "no_straggler": base,
            "equal": base + ["emulate_slowdown={1=2.0}"],
            "adaptive": base + ["emulate_slowdown={1=2.0}", "balance=adaptive", f"rebalance_every={every}"],
        }
        # the machine may be shared: interleave the configurations, repeat, keep the fastest
        # repetition of each (the one least disturbed by other work)
        runs = {name: [] for name in configs}
        for rep in range(repeats):
            for name, sets in configs.items():
                runs[name].append(_train(dataset, tmp / f"{name}-{rep}", sets, timeout=600))
        results = {}
        for name, reps in runs.items():
            best = min(reps, key=lambda r: r["seconds_per_epoch"])
            results[name] = {**best, "all_seconds_per_epoch": [r["seconds_per_epoch"] for r in reps]}
    t0 = results["no_straggler"]["seconds_per_epoch"]
    return {
        "quick": quick, "rows": rows, "train_rows": int(rows * 0.9), "n_features": d, "hidden": hidden,
        "global_batch": batch, "epochs": epochs, "rebalance_every": every, "ranks": 2, "repeats": repeats,
        "machine": f"{platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()}",
        "results": results,
        "ratio_equal": results["equal"]["seconds_per_epoch"] / t0,
        "ratio_adaptive": results["adaptive"]["seconds_per_epoch"] / t0,
        "ideal_ratio": 4 / 3,
        "adaptive_vs_ideal": results["adaptive"]["seconds_per_epoch"] / (4 / 3 * t0),
    }


def markdown(res: dict) -> str:
    r = res["results"]
    lines = [
        "# Training benchmark: a 2x straggler at 2 ranks",
        "",
        "Made by `python scripts/bench_train.py" + (" --quick" if res["quick"] else "") + "` on "
        + res["machine"] + ".",
        f"mlp {res['hidden']} on {res['train_rows']} training rows x {res['n_features']} features, "
        f"Adam, global batch {res['global_batch']}, {res['epochs']} epochs, `mpiexec -n 2`, one BLAS "
        "thread per rank. Rank 1 is made 2x slower with `train.emulate_slowdown = {1 = 2.0}` (it "
        "sleeps as long as it computed). Seconds per epoch: mean over the epochs after the first; "
        f"the configurations ran interleaved {res['repeats']}x and the fastest repetition of each is shown "
        "(all are in the raw numbers).",
        "",
        "| run | s/epoch | x no-straggler | all repetitions (s/epoch) | final batch sizes | Allreduce share |",
        "|---|---:|---:|---|---|---:|",
    ]
    t0 = r["no_straggler"]["seconds_per_epoch"]
    for name, label in (("no_straggler", "no straggler, equal batches"),
                        ("equal", "rank 1 2x slower, equal batches"),
                        ("adaptive", f"rank 1 2x slower, adaptive (every {res['rebalance_every']} steps)")):
        x = r[name]
        reps = ", ".join(f"{v:.2f}" for v in x.get("all_seconds_per_epoch", [x["seconds_per_epoch"]]))
        lines.append(f"| {label} | {x['seconds_per_epoch']:.3f} | {x['seconds_per_epoch'] / t0:.2f} | "
                     f"{reps} | {x['batch_sizes']} ({x['balance_method']}) | {100 * x['allreduce_share']:.1f}% |")
    lines += [
        "",
        f"- Ideal with one of two ranks at half speed: 4/3 = 1.33x. Adaptive reached "
        f"{res['ratio_adaptive']:.2f}x, i.e. {100 * (res['adaptive_vs_ideal'] - 1):+.1f}% from the ideal "
        "(goal: within 10%); equal batches took " f"{res['ratio_equal']:.2f}x (expected about 2x).",
        "- Allreduce share: Allreduce seconds of the rank that computes longest over the epoch "
        "seconds (the faster ranks' Allreduce time also holds their waiting for it). The buffer is "
        "one float64 vector of all gradients + 2 (about "
        f"{(res['n_features'] * res['hidden'][0] + res['hidden'][0] * res['hidden'][1] + res['hidden'][1] + sum(res['hidden']) + 1) * 8 / 1e6:.2f} MB).",
        "- The machine (2 cores) was shared with other work while this ran; see the spread of the "
        "repetitions.",
        "",
        "Raw numbers:",
        "",
        "```json",
        json.dumps(res, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller dataset, fewer epochs")
    parser.add_argument("--out", default=str(ROOT / "docs/bench/train.md"))
    args = parser.parse_args(argv)
    res = run(args.quick)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown(res))
    sys.stdout.write(json.dumps({k: v for k, v in res.items() if k != "results"}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
