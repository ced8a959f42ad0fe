"""The Slurm batch scripts across nodes: a 3-node cluster emulated on this one machine.

``scripts/local-slurm start --nodes 3`` gives each node its own network namespace (a veth on a
bridge in a "hub" namespace that holds slurmctld), hostname, /tmp, /dev/shm, IPC and PIDs, and
its own slurmd. Slurm commands run through ``scripts/local-slurm exec``; the job folders live
in the cluster's shared folder (``$LOCAL_SLURM_NODES_STATE/shared``), which every node sees,
while each node's /tmp is its own (``.../nodes.d/nodeK/tmp`` seen from here).

Checked: ranks on different nodes talk over the network (TCP on the veths), not shared memory;
`sbatch -N 3` of slurm/preprocess.sbatch and slurm/pipeline.sh (preprocess -> train) write the
same dataset and model as `mpiexec -n 5` on one node; spill files land on each node's own /tmp;
a node whose ranks are killed mid-run fails the job, leaving no complete-looking output.

Skipped, with the reason, like tests/test_slurm.py: not root, no unshare/nsenter, neither
Slurm nor apt-get, or HPCPREP_SKIP_SLURM=1. With CI=true a cluster that fails to start FAILS.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("h5py")

from test_slurm import TERMINAL, job_env, state_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SLURM = ROOT / "scripts" / "local-slurm"
PREPROCESS = ROOT / "slurm" / "preprocess.sbatch"
PIPELINE = ROOT / "slurm" / "pipeline.sh"
PY = sys.executable
MPIEXEC = Path(PY).parent / "mpiexec"
STATE = Path(os.environ.get("LOCAL_SLURM_NODES_STATE", "/var/lib/hpcprep-local-slurm-nodes"))
NODES = ["node1", "node2", "node3"]
TASKS = 5                       # 2 + 2 + 1 over the 3 nodes (2 CPUs each): pairs on and across nodes
JOB_TIMEOUT = 120
SEED = 11
# Ranks are started by MPICH's mpiexec (Hydra, its proxies started through srun), not by
# `srun --mpi=pmi2`: across these nodes, about 1 start in 10 of pip's MPICH under Slurm 22.05's
# PMI2 plugin failed in MPI_Init (slurmstepd: "mpi/pmi2: value not properly terminated in client
# request", then UCX "Destination is unreachable"; docs/cluster.md). srun is tested on one node
# by tests/test_slurm.py.
LAUNCH_ENV = {"HPCPREP_LAUNCHER": "mpiexec"}

CONFIG = f"""\
seed = {SEED}

[input]
paths = ["raw/*.h5"]
features = "features"
label = "labels"
chunk_rows = 500

[[standardize]]
steps = [{{ op = "dropna" }}, {{ op = "scale" }}]

[[sample]]
op = "shuffle"

[output]
path = "out"

[resources]
memory_per_rank = "64KB"        # forces the sampling layer to spill

