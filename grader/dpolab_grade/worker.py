"""One student's notebooks, graded one after another in one process.

    python -m dpolab_grade.worker UNIT/spec.json   ->   UNIT/result.json

``dpolab-grade`` runs it as a fork of a process that has imported this module (the runner's
fork server, :func:`dpolab_grade.runner.run_unit`), in a new session with this ``HOME`` and
``TMPDIR``: the same as the command above, without paying nbgrader's imports per student, nor
the compilation of the feedback's templates (:class:`CompiledTemplates`).

The student's kernels run in one sandbox (:mod:`dpolab_grade.sandbox`: limits, bubblewrap, no
network, the student package), started once: a *zygote* (:mod:`dpolab_grade.zygote`) imports
torch, numpy and ipykernel there, and each notebook's kernel is a fork of it, so the student
pays those imports once rather than once per notebook. The kernels share one empty work folder,
as the student's notebooks share theirs.

Each notebook is graded in its own scratch course: a copy of the grader's gradebook, an empty
source folder (the solutions are never there) and that one submitted notebook. nbgrader's
``autograde`` runs with ``OverwriteCells.add_missing_cells`` (deleted grade cells come back from
the gradebook, edited ones are restored by checksum), a per-cell timeout and the output cap;
``generate_feedback`` runs with hidden tests and their traceback lines removed. While a notebook
runs, the watchdog kills the kernel's tree past the process or memory limit, and a timer kills it
at the notebook's wall-clock limit; the next notebook gets a new zygote. Each notebook's log goes
to its own file (``spec["logs"]``), and ``result.json`` is rewritten after each notebook (the
runner kills this process only past the sum of the notebooks' limits).

The kernel's transport (``spec["transport"]``): ``ipc`` (ZeroMQ over Unix sockets in a folder
bound into the sandbox, which then has no network) or ``tcp`` on loopback (network shared).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import resource
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

from .build import skip_iri_formats

# Imported here, once: the runner forks each student's worker from a process that imported this
# module (runner.py), so these imports (about 0.9 s of CPU) are not paid again per student.
skip_iri_formats()  # before nbformat is imported: a worker validates no IRI (1 s of CPU per process)
# what grading a notebook imports on the way (nbclient's kernelspec, the database's dialect, the
# feedback's Markdown and syntax highlighting): imported once too
PRELOAD = [
    "IPython", "IPython.lib.lexers", "ipykernel.kernelspec", "ipython_pygments_lexers", "codeop", "difflib",
    "pygments.lexers.python", "pygments.lexers.html", "pygments.styles.default", "sqlalchemy.dialects.sqlite",
    "mistune.plugins.def_list", "mistune.plugins.task_lists", "mistune.plugins.url", "jinja2.ext",
    "nbgrader.converters",  # the apps NbGraderAPI runs (Autograde, GenerateFeedback)
]  # fmt: skip
for _name in PRELOAD:
    importlib.import_module(_name)
import jinja2  # noqa: E402
import nbformat  # noqa: E402
from nbconvert.exporters import HTMLExporter  # noqa: E402
from nbgrader.api import Gradebook  # noqa: E402
from nbgrader.apps import NbGraderAPI  # noqa: E402
from nbgrader.converters import GenerateFeedback  # noqa: E402
from nbgrader.coursedir import CourseDirectory  # noqa: E402
from traitlets.config import Config  # noqa: E402

from .pipeline import autograde_preprocessors, feedback_preprocessors  # noqa: E402
from .preprocessors import LimitOutputSize, sanitize_preprocessors  # noqa: E402
from .sandbox import Limits  # noqa: E402
from .student_sandbox import StudentSandbox  # noqa: E402
from .watchdog import Watchdog, become_subreaper, kill_tree  # noqa: E402


class CompiledTemplates(jinja2.BytecodeCache):
    """Jinja's compiled templates, kept in memory.

    nbconvert compiles the feedback's templates (nbgrader's page and the eight templates of
    nbconvert's classic notebook it extends and imports) again for every notebook: about 0.1 s of
    CPU each time. Here they are compiled once, in the process every worker is forked from. Jinja
    checks each template's source against the checksum stored with its code, and compiles again
    on a mismatch.
    """

    def __init__(self):
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.key in self.code:
            bucket.bytecode_from_string(self.code[bucket.key])

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


TEMPLATES = CompiledTemplates()


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback exporter (HTML with nbgrader's ``feedback`` template), whose templates
    come compiled from :data:`TEMPLATES`: the same page, byte for byte."""

    def _create_environment(self) -> jinja2.Environment:
        environment = super()._create_environment()
        environment.bytecode_cache = TEMPLATES
        return environment


