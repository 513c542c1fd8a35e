"""An instructor's term, graded right through every door (issues 13 and 17).

The class lives a term on nbgrader's exchange, each step the command an instructor (or a
student) types: ``nbgrader db student import`` (the roster), ``release_assignment``; each student
``fetch_assignment``, answers, ``submit`` (``solved`` twice: the untouched release, then the
answers; ``planted`` after the deadline); ``db assignment add --duedate``; ``collect``. Then the
class is graded twice at the same time: by plain ``nbgrader autograde`` in the course (this
repository's ``nbgrader_config.py``, which registers the judge, plus the term's exchange and a
late policy, ``SubtractPerHour``; formgrader's Autograde button runs the same app) and by
``dpolab-grade submitted --out grading --roster ...`` run in the course folder. Both must give
every student the same score in every grade cell, and ``grades.csv`` the same raw score, late
penalty and score as ``nbgrader export``. Feedback goes back with ``nbgrader release_feedback``
run in ``grading/``, each student's ``fetch_feedback`` finds it, and ``dpolab-grade export`` writes
the Canvas file (a manual grade made afterwards shows in it). The class:

The course is 50 automatic points and 4 graded by hand (notebook 05's two written answers): a
written answer handed in awaits its manual grade (plain nbgrader: ``needs_manual_grade``, no score;
dpolab-grade: ``None`` in the results, blank in ``cells.csv``, its points in ``grades.csv``'s
``manual_pending``); one left as released gets 0 from nbgrader at once (nothing to grade).

``solved``           every answer right: 50/50 automatic, both written answers (the model answers)
                     awaiting their manual grade (submits twice)
``rewritten``        every answer right, written in another style than the reference (the mutation
                     suites' correct alternatives): 50/50 automatic, written answers as ``solved``
``untouched``        the release as handed out: 0, nothing to grade by hand
``planted``          one visible mistake per exercise (the visible tests catch them); late
``hidden_mistakes``  one mistake per notebook that only the hidden tests catch: without a judge
                     these keep their points
``patches_checks``   notebook 01's answer patches ``torch.allclose``, ``abs``, ... and has a bug
                     (hands in notebook 01 only)
``cheater``          answers that import the reference (hands in notebooks 01, 04 and 05 only)
``incomplete``       hands in notebooks 01 and 03 only: 0 for 02, 04 and 05, ``incomplete``
``zoe``              enrolled (the roster), hands nothing in: ``missing``, 0

Plain nbgrader runs each kernel in the same sandbox as ``dpolab-grade`` (``use_judge(c)``; its
hostile class is tests/test_nbgrader_sandbox.py's). The two runs go at the same time (plain
nbgrader grades one notebook at a time; ``dpolab-grade --jobs 1`` beside it), each on one core.

Without the judge, a hidden test fails its cell (fail closed): ``test_hidden_tests_fail_closed_without_the_judge``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from notebook_tools import ASSIGNMENT, NOTEBOOKS, nbgrader, solved_release, strip_markers
from venv_tools import venv_env

NB1, NB2, NB3, NB4, NB5 = (n.removesuffix(".ipynb") for n in NOTEBOOKS)
BIN = Path(sys.executable).parent
PLANTED = {
    # one bug per exercise, each confined to one grade cell
    "01_dpo_loss.ipynb": {
        "dpo_loss_answer": ("(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)")
    },
    "02_dpo_variants.ipynb": {
        "kto_answer": (
            "gain = self.desirable_weight * (1 - torch.sigmoid(self.beta * (r - z0)))",
            "gain = self.desirable_weight * -F.logsigmoid(self.beta * r - z0)",
        )
    },
    "03_preference_data.ipynb": {"generator_answer": (">= self.min_score_diff", "> self.min_score_diff")},
    # one bug per function: 4a's must not cost the step's points (they use a known-good 4a)
    "04_train_with_dpo.ipynb": {
        "concatenated_logps_answer": ("return logps[:n], logps[n:]", "return logps[n:], logps[:n]"),
        "dpo_train_step_answer": ("(margins > 0)", "(margins >= 0)"),
    },
    # the nb05 suite's "tie-improves": Test 5a's visible script has a tie
    "05_what_dpo_optimises.ipynb": {
        "early_stopping_answer": ("if metric > best_metric:", "if metric >= best_metric:")
    },
}
PLANTED_LOSES = {
    "test_metrics",
    "test_kto",
    "test_scored_pairs",
    "test_concatenated_logps",
    "test_step_metrics",
    "test_early_stopping",
}
CHEATER = {
    "01_dpo_loss.ipynb": {
        "dpo_loss_answer": ("*", "from dpolab import DPOLoss  # the reference, not my own")
    },
    "04_train_with_dpo.ipynb": {
        "concatenated_logps_answer": ("*", "from dpolab import concatenated_logps  # the reference"),
        "dpo_train_step_answer": ("*", "from dpolab import dpo_train_step  # the reference"),
    },
    "05_what_dpo_optimises.ipynb": {  # the written answers are the model answers
        "early_stopping_answer": ("*", "from dpolab import train_with_early_stopping  # the reference"),
        "on_policy_answer": ("*", "from dpolab import on_policy_pairs, complete  # the reference"),
    },
}
CHEATED = {
    "test_log_probs",
    "test_dpo_loss",
    "test_label_smoothing",
    "test_reference_free",
    "test_metrics",
    "test_concatenated_logps",
    "test_dpo_train_step",
    "test_step_metrics",
    "test_early_stopping",
    "test_on_policy_pairs",
}
# Mutations of the hidden-test suites that the visible tests (all or some of) miss:
# (notebook, mutation) -> (the grade cells they lose, those of them whose visible tests catch it).
# Without a judge the others keep their points; nb01's is the issue's "batch loss summed" (8 -> 3).
HIDDEN_ONLY = {
    (NB1, "batch-sum"): (
        {"test_dpo_loss", "test_label_smoothing", "test_reference_free", "test_metrics"},
        {"test_dpo_loss", "test_label_smoothing"},  # Tests 1b and 1c name the batch sum
    ),
    (NB2, "simpo-batch-sum"): ({"test_simpo"}, set()),
    (NB3, "pairs-prompts-sorted"): ({"test_scored_pairs"}, set()),
    (NB4, "metric-margin-of-logps"): ({"test_step_metrics"}, set()),
    (NB5, "ties-kept"): ({"test_on_policy_pairs"}, set()),
}
NB1_CELLS = {"test_log_probs", "test_dpo_loss", "test_label_smoothing", "test_reference_free", "test_metrics"}
HANDED_IN_BY_INCOMPLETE = ("01_dpo_loss.ipynb", "03_preference_data.ipynb")
GRADE_CELLS = {
    NB1: {"test_log_probs", "test_dpo_loss", "test_label_smoothing", "test_reference_free", "test_metrics"},
    NB2: {"test_ipo", "test_kto", "test_kl_estimate", "test_orpo", "test_simpo"},
    NB3: {"test_pair", "test_scorers", "test_scored_pairs", "test_single_responses", "test_validate_export"},
    NB4: {"test_concatenated_logps", "test_dpo_train_step", "test_step_metrics"},
    NB5: {"test_early_stopping", "test_on_policy_pairs", "written_answer_peak", "written_answer_on_policy"},
}
# Notebook 05's written answers, graded by hand (2 points each): no grader scores them
MANUAL = {"written_answer_peak": 2, "written_answer_on_policy": 2}
AUTOMATIC_POINTS, MAX_SCORE = 50, 54


def _mutation(notebook: str, name: str) -> tuple[str, str]:
    """(answer cell, its source with the mutation) from the hidden-test suites."""
    import test_hidden_tests_catch_mistakes as suite
    import test_hidden_tests_nb04 as suite04
    import test_hidden_tests_nb05 as suite05

    (case,) = (
        p.values[0]
        for p in [*suite.MISTAKES, *suite04.MISTAKES, *suite05.MISTAKES]
        if p.values[0].name == name and p.values[0].notebook == notebook
    )
    source = suite.mutate(notebook, case.answer, (case.old, case.new), *case.edits)[case.answer]
    return case.answer, strip_markers(source)


# More students made of correct rewrites: FLOWS_REWRITES=3 grades three (the k-th last alternative
# of each answer cell, k = 1, 2, 3) through both doors; CI grades one.
REWRITES = int(os.environ.get("FLOWS_REWRITES", "1"))


def rewritten_answers(k: int = 1) -> dict[str, dict[str, tuple[str, str]]]:
    """A student who writes every answer from the text in another style than the reference: for
    each answer cell, the k-th last correct alternative of the mutation suites (``ALTERNATIVES``:
    loops, other library calls, floats for tensors; the first one when there are fewer than k),
    which the suites check pass every cell in-process, through the judge."""
    import test_hidden_tests_catch_mistakes as suite
    import test_hidden_tests_nb04 as suite04
    import test_hidden_tests_nb05 as suite05

    cases: dict[tuple[str, str], list] = {}
    for param in [*suite.ALTERNATIVES, *suite04.ALTERNATIVES, *suite05.ALTERNATIVES]:
        if not param.marks:  # an xfail is not a correct answer yet
            case = param.values[0]
            cases.setdefault((case.notebook, case.answer), []).append(case)
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for (notebook, answer), listed in sorted(cases.items()):
        case = listed[-min(k, len(listed))]
        source = suite.mutate(notebook, answer, (case.old, case.new), *case.edits)[answer]
        out.setdefault(f"{notebook}.ipynb", {})[answer] = ("*", strip_markers(source))
    return out


def rewriters() -> list[str]:
    return ["rewritten"] + [f"rewritten-{k}" for k in range(2, REWRITES + 1)]


def _patched_checks_with_bug() -> tuple[str, str]:
    """Notebook 01's answer under code that patches every check a kernel could make, with a bug."""
    from test_hidden_tests_catch_mistakes import DPO, patched

    return DPO, patched(NB1, DPO, PLANTED["01_dpo_loss.ipynb"]["dpo_loss_answer"])


