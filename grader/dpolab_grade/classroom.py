"""The instructor's nbgrader course, read (never written): due date, late policy, exchange settings.

``dpolab-grade`` grades in its own folder (``--out``), but a term runs in an nbgrader course
folder: its ``nbgrader_config.py`` names the exchange (``Exchange.root``,
``CourseDirectory.course_id``) and the late-submission policy
(``AssignLatePenalties.plugin_class``, ``LateSubmissionPlugin.penalty_method``), and its
gradebook holds the assignment's due date (``nbgrader db assignment add NAME --duedate=...`` or
formgrader). :func:`read_course` reads those, so that ``dpolab-grade`` applies the same policy as
plain ``nbgrader autograde``, and OUT opens in formgrader with the course's exchange.

Late work is nbgrader's rule: a submission is late by ``timestamp - duedate`` seconds, and each
notebook's penalty is ``plugin.late_submission_penalty(student_id, notebook score, seconds late)``
clipped to ``[0, notebook score]``; the score is the sum of the notebooks' scores less the
penalties (``nbgrader export``'s ``score``). The plugins: nbgrader's ``LateSubmissionPlugin``
(``penalty_method`` ``none``, the default, or ``zero``), :class:`SubtractPerHour` below, or a
course's own (a module beside ``nbgrader_config.py``, as nbgrader's documentation shows).
"""

from __future__ import annotations

import math
import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nbgrader.plugins import BasePlugin
from traitlets import Float


class SubtractPerHour(BasePlugin):
    """Subtract ``points_per_hour`` from a late notebook's score for each hour or part of one.

    In ``nbgrader_config.py``::

        c.AssignLatePenalties.plugin_class = "dpolab_grade.classroom.SubtractPerHour"
        c.SubtractPerHour.points_per_hour = 1.0

    The penalty is per notebook (nbgrader's rule), never more than the notebook's score.
    """

    points_per_hour = Float(1.0, help="points off each late notebook per hour, or part of one").tag(
        config=True
    )

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float:
        return min(score, math.ceil(total_seconds_late / 3600) * self.points_per_hour)


@dataclass
class Course:
    """What ``dpolab-grade`` takes from the course folder (all optional)."""

    folder: Path | None = None
    due: datetime | None = None  # naive UTC, as nbgrader stores it
    due_from: str = ""  # where the due date came from, for the log
    course_id: str = ""
    exchange_root: str = ""
    config: object = None  # the traitlets Config of nbgrader_config.py
    _plugin: BasePlugin | None = field(default=None, repr=False)

    @property
    def plugin(self) -> BasePlugin:
        """The late-submission plugin of the course's config (nbgrader's default without one)."""
        if self._plugin is None:
            from nbgrader.preprocessors import AssignLatePenalties
            from traitlets.config import Config

            if self.folder is not None and str(self.folder) not in sys.path:
                sys.path.insert(0, str(self.folder))  # a course's own plugin module, as nbgrader finds it
            assign = AssignLatePenalties(config=self.config or Config())
            assign.init_plugin()
            self._plugin = assign.plugin_inst
        return self._plugin

    @property
    def policy(self) -> str:
        """The policy in words: ``LateSubmissionPlugin (penalty_method=zero)``."""
        p = self.plugin
        traits = {k: getattr(p, k) for k in p.trait_names(config=True) if k not in ("parent",)}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(traits.items()))
        return f"{type(p).__name__}" + (f" ({shown})" if shown else "")

    def late(self, timestamp: str | None) -> float:
        """Seconds late (0 when on time, or without a timestamp or a due date)."""
        if not timestamp or self.due is None:
            return 0.0
        return max(0.0, (parse_time(timestamp) - self.due).total_seconds())

    def penalty(self, student_id: str, score: float, seconds_late: float) -> float:
        """One notebook's penalty, as nbgrader's AssignLatePenalties computes and clips it."""
        if seconds_late <= 0:
            return 0.0
        penalty = self.plugin.late_submission_penalty(student_id, score, seconds_late)
        return 0.0 if penalty is None else float(min(max(penalty, 0.0), score))

    def apply(self, result: dict, timestamp: str | None) -> dict:
        """A student's result with its submission time, how late and each notebook's penalty
        (``late_penalty``); a note in ``reason`` says what lateness cost."""
        seconds = self.late(timestamp)
        total = 0.0
        for nb in result["notebooks"].values():
            # the points known now (an answer awaiting its manual grade counts 0, as nbgrader counts it)
            score = sum(v or 0.0 for v in nb["grades"].values()) if nb["status"] == "graded" else 0.0
            nb["late_penalty"] = self.penalty(result["student_id"], score, seconds)
            total += nb["late_penalty"]
        result.update(timestamp=timestamp or "", seconds_late=seconds, late_penalty=total)
        result["reason"] = "; ".join(
            r for r in result["reason"].split("; ") if r and not r.startswith("late by")
        )
        if seconds > 0:
            note = f"late by {_duration(seconds)} (due {format_time(self.due)}): {total:g} points off"
            result["reason"] = "; ".join(filter(None, [result["reason"], note]))
        return result


def _duration(seconds: float) -> str:
    """``1 d 02 h 05 min`` (minutes rounded up: a second late is a minute late)."""
    minutes = math.ceil(seconds / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return (
        (f"{days} d " if days else "") + (f"{hours:02d} h " if days or hours else "") + f"{minutes:02d} min"
    )


def parse_time(text: str) -> datetime:
    """A time as nbgrader writes it (``2026-12-01 17:00:00.5 UTC``, ISO 8601, a zone name) ->
    naive UTC."""
    from nbgrader.utils import parse_utc

    return parse_utc(text.strip())


def format_time(when: datetime | None) -> str:
    return "" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _config(folder: Path):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config()


def _due_in_gradebook(db_url: str, assignment: str) -> datetime | None:
    """The assignment's due date in an SQLite gradebook, read-only (a missing file stays missing)."""
    if not db_url.startswith("sqlite:///"):
        return None
    path = Path(db_url.removeprefix("sqlite:///"))
    if not path.is_file():
        return None
    # read-only; waits for a writer (plain nbgrader grading in the same course) to commit
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as db:
        try:
            row = db.execute("SELECT duedate FROM assignment WHERE name = ?", (assignment,)).fetchone()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return None  # an empty file, not a gradebook yet
            raise
    return parse_time(row[0]) if row and row[0] else None


def read_course(folder: Path | None, assignment: str, due: str | None = None) -> Course:
    """The course at ``folder`` (its ``nbgrader_config.py`` and gradebook); ``due`` overrides the
    gradebook's due date. Without a folder: no due date unless ``due``, nbgrader's default policy."""
    course = Course()
    if folder is not None and (Path(folder) / "nbgrader_config.py").is_file():
        folder = Path(folder).resolve()
        config = _config(folder)
        course.folder, course.config = folder, config
        course.course_id = str(config.CourseDirectory.get("course_id", "") or "")
        course.exchange_root = str(config.Exchange.get("root", "") or "")
        db_url = config.CourseDirectory.get("db_url") or f"sqlite:///{folder / 'gradebook.db'}"
        course.due = _due_in_gradebook(str(db_url), assignment)
        if course.due is not None:
            course.due_from = f"the course's gradebook ({db_url})"
    if due:
        course.due, course.due_from = parse_time(due), "--due"
    return course
