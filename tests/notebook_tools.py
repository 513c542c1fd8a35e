"""Helpers for the notebook tests: a throwaway nbgrader course built from solutions/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "lab_3_1_5_dpo"
SOLUTIONS = ROOT / "solutions" / ASSIGNMENT
RELEASE = ROOT / "notebooks" / ASSIGNMENT
NOTEBOOKS = sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))
MARKER = re.compile(r"^\s*### (BEGIN|END) (SOLUTION|HIDDEN TESTS)\s*$")


def nbgrader(
    course: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run nbgrader in ``course`` with this interpreter's environment (alembic on PATH), plus ``env``."""
    env = {**os.environ, **(env or {})}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["NBGRADER_DB_URL"] = f"sqlite:///{course / 'gradebook.db'}"
    env["DPOLAB_DEVICE"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"nbgrader {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_course(tmp: Path) -> Path:
    """A copy of the course (config + solutions) with a freshly generated release.

    ``generate_assignment`` stamps it through the course's config (badges, Colab install cell), as
    ``make release`` does, so the release test compares like with like and autograding sees what
    students submit.
    """
    course = tmp / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(SOLUTIONS, course / "solutions" / ASSIGNMENT)
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    return course


def grading_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def strip_markers(source: str) -> str:
    """The solution as a student would write it: the code between the markers, markers removed."""
    return "\n".join(line for line in source.splitlines() if not MARKER.match(line))


def solved_release(name: str, release_dir: Path, edits: dict[str, tuple[str, str]] | None = None):
    """The release notebook ``name`` with every answer cell filled in from the solutions.

    ``edits`` maps an answer cell's grade_id to ``(old, new)``: a planted bug. ``old`` must
    occur exactly once. ``new`` replaces the whole cell when ``old`` is ``"*"``.
    """
    solution = nbformat.read(SOLUTIONS / name, as_version=4)
    answers = {
        grading_meta(c)["grade_id"]: c.source for c in solution.cells if grading_meta(c).get("solution")
    }
    nb = nbformat.read(release_dir / name, as_version=4)
    for cell in nb.cells:
        meta = grading_meta(cell)
        if meta.get("solution"):
            source = strip_markers(answers[meta["grade_id"]])
            if edits and meta["grade_id"] in edits:
                old, new = edits[meta["grade_id"]]
                if old == "*":
                    source = new
                else:
                    assert source.count(old) == 1, (
                        f"planted bug: {old!r} not found once in {meta['grade_id']}"
                    )
                    source = source.replace(old, new)
            cell.source = source
    return nb


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
