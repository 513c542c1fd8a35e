#!/usr/bin/env bash
# Create (or update) the lab's virtual environment and install dpolab with an extra.
#   scripts/setup.sh lab         # what students need to open the notebooks
#   scripts/setup.sh test        # + nbgrader, pytest, nbval, TRL: what the tests need
# Environment: PYTHON (default python3), VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-lab}"
python="${PYTHON:-python3}"
venv="${VENV:-.venv}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)

# torch first. A range that admits the newest release pulls a multi-GB CUDA build on Linux;
# the lab needs none of it. Take a CPU build when the package index offers one (the lab's
# own machines keep torch 2.13.0+cpu on disk), else the range from pyproject.toml.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "${pip[@]}" "torch==2.13.0+cpu" 2>/dev/null || "${pip[@]}" "torch>=2.2,<3"
fi
"${pip[@]}" -e ".[$extra]"

# dpolab-grade runs each student's kernel in a bubblewrap sandbox (lib/dpolab/autograde/sandbox.py);
# the tests of its isolation need it. Installed when we are root with apt (CI); elsewhere those
# tests are skipped with the reason.
if [ "$extra" = test ] && ! command -v bwrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get install -y -qq bubblewrap || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; } >/dev/null 2>&1 \
    || echo "bubblewrap could not be installed: dpolab-grade's isolation tests will be skipped"
fi
"$venv/bin/python" -c "import torch, dpolab; print(f'dpolab {dpolab.__version__}, torch {torch.__version__}, device {dpolab.get_device()}')"
