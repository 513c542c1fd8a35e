"""The class list and the files an LMS imports.

A *roster* is who is enrolled: a CSV with an ``id`` (or ``student_id``) column, as
``nbgrader db student import`` reads it (``first_name``, ``last_name``, ``email`` optional;
``section``, ``sis_user_id`` and ``canvas_id`` are used by the Canvas export when present), or an
nbgrader gradebook (``gradebook.db``: its student table). Every enrolled student gets a row in
``grades.csv`` and in the export: ``missing`` and 0 when they handed nothing in.

Formats of ``dpolab-grade export OUT --format ...``:

- ``canvas``: Canvas's gradebook import: ``Student, ID, SIS User ID, SIS Login ID, Section,
  <assignment>``, then a ``Points Possible`` row; the student id goes in ``SIS Login ID`` (the
  login that JupyterHub and the exchange know), Canvas matches on it;
- ``csv``: ``student_id, first_name, last_name, email, score, max_score``, for any other LMS.

The scores are the gradebook's, as ``nbgrader export`` computes them (late penalties off, manual
grades and regrades from formgrader in): :func:`dpolab_grade.gradebook.class_rows`.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

FORMATS = ("canvas", "csv")
FIELDS = ("id", "first_name", "last_name", "email", "section", "sis_user_id", "canvas_id")


class RosterError(ValueError):
    """A roster that cannot be read; the message names the file and the row."""


def read_roster(path: Path) -> list[dict]:
    """``[{"id", "first_name", ...}]`` in the roster's order, each id once."""
    path = Path(path)
    if not path.is_file():
        raise RosterError(f"roster {path}: no such file")
    if path.read_bytes()[:16] == b"SQLite format 3\x00":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT id, first_name, last_name, email FROM student ORDER BY id").fetchall()
        students = [dict(zip(("id", "first_name", "last_name", "email"), r, strict=True)) for r in rows]
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            key = "id" if "id" in header else "student_id" if "student_id" in header else None
            if key is None:
                raise RosterError(f"roster {path}: no 'id' or 'student_id' column (header: {header})")
            students = []
            for line, row in enumerate(reader, start=2):
                row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                if not row.get(key):
                    raise RosterError(f"roster {path}, line {line}: no student id")
                students.append({"id": row[key], **{k: row.get(k, "") for k in FIELDS[1:]}})
    seen: set[str] = set()
    for s in students:
        if s["id"] in seen:
            raise RosterError(f"roster {path}: student {s['id']!r} is listed twice")
        seen.add(s["id"])
    return [{k: (s.get(k) or "") for k in FIELDS} for s in students]


def _fmt(x: float) -> str:
    return f"{x:g}"


def write_export(
    path: Path, fmt: str, rows: list[dict], roster: list[dict], assignment: str, max_score: float
):
    """``rows``: the class as ``grades.csv`` has it (``student_id``, ``score``); ``roster`` gives names."""
    people = {s["id"]: s for s in roster}
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if fmt == "canvas":
            w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment])
            w.writerow(["Points Possible", "", "", "", "", _fmt(max_score)])
            for r in rows:
                p = people.get(r["student_id"], {})
                name = ", ".join(filter(None, [p.get("last_name"), p.get("first_name")])) or r["student_id"]
                w.writerow(
                    [name, p.get("canvas_id", ""), p.get("sis_user_id", ""), r["student_id"],
                     p.get("section", ""), _fmt(r["score"])]
                )  # fmt: skip
        elif fmt == "csv":
            w.writerow(["student_id", "first_name", "last_name", "email", "score", "max_score"])
            for r in rows:
                p = people.get(r["student_id"], {})
                w.writerow(
                    [r["student_id"], p.get("first_name", ""), p.get("last_name", ""), p.get("email", ""),
                     _fmt(r["score"]), _fmt(max_score)]
                )  # fmt: skip
        else:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
