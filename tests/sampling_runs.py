"""Run many sampling configs in one mpiexec launch (used by tests/test_sampling_mpi.py).

Usage: ``mpiexec -n N python tests/sampling_runs.py WORKDIR NAME CASE [CASE ...]``

NAME starting with ``layered`` runs the layered layout, otherwise fused.

WORKDIR holds ``raw/`` (input) and ``empty/`` (input whose every row has a NaN);
each case is written to ``WORKDIR/<NAME>/<CASE>``. A case name is
``<mode>``, ``<mode>+spill`` (tiny memory budget: every sampling rank spills),
``<mode>+shards`` (``output.shard_sizes`` for two writers) or ``<mode>+spill,shards``.
"""

import os
import sys

from mpi4py import MPI

from hpcprep.config import parse_config
from hpcprep.pipeline import run_pipeline
from hpcprep.progress import Progress

MODES = {
    "shuffle": '[[sample]]\nop = "shuffle"\n',
    "sample": '[[sample]]\nop = "sample"\nn = 333\n',
    "sample_frac": '[[sample]]\nop = "sample"\nfraction = 0.25\n',
    "sample_zero": '[[sample]]\nop = "sample"\nfraction = 0.0\n',
    "sample_big": '[[sample]]\nop = "sample"\nn = 100000\n',
    "stratified": '[[sample]]\nop = "stratified"\nn_per_class = 40\n',
    "balance": '[[sample]]\nop = "stratified"\nbalance = true\n',
    "weighted": '[[sample]]\nop = "weighted"\nn = 300\nweight = "f0"\n',
    "weighted_excl": '[[sample]]\nop = "weighted"\nfraction = 0.5\nweight = "f1"\nnonpositive = "exclude"\n',
    "bootstrap": '[[sample]]\nop = "bootstrap"\n',
    "bootstrap_n": '[[sample]]\nop = "bootstrap"\nn = 1500\n',
    "split": '[[sample]]\nop = "split"\nsplits = { train = 0.7, val = 0.2, test = 0.1 }\n',
    "split_strat": '[[sample]]\nop = "split"\nsplits = { train = 0.5, val = 0.3, test = 0.2 }\nstratify = true\n',
    "chain": '[[sample]]\nop = "stratified"\nfraction = 0.5\n[[sample]]\nop = "shuffle"\n',
    "chain_boot": '[[sample]]\nop = "bootstrap"\nn = 900\n[[sample]]\nop = "weighted"\nn = 500\nweight = "f0"\n',
    "chain_split": '[[sample]]\nop = "bootstrap"\n[[sample]]\nop = "split"\nsplits = { a = 0.5, b = 0.5 }\n',
    "empty": '[[sample]]\nop = "stratified"\nfraction = 0.5\n',
    "one_sample": '[[sample]]\nop = "sample"\nn = 1\n',
    "one_split": '[[sample]]\nop = "split"\nsplits = { train = 0.5, test = 0.5 }\nstratify = true\n',
    "one_bootstrap": '[[sample]]\nop = "bootstrap"\nn = 3\n',
    "one_weighted": '[[sample]]\nop = "weighted"\nn = 2\nweight = "f0"\n',
}

#: Inputs: ``raw`` (2400 rows, 4 classes), ``empty`` (every row has a NaN), ``one`` (a single row).
INPUTS = {"empty": "empty", "one": "one"}

def config(case: str, layout: str, size: int, out: str) -> str:
    """The TOML text of a case. Layered: 1 input rank, 1 standardization rank (dropped when the
    sampling layers need the ranks; the raw input has no NaN, so dropna drops nothing there)."""
    mode, _, extra = case.partition("+")
    n_layers = MODES[mode].count("[[sample]]")
    raw = INPUTS.get(mode.split("_")[0], "raw")
    std = '[[standardize]]\nsteps = [{ op = "dropna" }]\n'
    lay = ""
    if layout == "layered":
        n_smp = size - 2
        if n_layers > n_smp:
            std, n_smp = "", size - 1
        per = [n_smp // n_layers + (i < n_smp % n_layers) for i in range(n_layers)]
        lay = (f"[layout]\nfused = false\ninput = 1\nstandardize = [{'1' if std else ''}]\n"
               f"sample = [{', '.join(map(str, per))}]\n")
    text = (f'seed = 7\n[input]\npaths = ["{raw}/*.h5"]\nlabel = "labels"\nchunk_rows = 200\n'
            f'{std}{MODES[mode]}[output]\npath = "{out}"\noverwrite = true\n{lay}')
    if raw == "empty":  # dropna drops every row on purpose: a 0-row dataset through the layers
        text = text.replace("overwrite = true\n", "overwrite = true\nmax_drop_fraction = 1.0\n")
    if "spill" in extra:
        text += '[resources]\nmemory_per_rank = "48KB"\n'
    if "shards" in extra:  # two writers: exact sizes, or relative sizes for splits
        sizes = "[1, 3]" if mode.startswith("split") else "[100, 233]"
        text = text.replace("overwrite = true\n", f"overwrite = true\nshard_sizes = {sizes}\n")
    return text


def main() -> int:
    comm = MPI.COMM_WORLD
    work, name, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
    layout = "layered" if name.startswith("layered") else "fused"
    if comm.Get_rank() == 0:
        os.makedirs(os.path.join(work, name), exist_ok=True)
    comm.Barrier()
    for case in cases:
        out = f"{name}/{case}"
        text = config(case, layout, comm.Get_size(), out)
        cfg = parse_config(text, case, (), comm.Get_size(), base_dir=work)
        run_pipeline(cfg, comm, Progress(False, quiet=True))
    if comm.Get_rank() == 0:
        sys.stdout.write("DONE\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - end every rank, print once per failing rank
        import traceback

        sys.stderr.write(f"rank {MPI.COMM_WORLD.Get_rank()}: {traceback.format_exc()}")
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
