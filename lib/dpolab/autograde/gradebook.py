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


def ensure_gradebook(path: Path, master: Path) -> None:
    """Start ``path`` from the grader's gradebook (the assignment and its cells, no student), and
    write the ``nbgrader_config.py`` that lets formgrader open the folder (:data:`FORMGRADER`)."""
    if not path.exists():
        shutil.copy(master, path)
    config = path.parent / "nbgrader_config.py"
    if not config.exists() or config.read_text() != FORMGRADER:
        config.write_text(FORMGRADER)


# OUT is an nbgrader course folder for viewing: the gradebook, autograded/ and feedback/ in
# nbgrader's layout. `jupyter lab` (or a JupyterHub server) started in OUT shows it in formgrader.
FORMGRADER = """\
# Written by dpolab-grade: open this folder's grades in nbgrader's formgrader (jupyter lab here).
# Grading is done by dpolab-grade (sandboxed); formgrader here is for viewing and manual grading.
import os

c = get_config()  # noqa: F821
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")
# formgrader lists the assignments of the source folder: the release of the solutions graded against
with open(os.path.join(c.CourseDirectory.root, ".grader", "current")) as f:
    c.CourseDirectory.source_directory = os.path.join(".grader", f.read().strip()[:16], "release")
"""


def merge_student(path: Path, assignment: str, student_id: str, notebooks: dict[str, dict]) -> None:
    """Record one student's results: ``{notebook: {"status", "grades": {grade_id: score}}}``."""
    with Gradebook(f"sqlite:///{path}") as gb, warnings.catch_warnings():
        # nbgrader's add_submission triggers SQLAlchemy autoflush warnings about its own objects
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(student_id)
        try:  # regraded: the same rows are updated, never added twice
            submission = gb.find_submission(assignment, student_id)
        except MissingEntry:
            submission = gb.add_submission(assignment, student_id)
        for notebook in submission.notebooks:
            result = notebooks.get(notebook.name, {"status": "ungradable", "grades": {}})
            for grade in notebook.grades:
                if result["status"] in ("graded", "missing"):  # not handed in: 0, nothing to grade
                    grade.auto_score = result["grades"].get(grade.name, 0)
                    grade.needs_manual_grade = False
                else:
                    grade.auto_score = 0
                    grade.needs_manual_grade = True
        gb.db.commit()


def scores(path: Path, assignment: str) -> dict[str, dict[str, float]]:
    """``{student_id: {grade_id: score}}`` as the merged gradebook holds them."""
    out: dict[str, dict[str, float]] = {}
    with Gradebook(f"sqlite:///{path}") as gb:
        for submission in gb.assignment_submissions(assignment):
            out[submission.student_id] = {
                g.name: g.score for nb in submission.notebooks for g in nb.grades if g.max_score > 0
            }
    return out
