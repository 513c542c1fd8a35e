"""``grades.csv`` (one row per student), ``cells.csv`` (one column per graded cell), ``report.html``."""

from __future__ import annotations

import csv
from pathlib import Path

from .class_report import write_class_report
from .course import GradeCell


def _fmt(x: float) -> str:
    return f"{x:g}"


def write_reports(out: Path, results: list[dict], cells: list[GradeCell]) -> None:
    max_score = sum(c.points for c in cells)
    names = [c.name for c in cells]
    unique = len(set(names)) == len(names)
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student_id", "score", "max_score", "status", "reason"])
        for r in results:
            w.writerow([r["student_id"], _fmt(r["score"]), _fmt(max_score), r["status"], r["reason"]])
    with open(out / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student_id", "status", *(c.name if unique else f"{c.notebook}/{c.name}" for c in cells)])
        w.writerow(["(max)", "", *(_fmt(c.points) for c in cells)])
        for r in results:
            scores = [r["notebooks"].get(c.notebook, {}).get("grades", {}).get(c.name) for c in cells]
            w.writerow([r["student_id"], r["status"], *("" if s is None else _fmt(s) for s in scores)])
    write_class_report(out, results, cells)
