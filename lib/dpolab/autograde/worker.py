"""One notebook of one student, graded in its own scratch course (run as a subprocess).

    python -m dpolab.autograde.worker UNIT/spec.json   ->   UNIT/result.json

The scratch course holds a copy of the grader's gradebook, an empty source folder (the
solutions are never there) and this one submitted notebook. nbgrader's ``autograde`` runs with
``OverwriteCells.add_missing_cells`` (deleted grade cells come back from the gradebook, edited
ones are restored by checksum), a per-cell timeout and the output cap; ``generate_feedback``
runs with hidden tests and their traceback lines removed. The runner kills this process (and
the kernel with it) when the notebook's wall-clock limit passes; while the kernel runs, this
process's watchdog kills it past the process or memory limit.

The kernel's transport (``spec["transport"]``): ``ipc`` (ZeroMQ over Unix sockets in a folder
bound into the sandbox, which then has no network) or ``tcp`` on loopback (network shared).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import traceback
from pathlib import Path

from .sandbox import Limits, write_kernelspec
from .watchdog import Watchdog, become_subreaper

SOCKET_PATH_MAX = 100  # a Unix socket's path: 107 bytes on Linux; "-NNNNN" follows the prefix

REASONS = [
    # (pattern in nbgrader's log, reason in plain words); the first that matches wins
    (r"DeadKernelError|Kernel died|kernel died", "the kernel died while running the notebook "
     "(os._exit, a crash, or the memory limit of {memory_mb} MB)"),
    (r"CellTimeoutError|TimeoutError|UnresponsiveKernelError|Timeout waiting",
     "a cell ran past the {cell_timeout} s limit and could not be interrupted "
     "(e.g. a loop that catches KeyboardInterrupt)"),
    (r"MemoryError", "the notebook ran out of memory (limit {memory_mb} MB)"),
]  # fmt: skip


def explain(log: str, limits: Limits) -> str:
    for pattern, reason in REASONS:
        if re.search(pattern, log):
            return reason.format(**vars(limits))
    last = [line for line in log.strip().splitlines() if "ERROR" in line or "Error" in line]
    return "nbgrader could not autograde it: " + (last[-1].strip()[:300] if last else "unknown error")


def config(spec: dict, limits: Limits):
    from traitlets.config import Config

    from .pipeline import autograde_preprocessors, feedback_preprocessors
    from .preprocessors import LimitOutputSize, sanitize_preprocessors

    course = Path(spec["unit"]) / "course"
    c = Config()
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.source_directory = "source"
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    c.Execute.timeout = limits.cell_timeout
    c.Execute.interrupt_on_timeout = True
    c.Execute.startup_timeout = 120
    c.OverwriteCells.add_missing_cells = True
    c.LimitOutputSize.max_chars = limits.output_chars
    c.JudgeRecords.fixtures = spec["fixtures"]
    c.JudgeRecords.verdicts = str(Path(spec["unit"]) / "verdicts.jsonl")
    if spec.get("ipc_dir"):  # nbclient's kernel manager: sockets there, not TCP ports
        c.KernelManager.transport = "ipc"
        c.KernelManager.ip = str(Path(spec["ipc_dir"]) / "k")
    # the same pipelines as plain nbgrader with the judge (pipeline.use_judge), plus the output cap
    c.Autograde.sanitize_preprocessors = sanitize_preprocessors()
    c.Autograde.autograde_preprocessors = autograde_preprocessors(LimitOutputSize)
    c.GenerateFeedback.preprocessors = feedback_preprocessors(LimitOutputSize)
    return c


def setup(spec: dict, limits: Limits) -> Path:
    """The scratch course; returns the kernel's work folder."""
    unit = Path(spec["unit"])
    course = unit / "course"
    a, sid, nb = spec["assignment"], spec["student_id"], spec["notebook"]
    (course / "source" / a).mkdir(parents=True, exist_ok=True)
    shutil.copy(spec["gradebook"], course / "gradebook.db")
    submitted = course / "submitted" / sid / a
    submitted.mkdir(parents=True, exist_ok=True)
    shutil.copy(unit / "submission.ipynb", submitted / f"{nb}.ipynb")
    notebook_dir = course / "autograded" / sid / a
    notebook_dir.mkdir(parents=True, exist_ok=True)
    work = unit / "work"
    runtime = unit / "runtime"
    for d in (work, runtime):
        d.mkdir(exist_ok=True)
    os.chmod(work, 0o777)  # the kernel's (sandboxed) user writes here
    spec["ipc_dir"] = ipc_folder(spec)
    argv = write_kernelspec(
        unit / "jupyter",
        python=spec["kernel_python"],
        limits=limits,
        sandbox=spec["sandbox"],
        work=work,
        notebook_dir=notebook_dir,
        runtime=runtime,
        forbidden=[Path(p) for p in spec["forbidden"]],
        student_package=Path(spec["student_package"]) if spec.get("student_package") else None,
        ipc_dir=Path(spec["ipc_dir"]) if spec["ipc_dir"] else None,
    )
    os.environ["JUPYTER_PATH"] = str(unit / "jupyter")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime)
    os.environ["JUPYTER_CONFIG_DIR"] = str(unit / "jupyter-config")
    os.environ["JUPYTER_DATA_DIR"] = str(unit / "jupyter-data")
    print("kernel:", " ".join(argv), flush=True)
    return work


