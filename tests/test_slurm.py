"""The Slurm batch scripts (slurm/), submitted for real to a local single-node Slurm.

A session-scoped fixture starts the cluster with ``scripts/local-slurm start`` (installing
Slurm with apt if needed) and stops it at the end, unless it was already running. Skipped,
with the reason, when not root, when there is neither Slurm nor apt-get, or when
HPCPREP_SKIP_SLURM=1. With CI=true a cluster that fails to start FAILS the run.

Job ids, states, exit codes and durations are printed to the terminal whatever pytest's
capture mode, and appended to a report file (HPCPREP_SLURM_REPORT, default: slurm-report.txt
in the session's temporary folder).

Timing note: ``sbatch --wait`` polls the job 2, 10 and 42 s after submission, so every job
here is kept small enough to end within 10 s of being submitted, and jobs that fit the
node's 4 CPUs together are submitted together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SLURM = ROOT / "scripts" / "local-slurm"
PREPROCESS = ROOT / "slurm" / "preprocess.sbatch"
TRAIN = ROOT / "slurm" / "train.sbatch"
PIPELINE = ROOT / "slurm" / "pipeline.sh"
VENV = Path(sys.prefix)
PY = sys.executable
MPIEXEC = Path(PY).parent / "mpiexec"

SEED = 11
ROWS, FEATURES, FILES = 3000, 5, 3
SBATCH_TIMEOUT = 120      # seconds, per `sbatch --wait` (a job > 10 s is seen at 42 s)
JOB_TIMEOUT = 90          # seconds, polling a job submitted without --wait
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


# --------------------------------------------------------------------------- reporting

class Report:
    """Lines that reach the terminal even under pytest's capture, and a report file."""

    def __init__(self, config, path: Path):
        self._capman = config.pluginmanager.getplugin("capturemanager")
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        line = f"[slurm] {line}"
        with self._lock:
            with open(self.path, "a") as f:
                f.write(line + "\n")
            if self._capman is not None:
                with self._capman.global_and_fixture_disabled():
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
            else:
                sys.stdout.write(line + "\n")


@pytest.fixture(scope="session")
def report(request, tmp_path_factory):
    path = Path(os.environ.get("HPCPREP_SLURM_REPORT")
                or tmp_path_factory.getbasetemp() / "slurm-report.txt")
    rep = Report(request.config, path)
    yield rep
    rep(f"report: {path}")


# --------------------------------------------------------------------------- the cluster

