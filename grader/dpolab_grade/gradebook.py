"""One gradebook for the class, written by one process.

Every notebook is autograded in its own scratch course with its own copy of the gradebook
(SQLite allows one writer at a time). The runner's main thread alone merges each finished
student into ``OUT/gradebook.db`` with nbgrader's Gradebook API: the student's submission is
found or added (one submission per student, one grade per grade cell), then every
grade gets the score its worker read back. A notebook not handed in gets 0; one that could not
be graded gets 0 and ``needs_manual_grade`` so that formgrader lists it.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning

from .classroom import Course, format_time, parse_time


def ensure_gradebook(path: Path, master: Path, course: Course | None = None) -> None:
    """Start ``path`` from the grader's gradebook (the assignment and its cells, no student), give
    the assignment the course's due date, and write the ``nbgrader_config.py`` that lets formgrader
    open the folder (:data:`FORMGRADER`) and ``nbgrader release_feedback`` send its feedback
    through the course's exchange (the course's ``Exchange.root`` and ``course_id``)."""
    course = course or Course()
    if not path.exists():
        shutil.copy(master, path)
    with Gradebook(f"sqlite:///{path}") as gb:
        for assignment in gb.assignments:
            if assignment.duedate != course.due:
                assignment.duedate = course.due
        gb.db.commit()
    text = FORMGRADER
    if course.course_id:
        text += f"c.CourseDirectory.course_id = {course.course_id!r}\n"
    if course.exchange_root:
        text += f"c.Exchange.root = {course.exchange_root!r}\n"
    config = path.parent / "nbgrader_config.py"
    if not config.exists() or config.read_text() != text:
        config.write_text(text)


# OUT is an nbgrader course folder for viewing: the gradebook, submitted/, autograded/ and feedback/
# in nbgrader's layout. `jupyter lab` (or a JupyterHub server) started in OUT shows it in formgrader.
FORMGRADER = """\
# Written by dpolab-grade: open this folder's grades in nbgrader's formgrader (jupyter lab here).
# Grading is done by dpolab-grade (sandboxed); formgrader here is for viewing and manual grading,
# and `nbgrader release_feedback ASSIGNMENT` here sends feedback/ through the course's exchange.
import os

c = get_config()  # noqa: F821
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")
# formgrader lists the assignments of the source folder: the release of the solutions graded against
with open(os.path.join(c.CourseDirectory.root, ".grader", "current")) as f:
    c.CourseDirectory.source_directory = os.path.join(".grader", f.read().strip()[:16], "release")
"""


def merge_student(path: Path, assignment: str, result: dict) -> None:
    """Record one student's result (``runner._finish``, with ``classroom.Course.apply``'s fields): each grade
    cell's score (``{notebook: {"status", "grades": {grade_id: score}}}``), the submission's
    timestamp and each notebook's late penalty."""
    student_id, notebooks = result["student_id"], result["notebooks"]
    with Gradebook(f"sqlite:///{path}") as gb, warnings.catch_warnings():
        # nbgrader's add_submission triggers SQLAlchemy autoflush warnings about its own objects
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(student_id)
        try:  # regraded: the same rows are updated, never added twice
            submission = gb.find_submission(assignment, student_id)
        except MissingEntry:
            submission = gb.add_submission(assignment, student_id)
        submission.timestamp = parse_time(result["timestamp"]) if result.get("timestamp") else None
        for notebook in submission.notebooks:
            nb = notebooks.get(notebook.name, {"status": "ungradable", "grades": {}})
            for grade in notebook.grades:
                if nb["status"] in ("graded", "missing"):  # not handed in: 0, nothing to grade
                    score = nb["grades"].get(grade.name, 0)
                    grade.auto_score = score
                    # None: an answer for the instructor to grade (formgrader lists it), unless graded already
                    grade.needs_manual_grade = score is None and grade.manual_score is None
                else:
                    grade.auto_score = 0
                    grade.needs_manual_grade = True
            notebook.late_submission_penalty = nb.get("late_penalty") or None
        gb.db.commit()


def add_students(path: Path, students: list[dict]) -> None:
    """Enrolled students (``{"id", "first_name", "last_name", "email"}``): in the gradebook, so that
    ``nbgrader export`` and formgrader list those who handed nothing in, with 0."""
    with Gradebook(f"sqlite:///{path}") as gb:
        for s in students:
            fields = {k: s[k] for k in ("first_name", "last_name", "email") if s.get(k)}
            gb.update_or_create_student(s["id"], **fields)


def class_rows(path: Path, assignment: str) -> dict[str, dict]:
    """What the gradebook says of each student now, manual grades and regrades included:
    ``{student_id: {"raw_score", "late_penalty", "score", "auto_score", "manual_pending", "timestamp",
    "grades": {notebook: {grade_id: score or None}}}}`` (None: waiting for a manual grade). ``score``
    is nbgrader export's: ``max(0, raw_score - late_penalty)``; ``auto_score``: the points of the
    automatically graded cells; ``manual_pending``: the points of the answers still to grade by hand."""
    out: dict[str, dict] = {}
    with Gradebook(f"sqlite:///{path}") as gb:
        for submission in gb.assignment_submissions(assignment):
            grades = {
                nb.name: {
                    g.name: (None if g.needs_manual_grade and g.manual_score is None else g.score)
                    for g in nb.grades
                    if g.max_score > 0
                }
                for nb in submission.notebooks
            }
            penalty = submission.late_submission_penalty or 0.0
            auto, pending = 0.0, 0.0
            for nb in submission.notebooks:
                manual = {c.name for c in nb.notebook.solution_cells}
                for g in nb.grades:
                    if g.name not in manual:
                        auto += g.score or 0.0
                    elif g.manual_score is None and g.auto_score is None:
                        pending += g.max_score
            out[submission.student_id] = {
                "raw_score": submission.score,
                "late_penalty": penalty,
                "score": max(0.0, submission.score - penalty),
                "auto_score": auto,
                "manual_pending": pending,
                "timestamp": format_time(submission.timestamp),
                "grades": grades,
            }
    return out


def scores(path: Path, assignment: str) -> dict[str, dict[str, float]]:
    """``{student_id: {grade_id: score}}`` as the merged gradebook holds them."""
    out: dict[str, dict[str, float]] = {}
    with Gradebook(f"sqlite:///{path}") as gb:
        for submission in gb.assignment_submissions(assignment):
            out[submission.student_id] = {
                g.name: g.score for nb in submission.notebooks for g in nb.grades if g.max_score > 0
            }
    return out
