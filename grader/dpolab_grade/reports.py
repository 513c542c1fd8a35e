"""``grades.csv`` (one row per student), ``cells.csv`` (one column per graded cell), ``report.html``.

Built from the gradebook as it is now (:func:`~dpolab_grade.gradebook.class_rows`), so a
manual grade or a regrade entered in formgrader is in them once ``dpolab-grade export OUT`` (or
the next run) rebuilds them, and ``grades.csv``'s ``score`` is ``nbgrader export``'s: the cells'
scores less the late penalties, never below 0. ``status`` and ``reason`` come from the grading
(``results/``); enrolled students who handed nothing in (``--roster``) are ``missing``, with 0.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

from .class_report import write_class_report
from .course import GradeCell
from .gradebook import class_rows

# score: the total so far (automatic, and manual grades once given); auto_score: the automatic
# cells' points; manual_pending: the points of answers still to grade by hand (formgrader)
GRADES_COLUMNS = [
    "student_id", "score", "max_score", "status", "reason", "raw_score", "late_penalty", "timestamp", "seconds_late",
    "auto_score", "manual_pending",
]  # fmt: skip


def _fmt(x: float) -> str:
    return f"{x:g}"


def current(results: list[dict], gradebook: Path, assignment: str, roster: list[dict] | None) -> list[dict]:
    """The class in order (the graded students, then the enrolled ones who handed nothing in), each
    result with the gradebook's scores now: ``score``, ``raw_score``, ``late_penalty``,
    ``timestamp``, ``seconds_late`` and every notebook's ``grades`` (manual grades included)."""
    now = class_rows(gradebook, assignment)
    enrolled = [s["id"] for s in roster or []]
    out = []
    for r in results:
        r = copy.deepcopy(r)
        row = now.get(r["student_id"])
        if row:
            r.update({k: row[k] for k in ("score", "raw_score", "late_penalty", "timestamp", "auto_score",
                                          "manual_pending")})  # fmt: skip
            for nb, grades in row["grades"].items():
                if nb in r["notebooks"]:  # None (waiting for a manual grade) is left out: blank in cells.csv
                    r["notebooks"][nb]["grades"] = {k: v for k, v in grades.items() if v is not None}
        if roster is not None and r["student_id"] not in enrolled:
            r["reason"] = "; ".join(filter(None, [r["reason"], "not on the roster"]))
        out.append(r)
    graded = {r["student_id"] for r in results}
    for sid in enrolled:
        if sid not in graded:
            out.append(
                {"student_id": sid, "status": "missing", "reason": "nothing handed in", "score": 0.0,
                 "raw_score": 0.0, "late_penalty": 0.0, "timestamp": "", "seconds_late": 0.0, "notebooks": {},
                 "auto_score": 0.0, "manual_pending": 0.0}
            )  # fmt: skip
    return out


def write_reports(
    out: Path,
    results: list[dict],
    cells: list[GradeCell],
    assignment: str,
    roster: list[dict] | None = None,
) -> list[dict]:
    """Write the three reports from ``out/gradebook.db`` and ``results``; return the class rows."""
    rows = current(results, out / "gradebook.db", assignment, roster)
    max_score = sum(c.points for c in cells)
    names = [c.name for c in cells]
    unique = len(set(names)) == len(names)
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(GRADES_COLUMNS)
        for r in rows:
            w.writerow(
                [r["student_id"], _fmt(r["score"]), _fmt(max_score), r["status"], r["reason"],
                 _fmt(r.get("raw_score", r["score"])), _fmt(r.get("late_penalty", 0)), r.get("timestamp", ""),
                 _fmt(r.get("seconds_late", 0)), _fmt(r.get("auto_score", r["score"])), _fmt(r.get("manual_pending", 0))]
            )  # fmt: skip
    with open(out / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student_id", "status", *(c.name if unique else f"{c.notebook}/{c.name}" for c in cells)])
        w.writerow(["(max)", "", *(_fmt(c.points) for c in cells)])
        for r in rows:
            scores = [r["notebooks"].get(c.notebook, {}).get("grades", {}).get(c.name) for c in cells]
            w.writerow([r["student_id"], r["status"], *("" if s is None else _fmt(s) for s in scores)])
    write_class_report(out, rows, cells)
    return rows


def rebuild(out: Path) -> tuple[list[dict], list[GradeCell], str, list[dict] | None]:
    """Rebuild OUT's reports from its gradebook now (after manual grading in formgrader):
    returns the class rows, the grade cells, the assignment and the roster."""
    import json

    from .course import GraderCourse

    manifest = json.loads((out / "shard.json").read_text())
    digest = (out / ".grader" / "current").read_text().strip()
    course = GraderCourse(out / ".grader" / digest[:16], manifest["assignment"], digest)
    order = sorted(manifest["students"], key=manifest["students"].__getitem__)
    results = [json.loads((out / "results" / f"{s}.json").read_text()) for s in order]
    roster = json.loads((out / "roster.json").read_text()) if (out / "roster.json").exists() else None
    cells = course.grade_cells()
    return write_reports(out, results, cells, course.assignment, roster), cells, course.assignment, roster
