#!/usr/bin/env bash
# Issue 18's GPU checks in one command, for a session lent the GPU machine (docs/gpu.md,
# "Running the GPU checks"): set up what the image lacks from wheels/ (scripts/gpu_wheels.sh),
# print the device, driver, CUDA, CuPy and MPI versions, run the GPU tests, run the GPU
# benchmark (scripts/bench.py --cases gpu -> scripts/bench_gpu.py). Sized for about 6 minutes
# there (an estimate; --quick: about 3), at most ~8.5: each step has a time limit.
#
# Usage: bash scripts/gpu_check.sh [--quick] [--dry-run] [--out DIR]
#   --quick     smaller benchmark sizes and one REF-1 repeat (a first try)
#   --dry-run   go on without a GPU: set up, probe, run the test files (their GPU tests skip),
#               bench.py --cases gpu (records "no GPU") and the benchmark's self-test on the CPU
#               (NumPy, tiny sizes, marked as such: no GPU figure); checks this script's logic
#   --out DIR   where the files go (default: $OUT, which the device tool fetches; else ./gpu-check-out)
# Environment: PYTHON (default python3, the image's), WHEELS (default ./wheels),
#   GPU_VENV (default /tmp/hpcprep-gpu-venv: a venv over the image's packages that holds MPICH).
# Files: gpu_check.log (everything printed), env.json (device and versions), tests.txt and
#   tests.xml (pytest), bench.json (bench.py), gpu_tables.md (Markdown for docs/gpu.md and
#   docs/BENCHMARKS.md), summary.json (each step's status); a dry run adds bench_selftest.json.
# Exit status: 0 every step passed; 1 a test or the benchmark failed, or a GPU test skipped on
#   the GPU machine; 2 no usable GPU (setup and the probe ran, nothing else; a dry run goes on
#   and exits 0 or 1); 3 setup failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0 DRY=0 OUTDIR=${OUT:-$ROOT/gpu-check-out}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --dry-run) DRY=1 ;;
        --out) OUTDIR=$2; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 3 ;;
    esac
    shift
