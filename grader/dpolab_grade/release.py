"""The student release, stamped: "Open in Colab" / Binder badges and the Colab set-up cell.

Two releases come from the same ``solutions/``, one per use:

- *self-study* (``notebooks/``, what ``make lab``, Colab and Binder open): badges to this
  repository at the release tag, and a Colab cell that installs the full ``dpolab`` at that tag
  (``colab_cells/self_study.py``). The full ``dpolab`` holds every exercise's reference answer.
- *graded* (``dpolab-graded-course OUT`` or ``c.StampRelease.graded = True``): no badges (they
  would open the self-study release), and a Colab cell that installs the course's student
  package, never the reference (``colab_cells/graded.py``; from ``package_url`` or from the
  wheel a student uploads).

:class:`StampRelease` is an nbconvert preprocessor that nbgrader's ``generate_assignment`` runs
last (this repository's ``nbgrader_config.py``: :func:`generate_preprocessors`), so
``nbgrader generate_assignment --force`` stamps the release it writes and cannot lose the cell.

Everything derives from the project's metadata: the public address (``[project.urls]
Repository`` in pyproject.toml, the one place it is written) and the version, whose tag
``v<version>`` is the revision the badges open and the self-study cell installs.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Unicode

CELLS = Path(__file__).resolve().with_name("colab_cells")
INSTALL_CELL_ID = "colab-setup"
BADGE_PREFIX = "[![Open In Colab]"


def _pyproject() -> Path | None:
    """The repository's pyproject.toml when dpolab runs from a checkout (editable install)."""
    path = Path(__file__).resolve().parents[3] / "pyproject.toml"
    return path if path.is_file() and 'name = "dpolab"' in path.read_text(encoding="utf-8") else None


def project(root: Path | None = None) -> dict:
    """``{"repository", "owner_repo", "revision"}`` from pyproject.toml (a checkout) or the
    installed package's metadata."""
    pyproject = Path(root) / "pyproject.toml" if root else _pyproject()
    if pyproject is not None:
        import tomllib

        meta = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        repository, version = meta["urls"]["Repository"], meta["version"]
    else:
        from importlib.metadata import metadata

        m = metadata("dpolab")
        urls = dict(u.split(", ", 1) for u in m.get_all("Project-URL") or [])
        repository, version = urls["Repository"], m["Version"]
    repository = repository.rstrip("/")
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", repository)
    if not match:
        raise ValueError(
            f"[project.urls] Repository must be https://github.com/OWNER/NAME, got {repository!r}"
        )
    return {"repository": repository, "owner_repo": match.group(1), "revision": f"v{version}"}


def colab_url(path: str, proj: dict) -> str:
    """Colab opens a notebook straight from GitHub: ``path`` is relative to the repository root."""
    return f"https://colab.research.google.com/github/{proj['owner_repo']}/blob/{proj['revision']}/{path}"


def binder_url(path: str, proj: dict) -> str:
    """Binder builds the repository at the release tag (binder/) and opens JupyterLab on ``path``."""
    return f"https://mybinder.org/v2/gh/{proj['owner_repo']}/{proj['revision']}?urlpath=lab/tree/{path}"


def colab_badge(path: str, proj: dict) -> str:
    return (
        f"{BADGE_PREFIX}(https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(path, proj)})"
    )


def binder_badge(path: str, proj: dict) -> str:
    return f"[![Launch Binder](https://mybinder.org/badge_logo.svg)]({binder_url(path, proj)})"


def badges(path: str, proj: dict) -> str:
    """The badge line for the notebook at ``path`` (relative to the repository root)."""
    return f"{colab_badge(path, proj)} {binder_badge(path, proj)}"


def _fill(text: str, name: str, value: str) -> str:
    text, n = re.subn(rf'^{name} = "[^"]*"', f'{name} = "{value}"', text, flags=re.M)
    assert n == 1, f"the Colab cell template must define {name} once"
    return text


def install_cell_source(proj: dict) -> str:
    """The self-study Colab cell: installs dpolab from this release's address and revision."""
    text = (CELLS / "self_study.py").read_text(encoding="utf-8")
    text = _fill(_fill(text, "REPOSITORY", proj["repository"]), "REVISION", proj["revision"])
    return text.rstrip("\n")


def graded_cell_source(package_url: str = "") -> str:
    """The graded course's Colab cell: installs the student package (from ``package_url``, or the
    wheel the student uploads), never the full dpolab."""
    return _fill((CELLS / "graded.py").read_text(encoding="utf-8"), "PACKAGE_URL", package_url).rstrip("\n")


def stamp(nb, path: str, proj: dict | None, graded: bool = False, package_url: str = ""):
    """Self-study: badges under the title of the first markdown cell and the install cell before
    the first code cell; graded: the graded install cell only, and no badge.

    Idempotent: stamping a stamped notebook replaces the badges and the install cell.
    """
    nb.cells = [c for c in nb.cells if c.get("id") != INSTALL_CELL_ID]
    title = next(c for c in nb.cells if c.cell_type == "markdown")
    lines = [line for line in title.source.splitlines() if not line.startswith(BADGE_PREFIX)]
    if not graded:
        heading = next((i for i, line in enumerate(lines) if line.startswith("#")), -1)
        lines.insert(heading + 1, "")
        lines.insert(heading + 2, badges(path, proj))
    title.source = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    cell = nbformat.v4.new_code_cell(graded_cell_source(package_url) if graded else install_cell_source(proj))
    cell.id = INSTALL_CELL_ID
    cell.metadata = {}  # not an nbgrader cell: students may run or skip it, grading ignores it
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, cell)
    return nb


def stamp_folder(folder: Path, graded: bool = False, package_url: str = "") -> list[Path]:
    """Stamp every notebook in the release folder ``folder`` (``<course>/notebooks/<assignment>``)."""
    proj = None if graded else project()
    folder = Path(folder).resolve()
    done = []
    for nb_path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        rel = f"{folder.parent.name}/{folder.name}/{nb_path.name}"  # as in the repository
        nbformat.write(stamp(nb, rel, proj, graded, package_url), nb_path)
        done.append(nb_path)
    return done


class StampRelease(Preprocessor):
    """``nbgrader generate_assignment``'s last step: the release it writes, stamped (above)."""

    enabled = Bool(True)  # nbconvert's default is off; nbgrader registers its pipeline as is

    graded = Bool(False, help="the graded course's release: its Colab cell installs the student package").tag(
        config=True
    )
    package_url = Unicode("", help="graded: where the course put the student package's wheel").tag(
        config=True
    )

    def preprocess(self, nb, resources):
        meta = resources.get("nbgrader", {})
        release = self.config.CourseDirectory.get("release_directory", "release")
        path = f"{Path(release).name}/{meta.get('assignment', '')}/{meta.get('notebook', '')}.ipynb"
        return stamp(nb, path, None if self.graded else project(), self.graded, self.package_url), resources


def generate_preprocessors() -> list:
    """nbgrader's ``GenerateAssignment.preprocessors``, then :class:`StampRelease`."""
    from nbgrader.converters import GenerateAssignment

    return [*GenerateAssignment.class_traits()["preprocessors"].default(), StampRelease]
