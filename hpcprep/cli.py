"""Command line: ``hpcprep generate | run | inspect | demo`` (and the plugins' commands)."""

import argparse
import os
import sys

from . import __version__
from .mpi.agree import AgreedError, fail_hard, root_decides, run_cleanups, write_line

#: Modules that add subcommands through ``register(subparsers)``.
PLUGINS: list[str] = ["hpcprep.assign.cli", "hpcprep.train.cli"]


def _world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def cmd_generate(args, comm) -> int:
    from .generate import generate

    from .config import SEED_MAX

    if args.rows < 0 or args.features < 1 or args.files < 1 or not 0 <= args.seed <= SEED_MAX:
        raise AgreedError("generate: --rows >= 0, --features >= 1, --files >= 1, "
                          "0 <= --seed <= 2**63 - 1")
    summary = generate(args.out, args.rows, args.features, args.files, args.seed, comm, args.quiet)
    if summary is not None:
        write_line(f"generated {summary['rows']:,} rows x {args.features} features in {args.files} "
                   f"file(s) under {args.out}: {summary['nan_rows']:,} rows with NaN, "
                   f"{summary['outlier_rows']:,} with outliers, {summary['duplicate_rows']:,} "
                   f"duplicates (truth.json)", sys.stdout)
    return 0


def load_config(comm, path: str, overrides):
    """Parse and validate the config on rank 0 and broadcast it (errors reported once).

    Returns the :class:`hpcprep.config.RunConfig` (the same on every rank)."""
    from .config import load_text, parse_config

    def parse():
        return parse_config(load_text(path), path, overrides, comm.Get_size())

    return root_decides(comm, parse)


def cmd_run(args, comm) -> int:
    from .pipeline import run_pipeline
    from .progress import Progress

    cfg = load_config(comm, args.config, args.set)
    run_pipeline(cfg, comm, Progress(comm.Get_rank() == 0, quiet=args.quiet), args.cleanups,
                 resume=args.resume)
    return 0


def cmd_inspect(args, comm) -> int:
    from .output.leftovers import describe_leftovers
    from .output.verify import summarize

    if comm.Get_rank() != 0:
        return 0
    leftovers = "\n".join(describe_leftovers(args.path))
    try:
        text = summarize(args.path, checksums=not args.no_checksums)
    except BaseException:
        if leftovers:  # also when the dataset itself is missing or broken
            write_line(leftovers, sys.stdout)
        raise
    write_line(text + ("\n" + leftovers if leftovers else ""), sys.stdout)
    return 0 if "verification: OK" in text.splitlines()[-1] else 1


DEMO_CONFIG = """\
# hpcprep demo: clean, standardize and shuffle a generated click log
seed = 42

[input]
paths = ["raw/*.h5"]
features = "features"
label = "labels"
chunk_rows = 65536

[[standardize]]
steps = [
  { op = "dropna" },                                   # rows with a missing value
  { op = "dedup" },                                    # exact duplicates, keep the smallest id
  { op = "outliers", method = "zscore", threshold = 6 },
  { op = "scale", method = "standard" },
]

[[sample]]
op = "split"
splits = { train = 0.9, val = 0.1 }

[output]
path = "out"
overwrite = true
"""


def cmd_demo(args, comm) -> int:
    from .generate import generate
    from .output.verify import summarize
    from .pipeline import run_pipeline
    from .progress import Progress

    work = os.path.abspath(args.workdir)
    rank = comm.Get_rank()
    if rank == 0:
        os.makedirs(work, exist_ok=True)
        with open(os.path.join(work, "config.toml"), "w") as fh:
            fh.write(DEMO_CONFIG)
        write_line(f"[demo] 1/3 generate {args.rows:,} rows into {work}/raw", sys.stdout)
    generate(os.path.join(work, "raw"), args.rows, args.features, args.files, 42, comm, quiet=True)
    if rank == 0:
        write_line(f"[demo] 2/3 run {work}/config.toml on {comm.Get_size()} rank(s)", sys.stdout)
    from .config import parse_config

    cfg = root_decides(comm, lambda: parse_config(DEMO_CONFIG, "demo config", (), comm.Get_size(),
                                                  base_dir=work))
    run_pipeline(cfg, comm, Progress(rank == 0), args.cleanups)
    if rank == 0:
        write_line(f"[demo] 3/3 inspect {work}/out", sys.stdout)
        text = summarize(os.path.join(work, "out"))
        write_line(text, sys.stdout)
        return 0 if "verification: OK" in text.splitlines()[-1] else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hpcprep",
        description="Clean, standardize and shuffle large datasets with MPI, write HDF5, train on it. "
                    "Run under mpiexec: mpiexec -n 4 hpcprep run config.toml")
    p.add_argument("--version", action="version", version=f"hpcprep {__version__}")
    p.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write a synthetic messy dataset (HDF5)",
                       description="Write a seeded synthetic click-log-like dataset with known mess "
                                   "(NaNs, outliers, duplicates, a constant feature).")
    g.add_argument("--rows", type=int, default=100_000, help="total rows (default 100000)")
    g.add_argument("--features", type=int, default=16, help="features per row (default 16)")
    g.add_argument("--files", type=int, default=4, help="number of files (default 4)")
    g.add_argument("--out", default="raw", help="output folder (default raw)")
    g.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    g.add_argument("--quiet", action="store_true", help="no per-file lines")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="run the pipeline of a config file",
                       description="Run the pipeline described by CONFIG.toml (see docs/config.md).")
    r.add_argument("config", help="TOML config file")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set layout.fused=false --set seed=7 "
                        "(VALUE is TOML, or a bare string)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--resume", action="store_true",
                   help="resume from the checkpoint of this config next to the output, or stop "
                        "with an error if there is none (without it: used when there is one)")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="summarize and verify an output dataset",
                       description="Print rows, features, shards, statistics and drop counts of a "
                                   "dataset and verify every shard against the manifest.")
    i.add_argument("path", help="dataset folder (output.path of a run)")
    i.add_argument("--no-checksums", action="store_true", help="skip recomputing shard checksums")
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser("demo", help="generate + run + inspect in one go",
                       description="Generate a dataset, run the demo pipeline and inspect the output.")
    d.add_argument("--workdir", default="demo", help="folder for raw data, config and output")
    d.add_argument("--rows", type=int, default=400_000, help="rows to generate (default 400000)")
    d.add_argument("--features", type=int, default=16, help="features (default 16)")
    d.add_argument("--files", type=int, default=4, help="input files (default 4)")
    d.set_defaults(func=cmd_demo)

    import importlib

    for name in PLUGINS:
        importlib.import_module(name).register(sub)
    return p


def main(argv=None) -> int:
    """Entry point of the ``hpcprep`` command (every rank runs it).

    A subcommand appends to ``args.cleanups`` what a failure must undo (the run's
    output location: its temporary folder and lock); they run on every rank
    before the job ends.
    """
    args = build_parser().parse_args(argv)
    comm = _world()
    args.cleanups = cleanups = []
    try:
        from .launch import check_launch

        check_launch(comm)
        rc = args.func(args, comm)
    except AgreedError as e:
        run_cleanups(cleanups)
        if comm.Get_rank() == 0:
            write_line(f"hpcprep: {getattr(e, 'prefix', 'error')}: {e}")
        sys.exit(getattr(e, "exit_code", 2))   # a run stopped to be resumed: 75
    except BaseException as e:  # noqa: BLE001 - any failure must end every rank
        if isinstance(e, SystemExit) and not e.code:
            raise
        fail_hard(comm, e, args.debug, cleanups)
    sys.exit(rc)


if __name__ == "__main__":
    main()