def compile_feedback_templates() -> None:
    """Fill :data:`TEMPLATES`: the feedback of an empty notebook, with nbgrader's configuration."""
    feedback = GenerateFeedback(coursedir=CourseDirectory(), config=Config())
    exporter = FeedbackExporter(parent=feedback, config=feedback.config)
    scores = {"notebook": "", "score": 0, "max_score": 0, "late_penalty": 0}  # what GetGrades adds
    exporter.from_notebook_node(nbformat.v4.new_notebook(), resources={"nbgrader": scores})


compile_feedback_templates()

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


def config(spec: dict, limits: Limits, course: Path, verdicts: Path):
    c = Config()
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.source_directory = "source"
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    c.Execute.timeout = limits.cell_timeout
    c.Execute.interrupt_on_timeout = True
    c.Execute.startup_timeout = 120
    c.OverwriteCells.add_missing_cells = True
    c.RecordingExecute.sandbox = "given"  # the worker's kernelspec (Student) is the sandbox
    c.LimitOutputSize.max_chars = limits.output_chars
    c.JudgeRecords.fixtures = spec["fixtures"]
    c.JudgeRecords.fixtures_sha256 = spec.get("fixtures_sha256", "")
    c.JudgeRecords.verdicts = str(verdicts)
    if spec.get("ipc_dir") and spec.get("transport") == "ipc":  # the kernel's sockets there, not TCP ports
        c.KernelManager.transport = "ipc"
        c.KernelManager.ip = str(Path(spec["ipc_dir"]) / "k")
    # the same pipelines as plain nbgrader with the judge (pipeline.use_judge), plus the output cap
    c.Autograde.sanitize_preprocessors = sanitize_preprocessors()
    c.Autograde.autograde_preprocessors = autograde_preprocessors(LimitOutputSize)
    c.GenerateFeedback.preprocessors = feedback_preprocessors(LimitOutputSize)
    c.GenerateFeedback.exporter_class = FeedbackExporter  # HTMLExporter, with compiled templates
    return c


def student_sandbox(spec: dict, limits: Limits) -> StudentSandbox:
    """The student's sandbox (its kernelspec first on ``JUPYTER_PATH``, its runtime folder nbgrader's)."""
    unit = Path(spec["unit"])
    student = StudentSandbox(
        unit,
        python=spec["kernel_python"],
        limits=limits,
        use_bwrap=spec["sandbox"],
        transport=spec.get("transport", "tcp"),
        forbidden=[Path(p) for p in spec["forbidden"]],
        student_package=Path(spec["student_package"]) if spec.get("student_package") else None,
    )
    spec["ipc_dir"] = str(student.ipc)
    os.environ["JUPYTER_PATH"] = str(student.jupyter)
    os.environ["JUPYTER_RUNTIME_DIR"] = str(student.runtime)
    os.environ["JUPYTER_CONFIG_DIR"] = str(unit / "jupyter-config")
    os.environ["JUPYTER_DATA_DIR"] = str(unit / "jupyter-data")
    return student


class WallClock:
    """Kills the kernel's tree when the notebook runs past ``seconds`` (the worker goes on)."""

    def __init__(self, seconds: int):
        self.reason: str | None = None
        self.timer = threading.Timer(seconds, self._expire, args=(seconds,))
        self.timer.daemon = True

    def _expire(self, seconds: int) -> None:
        self.reason = f"the notebook ran longer than the {seconds} s limit"
        print(f"wall clock: {self.reason}: killing the kernel", flush=True)
        kill_tree(os.getpid())

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()


