"""Grading is right through every door an instructor uses (issue 13).

One class is graded twice: by plain ``nbgrader autograde`` in a copy of this course (this
repository's ``nbgrader_config.py``, which registers the judge; formgrader's Autograde button
runs the same app) and by ``dpolab-grade``. Both must give every student the same score in every
grade cell. The class:

``solved``           every answer right: 40/40
``untouched``        the release as handed out: 0
``planted``          one visible mistake per exercise (the visible tests catch them)
``hidden_mistakes``  one mistake per notebook that only the hidden tests catch: without a judge
                     these keep their points (the bug this issue fixes)
``patches_checks``   notebook 01's answer patches ``torch.allclose``, ``abs``, ... and has a bug
                     (hands in notebook 01 only)
``cheater``          answers that import the reference (hands in notebooks 01 and 04 only)
``incomplete``       hands in notebooks 01 and 03 only: 0 for 02 and 04, ``incomplete``

Plain nbgrader runs without the sandbox (the kernel can read what the grading user can); that is
said in the README, and ``dpolab-grade`` is the safe path. The two runs go at the same time (plain
nbgrader grades one notebook at a time; ``dpolab-grade --jobs 1`` beside it), each on one core.

Without the judge, a hidden test fails its cell (fail closed): ``test_hidden_tests_fail_closed_without_the_judge``.
"""

from __future__ import annotations

import csv
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from notebook_tools import ASSIGNMENT, NOTEBOOKS, nbgrader, solved_release, strip_markers

NB1, NB2, NB3, NB4 = (n.removesuffix(".ipynb") for n in NOTEBOOKS)
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
}
PLANTED_LOSES = {
    "test_metrics",
    "test_kto",
    "test_scored_pairs",
    "test_concatenated_logps",
    "test_step_metrics",
}
CHEATER = {
    "01_dpo_loss.ipynb": {
        "dpo_loss_answer": ("*", "from dpolab import DPOLoss  # the reference, not my own")
    },
    "04_train_with_dpo.ipynb": {
        "concatenated_logps_answer": ("*", "from dpolab import concatenated_logps  # the reference"),
        "dpo_train_step_answer": ("*", "from dpolab import dpo_train_step  # the reference"),
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
}
# Mutations of the hidden-test suites that the visible tests (all or some of) miss:
# (notebook, mutation) -> (the grade cells they lose, those of them whose visible tests catch it).
# Without a judge the others keep their points; nb01's is the issue's "batch loss summed" (8 -> 3).
HIDDEN_ONLY = {
    (NB1, "batch-sum"): (
        {"test_dpo_loss", "test_label_smoothing", "test_reference_free", "test_metrics"},
        {"test_dpo_loss"},
    ),
    (NB2, "simpo-batch-sum"): ({"test_simpo"}, set()),
    (NB3, "pairs-prompts-sorted"): ({"test_scored_pairs"}, set()),
    (NB4, "metric-margin-of-logps"): ({"test_step_metrics"}, set()),
}
NB1_CELLS = {"test_log_probs", "test_dpo_loss", "test_label_smoothing", "test_reference_free", "test_metrics"}
HANDED_IN_BY_INCOMPLETE = ("01_dpo_loss.ipynb", "03_preference_data.ipynb")


def _mutation(notebook: str, name: str) -> tuple[str, str]:
    """(answer cell, its source with the mutation) from the hidden-test suites."""
    import test_hidden_tests_catch_mistakes as suite
    import test_hidden_tests_nb04 as suite04

    (case,) = (
        p.values[0]
        for p in [*suite.MISTAKES, *suite04.MISTAKES]
        if p.values[0].name == name and p.values[0].notebook == notebook
    )
    source = suite.mutate(notebook, case.answer, (case.old, case.new), *case.edits)[case.answer]
    return case.answer, strip_markers(source)


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
        "untouched": {n: "untouched" for n in NOTEBOOKS},
        "planted": {n: PLANTED.get(n, {}) for n in NOTEBOOKS},
        "hidden_mistakes": {n: hidden.get(n, {}) for n in NOTEBOOKS},
        # these two hand in only the notebooks they change (the others would be "solved" again)
        "patches_checks": {n: ({answer: ("*", source)} if n.startswith(NB1) else None) for n in NOTEBOOKS},
        "cheater": {n: CHEATER.get(n) for n in NOTEBOOKS},
        "incomplete": {n: ({} if n in HANDED_IN_BY_INCOMPLETE else None) for n in NOTEBOOKS},
    }


