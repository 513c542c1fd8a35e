"""Deadlines, late policies, rosters and the LMS export of ``dpolab-grade`` (no kernel runs here).

The class graded end to end through nbgrader's exchange, late and resubmitted students included,
is tests/test_grading_flows.py; these are the rules, each on hand-made cases.
"""

from __future__ import annotations

import csv
from datetime import datetime

import pytest
from nbgrader.api import Gradebook
from traitlets.config import Config

from dpolab_grade.classroom import Course, SubtractPerHour, _duration, parse_time, read_course
from dpolab_grade.lms import RosterError, read_roster, write_export

DUE = datetime(2026, 12, 1, 17, 0, 0)


def course(**config) -> Course:
    c = Config()
    for key, value in config.items():
        section, name = key.split("__")
        c[section][name] = value
    return Course(due=DUE, config=c)


def test_seconds_late_from_nbgrader_timestamps():
    c = Course(due=DUE)
    assert c.late("2026-12-01 16:59:59.999999 UTC") == 0
    assert c.late("2026-12-01 17:00:01 UTC") == 1
    assert c.late("2026-12-01 18:30:00 Europe/Berlin") == 30 * 60  # 17:30 UTC
    assert c.late(None) == 0 and Course().late("2026-12-02 00:00:00 UTC") == 0  # no timestamp, no due date


def test_default_policy_is_nbgrader_none():
    c = course()
    assert c.penalty("ann", 7.0, 3600) == 0 and c.policy.startswith(
        "LateSubmissionPlugin (penalty_method=none"
    )


def test_zero_policy_takes_the_notebooks_score():
    c = course(LateSubmissionPlugin__penalty_method="zero")
    assert c.penalty("ann", 7.0, 1) == 7.0
    assert c.penalty("ann", 7.0, 0) == 0  # on time: the plugin is not asked


def test_subtract_per_hour_counts_each_started_hour_and_never_goes_below_zero():
    c = course(AssignLatePenalties__plugin_class=SubtractPerHour, SubtractPerHour__points_per_hour=2.0)
    assert [c.penalty("ann", 7.0, s) for s in (1, 3600, 3601, 7200, 36000)] == [2, 2, 4, 4, 7]
    assert SubtractPerHour(points_per_hour=0.5).late_submission_penalty("ann", 10, 3 * 3600 + 1) == 2.0


def test_apply_sums_the_notebooks_penalties_and_says_how_late():
    c = course(AssignLatePenalties__plugin_class=SubtractPerHour, SubtractPerHour__points_per_hour=2.0)
    result = {
        "student_id": "ann",
        "reason": "not handed in (0 points): 03.ipynb",
        "notebooks": {
            "01": {"status": "graded", "grades": {"a": 1.0, "b": 3.0}},  # 4 points: 2 off
            "02": {"status": "graded", "grades": {"c": 1.0}},  # 1 point: 1 off (never below 0)
            "03": {"status": "missing", "grades": {"d": 0.0}},
            "04": {"status": "ungradable", "grades": {}},
        },
    }
    c.apply(result, "2026-12-02 18:00:30 UTC")  # 1 d 01 h 00 min 30 s late: 26 started hours
    assert [nb["late_penalty"] for nb in result["notebooks"].values()] == [4.0, 1.0, 0.0, 0.0]
    assert result["late_penalty"] == 5.0 and result["seconds_late"] == 25 * 3600 + 30
    assert result["reason"] == (
        "not handed in (0 points): 03.ipynb; late by 1 d 01 h 01 min (due 2026-12-01 17:00:00 UTC): 5 points off"
    )
    c.apply(result, "2026-12-01 12:00:00 UTC")  # a new submission on time: the note goes
    assert result["late_penalty"] == 0 and result["reason"] == "not handed in (0 points): 03.ipynb"


def test_duration_in_words():
    assert [_duration(s) for s in (1, 60, 61, 3600, 86400 + 7 * 60)] == [
        "01 min", "01 min", "02 min", "01 h 00 min", "1 d 00 h 07 min",
    ]  # fmt: skip