def class_edits() -> dict[str, dict[str, dict | str | None]]:
    """``{student: {notebook file: edits for solved_release | "untouched" | None (not handed in)}}``."""
    hidden = {}
    for notebook, name in HIDDEN_ONLY:
        answer, source = _mutation(notebook, name)
        hidden[f"{notebook}.ipynb"] = {answer: ("*", source)}
    answer, source = _patched_checks_with_bug()
    return {
        "solved": {n: {} for n in NOTEBOOKS},
        **{
            student: {n: rewritten_answers(k)[n] for n in NOTEBOOKS}
            for k, student in enumerate(rewriters(), start=1)
        },
        "untouched": {n: "untouched" for n in NOTEBOOKS},
        "planted": {n: PLANTED.get(n, {}) for n in NOTEBOOKS},
        "hidden_mistakes": {n: hidden.get(n, {}) for n in NOTEBOOKS},
        # these two hand in only the notebooks they change (the others would be "solved" again)
        "patches_checks": {n: ({answer: ("*", source)} if n.startswith(NB1) else None) for n in NOTEBOOKS},
        "cheater": {n: CHEATER.get(n) for n in NOTEBOOKS},
        "incomplete": {n: ({} if n in HANDED_IN_BY_INCOMPLETE else None) for n in NOTEBOOKS},
    }


def hand_in(course: Path, student: str, notebooks: dict) -> None:
    """Answers put straight into ``course/submitted/`` (what ``nbgrader collect`` leaves there)."""
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    for name in (n for n, edits in notebooks.items() if edits is not None):
        shutil.copy(course / "notebooks" / ASSIGNMENT / name, folder / name)
    answer(folder, {n: e for n, e in notebooks.items() if e is not None})


def answer(folder: Path, notebooks: dict) -> None:
    """A student's fetched copy of the release, answered: edited, untouched or left out."""
    for name, edits in notebooks.items():
        if edits is None:
            (folder / name).unlink()  # not handed in
        elif edits != "untouched":
            nbformat.write(solved_release(name, folder, edits), folder / name)