done
WHEELS=${WHEELS:-$ROOT/wheels}
VENV=${GPU_VENV:-/tmp/hpcprep-gpu-venv}
IMG_PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
exec > >(tee -a "$OUTDIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
cd "$ROOT"
START=$SECONDS
SETUP=failed DEVICE=unknown TESTS=not-run BENCH=not-run

say() { printf '\n=== [%4ds] %s\n' $((SECONDS - START)) "$*"; }

summary() {   # summary.json and the exit status
    local rc=$1
    "${PY:-$IMG_PY}" - "$OUTDIR/summary.json" "$rc" "$SETUP" "$DEVICE" "$TESTS" "$BENCH" "$DRY" "$QUICK" \
        "$((SECONDS - START))" <<'EOF'
import json, sys
path, rc, setup, device, tests, bench, dry, quick, secs = sys.argv[1:]
doc = {"exit_status": int(rc), "setup": setup, "device": device, "tests": tests, "bench": bench,
       "dry_run": dry == "1", "quick": quick == "1", "seconds": int(secs)}
open(path, "w").write(json.dumps(doc, indent=1) + "\n")
print(json.dumps(doc))
EOF
    say "done: exit $rc (files in $OUTDIR)"
    exit "$rc"
}

fail_setup() { echo "gpu_check.sh: setup failed: $*" >&2; summary 3; }

pip_wheels() {   # install wheels from the wheelhouse into the venv, no index, no dependencies
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --ignore-installed \
        --disable-pip-version-check --find-links "$WHEELS" "$@"
}

mpich_ok() {
    "$PY" -c 'from mpi4py import MPI; import sys; sys.exit("MPICH" not in MPI.Get_library_version())' 2>/dev/null
}

make_venv() {   # a venv whose python sees the image's packages after its own (a .pth line)
    [ -x "$VENV/bin/python" ] && return 0
    "$IMG_PY" -m venv --without-pip "$VENV" || return 1
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
    "$IMG_PY" -c 'import site, os
for d in site.getsitepackages() + [site.getusersitepackages()]:
    if os.path.isdir(d):
        print(f"import site; site.addsitedir({d!r})")' > "$site/_image_site.pth"
}

setup() {
    say "setup: $IMG_PY ($("$IMG_PY" -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>&1)), wheels in $WHEELS"
    command -v "$IMG_PY" >/dev/null || fail_setup "no Python '$IMG_PY' (set PYTHON)"
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || echo "no wheels in $WHEELS (scripts/gpu_wheels.sh fills it; device run: carry [\"wheels\"])"
    if make_venv; then
        PY=$VENV/bin/python
    else   # no venv module: install into the image's own environment (the machine is thrown away)
        echo "could not make a venv over $IMG_PY: installing into its own environment"
        PY=$(command -v "$IMG_PY")
        VENV=$("$PY" -c 'import sys; print(sys.prefix)') || fail_setup "$IMG_PY does not run"
    fi
    if [ ! -x "$VENV/bin/mpiexec" ]; then
        pip_wheels mpich || fail_setup "mpich is not in $WHEELS (run scripts/gpu_wheels.sh here)"
    fi
    if ! mpich_ok; then
        echo "the image's mpi4py does not load MPICH's libmpi: mpi4py from the wheelhouse"
        pip_wheels mpi4py && mpich_ok || fail_setup "mpi4py cannot load MPICH (see the lines above)"
    fi
    local missing
    missing=$("$PY" -c 'import importlib.util as u
print(" ".join(n for n in ("numpy", "h5py", "pyarrow", "pytest") if u.find_spec(n) is None))')
    for name in $missing; do
        pip_wheels "$name" || fail_setup "$name: not in the image, not in $WHEELS"
    done
    if ls "$WHEELS"/cvxpy-*.whl >/dev/null 2>&1 && ! "$PY" -c 'import cvxpy' 2>/dev/null; then
        local cvx=()
        for w in "$WHEELS"/*.whl; do
            case "$(basename "$w")" in mpich-*|mpi4py-*) ;; *) cvx+=("$w") ;; esac
        done
        pip_wheels "${cvx[@]}" && "$PY" -c 'import cvxpy; print("cvxpy", cvxpy.__version__, cvxpy.installed_solvers())' \
            || echo "warning: cvxpy did not install (the GPU checks do not need it)"
    fi
    export PATH="$VENV/bin:$PATH" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    timeout 60 "$VENV/bin/mpiexec" -n 2 "$PY" -c 'from mpi4py import MPI
c = MPI.COMM_WORLD
assert c.allreduce(1) == 2
if c.rank == 0: print("mpiexec -n 2:", MPI.Get_library_version().splitlines()[0])' || fail_setup "mpiexec -n 2 failed"
    "$PY" -c 'import hpcprep, sys; print("hpcprep", hpcprep.__version__, "from", hpcprep.__file__)' \
        || fail_setup "hpcprep does not import from $ROOT"
    SETUP=ok
}

probe() {
    say "device"
    nvidia-smi 2>&1 | head -20 || true
    "$PY" scripts/bench_gpu.py --env "$OUTDIR/env.json"
    case $? in
        0) DEVICE=gpu ;;
        2) DEVICE=none ;;
        *) DEVICE=probe-failed ;;
    esac
}

run_tests() {   # the GPU test files; on the GPU machine a skip is a failure
    say "tests: tests/test_kernels_parity.py tests/test_gpu_pipeline.py"
    timeout 210 "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$OUTDIR/tests.xml" \
        tests/test_kernels_parity.py tests/test_gpu_pipeline.py 2>&1 | tee "$OUTDIR/tests.txt"
    local rc=${PIPESTATUS[0]} skipped
    skipped=$("$PY" -c 'import sys, xml.etree.ElementTree as E
r = E.parse(sys.argv[1]).getroot()
print(sum(int(s.get("skipped", 0)) for s in r.iter("testsuite")))' "$OUTDIR/tests.xml" 2>/dev/null || echo "?")
    if [ "$rc" != 0 ]; then
        TESTS="failed (pytest exit $rc$([ "$rc" = 124 ] && echo ': timed out'))"
    elif [ "$DEVICE" = gpu ] && [ "$skipped" != 0 ]; then
        TESTS="failed: $skipped test(s) skipped on a GPU machine"
    else
        TESTS="passed ($skipped skipped)"
    fi
    echo "tests: $TESTS"
}

run_bench() {
    local limit=$((510 - (SECONDS - START))) args=(--cases gpu --out "$OUTDIR/bench.json" --module-memory-gib 0)
    [ "$QUICK" = 1 ] && args+=(--quick)
    if [ "$DEVICE" != gpu ]; then   # a dry run: bench.py records "no GPU"; the code runs on NumPy
        say "benchmark: bench.py --cases gpu, then the self-test on the CPU (no GPU figure)"
        timeout 120 "$PY" scripts/bench.py "${args[@]}" || BENCH="bench.py failed"
        timeout 300 "$PY" scripts/bench_gpu.py --selftest "$OUTDIR/bench_selftest.json" > "$OUTDIR/gpu_tables.md" \
            || BENCH="self-test failed"
        [ "$BENCH" = not-run ] && BENCH="bench.py: $("$PY" -c 'import json, sys
print(json.load(open(sys.argv[1]))["cases"]["gpu"]["status"])' "$OUTDIR/bench.json"); self-test passed (no GPU figure)"
        return
    fi
    [ "$limit" -lt 90 ] && { BENCH="not run: $limit s left of the budget"; return; }
    say "benchmark: scripts/bench.py ${args[*]} (limit $limit s)"
    timeout "$limit" "$PY" scripts/bench.py "${args[@]}" --module-timeout $((limit - 30))
    local rc=$?
    "$PY" scripts/bench_gpu.py --render "$OUTDIR/bench.json" > "$OUTDIR/gpu_tables.md" 2>&1
    local failed
    failed=$("$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
r = d["cases"]["gpu"].get("result") or {}
print(len(r.get("checks_failed", [])) if r else "no result")' "$OUTDIR/bench.json" 2>/dev/null || echo "no bench.json")
    if [ "$rc" = 0 ] && [ "$failed" = 0 ]; then BENCH=passed; else BENCH="failed (bench.py exit $rc, checks failed: $failed)"; fi
    cat "$OUTDIR/gpu_tables.md"
}

setup
probe
if [ "$DEVICE" != gpu ] && [ "$DRY" = 0 ]; then
    echo "gpu_check.sh: no usable GPU here ($(grep -o '"reason": "[^"]*"' "$OUTDIR/env.json" 2>/dev/null | head -1));" \
         "nothing GPU-side ran. On a machine without one, use --dry-run to check this script."
    summary 2
fi
[ "$DEVICE" != gpu ] && say "dry run: no GPU ($DEVICE); the GPU tests will skip and the benchmark runs its CPU self-test"
run_tests
run_bench
case "$TESTS $BENCH" in
    *fail*) summary 1 ;;
    *) summary 0 ;;
esac
