"""Stamp the student release: "Open in Colab" / Binder badges and the Colab install cell.

Runs after ``nbgrader generate_assignment`` in scripts/release.sh, on every notebook of the
release folder (notebooks added later included)::

    python scripts/stamp_release.py notebooks/lab_3_1_5_dpo

Everything derives from ``pyproject.toml``: the public address (``[project.urls]
Repository``, the one place it is written) and the version, whose tag ``v<version>`` is the
revision the badges open and the install cell installs. Tag the release commit with it
(``git tag v0.1.0``). tests/test_notebooks.py (through ``make_course``) and
tests/test_colab.py reuse these functions, so the committed release, the README and the
address cannot drift apart without a test failing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import tomllib

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TEMPLATE = Path(__file__).resolve().with_name("colab_install.py")
INSTALL_CELL_ID = "colab-setup"
BADGE_PREFIX = "[![Open In Colab]"


def project(root: Path = ROOT) -> dict:
    """``{"repository", "owner_repo", "revision"}`` from pyproject.toml."""
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    repository = meta["urls"]["Repository"].rstrip("/")
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", repository)
    if not match:
        raise ValueError(
            f"[project.urls] Repository must be https://github.com/OWNER/NAME, got {repository!r}"
        )
    return {"repository": repository, "owner_repo": match.group(1), "revision": f"v{meta['version']}"}


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


def install_cell_source(proj: dict) -> str:
    """scripts/colab_install.py with this release's address and revision filled in."""
    text = INSTALL_TEMPLATE.read_text(encoding="utf-8")
    text, n_repo = re.subn(r'^REPOSITORY = "[^"]*"', f'REPOSITORY = "{proj["repository"]}"', text, flags=re.M)
    text, n_rev = re.subn(r'^REVISION = "[^"]*"', f'REVISION = "{proj["revision"]}"', text, flags=re.M)
    assert n_repo == n_rev == 1, "scripts/colab_install.py must define REPOSITORY and REVISION once"
    return text.rstrip("\n")


def stamp(nb, path: str, proj: dict):
    """Badges under the title of the first markdown cell; the install cell before the first code cell.

    Idempotent: stamping a stamped notebook replaces the badges and the install cell.
    """
    nb.cells = [c for c in nb.cells if c.get("id") != INSTALL_CELL_ID]
    title = next(c for c in nb.cells if c.cell_type == "markdown")
    lines = [line for line in title.source.splitlines() if not line.startswith(BADGE_PREFIX)]
    heading = next((i for i, line in enumerate(lines) if line.startswith("#")), -1)
    lines.insert(heading + 1, "")
    lines.insert(heading + 2, badges(path, proj))
    title.source = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    cell = nbformat.v4.new_code_cell(install_cell_source(proj))
    cell.id = INSTALL_CELL_ID
    cell.metadata = {}  # not an nbgrader cell: students may run or skip it, grading ignores it
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, cell)
    return nb


def stamp_folder(folder: Path) -> list[Path]:
    """Stamp every notebook in the release folder ``folder`` (``<course>/notebooks/<assignment>``)."""
    proj = project()
    folder = Path(folder).resolve()
    done = []
    for nb_path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        rel = f"{folder.parent.name}/{folder.name}/{nb_path.name}"  # as in the repository
        nbformat.write(stamp(nb, rel, proj), nb_path)
        done.append(nb_path)
    return done


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        for p in stamp_folder(Path(folder)):
            print(f"stamped {p}")
