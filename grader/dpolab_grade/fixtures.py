"""The fixtures: what the hidden tests record when they run on the solution notebooks.

    python -m dpolab_grade.fixtures SOURCE_DIR OUT.json

Runs every source notebook (the instructor's solutions) top to bottom in a fresh kernel of this
environment, as a student's notebook is run when it is graded (``NBGRADER_EXECUTION=autograde``,
``DPOLAB_RECORDS=1``, the CPU, one thread), and writes ``{notebook: {grade_id: [payload, ...]}}``
for every grade cell that sent records. This happens in the grader's own processes, once per
version of the solutions: no student code runs here, and the fixtures never reach a student's
kernel (:mod:`dpolab.records` explains why).

:func:`cached_fixtures` is how plain ``nbgrader autograde`` (and formgrader) gets them: made on
first use from the course's source notebooks, kept under a hash of those files (a change to the
solutions makes new ones), one process at a time (a file lock).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

from .build import digest, run_module
from .judge import ENV, cell_records

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


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/dpolab/fixtures`` (``~/.cache/dpolab/fixtures``): outside any student's folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dpolab" / "fixtures"


def cached_fixtures(source: Path, cache: Path | None = None, log=None) -> Path:
    """The fixtures file of the source notebooks in ``source``, made now if not yet cached."""
    import fcntl

    source = Path(source).resolve()
    if not any(source.glob("*.ipynb")):
        raise FileNotFoundError(f"no source notebooks in {source}")
    cache = Path(cache) if cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    version = digest(source)[:16]
    path = cache / f"{source.name}-{version}.json"
    with open(cache / f"{source.name}-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another grader making the same fixtures: wait for it
        if not path.exists():
            if log is not None:
                log.info("dpolab: making the hidden tests' fixtures from %s (once) -> %s", source, path)
            run_module(cache, "the hidden tests failed on the solutions", __name__, str(source), str(path))
    return path


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