[train]
model = "logreg"
epochs = 2
batch_size = 128
seed = {SEED}
"""


def _run(cmd, timeout, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _check_identity():
    spec = importlib.util.spec_from_file_location("check_identity", ROOT / "scripts" / "check_identity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_same_output(got: Path, want: Path):
    """Every file of the two outputs alike by content (scripts/check_identity.py's digest); the
    config text stored in the files may differ only in the output path."""
    ci = _check_identity()
    assert (got / "manifest.json").exists(), got
    a, b = ci.digest(want), ci.digest(got)
    for digest, name in ((a, want.name), (b, got.name)):
        for entry in digest.values():
            attrs = entry.get("/", {}).get("attrs", {}) if isinstance(entry, dict) else {}
            if isinstance(attrs.get("config"), str):
                attrs["config"] = attrs["config"].replace(f'"{name}"', '"OUT"')
    diff = ci.differences(a, b)
    assert not diff, f"{got} differs from {want}:\n" + "\n".join(diff[:20])


# --------------------------------------------------------------------------- the cluster

@pytest.fixture(scope="module")
def cluster():
    """A running 3-node cluster (started here unless one already runs)."""
    if os.environ.get("HPCPREP_SKIP_SLURM") == "1":
        pytest.skip("HPCPREP_SKIP_SLURM=1: Slurm tests switched off")
    if os.geteuid() != 0:
        pytest.skip("multi-node Slurm tests need root (namespaces, packages, daemons)")
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"multi-node Slurm tests need {tool} (util-linux)")
    if not shutil.which("apt-get") and not (shutil.which("slurmctld") and shutil.which("sbatch")):
        pytest.skip("multi-node Slurm tests need apt-get to install Slurm (or Slurm already installed)")
    was_up = _run([str(LOCAL_SLURM), "status", "--nodes"], 30).returncode == 0
    try:
        res = _run([str(LOCAL_SLURM), "start", "--nodes", str(len(NODES))], 600)
        ok, why = res.returncode == 0, (res.stderr or res.stdout).strip()[-2000:]
    except subprocess.TimeoutExpired:
        ok, why = False, "scripts/local-slurm start --nodes 3 did not finish in 600 s"
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"emulated 3-node Slurm did not start: {why}", pytrace=False)
        pytest.skip(f"emulated 3-node Slurm did not start: {why}")
    yield
    if not was_up:
        res = _run([str(LOCAL_SLURM), "stop", "--nodes"], 120)
        assert res.returncode == 0, res.stderr


def slurm(*args, timeout=60, env=None, cwd=None):
    """A Slurm command (or a script that calls them) run against the emulated cluster."""
    return _run([str(LOCAL_SLURM), "exec", "--", *map(str, args)], timeout, env=env or job_env(), cwd=cwd)


def submit(work: Path, args, env=None) -> int:
    res = slurm("sbatch", "--parsable", f"--chdir={work}", f"--output={work}/logs/%x-%j.out", *args,
                env=env or job_env(**LAUNCH_ENV), cwd=work)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip().split(";")[0])


def job_fields(job_id: int) -> dict:
    fields = {}
    for word in slurm("scontrol", "show", "job", "-o", job_id).stdout.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def wait_job(job_id: int, timeout: float = JOB_TIMEOUT, while_running=None) -> dict:
    """Poll until the job ends (calling ``while_running()`` between polls); its fields."""
    deadline = time.monotonic() + timeout
    while True:
        fields = job_fields(job_id)
        if fields.get("JobState") in TERMINAL:
            return fields
        if time.monotonic() > deadline:
            slurm("scancel", job_id)
            raise AssertionError(f"job {job_id} not finished after {timeout} s: {state_line(job_id, fields)}")
        if while_running:
            while_running()
        time.sleep(0.2)


def job_log(work: Path, job_id: int) -> str:
    logs = list((work / "logs").glob(f"*-{job_id}.out"))
    return logs[0].read_text(errors="replace") if logs else ""


def node_tmp(node: str) -> Path:
    """A node's own /tmp, as seen from this machine."""
    return STATE / "nodes.d" / node / "tmp"


def node_pids(node: str, prefix: str) -> list[int]:
    """Processes running on ``node`` (its PID namespace) whose command name starts with prefix."""
    holder = (STATE / f"{node}.holder").read_text().strip()
    ns = os.readlink(f"/proc/{holder}/ns/pid")
    pids = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{p}/ns/pid") == ns and Path(f"/proc/{p}/comm").read_text().startswith(prefix):
                pids.append(int(p))
        except OSError:
            pass
    return pids


class SpillWatch:
    """The spill files of one run seen on each node's own /tmp (polled while the job runs)."""

    def __init__(self, out_name: str):
        self.pattern = f"hpcprep-spill-{out_name}.tmp-*/rank-*"
        self.ranks = {node: set() for node in NODES}
        self.files = {node: 0 for node in NODES}

    def __call__(self):
        for node in NODES:
            for rank_dir in node_tmp(node).glob(self.pattern):
                self.ranks[node].add(int(rank_dir.name.split("-")[1]))
                self.files[node] += sum(1 for _ in rank_dir.iterdir())


# --------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def work(cluster):
    """A job folder on the cluster's shared folder: generated input, the config, logs/."""
    shared = STATE / "shared"
    shared.mkdir(exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="test-", dir=shared))
    (d / "logs").mkdir()
    res = _run([PY, "-m", "hpcprep", "generate", "--rows", "12000", "--features", "5", "--files", "3",
                "--out", str(d / "raw"), "--seed", str(SEED)], 120, cwd=d, env=job_env())
    assert res.returncode == 0, res.stderr
    (d / "config.toml").write_text(CONFIG)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(work):
    """`mpiexec -n 5` on this machine (no Slurm): the dataset, and a model trained on it."""
    res = _run([str(MPIEXEC), "-n", str(TASKS), PY, "-m", "hpcprep", "run", "config.toml",
                "--set", 'output.path="ref"', "--quiet"], 180, cwd=work, env=job_env())
    assert res.returncode == 0, res.stdout + res.stderr
    res = _run([str(MPIEXEC), "-n", str(TASKS), PY, "-m", "hpcprep", "train", "ref", "--config",
                "config.toml", "--out", "ref-train", "--quiet"], 180, cwd=work, env=job_env())
    assert res.returncode == 0, res.stdout + res.stderr
    return work / "ref"


