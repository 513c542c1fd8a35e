"""The notebooks: release in sync with solutions/, student notebooks, end-to-end autograding.

(nbval re-runs the solution notebooks themselves: see ``testpaths`` in pyproject.toml.)
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from notebook_tools import (
    ASSIGNMENT,
    MARKER,
    NOTEBOOKS,
    RELEASE,
    SOLUTIONS,
    grading_meta,
    make_course,
    nbgrader,
    read_json,
    solved_release,
)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    return make_course(tmp_path_factory.mktemp("nbgrader"))


def test_four_notebooks():
    assert NOTEBOOKS == [
        "01_dpo_loss.ipynb",
        "02_dpo_variants.ipynb",
        "03_preference_data.ipynb",
        "04_train_with_dpo.ipynb",
    ]
    assert sorted(p.name for p in RELEASE.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_release_is_in_sync_with_solutions(course, name):
    regenerated = read_json(course / "notebooks" / ASSIGNMENT / name)
    committed = read_json(RELEASE / name)
    assert regenerated == committed, (
        f"notebooks/{ASSIGNMENT}/{name} is not what nbgrader generates from solutions/: run `make release`"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_release_has_no_solution_no_hidden_test_no_output(name):
    release = nbformat.read(RELEASE / name, as_version=4)
    solution = nbformat.read(SOLUTIONS / name, as_version=4)
    text = "\n".join(c.source for c in release.cells)
    assert not any(MARKER.match(line) for line in text.splitlines()), (
        "a solution or hidden-test marker leaked"
    )
    for cell in release.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} carries outputs"
    # every substantial line written between the markers must be gone from the release
    for cell in solution.cells:
        inside = False
        for line in cell.source.splitlines():
            if MARKER.match(line):
                inside = line.strip().startswith("### BEGIN")
                continue
            if inside and len(line.strip()) > 25:
                assert line.strip() not in text, (
                    f"solution/hidden line leaked into the release: {line.strip()!r}"
                )
    stubs = [c for c in release.cells if grading_meta(c).get("solution")]
    assert stubs and all("raise NotImplementedError()" in c.source for c in stubs)
    graded = [c for c in release.cells if grading_meta(c).get("grade")]
    assert graded and all(grading_meta(c)["points"] > 0 for c in graded)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_student_notebook_runs_with_only_not_implemented_errors(tmp_path, monkeypatch, name):
    nb = nbformat.read(RELEASE / name, as_version=4)
    monkeypatch.setenv("DPOLAB_DEVICE", "cpu")
    monkeypatch.setenv("DPOLAB_QUICK", "1")  # notebook 04's training cells: a few steps, as when grading
    client = NotebookClient(
        nb,
        timeout=120,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        (c.id, o.ename, o.evalue)
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors, "the untouched release should stop at the stubs"
    wrong = [e for e in errors if e[1] != "NotImplementedError"]
    assert not wrong, f"cells failing with something other than a stub's NotImplementedError: {wrong}"


# --------------------------------------------------------------------------- autograding
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


def _submit(course, student, edits=None, untouched=False):
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    for name in NOTEBOOKS:
        if untouched:
            nb = nbformat.read(course / "notebooks" / ASSIGNMENT / name, as_version=4)
        else:
            nb = solved_release(name, course / "notebooks" / ASSIGNMENT, (edits or {}).get(name))
        nbformat.write(nb, folder / name)


@pytest.fixture(scope="module")
def grades(course):
    """Autograde four submissions; return {student: {grade_id: (score, max_score)}}."""
    from nbgrader.api import Gradebook

    _submit(course, "solved")
    _submit(course, "untouched", untouched=True)
    _submit(course, "planted", PLANTED)
    _submit(course, "cheater", CHEATER)
    nbgrader(course, "autograde", ASSIGNMENT)
    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in ("solved", "untouched", "planted", "cheater"):
            submission = gb.find_submission(ASSIGNMENT, student)
            out[student] = {
                g.name: (g.score, g.max_score)
                for nb in submission.notebooks
                for g in nb.grades
                if g.max_score > 0
            }
    return out


def test_grade_cells_and_points(grades):
    points = {name: m for name, (_, m) in grades["solved"].items()}
    assert points == {
        "test_log_probs": 3, "test_dpo_loss": 3, "test_label_smoothing": 2, "test_reference_free": 1, "test_metrics": 2,
        "test_ipo": 2, "test_kl_estimate": 1, "test_kto": 3, "test_orpo": 3, "test_simpo": 2,
        "test_pair": 1, "test_scorers": 1, "test_scored_pairs": 3, "test_single_responses": 3, "test_validate_export": 2,
        "test_concatenated_logps": 3, "test_dpo_train_step": 3, "test_step_metrics": 2,
    }  # fmt: skip


def test_solutions_score_full_marks(grades):
    lost = {k: v for k, v in grades["solved"].items() if v[0] != v[1]}
    assert not lost, f"the solutions lose points: {lost}"


def test_untouched_release_scores_zero(grades):
    scored = {k: v for k, v in grades["untouched"].items() if v[0] != 0}
    assert not scored, f"the untouched release earns points: {scored}"


def test_planted_bugs_lose_exactly_their_part(grades):
    for name, (score, max_score) in grades["planted"].items():
        expected = 0 if name in PLANTED_LOSES else max_score
        assert score == expected, f"{name}: {score}/{max_score}, expected {expected}"


def test_importing_the_reference_earns_nothing(grades):
    cheated = {
        "test_log_probs",
        "test_dpo_loss",
        "test_label_smoothing",
        "test_reference_free",
        "test_metrics",
        "test_concatenated_logps",
        "test_dpo_train_step",
        "test_step_metrics",
    }
    for name, (score, max_score) in grades["cheater"].items():
        expected = 0 if name in cheated else max_score
        assert score == expected, f"{name}: {score}/{max_score}, expected {expected}"
