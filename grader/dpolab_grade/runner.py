"""The plan of a run: what to (re)grade, in parallel, each notebook under a wall-clock limit.

A *unit* is one student's notebooks. Units run as separate worker processes
(:mod:`dpolab_grade.worker`, each a fork of one process that imported it), at most ``jobs`` at a
time; each grades its notebooks one after another, each in its own scratch course under a
temporary folder, removed afterwards (each notebook's log is kept in ``OUT/logs/``). A notebook
that passes ``notebook_timeout`` seconds is killed with its kernel and reported, and the worker
goes on with the next; a worker still running past the sum of its notebooks' limits is killed.
The main thread alone writes results, the gradebook and the reports.

Idempotent: ``OUT/results/<student_id>.json`` records a hash of the student's files and of the
grader (solutions, limits, sandbox); a student whose hash has not changed is not regraded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import isolation
from .build import nbgrader_env
from .classroom import format_time, read_course
from .course import GraderCourse, prepare_course
from .gradebook import add_students, ensure_gradebook, merge_student
from .inputs import EXCHANGE_FILES, STUDENT_ID, Submission, find_submissions, match_notebooks
from .isolation import IsolationError as IsolationError  # noqa: F401  (raised by run, for callers)
from .isolation import resolve_transport
from .lms import read_roster
from .reports import write_reports
from .sandbox import Limits
from .shards import share, write_manifest

log = logging.getLogger("dpolab.grade")
DOOR = isolation.Door("--sandbox {mode}", "--sandbox none", "--kernel-python", "auto")  # the messages
VERSION = "2"
MISSING = "missing"  # a notebook's status when the student did not hand it in


@dataclass
class Options:
    submissions: Path
    out: Path
    solutions: Path
    assignment: str = "lab_3_1_5_dpo"
    jobs: int = 1
    force: bool = False
    limits: Limits = field(default_factory=Limits)
    sandbox: str = "auto"  # auto | bwrap | none
    kernel_python: str = sys.executable
    kernel_package: str = "student"  # student: the kernel sees dpolab without the reference | full
    progress: bool = True
    shard: tuple[int, int] | None = None  # (K, N): grade shard K of N only (shards.py)
    course_dir: Path | None = None  # the nbgrader course: due date, late policy, exchange (classroom.py)
    due: str | None = None  # --due: overrides the course's due date
    roster: Path | None = None  # --roster: every enrolled student gets a row (lms.py)


@dataclass
class Unit:
    """One student's notebooks to grade: ``{notebook: the file's bytes}``."""

    student_id: str
    files: dict[str, bytes]


def _hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def kernel_package(opts: Options, use_bwrap: bool) -> tuple[Path | None, str]:
    """The student package the kernel imports as ``dpolab`` (None: the full one) and a line for
    the log; built once per version of dpolab under ``OUT/.grader`` (:func:`isolation.kernel_package`)."""
    if opts.kernel_package == "full":
        return None, (
            "WARNING: kernel package: the full dpolab (--kernel-package full): the reference is importable"
        )
    return isolation.kernel_package(opts.out / ".grader", opts.kernel_python, use_bwrap, door=DOOR)


def run_unit(
    unit: Unit,
    opts: Options,
    course: GraderCourse,
    use_bwrap: bool,
    scratch: Path,
    student_package: Path | None = None,
    transport: str = "tcp",
) -> dict[str, dict]:
    """Grade one student's notebooks in a worker process; ``{notebook: result}``; never raises."""
    folder = Path(tempfile.mkdtemp(prefix=f"{unit.student_id}-", dir=scratch))
    (folder / "submissions").mkdir()
    for nb, data in unit.files.items():
        (folder / "submissions" / f"{nb}.ipynb").write_bytes(data)
    logs = opts.out / "logs" / unit.student_id
    logs.mkdir(parents=True, exist_ok=True)
    forbidden = [opts.solutions, opts.out, opts.submissions, scratch, Path.home()]
    spec = {
        "unit": str(folder),
        "gradebook": str(course.gradebook),
        "fixtures": str(course.fixtures),
        "fixtures_sha256": course.fixtures_sha256,
        "assignment": opts.assignment,
        "student_id": unit.student_id,
        "notebooks": sorted(unit.files),
        "logs": {nb: str(logs / f"{nb}.log") for nb in unit.files},
        "kernel_python": opts.kernel_python,
        "sandbox": use_bwrap,
        "student_package": str(student_package) if student_package else None,
        "transport": transport,
        "forbidden": [str(Path(p).resolve()) for p in forbidden],
        "limits": asdict(opts.limits),
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    for path in spec["logs"].values():
        Path(path).write_text("")
    env = nbgrader_env()
    env["HOME"] = str(folder)  # no instructor config (~/.jupyter, ~/.ipython) reaches the grader
    # nbclient writes the kernel's connection file with tempfile: into the folder the sandbox shows
    (folder / "runtime").mkdir()
    env["TMPDIR"] = str(folder / "runtime")
    # each notebook has its wall-clock limit in the worker; this is the backstop for the worker itself
    backstop = opts.limits.notebook_timeout * len(unit.files) + 120
    proc = _workers().Process(target=_worker_main, args=(str(folder / "spec.json"), str(folder), env))
    proc.start()
    proc.join(timeout=backstop)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a kernel left behind, if any
    except (ProcessLookupError, PermissionError):
        pass
    try:
        done = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        done = {}
    if (
        "cpu" in done
    ):  # where the time went: the worker (nbgrader) and the kernels (the zygote's imports included)
        log.info(
            "%s: cpu seconds: worker %.2f, kernels %.2f",
            unit.student_id,
            done["cpu"]["worker"],
            done["cpu"]["kernels"],
        )
    results = {}
    for nb in unit.files:
        result = done.get(nb) or {
            "status": "ungradable",
            "reason": f"the grader stopped before this notebook was graded (see {logs / f'{nb}.log'})",
            "grades": {},
        }
        # kept in nbgrader's course layout, relative to OUT: formgrader shows them, release_feedback sends them
        for key, suffix in (("feedback", ".html"), ("autograded", ".ipynb")):
            if result.get(key):
                rel = Path(key) / unit.student_id / opts.assignment / f"{nb}{suffix}"
                (opts.out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(result[key], opts.out / rel)
                result[key] = rel.as_posix()
        results[nb] = result
    shutil.rmtree(folder, ignore_errors=True)  # the unit's scratch folder (not a folder of OUT's)
    return results


def _workers():
    """Where the workers come from: multiprocessing's fork server, which has imported
    :mod:`dpolab_grade.worker` (nbgrader, nbconvert: about 0.9 s of CPU) once for the whole run;
    each student's worker is a fork of it, a process of its own (its own session, memory, limits)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dpolab_grade.runner", "dpolab_grade.worker"])
    return context


def _worker_main(spec: str, cwd: str, env: dict[str, str]) -> None:
    """In the forked worker: what ``python -m dpolab_grade.worker SPEC`` run in ``cwd`` with ``env``
    would do, in a new session, with nothing on its standard streams (it writes each notebook's log
    itself)."""
    os.setsid()  # its own process group: killed with its kernel
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # TMPDIR is read again: the kernels' connection files go into the sandbox's view

    from . import worker

    worker.main([spec])


def _finish(sub: Submission, key: str, notebooks: dict, notes: list[str], course: GraderCourse) -> dict:
    """One student's row. ``status``: ``graded``; ``incomplete`` (notebooks not handed in score 0,
    the rest is graded); ``ungradable`` (a notebook could not be graded, or the student id is not
    usable: the instructor acts)."""
    if not STUDENT_ID.match(sub.student_id):
        # nothing of theirs was read (inputs.find_submissions): not "not handed in", a folder to rename
        why = "nothing was read from it"
        notebooks = {nb: {"status": "ungradable", "reason": why, "grades": {}} for nb in notebooks}
        return {
            "student_id": sub.student_id,
            "key": key,
            "score": 0,
            "status": "ungradable",
            "reason": "; ".join([*sub.problems, *notes]),
            "notebooks": notebooks,
        }
    cells = course.grade_cells()
    score = sum(
        notebooks[c.notebook]["grades"].get(c.name) or 0  # None: awaiting a manual grade
        for c in cells
        if notebooks.get(c.notebook, {}).get("status") == "graded"
    )
    bad = [f"{nb}: {r['reason']}" for nb, r in sorted(notebooks.items()) if r["status"] == "ungradable"]
    missing = [f"{nb}.ipynb" for nb, r in sorted(notebooks.items()) if r["status"] == MISSING]
    reason = "; ".join(bad + ([f"not handed in (0 points): {', '.join(missing)}"] if missing else []))
    reason = "; ".join(filter(None, [reason, *sub.problems, *notes]))
    return {
        "student_id": sub.student_id,
        "key": key,
        "score": score,
        "status": "ungradable" if bad else ("incomplete" if missing else "graded"),
        "reason": reason,
        "notebooks": notebooks,
    }


def count_statuses(results: list[dict]) -> str:
    """``"5 graded, 1 incomplete, 0 ungradable"`` (and ``, 2 missing`` with a roster)."""
    statuses = ["graded", "incomplete", "ungradable"] + (
        ["missing"] * any(r["status"] == "missing" for r in results)
    )
    return ", ".join(f"{sum(r['status'] == s for r in results)} {s}" for s in statuses)


def keep_submission(out: Path, assignment: str, sub: Submission) -> None:
    """The files graded, in nbgrader's layout in OUT: ``submitted/`` (formgrader counts the
    submissions there) and the exchange files (``timestamp.txt``, ``submission_secret.txt``)
    beside the graded notebooks and the feedback, where ``nbgrader release_feedback`` reads them."""
    if not STUDENT_ID.match(sub.student_id):
        return  # not a name to put in a path: the row says why
    folder = out / "submitted" / sub.student_id / assignment
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in sub.files.items():
        (folder / name).write_bytes(data)
    for place in ("submitted", "autograded", "feedback"):
        for name in EXCHANGE_FILES:
            if name in sub.exchange and (out / place / sub.student_id / assignment).is_dir():
                (out / place / sub.student_id / assignment / name).write_bytes(sub.exchange[name])


def roster_of(opts: Options) -> list[dict] | None:
    """The enrolled students: ``--roster`` (kept in OUT/roster.json for the next run and
    ``dpolab-grade export``), else the one a previous run kept, else None."""
    kept = opts.out / "roster.json"
    if opts.roster is not None:
        students = read_roster(opts.roster)
        kept.write_text(json.dumps(students, indent=1))
        return students
    return json.loads(kept.read_text()) if kept.exists() else None


def run(opts: Options) -> list[dict]:
    """Grade every submission under ``opts.submissions``; return one result per student.

    Raises IsolationError, before anything is written in ``opts.out``, when the sandbox asked for
    (``auto`` or ``bwrap``) cannot be had."""
    out = opts.out
    sandbox = isolation.resolve_sandbox(opts.sandbox, door=DOOR)  # first: a refusal leaves OUT untouched
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "grading.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return _run(opts, *sandbox)
    finally:
        log.removeHandler(handler)
        handler.close()


def _run(opts: Options, use_bwrap: bool, isolation_line: str) -> list[dict]:
    out = opts.out
    course = prepare_course(opts.solutions, opts.assignment, out / ".grader")
    log.info(
        "fixtures: %s (sha256 %s, checked before each use)", course.fixtures, course.fixtures_sha256[:12]
    )
    classroom = read_course(opts.course_dir, opts.assignment, opts.due)
    roster = roster_of(opts)
    student_package, package_line = kernel_package(opts, use_bwrap)
    transport, network = resolve_transport(use_bwrap)
    due = (
        f"due {format_time(classroom.due)} (from {classroom.due_from}); late work: {classroom.policy}"
        if classroom.due
        else "no due date (--due, or the course's gradebook: nbgrader db assignment add NAME --duedate ...)"
    )
    for line in (isolation_line, package_line, network, due):
        log.log(logging.WARNING if line.startswith("WARNING") else logging.INFO, "%s", line)
        print(line, file=sys.stderr)
    limits = {k: v for k, v in asdict(opts.limits).items() if k != "threads"}  # --jobs changes no grade
    # the student package by its place in OUT (its name is its content's hash): a copied or merged OUT
    # (dpolab-grade merge) keeps its results
    package = student_package and student_package.relative_to(out)
    grader_key = _hash(
        VERSION, course.digest, json.dumps(limits), str(use_bwrap), opts.kernel_python, str(package)
    )
    marker = out / ".grader" / "current"
    gradebook = out / "gradebook.db"
    if not marker.exists() or marker.read_text() != course.digest:
        gradebook.unlink(missing_ok=True)  # the solutions changed: everyone is regraded against them
        marker.write_text(course.digest)
    ensure_gradebook(gradebook, course.gradebook, classroom)
    if roster:
        add_students(gradebook, roster)
    expected = {nb: course.cell_ids(nb) for nb in course.notebooks}
    results_dir = out / "results"
    results_dir.mkdir(exist_ok=True)

    everyone = find_submissions(opts.submissions, opts.assignment)
    subs = share(out, everyone, opts.shard)  # --shard K/N: this shard's students only
    results: dict[str, dict] = {}
    pending: dict[str, tuple] = {}
    units: list[Unit] = []
    by_id = {sub.student_id: sub for sub in subs}
    for sub in subs:
        key = _hash(grader_key, sub.digest())
        previous = results_dir / f"{sub.student_id}.json"
        if not opts.force and previous.exists() and json.loads(previous.read_text()).get("key") == key:
            result = json.loads(previous.read_text())
            before = json.dumps(result, sort_keys=True)
            classroom.apply(result, sub.timestamp)  # a new due date or policy: new penalties, no regrade
            if json.dumps(result, sort_keys=True) != before:
                merge_student(gradebook, opts.assignment, result)
                previous.write_text(json.dumps(result, indent=1))
            results[sub.student_id] = result
            continue
        files, problems, missing, notes = match_notebooks(sub, expected)
        notebooks = {
            nb: {"status": "ungradable", "reason": why, "grades": {}} for nb, why in problems.items()
        }
        zeros = {nb: {c.name: 0 for c in course.grade_cells() if c.notebook == nb} for nb in missing}
        notebooks.update(
            {nb: {"status": MISSING, "reason": "not handed in", "grades": zeros[nb]} for nb in missing}
        )
        for folder in ("feedback", "autograded", "submitted"):
            shutil.rmtree(out / folder / sub.student_id, ignore_errors=True)
        pending[sub.student_id] = (sub, key, notebooks, notes, len(files))
        if files:
            units.append(Unit(sub.student_id, files))
    log.info(
        "%d students: %d unchanged, %d to grade (%d notebooks), %d jobs",
        len(subs), len(results), len(pending), sum(len(u.files) for u in units), opts.jobs,
    )  # fmt: skip

    def finish(student_id: str) -> None:
        sub, key, notebooks, notes, _ = pending.pop(student_id)
        result = classroom.apply(_finish(sub, key, notebooks, notes, course), sub.timestamp)
        keep_submission(out, opts.assignment, by_id[student_id])
        merge_student(gradebook, opts.assignment, result)
        (results_dir / f"{student_id}.json").write_text(json.dumps(result, indent=1))
        results[student_id] = result
        level = logging.WARNING if result["status"] == "ungradable" else logging.INFO
        log.log(level, "%s: %s %g/%g %s", student_id, result["status"], result["score"], course.max_score,
                result["reason"])  # fmt: skip

    for student_id in [s for s, p in pending.items() if p[4] == 0]:
        finish(student_id)  # nothing to run
    scratch = Path(tempfile.mkdtemp(prefix="dpolab-grade-"))
    try:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=sum(len(u.files) for u in units), unit="notebook", disable=not opts.progress, desc="grading"
        )
        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            futures = {
                pool.submit(run_unit, u, opts, course, use_bwrap, scratch, student_package, transport): u
                for u in units
            }
            for future in as_completed(futures):
                unit = futures[future]
                pending[unit.student_id][2].update(future.result())
                finish(unit.student_id)
                bar.update(len(unit.files))
        bar.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ordered = [results[s.student_id] for s in subs]
    # a shard lists only its own students; the merge adds the enrolled who handed nothing in
    rows = write_reports(out, ordered, course.grade_cells(), opts.assignment, None if opts.shard else roster)
    write_manifest(out, opts.shard, course, everyone, ordered, limits, classroom)
    log.info("done: %s; %s", count_statuses(rows), out / "grades.csv")
    return rows