def test_the_course_folder_gives_due_date_policy_and_exchange(tmp_path):
    (tmp_path / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        'c.CourseDirectory.course_id = "dpo-lab"\n'
        'c.Exchange.root = "/srv/exchange"\n'
        'c.LateSubmissionPlugin.penalty_method = "zero"\n'
    )
    assert read_course(tmp_path, "lab").due is None  # no gradebook: nothing is created
    assert not (tmp_path / "gradebook.db").exists()
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        gb.update_or_create_assignment("lab", duedate="2026-12-01 18:00:00 Europe/Berlin")
    before = (tmp_path / "gradebook.db").read_bytes()
    c = read_course(tmp_path, "lab")
    assert (c.due, c.course_id, c.exchange_root) == (DUE, "dpo-lab", "/srv/exchange")
    assert c.penalty("ann", 5, 10) == 5
    assert read_course(tmp_path, "lab", due="2026-12-03 09:00:00 UTC").due == parse_time(
        "2026-12-03 09:00 UTC"
    )
    assert read_course(tmp_path, "another").due is None
    assert (tmp_path / "gradebook.db").read_bytes() == before  # read only


# --------------------------------------------------------------------------- roster and export
def test_roster_csv_and_gradebook(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("\ufeffID,First_Name,last_name,email,section\nann,Ann,Lee,ann@x.org,A\nbob,,,,\n")
    assert [(s["id"], s["first_name"], s["section"]) for s in read_roster(path)] == [
        ("ann", "Ann", "A"),
        ("bob", "", ""),
    ]
    with Gradebook(f"sqlite:///{tmp_path / 'gb.db'}") as gb:
        gb.update_or_create_student("zed", first_name="Zed")
        gb.update_or_create_student("amy")
    assert [(s["id"], s["first_name"]) for s in read_roster(tmp_path / "gb.db")] == [
        ("amy", ""),
        ("zed", "Zed"),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,email\nann,a@x\n", "no 'id' or 'student_id' column"),
        ("student_id\nann\n\nbob\n", None),  # a blank line is skipped by csv
        ("id,email\nann,a@x\n,b@x\n", "line 3: no student id"),
        ("id\nann\nann\n", "'ann' is listed twice"),
    ],
)
def test_roster_errors_name_the_row(tmp_path, text, message):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    if message is None:
        assert [s["id"] for s in read_roster(path)] == ["ann", "bob"]
    else:
        with pytest.raises(RosterError, match=message):
            read_roster(path)


def test_canvas_and_csv_exports(tmp_path):
    rows = [{"student_id": "ann", "score": 31.5}, {"student_id": "bob", "score": 0.0}]
    roster = [
        {"id": "ann", "first_name": "Ann", "last_name": "Lee", "email": "ann@x.org", "section": "A",
         "sis_user_id": "S1", "canvas_id": "101"},
        {"id": "bob", "first_name": "", "last_name": "", "email": "", "section": "", "sis_user_id": "", "canvas_id": ""},
    ]  # fmt: skip
    write_export(tmp_path / "c.csv", "canvas", rows, roster, "lab", 40)
    assert list(csv.reader(open(tmp_path / "c.csv", newline=""))) == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "lab"],
        ["Points Possible", "", "", "", "", "40"],
        ["Lee, Ann", "101", "S1", "ann", "A", "31.5"],
        ["bob", "", "", "bob", "", "0"],
    ]
    write_export(tmp_path / "p.csv", "csv", rows, roster, "lab", 40)
    assert list(csv.reader(open(tmp_path / "p.csv", newline=""))) == [
        ["student_id", "first_name", "last_name", "email", "score", "max_score"],
        ["ann", "Ann", "Lee", "ann@x.org", "31.5", "40"],
        ["bob", "", "", "", "0", "40"],
    ]


def test_cli_refuses_a_bad_roster_or_due_date_before_grading(tmp_path, capsys):
    from dpolab_grade.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "roster.csv").write_text("name\nann\n")
    base = [str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    assert main([*base, "--roster", str(tmp_path / "roster.csv")]) == 2
    assert "no 'id' or 'student_id' column" in capsys.readouterr().err
    assert main([*base, "--due", "next friday-ish"]) == 2
    assert "dpolab-grade:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert main(["export", str(tmp_path / "in")]) == 2
    assert "not a completed dpolab-grade run" in capsys.readouterr().err
