"""Benchmark: wall time of each solution notebook, kernel start included.

The issue's target is at most 30 s per notebook on a 2-core CPU. Run:
``python benchmarks/bench_notebooks.py`` (uses the ``python3`` kernel of this environment).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions" / "lab_3_1_5_dpo"


def main() -> None:
    os.environ.setdefault("DPOLAB_DEVICE", "cpu")
    print(f"{'notebook':<28}{'seconds':>9}   (kernel start + every cell, {os.cpu_count()} CPUs)")
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
        print(f"{path.name:<28}{time.perf_counter() - start:>9.2f}")


if __name__ == "__main__":
    main()