def gradebook_scores(db: Path, students) -> dict[str, dict[str, tuple[float | None, float]]]:
    """``{student: {grade_id: (score, max_score)}}`` from an nbgrader gradebook; the score is None
    while the cell awaits a manual grade (nbgrader's ``Grade.score`` would say 0 there)."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{db}") as gb:
        for student in students:
            submission = gb.find_submission(ASSIGNMENT, student)
            out[student] = {
                g.name: (None if g.needs_manual_grade and g.manual_score is None else g.score, g.max_score)
                for nb in submission.notebooks
                for g in nb.grades
                if g.max_score > 0
            }
    return out


def total(cells: dict[str, tuple[float | None, float]]) -> float:
    """The points given so far (a cell awaiting its manual grade counts 0, as in nbgrader export)."""
    return sum(s for s, _ in cells.values() if s is not None)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# The term's nbgrader settings, added to this repository's nbgrader_config.py in the course copy:
# the exchange (JupyterHub's global config would say the same to the students) and a late policy.
TERM_CONFIG = """
c.CourseDirectory.course_id = "dpo-lab"
c.Exchange.root = {exchange!r}
c.AssignLatePenalties.plugin_class = "dpolab_grade.classroom.SubtractPerHour"
c.SubtractPerHour.points_per_hour = {per_hour}
"""
STUDENT_CONFIG = """c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "dpo-lab"
c.Exchange.root = {exchange!r}
"""
PER_HOUR = 2  # points off each late notebook per hour (or part of one)
LATE = "planted"  # submits after the deadline
TWICE = "solved"  # submits the untouched release first, then the answers
ENROLLED_NOT_SUBMITTED = "zoe"


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} (in {cwd})\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def flows(course, tmp_path_factory):
    """A term on nbgrader's exchange: release, fetch, answer, submit (one student twice, one after
    the deadline), collect; the class graded by plain nbgrader (in the course) and by dpolab-grade
    (into ``course/grading``) at the same time; feedback released and fetched; grades exported.

    ``dpolab-grade`` is the grader as an instructor installs it (conftest.py's ``grader_venv``: a
    fresh venv, the lab then ``pip install ./grader``, built while the term goes on), its kernels
    that venv's Python; nbgrader is this test run's. The students act two at a time."""
    from conftest import build_grader_venv

    building = ThreadPoolExecutor(1)
    venv_ready = building.submit(build_grader_venv, tmp_path_factory)
    tmp = tmp_path_factory.mktemp("flows")
    exchange = tmp / "exchange"
    exchange.mkdir()
    exchange.chmod(0o777)
    term = tmp / "course"
    shutil.copytree(course, term, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
    config = term / "nbgrader_config.py"
    config.write_text(config.read_text() + TERM_CONFIG.format(exchange=str(exchange), per_hour=PER_HOUR))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DPOLAB_DEVICE="cpu")
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # both flows make and share the fixtures here
    env.pop("NBGRADER_DB_URL", None)
    nbgrader_cmd = [str(BIN / "nbgrader")]
    timings: dict[str, float] = {}

    def instructor(*args: str, cwd: Path = term) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        if args[0] == "dpolab-grade":
            python = venv_ready.result()["python"]  # the fresh venv's: dpolab-grade and its Python
            grader_env = dict(venv_env(python), DPOLAB_DEVICE="cpu", XDG_CACHE_HOME=env["XDG_CACHE_HOME"])
            grader_env.pop("NBGRADER_DB_URL", None)
            proc = run([str(python.parent / args[0]), *args[1:]], cwd, grader_env)
        else:
            proc = run([*nbgrader_cmd, *args], cwd, env)
        timings[" ".join(args[:2])] = timings.get(" ".join(args[:2]), 0) + time.perf_counter() - start
        return proc

    def student(sid: str, *args: str) -> Path:
        home = tmp / "students" / sid
        if not home.exists():
            home.mkdir(parents=True)
            (home / "nbgrader_config.py").write_text(STUDENT_CONFIG.format(exchange=str(exchange)))
        start = time.perf_counter()
        run([*nbgrader_cmd, *args, "--student", sid], home, dict(env, HOME=str(home)))
        key = f"(students) {args[0]}"
        timings[key] = timings.get(key, 0) + time.perf_counter() - start
        return home

    # the roster: the class and one enrolled student who never hands anything in
    students = class_edits()
    roster = tmp / "roster.csv"
    roster.write_text("id,first_name,last_name,email\n" + "".join(
        f"{s},{s.title()},Student,{s}@example.org\n" for s in [*students, ENROLLED_NOT_SUBMITTED]))  # fmt: skip
    instructor("db", "student", "import", str(roster))
    instructor("release_assignment", ASSIGNMENT)
    with ThreadPoolExecutor(2) as pool:
        homes = dict(
            zip(
                students,
                pool.map(lambda s: student(s, "fetch_assignment", ASSIGNMENT), students),
                strict=True,
            )
        )

    def submit(sid: str) -> None:
        if sid == TWICE:  # first the release as fetched, then the answers
            student(sid, "submit", ASSIGNMENT)
        answer(homes[sid] / ASSIGNMENT, students[sid])
        student(sid, "submit", ASSIGNMENT)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(submit, [sid for sid in students if sid != LATE]))
    time.sleep(1.1)
    due = datetime.now(timezone.utc)
    time.sleep(1.1)
    answer(homes[LATE] / ASSIGNMENT, students[LATE])
    student(LATE, "submit", ASSIGNMENT)
    instructor("db", "assignment", "add", ASSIGNMENT, f"--duedate={due:%Y-%m-%d %H:%M:%S.%f} UTC")
    instructor("collect", ASSIGNMENT)

    out = term / "grading"
    graded: dict[str, subprocess.CompletedProcess] = {}

    def dpolab_grade():
        graded["dpolab-grade"] = instructor(
            "dpolab-grade",
            "submitted",
            "--out",
            "grading",
            "--roster",
            str(roster),
            "--jobs",
            "1",
            "--no-progress",
        )

    other = threading.Thread(target=dpolab_grade)
    other.start()
    autograde = instructor("autograde", ASSIGNMENT)
    other.join()
    assert "dpolab-grade" in graded, "dpolab-grade failed (see above)"
    instructor("release_feedback", ASSIGNMENT, cwd=out)  # OUT's config names the course's exchange
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: student(s, "fetch_feedback", ASSIGNMENT), students))
    instructor("export", "--to", str(tmp / "nbgrader-export.csv"))
    instructor("dpolab-grade", "export", "grading", "--format", "canvas")
    building.shutdown()
    (tmp / "timings.json").write_text(json.dumps(timings, indent=1))  # for the record: pytest keeps tmp
    print("\nthe term's instructor commands (seconds, summed over calls):")
    for command, seconds in timings.items():
        print(f"  {command:<40} {seconds:6.1f}")
    return {
        "course": term,
        "out": out,
        "tmp": tmp,
        "env": env,
        "students": students,
        "homes": homes,
        "due": due,
        "timings": timings,
        "plain": gradebook_scores(term / "gradebook.db", students),
        "cache": tmp / "cache",
        "grades": {r["student_id"]: r for r in read_csv(out / "grades.csv")},
        "cells": {r["student_id"]: r for r in read_csv(out / "cells.csv")},
        "export": {r["student_id"]: r for r in read_csv(tmp / "nbgrader-export.csv")},
        "canvas": list(csv.reader(open(out / "canvas.csv", newline=""))),
        "autograde_log": autograde.stdout + autograde.stderr,
        "grader_python": venv_ready.result()["python"],
    }


# --------------------------------------------------------------------------- the same scores
def test_plain_nbgrader_and_dpolab_grade_give_the_same_score_in_every_cell(flows):
    differ = []
    for student, cells in flows["plain"].items():
        row = flows["cells"][student]
        for grade_id, (score, _) in cells.items():
            theirs = float(row[grade_id]) if row[grade_id] != "" else None
            if theirs != score:
                differ.append(f"{student}/{grade_id}: plain nbgrader {score}, dpolab-grade {theirs}")
    assert not differ, "\n".join(differ)
    for student, cells in flows["plain"].items():  # and the totals of grades.csv, before late penalties
        assert float(flows["grades"][student]["raw_score"]) == total(cells), student


def test_both_flows_leave_the_written_answers_to_a_manual_grade(flows):
    """A written answer handed in: needs_manual_grade and no score in plain nbgrader's gradebook, None
    in dpolab-grade's results and blank in cells.csv; grades.csv counts its points as pending."""
    answered = {
        s for s, nbs in flows["students"].items() if nbs.get(f"{NB5}.ipynb") not in (None, "untouched")
    }
    assert answered == {"solved", *rewriters(), "planted", "hidden_mistakes", "cheater"}, answered
    for student in answered:
        for cell in MANUAL:
            assert flows["plain"][student][cell][0] is None, (student, cell, flows["plain"][student][cell])
            assert flows["cells"][student][cell] == "", (student, cell, flows["cells"][student][cell])
        result = json.loads((flows["out"] / "results" / f"{student}.json").read_text())
        grades = result["notebooks"][NB5]["grades"]
        assert {c: grades[c] for c in MANUAL} == dict.fromkeys(MANUAL), (student, grades)
    for cell in MANUAL:  # left as released: nbgrader gives it 0 at once, nothing to grade by hand
        assert flows["plain"]["untouched"][cell] == (0, MANUAL[cell])
        assert flows["cells"]["untouched"][cell] == "0"