def ipc_folder(spec: dict) -> str | None:
    """The folder of the kernel's ipc sockets (the unit's ``runtime/ipc``, or a shorter one under
    /tmp when that path is too long for a Unix socket); None: the kernel speaks TCP."""
    if spec.get("transport", "tcp") != "ipc":
        return None
    folder = Path(spec["unit"]) / "runtime" / "ipc"
    if len(str(folder / "k-65535")) > SOCKET_PATH_MAX:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="dpolab-ipc-", dir="/tmp"))
        spec["ipc_cleanup"] = str(folder)
    if len(str(folder / "k-65535")) > SOCKET_PATH_MAX:  # pragma: no cover
        print(f"transport: tcp (the socket path {folder} is too long for ipc)", flush=True)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o777)  # the kernel's (sandboxed) user creates its sockets here
    return str(folder)


def grade(spec: dict) -> dict:
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI

    limits = Limits(**spec["limits"])
    setup(spec, limits)
    a, sid, nb = spec["assignment"], spec["student_id"], spec["notebook"]
    course = Path(spec["unit"]) / "course"
    api = NbGraderAPI(config=config(spec, limits))
    become_subreaper()
    watchdog = Watchdog(limits.max_processes, limits.memory_mb)
    watchdog.start()
    try:
        result = api.autograde(a, sid, force=True, create=True)
    finally:
        watchdog.stop()
        if spec.get("ipc_cleanup"):
            shutil.rmtree(spec["ipc_cleanup"], ignore_errors=True)
    log = result.get("log", "") + result.get("error", "")
    print(log, flush=True)
    print(f"watchdog: at most {watchdog.peak_processes} processes, {watchdog.peak_mb:.0f} MB", flush=True)
    if watchdog.reason:  # the kernel was killed: whatever nbgrader made of it, this is why
        return {"status": "ungradable", "reason": watchdog.reason, "grades": {}}
    graded = course / "autograded" / sid / a / f"{nb}.ipynb"
    if not result["success"] or not graded.exists():
        return {"status": "ungradable", "reason": explain(log, limits), "grades": {}}
    feedback = api.generate_feedback(a, sid, force=True)
    print(feedback.get("log", "") + feedback.get("error", ""), flush=True)
    html = course / "feedback" / sid / a / f"{nb}.html"
    if not feedback["success"] or not html.exists():
        return {"status": "ungradable", "reason": "nbgrader could not write the feedback", "grades": {}}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        notebook = gb.find_submission_notebook(nb, a, sid)
        grades = {g.name: g.score for g in notebook.grades if g.max_score > 0}
    return {
        "status": "graded",
        "reason": "",
        "grades": grades,
        "feedback": str(html),
        "autograded": str(graded),
        "failed": failed(spec),
    }


def failed(spec: dict) -> dict[str, list[dict]]:
    """``{grade_id: [failed promise, ...]}`` as the judge wrote them (cells that passed: ``[]``)."""
    path = Path(spec["unit"]) / "verdicts.jsonl"
    if not path.exists():
        return {}
    verdicts = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {v["cell"]: v["failures"] for v in verdicts}


def main(argv: list[str] | None = None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    try:
        result = grade(spec)
    except Exception:  # reported, never raised: the run goes on
        traceback.print_exc()
        result = {"status": "ungradable", "reason": "the grader failed: " + traceback.format_exc(limit=1)[-300:],
                  "grades": {}}  # fmt: skip
    (spec_path.parent / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
