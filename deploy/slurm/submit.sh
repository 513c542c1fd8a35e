#!/bin/bash
# Grade a class on a Slurm cluster: N shards as a job array, then their merge.
#   SUBMISSIONS=/shared/submitted GRADING=/shared/grading deploy/slurm/submit.sh N [sbatch options...]
# The sbatch options (e.g. --partition=cpu --cpus-per-task=16 --mem=72G) go to the array only.
# Prints the two job ids. Result: $GRADING/merged (grades.csv, cells.csv, feedback/, gradebook.db).
# Re-running it regrades only the submissions that changed (each shard keeps its folder).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=${1:?usage: submit.sh N [sbatch options for the array]}
shift
: "${SUBMISSIONS:?set SUBMISSIONS}" "${GRADING:?set GRADING}"
mkdir -p "$GRADING"
export SUBMISSIONS GRADING SHARDS="$n"
array=$(sbatch --parsable --array="1-$n" "$@" "$here/grade_array.sbatch")
array=${array%%;*}  # "id;cluster" on a multi-cluster set-up
merge=$(sbatch --parsable --dependency="afterok:$array" "$here/merge.sbatch")
echo "array job $array (shards 1-$n), merge job ${merge%%;*} -> $GRADING/merged"
