"""Benchmark: wall time and peak memory (RSS) of each solution notebook, kernel start included.

Targets: at most the time each notebook's issue names on a 2-core CPU, and a peak RSS under
1.5 GB (Binder gives 2 GB of RAM). Run ``python benchmarks/bench_notebooks.py`` (uses the
``python3`` kernel of this environment; ``DPOLAB_QUICK=1`` measures the quick mode of the
long notebooks, as the Binder and browser tests run them). Every notebook in solutions/ is
measured, notebooks added later included.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"
# The kernel's own peak RSS in kB: VmHWM of its memory map. (Not ru_maxrss: Linux carries that
# over exec from the process that started the kernel, whose size would be counted too.)
PROBE = (
    "import re as _re\n"
    "with open('/proc/self/status') as _f:\n"
    "    print('PEAK_RSS_KB', _re.search(r'VmHWM:\\s+(\\d+)', _f.read()).group(1))"
)


def main() -> None:
    os.environ.setdefault("DPOLAB_DEVICE", "cpu")
    quick = os.environ.get("DPOLAB_QUICK", "") not in ("", "0")
    print(f"{'notebook':<42}{'seconds':>9}{'peak RSS MB':>13}   ({os.cpu_count()} CPUs, quick mode {quick})")
    for path in sorted(SOLUTIONS.glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(PROBE))
        start = time.perf_counter()
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
        seconds = time.perf_counter() - start
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
        peak_mb = int(text.split()[-1]) / 1024
        print(f"{path.parent.name + '/' + path.name:<42}{seconds:>9.2f}{peak_mb:>13.0f}")


if __name__ == "__main__":
    main()