def _run(cmd, timeout, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def slurm(report):
    """A running local Slurm (started here unless it already runs)."""
    if os.environ.get("HPCPREP_SKIP_SLURM") == "1":
        pytest.skip("HPCPREP_SKIP_SLURM=1: Slurm tests switched off")
    if os.geteuid() != 0:
        pytest.skip("Slurm tests need root (scripts/local-slurm installs packages and starts daemons)")
    if not shutil.which("apt-get") and not (shutil.which("slurmctld") and shutil.which("sbatch")):
        pytest.skip("Slurm tests need apt-get to install Slurm (or Slurm already installed)")
    in_ci = os.environ.get("CI", "").lower() == "true"
    was_up = _run([str(LOCAL_SLURM), "status"], 30).returncode == 0
    t0 = time.monotonic()
    try:
        res = _run([str(LOCAL_SLURM), "start"], 600)
        ok, why = res.returncode == 0, (res.stderr or res.stdout).strip()[-2000:]
    except subprocess.TimeoutExpired:
        ok, why = False, "scripts/local-slurm start did not finish in 600 s"
    if not ok:
        msg = f"local Slurm did not start: {why}"
        report(msg)
        if in_ci:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    report(f"local Slurm {'already running' if was_up else 'started'} in "
           f"{time.monotonic() - t0:.1f} s: {res.stderr.strip().splitlines()[-1]}")
    yield
    if not was_up:
        res = _run([str(LOCAL_SLURM), "stop"], 120)
        report(f"local Slurm stopped (rc {res.returncode})")


# --------------------------------------------------------------------------- jobs

@dataclass
class Job:
    rc: int                 # sbatch's exit code (with --wait: the job's)
    job_id: int | None
    state: dict             # scontrol fields: JobState, ExitCode, Reason, ...
    log: str
    seconds: float          # wall time of the sbatch call

    @property
    def job_state(self):
        return self.state.get("JobState")


def job_env(**extra) -> dict:
    """The environment sbatch passes to the job: the venv, hpcprep importable from ROOT."""
    env = dict(os.environ)
    env.pop("HPCPREP_CONFIG", None)
    env["HPCPREP_VENV"] = str(VENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def scontrol_job(job_id: int) -> dict:
    res = _run(["scontrol", "show", "job", "-o", str(job_id)], 30)
    fields = {}
    for word in res.stdout.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def state_line(job_id, fields: dict) -> str:
    keep = ("JobName", "JobState", "Reason", "ExitCode", "NumTasks", "Dependency",
            "StartTime", "EndTime", "RunTime")
    return f"job {job_id}: " + " ".join(f"{k}={fields[k]}" for k in keep if k in fields)


def wait_job(job_id: int, timeout: float = JOB_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        fields = scontrol_job(job_id)
        if fields.get("JobState") in TERMINAL:
            return fields
        if time.monotonic() > deadline:
            _run(["scancel", str(job_id)], 30)
            raise AssertionError(f"job {job_id} not finished after {timeout} s: {state_line(job_id, fields)}")
        time.sleep(0.25)


def sbatch_wait(report, workdir: Path, args, *, env=None, label="", default_output=False) -> Job:
    """``sbatch --wait ARGS`` in workdir; the log goes to workdir/logs/%x-%j.out (given
    explicitly, or by the script's own #SBATCH --output default with default_output=True)."""
    (workdir / "logs").mkdir(exist_ok=True)
    out = [] if default_output else [f"--output={workdir}/logs/%x-%j.out"]
    cmd = ["sbatch", "--wait", f"--chdir={workdir}", *out, *args]
    t0 = time.monotonic()
    try:
        res = _run(cmd, SBATCH_TIMEOUT, cwd=workdir, env=env or job_env())
    except subprocess.TimeoutExpired as e:
        m = re.search(r"Submitted batch job (\d+)", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""))
        if m:
            _run(["scancel", m.group(1)], 30)
        raise AssertionError(f"sbatch --wait did not return in {SBATCH_TIMEOUT} s: {cmd}") from None
    seconds = time.monotonic() - t0
    m = re.search(r"Submitted batch job (\d+)", res.stdout)
    job_id = int(m.group(1)) if m else None
    fields, log = {}, ""
    if job_id is not None:
        fields = scontrol_job(job_id)
        logs = list((workdir / "logs").glob(f"*-{job_id}.out"))
        log = logs[0].read_text(errors="replace") if logs else ""
    report(f"{label or 'sbatch'}: sbatch --wait rc={res.returncode} after {seconds:.1f} s; "
           + (state_line(job_id, fields) if job_id else f"not submitted: {res.stderr.strip()}"))
    return Job(res.returncode, job_id, fields, log, seconds)


# --------------------------------------------------------------------------- data

def cli_has(command: str) -> bool:
    res = _run([PY, "-m", "hpcprep", command, "--help"], 60, cwd=ROOT, env=job_env())
    return res.returncode == 0


@pytest.fixture(scope="session")
def cli():
    assert cli_has("run") and cli_has("generate"), "`python -m hpcprep run/generate --help` failed"


@pytest.fixture(scope="session")
def jobdir(tmp_path_factory):
    """A folder for jobs that do not need the hpcprep CLI."""
    return tmp_path_factory.mktemp("slurm-jobs")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, cli):
    """A folder with generated input data and a config using relative paths."""
    d = tmp_path_factory.mktemp("slurm-work")
    res = _run([PY, "-m", "hpcprep", "generate", "--rows", str(ROWS), "--features", str(FEATURES),
                "--files", str(FILES), "--out", str(d / "raw"), "--seed", str(SEED)],
               120, cwd=d, env=job_env())
    assert res.returncode == 0, res.stderr
    (d / "config.toml").write_text(CONFIG_TOML)
    return d


CONFIG_TOML = f"""\
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

[train]
model = "logreg"
epochs = 3
batch_size = 128
seed = {SEED}
"""


def read_dataset(out: Path) -> dict:
    """ids/features/labels of a finished dataset, read through the master file."""
    manifest = json.loads((out / "manifest.json").read_text())
    data = {"rows": manifest["rows"]}
    with h5py.File(out / manifest["master"], "r") as f:
        for name in ("ids", "features", "labels"):
            if name in f:
                data[name] = np.asarray(f[name][...])
    for shard in manifest["shards"]:
        assert (out / shard["path"]).exists(), shard
    return data


def assert_same_dataset(got: Path, want: Path):
    a, b = read_dataset(got), read_dataset(want)
    assert a["rows"] == b["rows"] > 0
    assert sorted(a) == sorted(b)
    for name in ("ids", "features", "labels"):
        if name in a:
            assert a[name].dtype == b[name].dtype, name
            assert a[name].shape == b[name].shape, name
            assert a[name].tobytes() == b[name].tobytes(), f"{name} differs: {got} vs {want}"


@pytest.fixture(scope="session")
def reference(workdir, report):
    """Outputs of plain `mpiexec -n N` runs (no Slurm) of the same config and seed."""
    outs = {}
    for n in (2, 4):
        out = workdir / f"ref-{n}"
        t0 = time.monotonic()
        res = _run([str(MPIEXEC), "-n", str(n), PY, "-m", "hpcprep", "run", "config.toml",
                    "--set", f'output.path="{out.name}"'], 120, cwd=workdir, env=job_env())
        assert res.returncode == 0, res.stdout + res.stderr
        report(f"reference: mpiexec -n {n} hpcprep run: {time.monotonic() - t0:.1f} s")
        outs[n] = out
    return outs


# --------------------------------------------------------------------------- preprocessing

CASES = [(2, "srun"), (2, "mpiexec"), (4, "srun"), (4, "mpiexec")]
WAVES = [[(2, "srun"), (2, "mpiexec")], [(4, "srun")], [(4, "mpiexec")]]   # each fits 4 CPUs


@pytest.fixture(scope="session")
def preprocess_jobs(slurm, workdir, report):
    """slurm/preprocess.sbatch with 2 and 4 tasks and both launchers, via sbatch --wait."""
    jobs = {}

    def submit(case):
        n, launcher = case
        out = f"out-{n}-{launcher}"
        return case, sbatch_wait(
            report, workdir,
            [f"--ntasks={n}", str(PREPROCESS), "config.toml", "--set", f'output.path="{out}"'],
            env=job_env(HPCPREP_LAUNCHER=launcher), label=f"preprocess {n} tasks, {launcher}")

    for wave in WAVES:
        with ThreadPoolExecutor(len(wave)) as pool:
            jobs.update(pool.map(submit, wave))
    return jobs


@pytest.mark.parametrize("ntasks,launcher", CASES, ids=[f"{n}tasks-{l}" for n, l in CASES])
def test_preprocess_job(preprocess_jobs, reference, workdir, ntasks, launcher):
    job = preprocess_jobs[(ntasks, launcher)]
    assert job.rc == 0, job.log
    assert job.job_state == "COMPLETED", job.state
    assert job.state.get("ExitCode") == "0:0"
    assert job.state.get("NumTasks") == str(ntasks)
    assert f"{ntasks} tasks, launcher {launcher}" in job.log
    assert "finished with exit code 0" in job.log
    out = workdir / f"out-{ntasks}-{launcher}"
    assert (out / "manifest.json").exists()
    assert_same_dataset(out, reference[ntasks])
    res = _run([PY, "-m", "hpcprep", "inspect", str(out)], 60, cwd=workdir, env=job_env())
    assert res.returncode == 0 and "verification: OK" in res.stdout, res.stdout + res.stderr


def test_slurm_output_independent_of_task_count(preprocess_jobs, workdir):
    assert_same_dataset(workdir / "out-2-srun", workdir / "out-4-mpiexec")


# --------------------------------------------------------------------------- exit codes

def test_sbatch_wait_exit_codes(slurm, workdir, report):
    """`sbatch --wait` returns the job's exit code: 2 for a usage error, hpcprep's for a bad config."""
    cases = {
        "no config": ([str(PREPROCESS)], {}),
        "missing config": ([str(PREPROCESS), "no-such.toml"], {}),
        "bad config value": ([str(PREPROCESS), "config.toml", "--set", 'output.dtype="float16"',
                              "--set", 'output.path="out-bad"'], {}),
        "HPCPREP_CONFIG": ([str(PREPROCESS), "--set", 'output.path="out-env"'],
                           {"HPCPREP_CONFIG": "no-such-either.toml"}),
        "train without dataset": ([str(TRAIN), "no-such-dataset", "--config", "config.toml"], {}),
    }

    def submit(item):
        name, (args, extra) = item
        return name, sbatch_wait(report, workdir, ["--ntasks=1", *args], env=job_env(**extra),
                                 label=f"exit code, {name}", default_output=name == "no config")

    with ThreadPoolExecutor(len(cases)) as pool:
        jobs = dict(pool.map(submit, cases.items()))
    assert jobs["no config"].rc == 2 and "no config" in jobs["no config"].log
    assert jobs["missing config"].rc == 2 and "no-such.toml" in jobs["missing config"].log
    assert jobs["HPCPREP_CONFIG"].rc == 2 and "no-such-either.toml" in jobs["HPCPREP_CONFIG"].log
    no_data = jobs["train without dataset"]
    assert no_data.rc == 2 and "no-such-dataset" in no_data.log and "manifest.json" in no_data.log
    bad = jobs["bad config value"]
    assert bad.rc != 0 and bad.job_state == "FAILED", bad.state
    assert "output.dtype" in bad.log, bad.log
    assert not (workdir / "out-bad" / "manifest.json").exists()
    for job in jobs.values():
        assert job.state.get("ExitCode", "").split(":")[0] == str(job.rc)


# --------------------------------------------------------------------------- pipeline.sh

def run_pipeline(workdir, report, *args, env=None) -> tuple[int, int]:
    res = _run([str(PIPELINE), "config.toml", *args], 60, cwd=workdir, env=env or job_env())
    assert res.returncode == 0, res.stdout + res.stderr
    pre = re.search(r"^preprocess job (\d+)$", res.stdout, re.M)
    train = re.search(r"^train job (\d+) ", res.stdout, re.M)
    assert pre and train, res.stdout
    report(f"pipeline.sh {' '.join(args)}: preprocess job {pre.group(1)}, train job {train.group(1)}")
    return int(pre.group(1)), int(train.group(1))


def test_pipeline_chains_preprocess_then_train(slurm, workdir, reference, report):
    pre, train = run_pipeline(workdir, report, "--set", 'output.path="out-pipeline"', "--",
                              "--ntasks=2")
    assert train != pre
    fields = scontrol_job(train)
    assert fields.get("Dependency", "").startswith(f"afterok:{pre}"), fields
    pre_state = wait_job(pre)
    report(state_line(pre, pre_state))
    train_state = wait_job(train)
    report(state_line(train, train_state))
    assert pre_state["JobState"] == "COMPLETED", pre_state
    assert_same_dataset(workdir / "out-pipeline", reference[2])
    # The training job ran only after preprocessing ended. (Whether training itself
    # succeeds is test_pipeline_trains.)
    assert train_state["JobState"] != "CANCELLED", train_state
    assert train_state["StartTime"] >= pre_state["EndTime"], (pre_state, train_state)
    assert list((workdir / "logs").glob(f"hpcprep-preprocess-{pre}.out"))
    assert list((workdir / "logs").glob(f"hpcprep-train-{train}.out"))


def test_failed_preprocess_cancels_train(slurm, workdir, report):
    pre, train = run_pipeline(workdir, report, "--set", 'output.dtype="float16"', "--set",
                              'output.path="out-failing"', "--", "--ntasks=2")
    pre_state = wait_job(pre)
    report(state_line(pre, pre_state))
    train_state = wait_job(train)
    report(state_line(train, train_state))
    assert pre_state["JobState"] == "FAILED", pre_state
    assert train_state["JobState"] == "CANCELLED", train_state
    assert train_state.get("Reason") == "DependencyNeverSatisfied", train_state
    assert train_state.get("StartTime") in (None, "Unknown", "None") or \
        train_state["StartTime"] >= pre_state["EndTime"]
    assert not list((workdir / "logs").glob(f"*-{train}.out")), "the cancelled job ran"


def test_pipeline_trains(slurm, workdir, reference, report):
    """pipeline.sh -> preprocess.sbatch -> train.sbatch; the trained parameters must equal those
    of an `mpiexec -n 2 hpcprep train` on the same dataset."""
    assert cli_has("train"), "`python -m hpcprep train --help` failed"
    pre, train = run_pipeline(workdir, report, "--set", 'output.path="out-train-data"',
                              "--set", "train.epochs=2", "--", "--ntasks=2")
    pre_state, train_state = wait_job(pre), wait_job(train, timeout=120)
    report(state_line(pre, pre_state))
    report(state_line(train, train_state))
    logs = list((workdir / "logs").glob(f"*-{train}.out"))
    log = logs[0].read_text(errors="replace") if logs else ""
    assert pre_state["JobState"] == "COMPLETED", pre_state
    assert train_state["JobState"] == "COMPLETED", log
    assert_same_dataset(workdir / "out-train-data", reference[2])
    got = workdir / "out-train-data-train" / "model.h5"
    assert got.exists(), log
    res = _run([str(MPIEXEC), "-n", "2", PY, "-m", "hpcprep", "train", "out-train-data",
                "--config", "config.toml", "--out", "ref-train", "--set", "train.epochs=2",
                "--quiet"], 120, cwd=workdir, env=job_env())
    assert res.returncode == 0, res.stdout + res.stderr
    with h5py.File(got, "r") as a, h5py.File(workdir / "ref-train" / "model.h5", "r") as b:
        assert sorted(a) == sorted(b)
        for name in a:
            assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name


# --------------------------------------------------------------------------- the --mpi=none trap

TRAP_CODE = ("import sys; from mpi4py import MPI; from hpcprep.launch import check_launch; "
             "check_launch(MPI.COMM_WORLD); "
             "sys.stdout.write(f'world {MPI.COMM_WORLD.Get_size()}\\n'); sys.stdout.flush()")


def test_srun_mpi_none_is_detected(slurm, jobdir, report):
    """srun --mpi=none gives N one-rank worlds with exit code 0; check_launch turns it into an error."""
    def submit(plugin):
        wrap = f"srun --mpi={plugin} {PY} -c \"{TRAP_CODE}\""
        return plugin, sbatch_wait(report, jobdir, ["--ntasks=2", "--job-name=trap-" + plugin,
                                                     f"--wrap={wrap}"], label=f"srun --mpi={plugin}")

    with ThreadPoolExecutor(2) as pool:
        jobs = dict(pool.map(submit, ["pmi2", "none"]))
    good, bad = jobs["pmi2"], jobs["none"]
    assert good.rc == 0, good.log
    assert good.log.splitlines().count("world 2") == 2, good.log
    assert bad.rc != 0, bad.log
    assert bad.log.count("MPI world has 1 rank, but Slurm runs this job with 2 tasks") == 2, bad.log
    assert "world 1" not in bad.log


def test_preprocess_sbatch_refuses_mpi_none(slurm, jobdir, report):
    (jobdir / "any.toml").write_text("")
    job = sbatch_wait(report, jobdir, ["--ntasks=2", str(PREPROCESS), "any.toml"],
                      env=job_env(HPCPREP_SRUN_MPI="none"), label="HPCPREP_SRUN_MPI=none")
    assert job.rc == 2 and "separate one-rank jobs" in job.log, job.log


def test_cli_refuses_srun_mpi_none(slurm, workdir, report):
    """`srun --mpi=none hpcprep run` must fail (the CLI calls hpcprep.launch.check_launch)
    instead of running the whole pipeline twice into the same output folder."""
    wrap = (f"srun --mpi=none {PY} -m hpcprep run config.toml "
            "--set output.path=\\\"out-trap\\\"")
    job = sbatch_wait(report, workdir, ["--ntasks=2", "--job-name=trap-cli", f"--wrap={wrap}"],
                      label="hpcprep run under srun --mpi=none")
    assert "MPI world has 1 rank, but Slurm runs this job with 2 tasks" in job.log, (
        "the hpcprep CLI ran under `srun --mpi=none` as two one-rank jobs: it must call "
        "hpcprep.launch.check_launch(MPI.COMM_WORLD) at start-up\n" + job.log)
    assert job.rc != 0, job.log
    assert not (workdir / "out-trap" / "manifest.json").exists()


def test_time_limit_signal_stops_after_fit_and_the_requeued_job_resumes(slurm, workdir,
                                                                         reference, report):
    """SIGUSR1 to the batch shell (what `#SBATCH --signal=B:USR1@300` sends before the time
    limit; `scancel --batch --signal=USR1` here, to choose the moment): the run stops after
    its fit passes (exit 75), the script requeues the job, and the second run resumes."""
    out = "out-requeue"
    (workdir / "logs").mkdir(exist_ok=True)
    # --time above the script's 300 s lead, so Slurm's own timer does not signal the requeued
    # run too; mpiexec, as srun --mpi=pmi2 here now and then fails its step at exit (docs/cluster.md)
    res = _run(["sbatch", "--parsable", "--ntasks=2", "--time=15", f"--chdir={workdir}",
                f"--output={workdir}/logs/%x-%j.out", str(PREPROCESS), "config.toml",
                "--set", f'output.path="{out}"', "--set", 'plan.emulate_slowdown={"0"=100.0}'],
               30, cwd=workdir, env=job_env(HPCPREP_LAUNCHER="mpiexec"))
    assert res.returncode == 0, res.stderr
    job_id = int(res.stdout.strip().split(";")[0])
    log = workdir / "logs" / f"hpcprep-preprocess-{job_id}.out"
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (log.exists() and "hpcprep-slurm: job" in log.read_text()):   # the trap is set
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    assert _run(["scancel", "--batch", "--signal=USR1", str(job_id)], 30).returncode == 0
    while scontrol_job(job_id).get("Restarts", "0") == "0":
        assert time.monotonic() < deadline, scontrol_job(job_id)
        time.sleep(0.25)
    while (fields := scontrol_job(job_id)).get("JobState") not in TERMINAL:
        assert time.monotonic() < deadline + JOB_TIMEOUT, state_line(job_id, fields)
        if fields.get("JobState") == "PENDING" and fields.get("Reason") == "BeginTime":
            # Slurm may hold a requeued job back a few minutes: let it start now
            _run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], 30)
        time.sleep(0.25)
    text = log.read_text()
    report(f"requeue: {state_line(job_id, fields)}")
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "1", text
    assert "hpcprep: stopped: after the fit passes" in text
    assert "requeueing job" in text and ", restart 1" in text
    assert "resuming from the checkpoint of " in text and "fit done, skipping 1 fit pass(es)" in text
    assert not (workdir / f".{out}.checkpoint").exists()
    assert_same_dataset(workdir / out, reference[2])
