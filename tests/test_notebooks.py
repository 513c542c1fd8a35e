"""The notebooks: release in sync with solutions/, student notebooks, end-to-end autograding.

(nbval re-runs the solution notebooks themselves: see ``testpaths`` in pyproject.toml.)
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient
from traitlets.config import Config

from dpolab_grade.kernel_client import PollingKernelClient
from notebook_tools import (
    ASSIGNMENT,
    MARKER,
    NOTEBOOKS,
    RELEASE,
    SOLUTIONS,
    grading_meta,
    read_json,
)


def test_five_notebooks():
    assert NOTEBOOKS == [
        "01_dpo_loss.ipynb",
        "02_dpo_variants.ipynb",
        "03_preference_data.ipynb",
        "04_train_with_dpo.ipynb",
        "05_what_dpo_optimises.ipynb",
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
    stubs = [c for c in release.cells if grading_meta(c).get("solution") and c.cell_type == "code"]
    assert stubs and all("raise NotImplementedError()" in c.source for c in stubs)
    # written answers (markdown, graded by hand): the student sees nbgrader's prompt, not the model answer
    written = [c for c in release.cells if grading_meta(c).get("solution") and c.cell_type == "markdown"]
    assert all(c.source.strip() == "YOUR ANSWER HERE" for c in written), [c.source[:80] for c in written]
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
        # the grader's kernel client: nbclient's own can sit out a cell's whole timeout after the
        # ipywidgets cell of notebook 01 (dpolab_grade/kernel_client.py says why)
        config=Config({"AsyncKernelManager": {"client_factory": PollingKernelClient}}),
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


@pytest.mark.parametrize("number, name", list(enumerate(NOTEBOOKS, start=1)))
def test_student_notebook_reads_as_one_part_of_the_course(number, name):
    """Exercise N of 5, prerequisites and a time in the first cell, a collapsed hint per answer
    cell, and nothing a student cannot see (a course draft, the developers' rules, an issue)."""
    import re

    nb = nbformat.read(RELEASE / name, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    numbers = set(re.findall(r"Exercise (\d+) of (\d+)", text))
    assert numbers == {(str(number), str(len(NOTEBOOKS)))}, f"{name} numbers its exercise {numbers}"
    first = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert re.search(r"Prerequisites|Before you start", first), f"{name}: no prerequisites in the first cell"
    assert re.search(r"[Aa]bout (an|a|one|\d|½|1½)[^.\n]{0,20}(hour|minute)", first), (
        f"{name}: no time in the first cell"
    )
    answers = [c for c in nb.cells if grading_meta(c).get("solution")]
    hints = sum(c.source.count("<details>") for c in nb.cells if c.cell_type == "markdown")
    assert hints >= len(answers), f"{name}: {hints} collapsed hints for {len(answers)} answer cells"
    for word in (r"\bdraft\b", r"DEVELOPERS", r"\bissue \d+"):
        found = re.findall(rf".{{0,40}}{word}.{{0,40}}", text, flags=re.I)
        assert not found, f"{name} mentions what a student cannot see: {found}"
