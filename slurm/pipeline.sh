#!/bin/bash
# slurm/pipeline.sh -- submit preprocessing, then training that starts only if preprocessing
# succeeded (--dependency=afterok:<id>). Prints both job ids and returns at once; it does not
# wait for the jobs.
#
#     slurm/pipeline.sh CONFIG.toml [--set key=value ...] [-- SBATCH_OPTION ...]
#
#   CONFIG.toml        one config for both steps (the [train] table configures training)
#   --set key=value    passed to both `hpcprep run` and `hpcprep train`
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
#   HPCPREP_LOG_DIR                 folder for the job logs (default logs, created if missing)
#   HPCPREP_PREPROCESS_SCRIPT, HPCPREP_TRAIN_SCRIPT
#                                   batch scripts (default: preprocess.sbatch and train.sbatch
#                                   next to this file)
#   and everything slurm/preprocess.sbatch documents (HPCPREP_VENV, HPCPREP_LAUNCHER, ...):
#   sbatch hands this shell's environment to both jobs.
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
HPCPREP_ARGS=()
SBATCH_ARGS=()
while [[ $# -gt 0 ]]; do
    if [[ $1 == -- ]]; then
        shift
        SBATCH_ARGS=("$@")
        break
    fi
    HPCPREP_ARGS+=("$1")
    shift
done

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
      "$PRE_SCRIPT" "$CONFIG" "${HPCPREP_ARGS[@]}") || die "submitting $PRE_SCRIPT failed"
pre=${pre%%;*}
[[ $pre =~ ^[0-9]+$ ]] || die "sbatch printed '$pre', not a job id"
echo "preprocess job $pre"

if ! train=$(sbatch --parsable --output="$LOG_DIR/%x-%j.out" --dependency="afterok:$pre" \
             --kill-on-invalid-dep=yes "${SBATCH_ARGS[@]}" "${TRAIN_EXTRA[@]}" \
             "$TRAIN_SCRIPT" "$CONFIG" "${HPCPREP_ARGS[@]}"); then
    echo "pipeline.sh: submitting $TRAIN_SCRIPT failed; cancelling preprocess job $pre" >&2
    scancel "$pre" || true
    exit 1
fi
train=${train%%;*}
echo "train job $train (starts after job $pre succeeds)"
echo "logs: $LOG_DIR/<job-name>-<job-id>.out; watch with: squeue -j $pre,$train" >&2