def test_grades_csv_counts_automatic_and_pending_manual_points(flows):
    """``auto_score``: the automatic cells' points; ``manual_pending``: the points of written answers
    still to grade by hand; ``score``: what is given so far (late penalty off), out of 54."""
    expected = {  # (auto_score, manual_pending)
        "solved": (50, 4),
        **{s: (50, 4) for s in rewriters()},
        "untouched": (0, 0),
        "hidden_mistakes": (30, 4),  # 50 - (8 + 2 + 3 + 2 + 5)
        "patches_checks": (9, 0),
        "cheater": (0, 4),
        "incomplete": (21, 0),
        ENROLLED_NOT_SUBMITTED: (0, 0),
    }
    for sid, row in flows["grades"].items():
        plain = flows["plain"].get(sid, {})
        auto = sum(s for c, (s, _) in plain.items() if c not in MANUAL)
        pending = sum(m for c, (s, m) in plain.items() if s is None)
        assert (float(row["auto_score"]), float(row["manual_pending"])) == (auto, pending), (sid, row)
        if sid in expected:
            assert (float(row["auto_score"]), float(row["manual_pending"])) == expected[sid], (sid, row)
        assert float(row["max_score"]) == MAX_SCORE, row
    assert float(flows["grades"][LATE]["manual_pending"]) == 4
    header = list(flows["grades"]["solved"])
    assert header[-2:] == ["auto_score", "manual_pending"], header


def test_grades_csv_agrees_with_nbgrader_export_late_penalties_and_roster_included(flows):
    """Every enrolled student, with nbgrader export's raw score, penalty and score (plain flow)."""
    ours, theirs = flows["grades"], flows["export"]
    assert sorted(ours) == sorted(theirs) == sorted([*flows["students"], ENROLLED_NOT_SUBMITTED])
    for sid, row in theirs.items():
        for mine, nbgrader_column in (("raw_score", "raw_score"), ("late_penalty", "late_submission_penalty"),
                                      ("score", "score"), ("max_score", "max_score")):  # fmt: skip
            assert float(ours[sid][mine]) == float(row[nbgrader_column]), (sid, mine, ours[sid], row)
    assert (
        ours[ENROLLED_NOT_SUBMITTED]["status"] == "missing" and ours[ENROLLED_NOT_SUBMITTED]["score"] == "0"
    )


def test_the_late_student_loses_what_the_policy_says_and_grades_csv_says_how_late(flows):
    row = flows["grades"][LATE]
    per_notebook = {}
    for notebook, cells in [
        (nb, [c for c in flows["plain"][LATE] if c in GRADE_CELLS[nb]]) for nb in GRADE_CELLS
    ]:
        per_notebook[notebook] = sum(flows["plain"][LATE][c][0] or 0 for c in cells)  # None: manual
    late_by = float(row["seconds_late"])
    assert 1 <= late_by < 60, row  # submitted about a second after the deadline
    expected = sum(min(score, PER_HOUR) for score in per_notebook.values())  # one started hour
    assert float(row["late_penalty"]) == expected > 0, (row, per_notebook)
    assert float(row["score"]) == float(row["raw_score"]) - expected
    assert "late by 00 h 01 min" not in row["reason"] and "late by 01 min" in row["reason"], row["reason"]
    assert f"{expected:g} points off" in row["reason"]
    on_time = {s: r for s, r in flows["grades"].items() if s not in (LATE, ENROLLED_NOT_SUBMITTED)}
    assert all(r["seconds_late"] == "0" and r["late_penalty"] == "0" for r in on_time.values()), on_time


