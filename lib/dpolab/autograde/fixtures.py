"""The fixtures: what the hidden tests record when they run on the solution notebooks.

    python -m dpolab.autograde.fixtures SOURCE_DIR OUT.json

Runs every source notebook (the instructor's solutions) top to bottom in a fresh kernel of this
environment, as a student's notebook is run when it is graded (``NBGRADER_EXECUTION=autograde``,
``DPOLAB_RECORDS=1``, the CPU, one thread), and writes ``{notebook: {grade_id: [payload, ...]}}``
for every grade cell that sent records. This happens in the grader's own processes, once per
version of the solutions: no student code runs here, and the fixtures never reach a student's
kernel (:mod:`dpolab.autograde.records` explains why).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

from .records import ENV, cell_records

KERNEL_ENV = {
    ENV: "1",
    "NBGRADER_EXECUTION": "autograde",
    "DPOLAB_DEVICE": "cpu",
    "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def notebook_fixtures(path: Path, timeout: int = 600) -> dict[str, list[dict]]:
    """Run one solution notebook; ``{grade_id: records}``. Raises if a grade cell fails."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="dpolab-fixtures-") as work:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": work}},
            allow_errors=True,
        )
        client.execute(env={**os.environ, **KERNEL_ENV})
    out: dict[str, list[dict]] = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors and (meta.get("grade") or meta.get("solution") or not meta):
            where = meta.get("grade_id", "a cell")
            raise RuntimeError(
                f"{path.name}: {where} failed on the solution: {errors[0].ename}: {errors[0].evalue}"
            )
        if meta.get("grade"):
            records, _ = cell_records(cell.outputs)
            if records:
                out[meta["grade_id"]] = json.loads(json.dumps(records))
    return out


def build(source: Path, out: Path) -> dict[str, dict[str, list[dict]]]:
    fixtures = {p.stem: notebook_fixtures(p) for p in sorted(Path(source).glob("*.ipynb"))}
    tmp = Path(str(out) + ".tmp")
    tmp.write_text(json.dumps(fixtures))
    shutil.move(tmp, out)
    return fixtures


def main(argv: list[str] | None = None) -> int:
    source, out = (argv or sys.argv[1:])[:2]
    fixtures = build(Path(source), Path(out))
    for name, cells in fixtures.items():
        print(
            f"{name}: {sum(len(r['records']) for rs in cells.values() for r in rs)} records in {len(cells)} grade cells"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
