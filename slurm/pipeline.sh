#!/bin/bash
# slurm/pipeline.sh -- submit preprocessing, then training that starts only if preprocessing
# succeeded (--dependency=afterok:<id>). Prints both job ids and returns at once; it does not
# wait for the jobs.
#
#     slurm/pipeline.sh CONFIG.toml [--set key=value ...] [-- SBATCH_OPTION ...]
#
#   CONFIG.toml        one config for both steps: `hpcprep run CONFIG.toml` writes the dataset
#                      to its output.path, then `hpcprep train <output.path> --config
#                      CONFIG.toml` trains on it with the [train] table
#   --set key=value    --set train.key=value goes to `hpcprep train`, every other --set to
#                      `hpcprep run` (an output.path given here is the dataset trained on)
#   -- SBATCH_OPTION   sbatch options for both jobs, e.g. -- --partition=batch --account=myproj
#
# Output (one line each, the id is the third word):
#     preprocess job 12
#     train job 13 (starts after job 12 succeeds)
#
# Environment:
#   HPCPREP_PREPROCESS_SBATCH_ARGS  extra sbatch options for the preprocessing job only
#   HPCPREP_TRAIN_SBATCH_ARGS       extra sbatch options for the training job only
#                                   (both word-split, e.g. "--ntasks=16 --time=02:00:00")
#   HPCPREP_TRAIN_OUT               training output folder (default: <output.path>-train)
#   HPCPREP_LOG_DIR                 folder for the job logs (default logs, created if missing)
#   HPCPREP_PREPROCESS_SCRIPT, HPCPREP_TRAIN_SCRIPT
#                                   batch scripts (default: preprocess.sbatch and train.sbatch
#                                   next to this file)
#   and everything slurm/preprocess.sbatch documents (HPCPREP_VENV, HPCPREP_LAUNCHER, ...):
#   sbatch hands this shell's environment to both jobs. The python found the same way reads
#   output.path from the config here, at submit time.
#
# The training job is submitted with --kill-on-invalid-dep=yes: if preprocessing fails, Slurm
# cancels the training job instead of leaving it pending forever (DependencyNeverSatisfied).
set -euo pipefail

usage() { echo "usage: $0 CONFIG.toml [--set key=value ...] [-- SBATCH_OPTION ...]" >&2; exit 2; }
die() { echo "pipeline.sh: error: $*" >&2; exit 2; }

[[ $# -ge 1 && $1 != -* ]] || usage
CONFIG=$1
shift
[[ -r $CONFIG ]] || die "config $CONFIG not readable from $(pwd)"
RUN_ARGS=()
TRAIN_ARGS=()
SBATCH_ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --)
            shift
            SBATCH_ARGS=("$@")
            break
            ;;
        --set)
            [[ $# -ge 2 ]] || usage
            if [[ $2 == train.* ]]; then TRAIN_ARGS+=(--set "$2"); else RUN_ARGS+=(--set "$2"); fi
            shift 2
            ;;
        --set=*)
            if [[ ${1#--set=} == train.* ]]; then TRAIN_ARGS+=("$1"); else RUN_ARGS+=("$1"); fi
            shift
            ;;
        *)
            RUN_ARGS+=("$1")
            shift
            ;;
    esac
done

# The dataset that preprocessing writes: output.path of the config after the --set overrides.
VENV=${HPCPREP_VENV:-${VIRTUAL_ENV:-}}
[[ -z $VENV && -x ./.venv/bin/python ]] && VENV=$(pwd)/.venv
if [[ -n ${HPCPREP_PYTHON:-} ]]; then PY=$HPCPREP_PYTHON
elif [[ -n $VENV ]]; then PY=$VENV/bin/python
else PY=$(command -v python3) || die "no python3 on PATH; set HPCPREP_VENV"; fi
DATASET=$("$PY" - "$CONFIG" "${RUN_ARGS[@]}" <<'PYEOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    raw = tomllib.load(f)
args, sets = sys.argv[2:], []
for i, a in enumerate(args):
    if a == "--set" and i + 1 < len(args):
        sets.append(args[i + 1])
    elif a.startswith("--set="):
        sets.append(a[len("--set="):])
try:
    from hpcprep.config import apply_overrides
    raw = apply_overrides(raw, sets)
except ImportError:  # hpcprep not importable here: read --set output.path=... by hand
    for s in sets:
        key, _, value = s.partition("=")
        if key.strip() == "output.path":
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                pass
            raw.setdefault("output", {})["path"] = value
print(raw.get("output", {}).get("path", "out"))
PYEOF
) || die "cannot read output.path from $CONFIG"
TRAIN_OUT=${HPCPREP_TRAIN_OUT:-$DATASET-train}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PRE_SCRIPT=${HPCPREP_PREPROCESS_SCRIPT:-$HERE/preprocess.sbatch}
TRAIN_SCRIPT=${HPCPREP_TRAIN_SCRIPT:-$HERE/train.sbatch}
[[ -r $PRE_SCRIPT ]] || die "no $PRE_SCRIPT"
[[ -r $TRAIN_SCRIPT ]] || die "no $TRAIN_SCRIPT"
LOG_DIR=${HPCPREP_LOG_DIR:-logs}
mkdir -p "$LOG_DIR"
# shellcheck disable=SC2206
PRE_EXTRA=(${HPCPREP_PREPROCESS_SBATCH_ARGS:-})
# shellcheck disable=SC2206
TRAIN_EXTRA=(${HPCPREP_TRAIN_SBATCH_ARGS:-})

# --parsable prints "jobid" or "jobid;cluster".
pre=$(sbatch --parsable --output="$LOG_DIR/%x-%j.out" "${SBATCH_ARGS[@]}" "${PRE_EXTRA[@]}" \
      "$PRE_SCRIPT" "$CONFIG" "${RUN_ARGS[@]}") || die "submitting $PRE_SCRIPT failed"
pre=${pre%%;*}
[[ $pre =~ ^[0-9]+$ ]] || die "sbatch printed '$pre', not a job id"
echo "preprocess job $pre"

if ! train=$(sbatch --parsable --output="$LOG_DIR/%x-%j.out" --dependency="afterok:$pre" \
             --kill-on-invalid-dep=yes "${SBATCH_ARGS[@]}" "${TRAIN_EXTRA[@]}" \
             "$TRAIN_SCRIPT" "$DATASET" --config "$CONFIG" --out "$TRAIN_OUT" "${TRAIN_ARGS[@]}"); then
    echo "pipeline.sh: submitting $TRAIN_SCRIPT failed; cancelling preprocess job $pre" >&2
    scancel "$pre" || true
    exit 1
fi
train=${train%%;*}
echo "train job $train (starts after job $pre succeeds)"
echo "dataset: $DATASET, training output: $TRAIN_OUT" >&2
echo "logs: $LOG_DIR/<job-name>-<job-id>.out; watch with: squeue -j $pre,$train" >&2