def test_dpolab_grade_is_the_installed_grader_and_its_kernels_run_that_python(flows):
    """The grader's own install (a fresh venv: the lab, then ``pip install ./grader``) grades the
    class: its ``dpolab-grade`` ran, and started every kernel with that venv's Python."""
    python = flows["grader_python"]
    for student in flows["students"]:  # each student's sandbox starts once, in the first notebook's log
        logs = "".join(p.read_text() for p in (flows["out"] / "logs" / student).glob("*.log"))
        assert "kernel: " in logs and f"{python} " in logs, student
    dpolab = subprocess.run(
        [str(python), "-c", "import dpolab, dpolab_grade; print(dpolab.__file__, dpolab_grade.__file__)"],
        capture_output=True, text=True, env=venv_env(python), check=True,
    ).stdout.split()  # fmt: skip
    # installed into that venv, not this checkout's
    assert all(f.startswith(str(python.parent.parent)) for f in dpolab), dpolab


def test_plain_autograde_warns_of_no_checksum_when_no_test_cell_was_edited(flows):
    """No student of the class edits a test cell: nbgrader's "checksum has changed" is for real edits."""
    assert "Attribute 'checksum'" not in flows["autograde_log"]
    assert "Autograding" in flows["autograde_log"] or "autograde" in flows["autograde_log"].lower()


def test_timestamps_are_kept_in_the_gradebook_as_collected(flows):
    """formgrader and nbgrader export show when each student submitted (the last submission)."""
    from nbgrader.api import Gradebook

    from dpolab_grade.classroom import parse_time

    with Gradebook(f"sqlite:///{flows['out'] / 'gradebook.db'}") as gb:
        assert gb.find_assignment(ASSIGNMENT).duedate == parse_time(
            f"{flows['due']:%Y-%m-%d %H:%M:%S.%f} UTC"
        )
        for sid in flows["students"]:
            collected = (flows["course"] / "submitted" / sid / ASSIGNMENT / "timestamp.txt").read_text()
            assert gb.find_submission(ASSIGNMENT, sid).timestamp == parse_time(collected), sid
            assert flows["grades"][sid]["timestamp"] == f"{parse_time(collected):%Y-%m-%d %H:%M:%S} UTC"
    assert flows["grades"][TWICE]["score"] == "50"  # the second submission was graded


def test_students_fetch_their_feedback_through_the_exchange(flows):
    for sid, notebooks in flows["students"].items():
        found = sorted((flows["homes"][sid] / ASSIGNMENT / "feedback").glob("*/*.html"))
        handed_in = sorted(n.replace(".ipynb", ".html") for n, e in notebooks.items() if e is not None)
        assert [f.name for f in found] == handed_in, sid
        for f in found:
            ours = flows["out"] / "feedback" / sid / ASSIGNMENT / f.name
            assert f.read_bytes() == ours.read_bytes(), f


def test_canvas_export_lists_every_enrolled_student_with_the_score(flows):
    header, points, *rows = flows["canvas"]
    assert header == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", ASSIGNMENT]
    assert points == ["Points Possible", "", "", "", "", str(MAX_SCORE)]
    scores = {r[3]: r[5] for r in rows}
    assert scores == {s: r["score"] for s, r in flows["grades"].items()}
    assert [r[0] for r in rows if r[3] == ENROLLED_NOT_SUBMITTED] == ["Student, Zoe"]


def test_a_manual_grade_appears_in_grades_csv_and_the_lms_export(flows, tmp_path):
    """As formgrader saves one: a manual score in OUT's gradebook, then dpolab-grade export."""
    from nbgrader.api import Gradebook

    out = tmp_path / "grading"
    shutil.copytree(flows["out"], out)
    sid, cell = "hidden_mistakes", "test_simpo"
    before = float(flows["grades"][sid]["score"])
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        grade = gb.find_grade(cell, NB2, ASSIGNMENT, sid)
        assert grade.score == 0 and grade.max_score == 2
        grade.manual_score = 2
        gb.db.commit()
    for fmt in ("canvas", "csv"):
        run([str(BIN / "dpolab-grade"), "export", str(out), "--format", fmt], tmp_path, flows["env"])
    grades = {r["student_id"]: r for r in read_csv(out / "grades.csv")}
    assert float(grades[sid]["score"]) == before + 2
    assert (
        read_csv(out / "cells.csv")[[r["student_id"] for r in read_csv(out / "cells.csv")].index(sid)][cell]
        == "2"
    )
    canvas = {r[3]: r[5] for r in list(csv.reader(open(out / "canvas.csv", newline="")))[2:]}
    assert float(canvas[sid]) == before + 2
    assert {r["student_id"]: r["score"] for r in read_csv(out / "csv.csv")} == {
        s: r["score"] for s, r in grades.items()
    }
    run([str(BIN / "nbgrader"), "export", "--to", str(tmp_path / "export.csv")], out, flows["env"])
    exported = {r["student_id"]: float(r["score"]) for r in read_csv(tmp_path / "export.csv")}
    assert exported == {s: float(r["score"]) for s, r in grades.items()}


def test_written_answers_graded_by_hand_complete_the_score(flows, tmp_path):
    """As formgrader saves them: both written answers of a student get a manual score; after
    ``dpolab-grade export`` the score holds them, nothing is pending and cells.csv shows them."""
    from nbgrader.api import Gradebook

    out = tmp_path / "grading"
    shutil.copytree(flows["out"], out)
    sid, given = "hidden_mistakes", {"written_answer_peak": 2, "written_answer_on_policy": 1.5}
    row = flows["grades"][sid]
    assert (float(row["score"]), float(row["manual_pending"])) == (30, 4), row
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for cell, points in given.items():
            grade = gb.find_grade(cell, NB5, ASSIGNMENT, sid)
            assert grade.needs_manual_grade and grade.manual_score is None and grade.max_score == 2
            grade.manual_score = points
            grade.needs_manual_grade = False  # what formgrader does on saving a manual score
        gb.db.commit()
    run([str(BIN / "dpolab-grade"), "export", str(out), "--format", "canvas"], tmp_path, flows["env"])
    grades = {r["student_id"]: r for r in read_csv(out / "grades.csv")}
    assert float(grades[sid]["score"]) == 30 + 3.5 and float(grades[sid]["raw_score"]) == 33.5
    assert float(grades[sid]["manual_pending"]) == 0 and float(grades[sid]["auto_score"]) == 30
    cells = {r["student_id"]: r for r in read_csv(out / "cells.csv")}
    assert {c: float(cells[sid][c]) for c in given} == given
    others = {s: (r["score"], r["manual_pending"]) for s, r in grades.items() if s != sid}
    assert others == {s: (r["score"], r["manual_pending"]) for s, r in flows["grades"].items() if s != sid}
    canvas = {r[3]: r[5] for r in list(csv.reader(open(out / "canvas.csv", newline="")))[2:]}
    assert float(canvas[sid]) == 33.5
    run([str(BIN / "nbgrader"), "export", "--to", str(tmp_path / "export.csv")], out, flows["env"])
    exported = {r["student_id"]: float(r["score"]) for r in read_csv(tmp_path / "export.csv")}
    assert exported == {s: float(r["score"]) for s, r in grades.items()}


