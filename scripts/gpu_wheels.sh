#!/usr/bin/env bash
# Fill wheels/ with the packages the GPU machine's image lacks, for scripts/gpu_check.sh.
#
# Usage: scripts/gpu_wheels.sh [--with-cvxpy] [--dest DIR]
#
# The GPU machine (docs/gpu.md, "Running the GPU checks") reaches no package index. Its image
# holds Python 3.12, CUDA 13, CuPy, NumPy, SciPy, h5py, mpi4py, pyarrow, pytest and hypothesis,
# but no MPI launcher: this downloads, for CPython 3.12 on x86-64 Linux,
#   - mpich (mpiexec and libmpi; 13 MB) and mpi4py (used there only if the image's mpi4py
#     cannot load MPICH's libmpi);
#   - with --with-cvxpy: cvxpy and the solver packages the image lacks (osqp, clarabel, highspy,
#     qdldl, sparsediffpy, cffi, pycparser; 22 MiB more). SCS is left out: its wheel is 43 MB,
#     which would take the wheelhouse to about 77 MiB, over the 64 MiB a device call carries;
#     cvxpy runs without it (CLARABEL, HIGHS, OSQP). Neither the GPU tests nor the benchmark
#     import cvxpy (an hpcprep run of REF-1's steps does not).
# Versions are those of the project venv here (the tested set), else the pins below.
# Prints what the wheelhouse weighs, and fails if it and the working tree exceed the 64 MiB
# a device call may carry.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/wheels
CVXPY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --with-cvxpy) CVXPY=1 ;;
        --dest) DEST=$2; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu_wheels.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-$ROOT/.venv/bin/python}
LIMIT_MIB=64

# name==version, the version read from the venv here when it has the package
pin() {
    local v
    v=$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null) || v=$2
    echo "$1==$v"
}

PKGS=("$(pin mpich 5.0.2)" "$(pin mpi4py 4.1.2)")
if [ "$CVXPY" = 1 ]; then
    PKGS+=("$(pin cvxpy 1.9.3)" "$(pin osqp 1.1.3)" "$(pin clarabel 0.11.1)" "$(pin highspy 1.16.0)"
           "$(pin qdldl 0.1.9.post1)" "$(pin sparsediffpy 0.6.1)" "$(pin cffi 2.1.1)"
           "$(pin pycparser 3.12)")
fi

PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    PLATFORMS+=(--platform "${p}_x86_64")
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu-wheels.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "downloading ${PKGS[*]} for CPython 3.12 x86-64 ..."
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" \
    -d "$TMP" "${PKGS[@]}"

# one version of each package: replace the wheelhouse as a whole
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
mv "$TMP"/*.whl "$DEST"/
(cd "$DEST" && ls -l ./*.whl | awk '{printf "%10d  %s\n", $5, $9}' > MANIFEST.txt)

wheels_bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree_bytes=$(cd "$ROOT" && { git ls-files -z; git ls-files -z --others --exclude-standard; } \
             | xargs -0 du -cb 2>/dev/null | awk '/\ttotal$/ {s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
cat "$DEST/MANIFEST.txt"
echo "wheelhouse $DEST: $(mib "$wheels_bytes") MiB; working tree $(mib "$tree_bytes") MiB;" \
     "together $(mib $((wheels_bytes + tree_bytes))) MiB of the $LIMIT_MIB MiB a device call carries"
if [ $((wheels_bytes + tree_bytes)) -ge $((LIMIT_MIB * 1048576)) ]; then
    echo "gpu_wheels.sh: over the $LIMIT_MIB MiB limit: drop --with-cvxpy" >&2
    exit 1
fi
