#!/usr/bin/env bash
# Create (or update) the lab's virtual environment and install dpolab with an extra.
#   scripts/setup.sh lab         # what students need to open the notebooks
#   scripts/setup.sh instructor  # + the grader (grader/: dpolab-grade, nbgrader)
#   scripts/setup.sh test        # + the grader, pytest, nbval, TRL: what the tests need
# Environment: PYTHON (default python3), VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-lab}"
python="${PYTHON:-python3}"
venv="${VENV:-.venv}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# --no-compile, then compileall on every core at the end: pip compiles each package's byte code on
# one core (torch alone is 15 s of CPU). The byte code is needed: the grader's sandbox reads this
# venv read-only, where Python could not write it.
pip=("$venv/bin/python" -m pip install --quiet --no-compile)

# torch first. A range that admits the newest release pulls a multi-GB CUDA build on Linux;
# the lab needs none of it. Take a CPU build when the package index offers one (the lab's
# own machines keep torch 2.13.0+cpu on disk), else the range from pyproject.toml.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "${pip[@]}" "torch==2.13.0+cpu" 2>/dev/null || "${pip[@]}" "torch>=2.2,<3"
fi
"${pip[@]}" -e ".[$extra]"
# the grader is its own distribution (grader/pyproject.toml), which depends on dpolab (installed
# above, so pip finds it here rather than on an index)
case "$extra" in
  instructor | test) "${pip[@]}" -e ./grader ;;
esac

# Two system packages the tests need, from Debian (CI runs as root with apt):
# - chromium: tests/test_browser.py drives it through Playwright (whose own browser download
#   cannot work offline);
# - bubblewrap: dpolab-grade runs each student's kernel in a bwrap sandbox
#   (grader/dpolab_grade/sandbox.py), and the tests of that isolation need it;
# - slurm-wlm and munge: tests/test_grade_shards.py starts a one-node Slurm (no systemd needed)
#   and submits deploy/slurm/'s job array and merge to it.
# Elsewhere install them yourself (apt-get install chromium bubblewrap slurm-wlm munge), or those tests skip
# and say why.
if [ "$extra" = test ]; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
  command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || missing+=(slurm-wlm munge)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
        || echo "setup.sh: could not install ${missing[*]}; the tests that need them will skip" >&2
    else
      echo "setup.sh: missing ${missing[*]} (apt-get install ${missing[*]}); the tests that need them will skip" >&2
    fi
  fi
fi
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$venv/bin/python" -m compileall -q -j 0 "$site" >/dev/null || true  # a file of another Python's syntax fails alone
"$venv/bin/python" -c "import torch, dpolab; print(f'dpolab {dpolab.__version__}, torch {torch.__version__}, device {dpolab.get_device()}')"