# --------------------------------------------------------------------------- the network

PROBE = r"""
import json, os, socket, sys
import numpy as np
from mpi4py import MPI

def eth0_tx():
    for line in open("/proc/net/dev"):          # this process's network namespace
        name, _, counters = line.partition(":")
        if name.strip() == "eth0":
            return int(counters.split()[8])
    return None

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
local = comm.Split_type(MPI.COMM_TYPE_SHARED)   # the ranks MPICH treats as on this node
with open(f"/tmp/probe-{rank}", "w") as f:     # the node's own /tmp
    f.write(socket.gethostname())
msg = np.full(8 << 20, rank, dtype=np.uint8)
got = np.empty_like(msg)
comm.Barrier()
before = eth0_tx()
comm.Barrier()
comm.Sendrecv(msg, (rank + 1) % size, recvbuf=got, source=(rank - 1) % size)
comm.Barrier()
after = eth0_tx()
assert (got == (rank - 1) % size).all()
line = json.dumps(dict(rank=rank, host=socket.gethostname(), local=local.Get_size(),
                       local_ranks=local.allgather(rank), tx=after - before, nbytes=msg.nbytes))
sys.stdout.write("PROBE " + line + "\n")
sys.stdout.flush()
"""


def ucx_inter_node_transports(log: str) -> set[str]:
    """Transports of UCX's inter-node protocol tables (UCX_PROTO_INFO=y) for tagged sends.

    Lines look like ``[time] [node1:115  :0]   | ... | tcp/eth0 |``; the tables of different
    processes interleave in the log, so each process's current table is followed separately.
    """
    found, table = set(), {}
    for line in log.splitlines():
        m = re.match(r"\[[\d.]+\] \[([^\]]+)\]\s+\|(.*)\|\s*$", line)
        if not m:
            continue
        process, cells = m.group(1), m.group(2)
        if "ucp_context" in cells:
            table[process] = " inter-node " in cells and "ucp_tag_send" in cells
        elif table.get(process):
            found.add(cells.rsplit("|", 1)[-1].strip())
    return found