def test_grade_cells_and_points(flows):
    points = {name: m for name, (_, m) in flows["plain"]["solved"].items()}
    assert points == {
        "test_log_probs": 3, "test_dpo_loss": 3, "test_label_smoothing": 2, "test_reference_free": 1, "test_metrics": 2,
        "test_ipo": 2, "test_kto": 3, "test_kl_estimate": 1, "test_orpo": 3, "test_simpo": 2,
        "test_pair": 1, "test_scorers": 1, "test_scored_pairs": 3, "test_single_responses": 3, "test_validate_export": 2,
        "test_concatenated_logps": 3, "test_dpo_train_step": 3, "test_step_metrics": 2,
        "test_early_stopping": 5, "test_on_policy_pairs": 5, "written_answer_peak": 2, "written_answer_on_policy": 2,
    }  # fmt: skip
    assert sum(points.values()) == MAX_SCORE and sum(m for c, m in points.items() if c not in MANUAL) == 50


def test_solutions_score_full_marks(flows):
    lost = {k: v for k, v in flows["plain"]["solved"].items() if v[0] != (None if k in MANUAL else v[1])}
    assert not lost, f"the solutions lose points: {lost}"
    assert flows["grades"]["solved"]["score"] == "50" and flows["grades"]["solved"]["status"] == "graded"


def test_answers_written_in_other_styles_keep_full_marks_through_both_doors(flows):
    for student in rewriters():
        lost = {k: v for k, v in flows["plain"][student].items() if v[0] != (None if k in MANUAL else v[1])}
        assert not lost, f"plain nbgrader takes points from correct rewrites ({student}): {lost}"
        row = flows["grades"][student]
        assert row["score"] == "50" and row["status"] == "graded", (student, row)
    assert set(rewritten_answers()) == set(NOTEBOOKS)  # every notebook has a rewritten answer


def test_untouched_release_scores_zero(flows):
    scored = {k: v for k, v in flows["plain"]["untouched"].items() if v[0] != 0}
    assert not scored, f"the untouched release earns points: {scored}"


def test_planted_bugs_lose_exactly_their_part(flows):
    for name, (score, max_score) in flows["plain"]["planted"].items():
        expected = 0 if name in PLANTED_LOSES else None if name in MANUAL else max_score
        assert score == expected, f"{name}: {score}/{max_score}, expected {expected}"


def test_mistakes_only_hidden_tests_catch_lose_their_cells(flows):
    """What the visible tests catch is checked in-process; graded, each mistake loses all its cells."""
    import test_hidden_tests_catch_mistakes as suite

    lose = set().union(*(cells for cells, _ in HIDDEN_ONLY.values()))
    for (notebook, name), (cells, visible) in HIDDEN_ONLY.items():
        answer, source = _mutation(notebook, name)
        in_kernel, _ = suite.run_cells(notebook, {answer: source})
        assert set(in_kernel) == visible, f"{name}: the visible tests catch it in {sorted(in_kernel)}"
        assert cells - visible, f"{name}: nothing here is left to the hidden tests"
    for name, (score, max_score) in flows["plain"]["hidden_mistakes"].items():
        expected = 0 if name in lose else None if name in MANUAL else max_score
        assert score == expected, f"{name}: {score}/{max_score}, expected {expected}"
    assert flows["grades"]["hidden_mistakes"]["score"] == "30"  # 50 - (8 + 2 + 3 + 2 + 5)


def test_patching_the_checks_earns_nothing(flows):
    nb1 = {k: v for k, v in flows["plain"]["patches_checks"].items() if k in NB1_CELLS}
    lost = {k: s for k, (s, m) in nb1.items() if s != m}
    assert lost == {"test_metrics": 0}, lost  # the planted bug's cell, and only it
    assert flows["grades"]["patches_checks"]["score"] == "9"  # notebook 01 only: 11 - 2


def test_importing_the_reference_earns_nothing(flows):
    """Every cell of the notebooks whose answers import the reference (01, 04) scores 0."""
    import json

    result = json.loads((flows["out"] / "results" / "cheater.json").read_text())
    statuses = {nb: r["status"] for nb, r in result["notebooks"].items()}
    assert statuses == {NB1: "graded", NB2: "missing", NB3: "missing", NB4: "graded", NB5: "graded"}, statuses
    graded = {c for nb in (NB1, NB4, NB5) for c in result["notebooks"][nb]["grades"]}
    assert graded == CHEATED | set(MANUAL)  # the written answers await their manual grade
    scored = {k: s for k, (s, _) in flows["plain"]["cheater"].items() if s}
    assert not scored and flows["grades"]["cheater"]["score"] == "0", scored


def test_both_flows_judge_against_the_same_fixtures_made_once(flows):
    import json

    made = sorted((flows["cache"] / "dpolab" / "fixtures").glob("*.json"))
    assert len(made) == 1 and made[0].name.startswith(f"{ASSIGNMENT}-"), made
    digest = (flows["out"] / ".grader" / "current").read_text().strip()
    assert made[0].read_bytes() == (flows["out"] / ".grader" / digest[:16] / "fixtures.json").read_bytes()
    fixtures = json.loads(made[0].read_text())
    assert sorted(fixtures) == [NB1, NB2, NB3, NB4, NB5]
    assert set(fixtures[NB1]) == NB1_CELLS  # every grade cell of notebook 01 has hidden tests


# --------------------------------------------------------------------------- missing notebooks
def test_a_student_missing_notebooks_is_incomplete_with_zero_for_them(flows):
    row = flows["grades"]["incomplete"]
    assert row["status"] == "incomplete" and row["score"] == "21", row  # 11 + 10
    assert (
        "not handed in (0 points): 02_dpo_variants.ipynb, 04_train_with_dpo.ipynb, 05_what_dpo_optimises.ipynb"
        in row["reason"]
    )
    cells = flows["cells"]["incomplete"]
    assert cells["test_kto"] == "0" and cells["test_step_metrics"] == "0" and cells["test_metrics"] == "2"
    statuses = {s: r["status"] for s, r in flows["grades"].items() if s != ENROLLED_NOT_SUBMITTED}
    partial = {"incomplete", "patches_checks", "cheater"}  # the students who left notebooks out
    assert {s for s, v in statuses.items() if v == "incomplete"} == partial, statuses
    assert {v for s, v in statuses.items() if s not in partial} == {"graded"}, statuses