def submit(course: Path, student: str, notebooks: dict) -> None:
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    release = course / "notebooks" / ASSIGNMENT
    for name, edits in notebooks.items():
        if edits is None:
            continue
        if edits == "untouched":
            nb = nbformat.read(release / name, as_version=4)
        else:
            nb = solved_release(name, release, edits)
        nbformat.write(nb, folder / name)


def gradebook_scores(db: Path, students) -> dict[str, dict[str, tuple[float, float]]]:
    """``{student: {grade_id: (score, max_score)}}`` from an nbgrader gradebook."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{db}") as gb:
        for student in students:
            submission = gb.find_submission(ASSIGNMENT, student)
            out[student] = {
                g.name: (g.score, g.max_score)
                for nb in submission.notebooks
                for g in nb.grades
                if g.max_score > 0
            }
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def flows(course, tmp_path_factory):
    """The class graded by plain nbgrader (in ``course``) and by dpolab-grade (into ``out``)."""
    from dpolab.autograde.cli import main

    tmp = tmp_path_factory.mktemp("flows")
    students = class_edits()
    for student, notebooks in students.items():
        submit(course, student, notebooks)
    out = tmp / "dpolab-grade"
    codes = {}

    def dpolab_grade():
        args = [
            str(course / "submitted"),
            "--out",
            str(out),
            "--solutions",
            str(course / "solutions" / ASSIGNMENT),
        ]
        codes["dpolab-grade"] = main([*args, "--jobs", "1", "--no-progress"])

    # The fixtures are made on first use into a cache of this test's own, by whichever flow asks
    # first (the other waits for them: fixtures.cached_fixtures)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        other = threading.Thread(target=dpolab_grade)
        other.start()
        nbgrader(course, "autograde", ASSIGNMENT)
        other.join()
    assert codes["dpolab-grade"] == 0
    return {
        "course": course,
        "out": out,
        "students": students,
        "plain": gradebook_scores(course / "gradebook.db", students),
        "cache": tmp / "cache",
        "grades": {r["student_id"]: r for r in read_csv(out / "grades.csv")},
        "cells": {r["student_id"]: r for r in read_csv(out / "cells.csv")},
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
    for student, cells in flows["plain"].items():  # and the totals of grades.csv
        assert float(flows["grades"][student]["score"]) == sum(s for s, _ in cells.values()), student


def test_grade_cells_and_points(flows):
    points = {name: m for name, (_, m) in flows["plain"]["solved"].items()}
    assert points == {
        "test_log_probs": 3, "test_dpo_loss": 3, "test_label_smoothing": 2, "test_reference_free": 1, "test_metrics": 2,
        "test_ipo": 2, "test_kto": 3, "test_kl_estimate": 1, "test_orpo": 3, "test_simpo": 2,
        "test_pair": 1, "test_scorers": 1, "test_scored_pairs": 3, "test_single_responses": 3, "test_validate_export": 2,
        "test_concatenated_logps": 3, "test_dpo_train_step": 3, "test_step_metrics": 2,
    }  # fmt: skip


def test_solutions_score_full_marks(flows):
    lost = {k: v for k, v in flows["plain"]["solved"].items() if v[0] != v[1]}
    assert not lost, f"the solutions lose points: {lost}"
    assert flows["grades"]["solved"]["score"] == "40" and flows["grades"]["solved"]["status"] == "graded"


def test_untouched_release_scores_zero(flows):
    scored = {k: v for k, v in flows["plain"]["untouched"].items() if v[0] != 0}
    assert not scored, f"the untouched release earns points: {scored}"


def test_planted_bugs_lose_exactly_their_part(flows):
    for name, (score, max_score) in flows["plain"]["planted"].items():
        expected = 0 if name in PLANTED_LOSES else max_score
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
        expected = 0 if name in lose else max_score
        assert score == expected, f"{name}: {score}/{max_score}, expected {expected}"
    assert flows["grades"]["hidden_mistakes"]["score"] == "25"  # 40 - (8 + 2 + 3 + 2)


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
    assert statuses == {NB1: "graded", NB2: "missing", NB3: "missing", NB4: "graded"}, statuses
    graded = {c for nb in (NB1, NB4) for c in result["notebooks"][nb]["grades"]}
    assert graded == CHEATED
    scored = {k: s for k, (s, _) in flows["plain"]["cheater"].items() if s}
    assert not scored and flows["grades"]["cheater"]["score"] == "0", scored


def test_both_flows_judge_against_the_same_fixtures_made_once(flows):
    import json

    made = sorted((flows["cache"] / "dpolab" / "fixtures").glob("*.json"))
    assert len(made) == 1 and made[0].name.startswith(f"{ASSIGNMENT}-"), made
    digest = (flows["out"] / ".grader" / "current").read_text().strip()
    assert made[0].read_bytes() == (flows["out"] / ".grader" / digest[:16] / "fixtures.json").read_bytes()
    fixtures = json.loads(made[0].read_text())
    assert sorted(fixtures) == [NB1, NB2, NB3, NB4]
    assert set(fixtures[NB1]) == NB1_CELLS  # every grade cell of notebook 01 has hidden tests


# --------------------------------------------------------------------------- missing notebooks
def test_a_student_missing_notebooks_is_incomplete_with_zero_for_them(flows):
    row = flows["grades"]["incomplete"]
    assert row["status"] == "incomplete" and row["score"] == "21", row  # 11 + 10
    assert "not handed in (0 points): 02_dpo_variants.ipynb, 04_train_with_dpo.ipynb" in row["reason"]
    cells = flows["cells"]["incomplete"]
    assert cells["test_kto"] == "0" and cells["test_step_metrics"] == "0" and cells["test_metrics"] == "2"
    statuses = {s: r["status"] for s, r in flows["grades"].items()}
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
    assert totals == {NB1: 11, NB2: 0, NB3: 10, NB4: 0}


# --------------------------------------------------------------------------- fail closed
def test_hidden_tests_fail_closed_without_the_judge(course, tmp_path):
    """A course whose nbgrader_config.py lacks the judge: every hidden test fails its cell, saying why."""
    plain = tmp_path / "no-judge"
    shutil.copytree(course, plain, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
    config = plain / "nbgrader_config.py"
    text = config.read_text()
    assert "use_judge(c)" in text
    config.write_text(
        re.sub(r"(?m)^(from dpolab\.autograde\.pipeline import use_judge|use_judge\(c\))$", "", text)
    )
    submit(plain, "solved", {n: ({} if n.startswith(NB1) else None) for n in NOTEBOOKS})
    nbgrader(plain, "autograde", ASSIGNMENT, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
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
    from dpolab.autograde.records import ENV, Probe, collect_into

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
    expected = {s: float(r["score"]) for s, r in flows["grades"].items()}
    with jupyterlab(root, tmp_path) as (url, token, _), chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # formgrader inside JupyterLab: the Nbgrader menu opens it in a panel
        page.goto(f"{url}/lab?reset&token={token}")
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Nbgrader$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Formgrader$")).click()
        frame = page.frame_locator("iframe").first
        frame.get_by_text(ASSIGNMENT).first.wait_for(timeout=30_000)
        _shot(page, shots, f"{flow}-1-formgrader-in-jupyterlab")

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
    assert int(summary["students"]) == len(grades) == 7
    assert [int(summary[s]) for s in ("graded", "incomplete", "ungradable")] == [
        statuses.count(s) for s in ("graded", "incomplete", "ungradable")
    ]
    assert float(summary["mean score"]) == pytest.approx(sum(scores) / len(scores), abs=0.005)
    assert float(summary["max score"]) == 40

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
