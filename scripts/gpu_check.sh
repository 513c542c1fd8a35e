#!/usr/bin/env bash
# Run the test suite and the solution notebooks on a CUDA GPU, and notebook 04's experiment with timings.
#   scripts/gpu_check.sh                 # the interpreter of .venv if there is one, else python3
#   PYTHON=/path/to/python scripts/gpu_check.sh
# The interpreter needs a CUDA build of torch and dpolab[test] installed (pip install -e ".[test]").
# DPOLAB_DEVICE=cuda makes dpolab.get_device() choose the GPU explicitly, so that a silent
# fall-back to the CPU fails loudly instead. Exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"   # nbgrader runs alembic from PATH
export DPOLAB_DEVICE=cuda

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" - <<'PY' || { echo "gpu_check: torch cannot use CUDA here"; exit 2; }
import sys, torch, dpolab
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, "
      f"dpolab.get_device() = {dpolab.get_device()}")
PY

status=0
start=$SECONDS
echo "== 1/3 tests/ on CUDA =="
"$PYTHON" -m pytest tests -q -p no:cacheprovider || status=1
echo "== 2/3 every solution notebook, top to bottom, on CUDA (nbval compares the outputs) =="
"$PYTHON" -m pytest solutions -q -p no:cacheprovider || status=1
echo "== 3/3 notebook 04's experiment on CUDA: SFT vs DPO vs DPO+NLL, seed 0, with timings =="
"$PYTHON" benchmarks/bench_task_seeds.py --seeds 0 || status=1
echo "gpu_check: $((SECONDS - start)) s in all"
if [ "$status" -eq 0 ]; then echo "gpu_check: all passed on CUDA"; else echo "gpu_check: FAILURES above"; fi
exit "$status"