def grade_notebook(spec: dict, nb: str, student: StudentSandbox, limits: Limits, cpu: dict) -> dict:
    a, sid = spec["assignment"], spec["student_id"]
    scratch = Path(spec["unit"]) / "notebooks" / nb
    course = scratch / "course"
    (course / "source" / a).mkdir(parents=True, exist_ok=True)
    shutil.copy(spec["gradebook"], course / "gradebook.db")
    submitted = course / "submitted" / sid / a
    submitted.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(spec["unit"]) / "submissions" / f"{nb}.ipynb", submitted / f"{nb}.ipynb")
    verdicts = scratch / "verdicts.jsonl"
    api = NbGraderAPI(config=config(spec, limits, course, verdicts))
    student.ensure_zygote()
    watchdog = Watchdog(limits.max_processes, limits.memory_mb, cpu=cpu)
    watchdog.start()
    t0 = time.perf_counter()
    try:
        with WallClock(limits.notebook_timeout) as clock:
            result = api.autograde(a, sid, force=True, create=True)
    finally:
        watchdog.stop()
    log = result.get("log", "") + result.get("error", "")
    print(log, flush=True)
    print(f"watchdog: at most {watchdog.peak_processes} processes, {watchdog.peak_mb:.0f} MB", flush=True)
    killed = watchdog.reason or clock.reason  # whatever nbgrader made of it, this is why
    if killed:
        return {"status": "ungradable", "reason": killed, "grades": {}}
    graded = course / "autograded" / sid / a / f"{nb}.ipynb"
    if not result["success"] or not graded.exists():
        return {"status": "ungradable", "reason": explain(log, limits), "grades": {}}
    t1 = time.perf_counter()
    feedback = api.generate_feedback(a, sid, force=True)
    print(feedback.get("log", "") + feedback.get("error", ""), flush=True)
    print(
        f"timing: autograde {t1 - t0:.2f} s, feedback {time.perf_counter() - t1:.2f} s; "
        f"cpu: the student's kernels so far {watchdog.cpu_seconds:.2f} s (zygote included)",
        flush=True,
    )
    html = course / "feedback" / sid / a / f"{nb}.html"
    if not feedback["success"] or not html.exists():
        return {"status": "ungradable", "reason": "nbgrader could not write the feedback", "grades": {}}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        notebook = gb.find_submission_notebook(nb, a, sid)
        # an answer graded by hand (a solution cell that is also graded) waits for the instructor:
        # None (an unchanged answer is 0, and needs no one)
        manual = {c.name for c in notebook.notebook.solution_cells}
        grades = {
            g.name: None if g.name in manual and g.needs_manual_grade else g.score
            for g in notebook.grades
            if g.max_score > 0
        }
    return {
        "status": "graded",
        "reason": "",
        "grades": grades,
        "feedback": str(html),
        "autograded": str(graded),
        "failed": failed(verdicts),
    }


def failed(path: Path) -> dict[str, list[dict]]:
    """``{grade_id: [failed promise, ...]}`` as the judge wrote them (cells that passed: ``[]``)."""
    if not path.exists():
        return {}
    verdicts = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {v["cell"]: v["failures"] for v in verdicts}


class LogTo:
    """Everything this process and its children write goes to ``path`` while inside (file descriptors 1 and 2)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        self.file = open(self.path, "a")
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self.file.close()


def main(argv: list[str] | None = None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    limits = Limits(**spec["limits"])
    become_subreaper()
    results: dict[str, dict] = {}
    cpu: dict[int, float] = {}  # CPU seconds of each process of the sandbox, as last seen
    student = None
    try:
        student = student_sandbox(spec, limits)
        for nb in spec["notebooks"]:
            with LogTo(spec["logs"][nb]):
                before = resource.getrusage(resource.RUSAGE_SELF)
                try:
                    results[nb] = grade_notebook(spec, nb, student, limits, cpu)
                except Exception:  # reported, never raised: the run goes on
                    traceback.print_exc()
                    results[nb] = {"status": "ungradable", "reason": "the grader failed: "
                                   + traceback.format_exc(limit=1)[-300:], "grades": {}}  # fmt: skip
                now = resource.getrusage(resource.RUSAGE_SELF)
                print(
                    f"cpu: worker {now.ru_utime + now.ru_stime - before.ru_utime - before.ru_stime:.2f} s",
                    flush=True,
                )
            (spec_path.parent / "result.json").write_text(json.dumps(results))
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        results["cpu"] = {
            "worker": round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 2),
            "kernels": round(sum(cpu.values()), 2),
        }
        (spec_path.parent / "result.json").write_text(json.dumps(results))
    except Exception:
        traceback.print_exc()
    finally:
        if student is not None:
            student.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
