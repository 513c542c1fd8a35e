"""The grader's course: the release and its gradebook, generated once from ``solutions/``.

``nbgrader generate_assignment`` records every grade cell of the source notebooks (hidden
tests included) and its checksum in a gradebook. Each notebook of each student is then graded
in a scratch course that starts from a copy of that gradebook: edited or deleted grade cells
are restored from it. The build is cached under ``OUT/.grader/<hash of solutions>``, copied from
the grader's own cache (``~/.cache/dpolab/courses``) where another run built it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .build import digest, run_module
from .fixtures import cached_fixtures

CONFIG = """\
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.db_url = {db_url!r}
c.CourseDirectory.db_assignments = [{{"name": {assignment!r}}}]
"""


@dataclass(frozen=True)
class GradeCell:
    notebook: str  # notebook name without .ipynb
    name: str  # grade_id
    points: float
    manual: bool = False  # an answer graded by hand (nbgrader: a solution cell that is also graded)


@dataclass
class GraderCourse:
    """What every worker starts from: the gradebook, the release, the grade cells in order."""

    root: Path
    assignment: str
    digest: str

    @property
    def gradebook(self) -> Path:
        return self.root / "gradebook.db"

    @property
    def fixtures(self) -> Path:
        return self.root / "fixtures.json"

    @functools.cached_property
    def fixtures_sha256(self) -> str:
        """The fixtures' digest, taken once (before any kernel of the run): what the judge checks."""
        return hashlib.sha256(self.fixtures.read_bytes()).hexdigest()

    @property
    def release(self) -> Path:
        return self.root / "release" / self.assignment

    @property
    def notebooks(self) -> list[str]:
        return sorted(p.stem for p in self.release.glob("*.ipynb"))

    def grade_cells(self) -> list[GradeCell]:
        return [GradeCell(**g) for g in json.loads((self.root / "grade_cells.json").read_text())]

    def cell_ids(self, notebook: str) -> set[str]:
        """The nbgrader ids of a release notebook's cells: how a renamed file is recognised."""
        nb = nbformat.read(self.release / f"{notebook}.ipynb", as_version=4)
        return {c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata}

    @property
    def max_score(self) -> float:
        return sum(g.points for g in self.grade_cells())


def prepare_course(solutions: Path, assignment: str, cache: Path) -> GraderCourse:
    """Generate (or reuse) the release and gradebook of ``solutions`` (the source notebooks) in
    ``cache`` (``OUT/.grader``). A course once built is kept in the grader's own cache too
    (``~/.cache/dpolab/courses``, by the same digest): a new OUT copies it rather than running
    ``nbgrader generate_assignment`` again."""
    import fcntl

    from .fixtures import default_cache

    solutions = Path(solutions).resolve()
    if not any(solutions.glob("*.ipynb")):
        raise FileNotFoundError(f"no source notebooks in {solutions}")
    version = digest(solutions)
    root = Path(cache) / version[:16]
    course = GraderCourse(root, assignment, version)
    if (root / "grade_cells.json").exists():
        return course
    courses = default_cache().parent / "courses"
    courses.mkdir(parents=True, exist_ok=True)
    built = courses / f"{assignment}-{version[:16]}"
    with open(courses / f"{built.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another grader building the same course: wait for it
        if not (built / "grade_cells.json").exists():
            build_course(solutions, assignment, built)
    tmp = root.with_name(root.name + ".tmp")  # copied, then moved into place (no half-copied course)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built, tmp)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return course


def build_course(solutions: Path, assignment: str, root: Path) -> None:
    """``nbgrader generate_assignment`` of ``solutions`` in a scratch course; ``root`` then holds
    its gradebook and release, the fixtures and ``grade_cells.json`` (never the solutions)."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(solutions, tmp / "source" / assignment)
    # generated in tmp, then the whole folder is moved into place (no half-built cache)
    (tmp / "nbgrader_config.py").write_text(
        CONFIG.format(root=str(tmp), db_url=f"sqlite:///{tmp / 'gradebook.db'}", assignment=assignment)
    )
    run_module(
        tmp, "nbgrader generate_assignment failed", "nbgrader", "generate_assignment", assignment, "--force"
    )
    from nbgrader.api import Gradebook

    cells = []
    with Gradebook(f"sqlite:///{tmp / 'gradebook.db'}") as gb:
        assignment_row = gb.find_assignment(assignment)
        for notebook in sorted(assignment_row.notebooks, key=lambda n: n.name):
            source = nbformat.read(tmp / "source" / assignment / f"{notebook.name}.ipynb", as_version=4)
            meta = {
                c.metadata.get("nbgrader", {}).get("grade_id"): c.metadata.get("nbgrader", {})
                for c in source.cells
            }
            order = list(meta)
            for cell in sorted(notebook.grade_cells, key=lambda g: order.index(g.name)):
                manual = bool(meta[cell.name].get("solution"))
                cells.append(
                    {"notebook": notebook.name, "name": cell.name, "points": cell.max_score, "manual": manual}
                )
    # What the hidden tests record on the solutions: students' records are judged against these.
    # (made once per version of the solutions and shared with plain nbgrader's judge: fixtures.cached_fixtures)
    shutil.copy(cached_fixtures(solutions), tmp / "fixtures.json")
    (tmp / "grade_cells.json").write_text(json.dumps(cells, indent=1))
    # The grader's course never holds the solutions: only the gradebook and the release.
    shutil.rmtree(tmp / "source")
    (tmp / "nbgrader_config.py").unlink()
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