def test_the_gradebook_needs_no_manual_grade_for_a_missing_notebook(flows):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{flows['out'] / 'gradebook.db'}") as gb:
        submission = gb.find_submission(ASSIGNMENT, "incomplete")
        flags = {nb.name: nb.needs_manual_grade for nb in submission.notebooks}
        totals = {nb.name: nb.score for nb in submission.notebooks}
    assert flags == {n.removesuffix(".ipynb"): False for n in NOTEBOOKS}
    assert totals == {NB1: 11, NB2: 0, NB3: 10, NB4: 0, NB5: 0}


# --------------------------------------------------------------------------- fail closed
def test_hidden_tests_fail_closed_without_the_judge(course, tmp_path):
    """A course whose nbgrader_config.py lacks the judge: every hidden test fails its cell, saying why."""
    plain = tmp_path / "no-judge"
    shutil.copytree(course, plain, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
    config = plain / "nbgrader_config.py"
    text = config.read_text()
    assert "use_judge(c)" in text and "from dpolab_grade.pipeline import use_judge" in text
    config.write_text(
        re.sub(r"(?m)^(from dpolab_grade\.pipeline import use_judge|use_judge\(c\))$", "", text)
    )
    hand_in(plain, "solved", {n: ({} if n.startswith(NB1) else None) for n in NOTEBOOKS})
    # the grader's kernel client (use_judge gives it; this course has none): nbclient's own can sit
    # out the ipywidgets cell's whole 60 s timeout (dpolab_grade/kernel_client.py says why)
    client = "--AsyncKernelManager.client_factory=dpolab_grade.kernel_client.PollingKernelClient"
    nbgrader(plain, "autograde", ASSIGNMENT, client, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    (scores,) = gradebook_scores(plain / "gradebook.db", ["solved"]).values()
    nb1 = {k: s for k, (s, _) in scores.items() if k in NB1_CELLS}
    assert nb1 == dict.fromkeys(NB1_CELLS, 0), f"a hidden test nobody judged kept its points: {nb1}"
    graded = nbformat.read(plain / "autograded" / "solved" / ASSIGNMENT / f"{NB1}.ipynb", as_version=4)
    errors = [o for c in graded.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 5 and all("no judge is configured" in e.evalue for e in errors), [
        e.evalue for e in errors
    ]
    assert all("use_judge(c)" in e.evalue and "dpolab-grade" in e.evalue for e in errors)
    assert not (tmp_path / "cache" / "dpolab").exists()  # no judge: no fixtures were made


def test_outside_grading_hidden_tests_neither_send_nor_fail(monkeypatch):
    """A student running the release, nbval on the solutions, Colab: nothing changes."""
    from dpolab.records import ENV, Probe, collect_into

    sink: list = []
    collect_into(sink)
    try:
        p = Probe("t")
        p.equal("k", 1)
        monkeypatch.delenv(ENV, raising=False)
        monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
        p.send()  # nothing: no grader asked
        monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
        p.send()  # nbgrader validate is not grading
        assert sink == []
        monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
        with pytest.raises(AssertionError, match="no judge is configured"):
            p.send()
        monkeypatch.setenv(ENV, "1")
        p.send()  # the judge asked: the records go out
        assert sink == [
            {"test": "t", "records": [{"key": "k", "kind": "equal", "value": 1, "spec": {"msg": ""}}]}
        ]
    finally:
        collect_into(None)


# --------------------------------------------------------------------------- formgrader (browser)
# The views an instructor opens: the class with its scores, one student's notebooks, one graded
# notebook with the judge's verdict, and the feedback to send back. Each is checked and shot.
FORMGRADER_STUDENT = "hidden_mistakes"
VERDICT = "the hidden tests of this cell failed (checked by the grader)"
NB1_SCORE = 11 - 8  # batch-sum loses test_dpo_loss, test_label_smoothing, test_reference_free, test_metrics


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    from lab_tools import screenshot_folder

    return screenshot_folder(tmp_path_factory, "formgrader-screenshots")


def _shot(page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


@pytest.mark.browser
@pytest.mark.parametrize("flow", ["plain-nbgrader", "dpolab-grade"])
def test_formgrader_shows_submissions_scores_and_feedback(flows, flow, shots, tmp_path):
    from lab_tools import chromium, jupyterlab, require_browser

    require_browser()
    if flow == "plain-nbgrader":
        root = flows["course"]  # the judge is in its nbgrader_config.py: feedback without hidden tests
        nbgrader(root, "generate_feedback", ASSIGNMENT, "--student", FORMGRADER_STUDENT)
    else:
        root = flows["out"]  # dpolab-grade wrote nbgrader_config.py, autograded/ and feedback/ there
    # formgrader shows each submission's score before late penalties
    expected = {s: float(r["raw_score"]) for s, r in flows["grades"].items() if r["status"] != "missing"}
    with jupyterlab(root, tmp_path) as (url, token, _, _), chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # formgrader inside JupyterLab: the Nbgrader menu opens it in a panel
        page.goto(f"{url}/lab?reset&token={token}")
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Nbgrader$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Formgrader$")).click()
        frame = page.frame_locator("iframe").first
        frame.get_by_text(ASSIGNMENT).first.wait_for(timeout=30_000)
        _shot(page, shots, f"{flow}-1-formgrader-in-jupyterlab")

        # the assignment, with every submission counted (dpolab-grade keeps them in OUT/submitted/)
        page.goto(f"{url}/formgrader/manage_assignments?token={token}")
        page.wait_for_selector("td.num-submissions", timeout=30_000)
        page.wait_for_function("document.querySelector('td.num-submissions').textContent.trim() !== ''")
        assert page.inner_text("td.num-submissions").strip() == str(len(flows["students"]))
        _shot(page, shots, f"{flow}-1b-assignments")

        # the class: every student with the score both flows gave
        page.goto(f"{url}/formgrader/manage_submissions/{ASSIGNMENT}?token={token}")
        page.wait_for_selector("td.score", timeout=30_000)
        page.wait_for_function(f"document.querySelectorAll('td.student-id').length >= {len(expected)}")
        rows = page.evaluate(
            """() => Object.fromEntries(Array.from(document.querySelectorAll('tr')).filter((r) =>
                 r.querySelector('td.student-id')).map((r) => [r.querySelector('td.student-id').textContent.trim(),
                 r.querySelector('td.score').textContent.trim()]))"""
        )
        shown = {s: float(v.split("/")[0]) for s, v in rows.items() if "/" in v}
        assert shown == expected, f"{flow}: formgrader shows {rows}, grades.csv says {expected}"
        _shot(page, shots, f"{flow}-2-submissions")

        # one student's notebooks with their scores
        page.goto(f"{url}/formgrader/manage_students/{FORMGRADER_STUDENT}/{ASSIGNMENT}?token={token}")
        page.get_by_text(NB1).first.wait_for(timeout=30_000)
        text = page.inner_text("body")
        assert re.search(rf"{NB1}\s+{NB1_SCORE}\s*/\s*11", text), text[:2000]
        _shot(page, shots, f"{flow}-3-student-notebooks")

        # the graded notebook, with the judge's verdict in the failing cell
        page.get_by_text(NB1).first.click()
        page.get_by_text(VERDICT).first.wait_for(timeout=30_000)
        assert "BEGIN HIDDEN TESTS" in page.inner_text("body")  # the grader sees the hidden tests...
        _shot(page, shots, f"{flow}-4-graded-notebook")

        # ...the student's feedback does not, and says which promise failed
        feedback = f"feedback/{FORMGRADER_STUDENT}/{ASSIGNMENT}/{NB1}.html"
        page.goto(f"{url}/files/{feedback}?token={token}")
        body = page.inner_text("body")
        assert VERDICT in body and "BEGIN HIDDEN TESTS" not in body, body[:2000]
        assert re.search(rf"Score:\s*{NB1_SCORE}(\.0)?\s*/\s*11", body), body[:500]
        _shot(page, shots, f"{flow}-5-feedback")

        # the manual grading view of notebook 05: a score box per grade cell, none filled in by hand
        # yet, and the student's written answers there to read
        page.goto(f"{url}/formgrader/manage_students/{FORMGRADER_STUDENT}/{ASSIGNMENT}?token={token}")
        page.get_by_text(NB5).first.click()
        page.wait_for_selector("input.score", timeout=30_000)
        boxes = page.evaluate(
            "() => Array.from(document.querySelectorAll('input.score')).map((b) => b.value)"
        )
        assert len(boxes) == 2 + len(MANUAL) and all(v.strip() == "" for v in boxes), boxes
        assert "The margin only compares the chosen and the rejected response" in page.inner_text("body")
        _shot(page, shots, f"{flow}-6-manual-grading")


# --------------------------------------------------------------------------- the class report
class _Tables(HTMLParser):
    """``{table id: [[cell text, ...], ...]}`` (header row first) and the images' sources."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _report(flows) -> _Tables:
    parser = _Tables()
    parser.feed((flows["out"] / "report.html").read_text())
    return parser


def test_class_report_numbers_match_the_csvs(flows):
    report, grades, cells = _report(flows), flows["grades"], flows["cells"]
    head, (summary,) = report.tables["summary"][0], report.tables["summary"][1:]
    summary = dict(zip(head, summary, strict=True))
    statuses = [r["status"] for r in grades.values()]
    scores = [float(r["score"]) for r in grades.values()]
    assert (
        int(summary["students"]) == len(grades) == 8 + REWRITES
    )  # the class and the enrolled student who did not submit
    assert [int(summary[s]) for s in ("graded", "incomplete", "ungradable", "missing")] == [
        statuses.count(s) for s in ("graded", "incomplete", "ungradable", "missing")
    ]
    assert float(summary["mean score"]) == pytest.approx(sum(scores) / len(scores), abs=0.005)
    assert float(summary["out of"]) == MAX_SCORE

    maxima = read_csv(flows["out"] / "cells.csv")[0]  # the "(max)" row
    rows = report.tables["cells"][1:]
    assert [r[1] for r in rows] == [k for k in maxima if k not in ("student_id", "status")]
    for _notebook, cell, points, full, scored, rate in rows:
        values = [float(r[cell]) for s, r in cells.items() if s != "(max)" and r[cell] != ""]
        assert float(points) == float(maxima[cell])
        assert (int(full), int(scored)) == (sum(v >= float(points) for v in values), len(values)), cell
        assert rate == f"{100 * int(full) / int(scored):.0f}%"

    promises = report.tables["promises"][1:]
    assert promises, "the report lists no failed promise"
    counts = [int(r[0]) for r in promises]
    assert counts == sorted(counts, reverse=True)
    for n, _notebook, cell, promise in promises:  # a failed promise costs its cell's points
        lost = sum(
            1
            for s, r in cells.items()
            if s != "(max)" and r[cell] != "" and float(r[cell]) < float(maxima[cell])
        )
        assert 1 <= int(n) <= lost, (n, cell, promise, lost)
    # the hidden-only mistake of notebook 02 (SimPO's loss summed over the batch) is named there
    simpo = [r for r in promises if r[2] == "test_simpo"]
    assert simpo and all(int(r[0]) >= 1 for r in simpo)

    attention = report.tables["attention"][1:]
    expected = [
        [s, r["status"], r["score"], r["reason"]] for s, r in grades.items() if r["status"] != "graded"
    ]
    assert [[a, b, str(float(c)), d] for a, b, c, d in attention] == [
        [a, b, str(float(c)), d] for a, b, c, d in expected
    ]
    assert len(report.images) == 2 and all(src.startswith("data:image/png;base64,") for src in report.images)


@pytest.mark.browser
def test_class_report_opens_in_chromium(flows, shots):
    from lab_tools import chromium, require_browser

    require_browser()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((flows["out"] / "report.html").as_uri())
        page.wait_for_function("Array.from(document.images).every((i) => i.complete && i.naturalWidth > 0)")
        widths = page.evaluate("Array.from(document.images).map((i) => i.naturalWidth)")
        assert len(widths) == 2 and min(widths) > 300, widths
        assert "Promises that failed most often" in page.inner_text("body")
        _shot(page, shots, "class-report")
