"""Benchmark: data-parallel training at 2 ranks with a straggler, a fixed step cost, transient
interference; the ordered reduction vs the Allreduce.

Runs ``mpiexec -n 2 python -m hpcprep.train`` on one synthetic dataset (an mlp, so that a
step is compute-bound), in ten configurations, interleaved and repeated:

- ``no_straggler``: equal batch sizes, no slowdown;
- ``equal``: rank 1 emulated 2x slower (``train.emulate_slowdown = {1 = 2.0}``), equal sizes:
  every step waits for rank 1;
- ``ideal``: the same straggler with the perfect split known in advance
  (``train.shares = [2, 1]``): what perfect balancing gives, measured;
- ``adaptive``: the same straggler, ``train.balance = "adaptive"`` (rank 0 re-plans from
  measured step times);
- ``transient_equal`` / ``transient_adaptive``: no straggler, but both ranks are slowed 2-4x
  for 2-4 steps at random moments (``train.emulate_episodes``, the same episodes for both);
- ``fixed_ideal`` / ``fixed_adaptive`` / ``fixed_proportional``: rank 1 2x slower *and* paying
  a fixed cost per step (``train.emulate_step_cost``) as long as computing ``FIXED_SAMPLES``
  samples at full speed (from a calibration run), so the equal-finish split is [5:1]: given in
  advance, adaptive with the fitted fixed cost (``rebalance_model = "affine"``, the default), and
  adaptive with the per-sample model of before (``"proportional"``);
- ``ordered``: no straggler, ``train.reduce = "ordered"`` (gradients summed along a fixed tree
  of blocks: the same bits at any rank count), against ``no_straggler`` (one Allreduce).

Ratios are paired within a repetition (configurations run back to back, in an order rotated
each repetition) and reported as min / median / max over the repetitions (5, 1 with ``quick``). Seconds per epoch are the mean
over the epochs after the first. Why ``ideal`` is measured rather than 4/3 of the no-straggler
time: see docs/train.md ("Benchmark").

Usage: ``python scripts/bench_train.py [--quick]``; writes docs/bench/train.md.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
RATIOS = {  # name: (numerator, denominator)
    "equal": ("equal", "no_straggler"), "adaptive": ("adaptive", "no_straggler"),
    "ideal": ("ideal", "no_straggler"), "adaptive_vs_ideal": ("adaptive", "ideal"),
    "transient_adaptive_vs_equal": ("transient_adaptive", "transient_equal"),
    "fixed_adaptive_vs_ideal": ("fixed_adaptive", "fixed_ideal"),
    "fixed_proportional_vs_ideal": ("fixed_proportional", "fixed_ideal"),
    "fixed_adaptive_vs_proportional": ("fixed_adaptive", "fixed_proportional"),
    "ordered_vs_allreduce": ("ordered", "no_straggler"),
}
#: The fixed step cost of rank 1 in the fixed_* runs, in samples computed at full speed: with rank 1
#: 2x slower, b0 = 2 b1 + 1024 and b0 + b1 = 2048 give the split [1707, 341], 5:1.
FIXED_SAMPLES = 1024
FIXED_SHARES = [5, 1]


def _train(dataset: Path, out: Path, sets: list[str], timeout: int) -> dict:
    """One training run; its per-epoch numbers and the balance report."""
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
    mean = lambda f: sum(f(e) for e in steady) / len(steady)  # noqa: E731
    bal = summary["balance"]
    return {
        "seconds_per_epoch": mean(lambda e: e["epoch_seconds"]),
        "compute_seconds_max": mean(lambda e: max(e["compute_seconds"])),
        "reduce_seconds_min": mean(lambda e: min(e["allreduce_seconds"])),
        "allreduce_share": mean(lambda e: e["allreduce_share"]),
        "batch_sizes": bal["sizes"], "replans": len(bal["replans"]),
        "replan_steps": [r["step"] for r in bal["replans"]],
        "replan_sizes": [r["new_sizes"] for r in bal["replans"]],
        "seconds_per_sample": bal.get("seconds_per_sample"), "fixed_s": bal.get("fixed_s"),
        "val_accuracy": epochs[-1]["val_accuracy"], "wall_seconds": wall,
    }


def random_episodes(steps: int, seed: int = 7, rate: float = 0.06) -> list[dict]:
    """Transient interference: on each rank, from each step on with probability ``rate``,
    an episode of 2-4 steps at 2-4x (no two episodes of a rank overlap)."""
    rng = np.random.default_rng(seed)
    out = []
    for rank in (0, 1):
        step = 0
        while step < steps:
            if rng.random() < rate:
                length = int(rng.integers(2, 5))
                out.append({"rank": rank, "factor": float(rng.choice([2.0, 3.0, 4.0])),
                            "start": step, "steps": length})
                step += length
            step += 1
    return out


def _toml_list(items: list[dict]) -> str:
    return "[" + ", ".join("{" + ", ".join(f"{k} = {v}" for k, v in it.items()) + "}" for it in items) + "]"


def _configs(base: list[str], episodes: list[dict], replan: list[str], step_cost: float) -> dict:
    slow = ["emulate_slowdown={1=2.0}"]
    adaptive = ["balance=adaptive", *replan]
    noisy = [f"emulate_episodes={_toml_list(episodes)}"]
    fixed = slow + [f"emulate_step_cost={{1={step_cost!r}}}"]
    return {"no_straggler": base, "equal": base + slow, "ideal": base + slow + ["shares=[2, 1]"],
            "adaptive": base + slow + adaptive, "transient_equal": base + noisy,
            "transient_adaptive": base + noisy + adaptive,
            "fixed_ideal": base + fixed + [f"shares={FIXED_SHARES}"],
            "fixed_adaptive": base + fixed + adaptive,
            "fixed_proportional": base + fixed + adaptive + ["rebalance_model=proportional"],
            "ordered": base + ["reduce=ordered"]}


def _mmm(values: list[float], unit: str = "") -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values), "unit": unit, "values": values}


def run(quick: bool = False) -> dict:
    """Run the configurations; return the numbers (see the module docstring)."""
    from hpcprep.train.synth import make_linear_dataset

    rows, epochs, repeats = (12000, 3, 1) if quick else (30000, 4, 5)
    d, hidden, batch, every, window, patience = 64, [512, 512], 2048, 4, 16, 3
    train_rows = rows - int(round(rows * 0.1))
    steps = epochs * -(-train_rows // batch)
    episodes = random_episodes(steps)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        dataset = make_linear_dataset(tmp / "ds", n=rows, d=d, seed=1, val_fraction=0.1, shards=4)
        base = ["model=mlp", f"hidden={json.dumps(hidden)}", "optimizer=adam", "lr=0.001",
                f"epochs={epochs}", f"batch_size={batch}", "seed=1", "device=cpu", "checkpoint_every=0"]
        # calibration: seconds per sample of a rank's compute, for the fixed step cost
        cal = _train(dataset, tmp / "calibrate", base + ["epochs=2"], timeout=600)
        per_sample = cal["compute_seconds_max"] / (train_rows / 2)
        step_cost = round(FIXED_SAMPLES * per_sample, 4)
        configs = _configs(base, episodes, [f"rebalance_every={every}", f"rebalance_window={window}",
                                            f"rebalance_patience={patience}"], step_cost)
        runs = {name: [] for name in configs}
        names = list(configs)
        for rep in range(repeats):   # back to back, rotating order: ratios paired within a repetition
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                runs[name].append(_train(dataset, tmp / f"{name}-{rep}", configs[name], timeout=600))
    return _summarize(runs, {
        "quick": quick, "rows": rows, "train_rows": train_rows, "n_features": d, "hidden": hidden,
        "global_batch": batch, "epochs": epochs, "steps": steps, "rebalance_every": every,
        "rebalance_window": window, "rebalance_patience": patience, "ranks": 2, "repeats": repeats, "episodes": episodes,
        "calibration_seconds_per_sample": per_sample, "fixed_step_cost_s": step_cost,
        "fixed_samples": FIXED_SAMPLES, "fixed_ideal_sizes": _fixed_ideal(batch),
        "machine": f"{platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()}"})


def _fixed_ideal(batch: int) -> list[int]:
    """The equal-finish split of the fixed_* runs: b0 = 2 b1 + FIXED_SAMPLES, b0 + b1 = batch."""
    b1 = round((batch - FIXED_SAMPLES) / 3)
    return [batch - b1, b1]


def _summarize(runs: dict, res: dict) -> dict:
    """Per configuration min/median/max seconds per epoch; paired ratios; the ideal explained."""
    res["results"] = {name: {"seconds_per_epoch": _mmm([r["seconds_per_epoch"] for r in reps], "s"),
                             "runs": reps} for name, reps in runs.items()}
    res["ratios"] = {key: _mmm([a["seconds_per_epoch"] / b["seconds_per_epoch"]
                                for a, b in zip(runs[num], runs[den])], "x")
                     for key, (num, den) in RATIOS.items()}
    # the 4/3 of a compute-only model: the no-straggler epoch is compute C plus per-step work O
    # that does not scale with the batch (Allreduce, optimizer, reading); perfect balancing makes
    # C 4/3 longer and leaves O alone
    model = [(4 / 3 * r["compute_seconds_max"] + (r["seconds_per_epoch"] - r["compute_seconds_max"]))
             / r["seconds_per_epoch"] for r in runs["no_straggler"]]
    res["ratios"]["ideal_compute_model"] = _mmm(model, "x")
    res["compute_share_no_straggler"] = _mmm([r["compute_seconds_max"] / r["seconds_per_epoch"]
                                              for r in runs["no_straggler"]])
    # rank 0's seconds per sample when rank 1 computes all the time vs when it sleeps half of it
    res["ratios"]["rank0_per_sample_ideal_vs_no_straggler"] = _mmm(
        [a["seconds_per_sample"][0] / b["seconds_per_sample"][0]
         for a, b in zip(runs["ideal"], runs["no_straggler"])], "x")
    # how far each fixed-cost run's final split is from the equal-finish one (rows of rank 1)
    ideal = res["fixed_ideal_sizes"][1]
    res["fixed_split_error_rows"] = {name: _mmm([r["batch_sizes"][1] - ideal for r in runs[name]], "rows")
                                     for name in ("fixed_adaptive", "fixed_proportional")}
    # the ordered reduction: compute (one loss_grad per block) and reduction seconds per epoch
    res["ordered_cost"] = {key: {name: _mmm([r[key] for r in runs[name]], "s")
                                 for name in ("no_straggler", "ordered")}
                           for key in ("compute_seconds_max", "reduce_seconds_min")}
    return res


def _row(label: str, x: dict) -> str:
    s = x["seconds_per_epoch"]
    last = x["runs"][-1]
    return (f"| {label} | {s['min']:.3f} / **{s['median']:.3f}** / {s['max']:.3f} | {last['batch_sizes']} | "
            f"{last['replans']} | {100 * last['allreduce_share']:.1f}% |")


def _mmm_text(x: dict, fmt: str) -> str:
    return " / ".join(fmt.format(x[k]) for k in ("min", "median", "max"))


def markdown(res: dict) -> str:
    r, q = res["results"], res["ratios"]
    f = lambda k: f"{q[k]['min']:.2f} / **{q[k]['median']:.2f}** / {q[k]['max']:.2f}"  # noqa: E731
    cmd = "python scripts/bench_train.py" + (" --quick" if res["quick"] else "")
    lines = [
        "# Training benchmark: a 2x straggler, a fixed step cost, transient interference, "
        "the ordered reduction, at 2 ranks", "",
        f"Made by `{cmd}` on {res['machine']}. mlp {res['hidden']} on {res['train_rows']} training "
        f"rows x {res['n_features']} features, Adam, global batch {res['global_batch']}, {res['epochs']} "
        f"epochs ({res['steps']} steps), `mpiexec -n 2`, one BLAS thread per rank; adaptive: "
        f"`rebalance_every = {res['rebalance_every']}`, `rebalance_window = {res['rebalance_window']}`, "
        f"`rebalance_patience = {res['rebalance_patience']}`, "
        "other keys at their defaults. Seconds per epoch: mean over the epochs after the first; "
        f"min / median / max over {res['repeats']} repetition(s); ratios paired within a repetition.",
        "", "| run | s/epoch | final batch sizes | re-plans | Allreduce share |", "|---|---|---|---:|---:|",
        _row("no straggler, equal", r["no_straggler"]),
        _row("rank 1 2x slower, equal", r["equal"]),
        _row("rank 1 2x slower, ideal split [2:1] given", r["ideal"]),
        _row("rank 1 2x slower, adaptive", r["adaptive"]),
        _row("transient interference, equal", r["transient_equal"]),
        _row("transient interference, adaptive", r["transient_adaptive"]),
        _row(f"rank 1 2x slower + fixed cost, ideal split {res['fixed_ideal_sizes']} given", r["fixed_ideal"]),
        _row("rank 1 2x slower + fixed cost, adaptive (affine model)", r["fixed_adaptive"]),
        _row("rank 1 2x slower + fixed cost, adaptive (proportional model, before)", r["fixed_proportional"]),
        _row("no straggler, reduce = ordered", r["ordered"]),
        "", "| ratio | min / **median** / max |", "|---|---|",
        f"| equal / no straggler | {f('equal')} |", f"| ideal / no straggler | {f('ideal')} |",
        f"| adaptive / no straggler | {f('adaptive')} |",
        f"| **adaptive / ideal** (goal <= 1.10) | {f('adaptive_vs_ideal')} |",
        f"| **transient: adaptive / equal** (goal <= 1, no worse) | {f('transient_adaptive_vs_equal')} |",
        f"| compute-only model of the ideal, (4/3 C + O) / (C + O) | {f('ideal_compute_model')} |",
        f"| rank 0 seconds per sample, ideal run / no-straggler run | "
        f"{f('rank0_per_sample_ideal_vs_no_straggler')} |",
        f"| **fixed cost: adaptive (affine) / ideal** | {f('fixed_adaptive_vs_ideal')} |",
        f"| fixed cost: adaptive (proportional, before) / ideal | {f('fixed_proportional_vs_ideal')} |",
        f"| fixed cost: affine / proportional | {f('fixed_adaptive_vs_proportional')} |",
        f"| **reduce = ordered / Allreduce** (no straggler) | {f('ordered_vs_allreduce')} |",
        "", f"Fixed cost: rank 1 sleeps {res['fixed_step_cost_s']:.4f} s per step ({res['fixed_samples']} "
        f"samples at the calibrated {res['calibration_seconds_per_sample'] * 1e6:.1f} us per sample); "
        f"final rank-1 rows minus the ideal {res['fixed_ideal_sizes'][1]}: "
        + "; ".join(f"{k} {_mmm_text(v, '{:+.0f}')}" for k, v in res["fixed_split_error_rows"].items()) + ".",
        "", "Ordered reduction, seconds per epoch (min / median / max): "
        + "; ".join(f"{key} {name} {_mmm_text(v, '{:.3f}')}" for key, per in res["ordered_cost"].items()
                    for name, v in per.items()) + ".",
        "", f"Transient episodes ({len(res['episodes'])}, the same in both runs): "
        + ", ".join(f"r{e['rank']}@{e['start']}x{e['factor']:g}*{e['steps']}" for e in res["episodes"]) + ".",
        "", "Raw numbers:", "", "```json", json.dumps(res, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller dataset, fewer epochs")
    parser.add_argument("--out", default=str(ROOT / "docs/bench/train.md"))
    args = parser.parse_args(argv)
    res = run(args.quick)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown(res))
    sys.stdout.write(json.dumps(res["ratios"], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