def test_ranks_on_different_nodes_use_the_network(work):
    """Each node: own hostname, own /tmp; MPICH groups ranks by node (shared memory only within
    one); traffic between nodes crosses the node's eth0 (its veth), traffic within one does not,
    and UCX's inter-node protocols use TCP only."""
    (work / "probe.py").write_text(PROBE)
    job = submit(work, [f"--nodes={len(NODES)}", f"--ntasks={TASKS}", "--job-name=probe",
                        f"--wrap={MPIEXEC} -n {TASKS} {PY} probe.py"],
                 env=job_env(UCX_PROTO_INFO="y"))
    fields = wait_job(job)
    log = job_log(work, job)
    assert fields["JobState"] == "COMPLETED", log[-3000:]
    ranks = sorted((json.loads(line.split(" ", 1)[1]) for line in log.splitlines()
                    if line.startswith("PROBE ")), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == list(range(TASKS)), log[-3000:]
    hosts = {r["rank"]: r["host"] for r in ranks}
    assert sorted(set(hosts.values())) == NODES
    for r in ranks:
        # MPICH's node-local group (where it may use shared memory) is exactly the same-host ranks
        assert r["local_ranks"] == [q for q in hosts if hosts[q] == r["host"]], r
        assert (node_tmp(r["host"]) / f"probe-{r['rank']}").read_text() == r["host"]
        for node in NODES:
            if node != r["host"]:
                assert not (node_tmp(node) / f"probe-{r['rank']}").exists()
    for node in NODES:
        on_node = [r for r in ranks if r["host"] == node]
        remote = sum(r["nbytes"] for r in on_node if hosts[(r["rank"] + 1) % TASKS] != node)
        local = sum(r["nbytes"] for r in on_node) - remote
        # Each rank read its node's eth0 counter around the exchange: every byte sent to
        # another node crossed it (plus TCP headers), none of those sent within the node did.
        tx = [r["tx"] for r in on_node]
        assert remote <= min(tx) and max(tx) < remote + max(local, on_node[0]["nbytes"]) // 2, \
            (node, tx, remote, local)
    transports = ucx_inter_node_transports(log)
    assert transports and all(t.startswith("tcp/") for t in transports), transports


# --------------------------------------------------------------------------- the pipeline

def test_preprocess_across_nodes(work, reference):
    """sbatch -N 3 slurm/preprocess.sbatch: same output as mpiexec -n 5; spill on each node's /tmp."""
    watch = SpillWatch("out-nodes")
    job = submit(work, [f"--nodes={len(NODES)}", f"--ntasks={TASKS}", PREPROCESS, "config.toml",
                        "--set", 'output.path="out-nodes"'])
    fields = wait_job(job, while_running=watch)
    watch()
    log = job_log(work, job)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log[-3000:]
    assert fields["NodeList"] == "node[1-3]" and fields["NumNodes"] == "3", state_line(job, fields)
    assert "MiB spilled" in log, log
    assert_same_output(work / "out-nodes", reference)
    # Every node's ranks spilled to that node's own /tmp, each rank on one node only.
    assert all(watch.ranks[node] for node in NODES), watch.ranks
    seen = [r for node in NODES for r in watch.ranks[node]]
    assert sorted(seen) == list(range(TASKS)), watch.ranks


def test_pipeline_across_nodes(work, reference):
    """slurm/pipeline.sh -- -N 3: preprocessing then training, dataset and trained model as
    those of mpiexec -n 5 on one node.

    MPIR_CVAR_DEVICE_COLLECTIVES=none: MPICH's default Allreduce is node-aware, so across
    nodes it sums the training gradients in another order than on one node (the model then
    differs in the last bits, ~1e-16; measured). Without the node-aware algorithms the sums,
    and the model, are the same bits as on one node (where this setting changes nothing).
    The dataset is the same bits either way (test_preprocess_across_nodes)."""
    env = job_env(**LAUNCH_ENV, MPIR_CVAR_DEVICE_COLLECTIVES="none")
    res = slurm(PIPELINE, "config.toml", "--set", 'output.path="out-pipe"', "--",
                f"--nodes={len(NODES)}", f"--ntasks={TASKS}", env=env, cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    pre = int(re.search(r"^preprocess job (\d+)$", res.stdout, re.M).group(1))
    train = int(re.search(r"^train job (\d+) ", res.stdout, re.M).group(1))
    pre_state = wait_job(pre)
    assert pre_state["JobState"] == "COMPLETED", job_log(work, pre)[-3000:]
    train_state = wait_job(train)
    assert train_state["JobState"] == "COMPLETED", job_log(work, train)[-3000:]
    for state in (pre_state, train_state):
        assert state["NodeList"] == "node[1-3]", state
    assert "launcher mpiexec" in job_log(work, pre)
    assert_same_output(work / "out-pipe", reference)
    import h5py
    import numpy as np

    with h5py.File(work / "out-pipe-train" / "model.h5", "r") as a, \
            h5py.File(work / "ref-train" / "model.h5", "r") as b:
        assert sorted(a) == sorted(b)
        for name in a:
            assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name


# --------------------------------------------------------------------------- a node dies

def test_killed_node_fails_job_cleanly(work):
    """SIGKILL of node2's ranks once they spill: the job fails (mpiexec ends the ranks on the
    other nodes instead of leaving them waiting in a collective; with the srun launcher
    --kill-on-bad-exit=1 does), and the output path holds no manifest.json and no data.h5."""
    watch = SpillWatch("out-killed")
    job = submit(work, [f"--nodes={len(NODES)}", f"--ntasks={TASKS}", PREPROCESS, "config.toml",
                        "--set", 'output.path="out-killed"'])
    killed = []

    def kill_node2_once_spilling():
        watch()
        if not killed and watch.files["node2"]:
            killed.extend(node_pids("node2", "python"))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    fields = wait_job(job, timeout=90, while_running=kill_node2_once_spilling)
    log = job_log(work, job)
    assert killed, f"node2 never spilled; job ended first: {state_line(job, fields)}\n{log[-2000:]}"
    assert fields["JobState"] == "FAILED", state_line(job, fields)
    assert fields["ExitCode"] != "0:0"
    assert "BAD TERMINATION" in log and "RUNNING AT node2" in log, log[-3000:]
    assert re.search(r"finished with exit code [1-9]", log), log[-3000:]
    out = work / "out-killed"
    assert not (out / "manifest.json").exists() and not (out / "data.h5").exists()
    assert not [p for p in work.rglob("manifest.json") if "out-killed" in str(p)]


# --------------------------------------------------------------------------- the default spill folder

def test_spill_dir_default_is_node_local_in_a_slurm_job(monkeypatch, tmp_path):
    """resources.spill_dir = "": $SLURM_TMPDIR, else $TMPDIR, in a Slurm job; else the output's
    temporary folder (runs outside Slurm are unchanged, whatever TMPDIR says)."""
    from dataclasses import replace

    from mpi4py import MPI

    from hpcprep.config import parse_config
    from hpcprep.output.location import OutputLocation
    from hpcprep.stages.context import RunContext
    from hpcprep.topology import build_topology

    cfg = parse_config(f'[input]\npaths = ["{tmp_path}/*.h5"]\n[output]\npath = "{tmp_path}/out"\n', "c.toml")
    location = OutputLocation(cfg.output.path, False)
    topo = build_topology(MPI.COMM_SELF, cfg.layout, len(cfg.standardize), len(cfg.sample))
    ctx = RunContext(cfg, MPI.COMM_SELF, topo, None, location, None)
    run = "hpcprep-spill-" + os.path.basename(location.temp).lstrip(".")
    for var in ("SLURM_JOB_ID", "SLURM_TMPDIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TMPDIR", "/node/tmp")
    assert ctx.spill_dir == os.path.join(location.temp, "spill", "rank-00000")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert ctx.spill_dir == os.path.join("/node/tmp", run, "rank-00000")
    monkeypatch.setenv("SLURM_TMPDIR", "/local/job42")
    assert ctx.spill_dir == os.path.join("/local/job42", run, "rank-00000")
    ctx.cfg = replace(cfg, resources=replace(cfg.resources, spill_dir="/chosen"))
    assert ctx.spill_dir == os.path.join("/chosen", "rank-00000")
