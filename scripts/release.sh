#!/usr/bin/env bash
# For course authors: re-execute the solution notebooks (their outputs are what nbval
# compares), then regenerate the student release in notebooks/ with nbgrader.
#   scripts/release.sh                        (or: make release) every solution notebook
#   scripts/release.sh 02_dpo_variants ...    re-execute only these, then regenerate the release
# GRADED=0 skips the graded course's build. Concurrent runs wait for each other (flock).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
export PATH="$PWD/$venv/bin:$PATH"  # nbgrader runs alembic from PATH
assignment="lab_3_1_5_dpo"
if [ $# -gt 0 ]; then
  targets=()
  for name in "$@"; do targets+=("solutions/$assignment/${name%.ipynb}.ipynb"); done
else
  targets=("solutions/$assignment"/*.ipynb)
fi

# Deterministic outputs: CPU, no timing metadata; then drop the saved widget state
# (random model ids, a base64 copy of every figure) and merge split stdout chunks, which
# depend on timing, so that re-running gives the same files.
DPOLAB_DEVICE=cpu jupyter nbconvert --to notebook --execute --inplace \
  --NotebookClient.record_timing=False "${targets[@]}"
python - "${targets[@]}" <<'PY'
import sys

import nbformat

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if merged and out.output_type == "stream" and merged[-1].output_type == "stream" and merged[-1].name == out.name:
                merged[-1].text += out.text
            else:
                merged.append(out)
        if "outputs" in cell:
            cell.outputs = merged
    nbformat.write(nb, path)
PY
# A throwaway gradebook: the release does not depend on any grading state. nbgrader_config.py
# stamps the release (Colab / Binder badges, the guarded Colab install cell, from pyproject.toml).
db="$(mktemp -d)/gradebook.db"
NBGRADER_DB_URL="sqlite:///$db" flock "${TMPDIR:-/tmp}/dpolab-release.lock" \
  nbgrader generate_assignment "$assignment" --force
rm -f "$db"
echo "released: notebooks/$assignment (self-study)"
# The graded course's release and student package (not committed: graded-course/ is ignored).
if [ "${GRADED:-1}" != 0 ]; then
  dpolab-graded-course graded-course
  echo "released: graded-course/notebooks/$assignment (graded), graded-course/dist/ (the student package)"
fi
