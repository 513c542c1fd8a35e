"""Colab: badges and the guarded install cell in every student notebook, and a simulated Colab.

The address lives in pyproject.toml only; dpolab_grade.release derives the badges and the
install cell from it (``make release``). These tests fail when the release or the README
disagree with it. The simulation builds a venv with torch already installed (as Colab has it),
lets the first student notebook's own install cell install dpolab from a local copy of this
checkout (``DPOLAB_INSTALL_SOURCE``) while the rest of that notebook runs untouched (only the
stubs may raise), checks that torch was not touched, and runs every student notebook solved
there (the visible tests pass without nbgrader). (tests/test_binder.py runs every untouched
student notebook.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from dpolab_grade import release
from notebook_tools import ROOT, SOLUTIONS, solved_release
from venv_tools import (
    TORCH,
    child_env,
    copy_checkout,
    kernel_manager,
    make_venv,
    run_notebook,
    stream_text,
    venv_env,
)

PROJECT = release.project()
RELEASES = sorted(p for p in (ROOT / "notebooks").iterdir() if p.is_dir())
STUDENT_NOTEBOOKS = sorted(p for folder in RELEASES for p in folder.glob("*.ipynb"))
# What Colab has preinstalled that the lab uses (a small part of Colab's image).
COLAB_PREINSTALLED = ["numpy", "matplotlib", "ipywidgets", "ipykernel", "tqdm"]


def _rel(path):
    return path.relative_to(ROOT).as_posix()


def test_every_release_folder_has_notebooks():
    assert STUDENT_NOTEBOOKS, "no student notebooks found under notebooks/"


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=_rel)
def test_student_notebook_carries_badges_and_install_cell(path):
    nb = nbformat.read(path, as_version=4)
    title = next(c for c in nb.cells if c.cell_type == "markdown")
    expected = release.badges(_rel(path), PROJECT)
    assert expected in title.source.splitlines(), (
        f"{_rel(path)}: the title cell lacks the badges for {PROJECT['repository']} at {PROJECT['revision']} "
        "(run `make release`)"
    )
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code.get("id") == release.INSTALL_CELL_ID, "the first code cell must be the Colab set-up"
    assert first_code.source == release.install_cell_source(PROJECT), (
        f"{_rel(path)}: the install cell is not grader/dpolab_grade/colab_cells/self_study.py stamped for "
        f"{PROJECT['repository']}@{PROJECT['revision']} (run `make release`)"
    )
    assert not first_code.get("metadata", {}).get("nbgrader"), "the install cell must not be an nbgrader cell"


def test_solutions_are_not_stamped():
    for path in SOLUTIONS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert all(c.get("id") != release.INSTALL_CELL_ID for c in nb.cells), path.name
        assert release.BADGE_PREFIX not in nb.cells[0].source, path.name


def test_readme_badges_agree_with_pyproject():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_screen = "\n".join(readme.splitlines()[:25])
    folder = _rel(RELEASES[0])
    first = _rel(STUDENT_NOTEBOOKS[0])
    assert release.colab_badge(first, PROJECT) in first_screen, (
        "the README's first screen must carry the Colab badge of the first notebook"
    )
    assert release.binder_url(folder, PROJECT) in first_screen, "the README's first screen: Binder badge"
    assert "make lab" in first_screen and "make test" in first_screen
    # every Colab or Binder link in the README opens an existing notebook (or folder) at the
    # address and revision of pyproject.toml
    paths = [_rel(p) for p in [*RELEASES, *STUDENT_NOTEBOOKS]]
    allowed = {release.colab_url(p, PROJECT) for p in paths} | {release.binder_url(p, PROJECT) for p in paths}
    links = re.findall(r"https://(?:colab\.research\.google\.com/github|mybinder\.org/v2)/[^\s)\]]+", readme)
    assert links
    stray = [u for u in links if u not in allowed]
    assert not stray, f"README links that disagree with pyproject.toml ({PROJECT['repository']}): {stray}"


def test_address_is_written_in_one_place():
    """No source file but pyproject.toml writes the address (the stamped release derives it)."""
    skip = {".venv", ".git", "notebooks", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
    hand_written = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix in {".py", ".sh", ".yml", ".yaml", ".toml", ".cfg", ".ipynb", ""}:
                if PROJECT["owner_repo"] in path.read_text(encoding="utf-8", errors="ignore"):
                    hand_written.append(_rel(path))
    # the template's default is replaced at release time; the README is checked above
    assert sorted(hand_written) == ["grader/dpolab_grade/colab_cells/self_study.py", "pyproject.toml"], (
        hand_written
    )


def test_install_cell_does_nothing_outside_colab(monkeypatch, capsys):
    """Outside Colab (and without DPOLAB_INSTALL_SOURCE) the cell prints nothing and runs no pip."""
    monkeypatch.delenv("DPOLAB_INSTALL_SOURCE", raising=False)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the install cell ran a command outside Colab: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    exec(compile(release.install_cell_source(PROJECT), "colab-setup", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == ""


TORCH_SNAPSHOT = r"""
import hashlib, importlib.metadata as md, json, os
dist = md.distribution("torch")
root = str(dist.locate_file("torch"))
files = hashlib.sha256()
n = 0
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")  # byte code may be written on import
    for name in sorted(filenames):
        st = os.stat(os.path.join(dirpath, name))
        files.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        n += 1
record = hashlib.sha256(dist.read_text("RECORD").encode()).hexdigest()
print(json.dumps({"version": dist.version, "files": files.hexdigest(), "n_files": n, "record": record}))
"""


def _torch_snapshot(python) -> dict:
    out = subprocess.run(
        [str(python), "-c", TORCH_SNAPSHOT], check=True, capture_output=True, text=True, env=venv_env(python)
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def colab_venv(tmp_path_factory):
    """A venv shaped like Colab: torch (a CPU build here) and the preinstalled packages, no dpolab."""
    python = make_venv(tmp_path_factory.mktemp("colab") / "venv", [TORCH], [TORCH, *COLAB_PREINSTALLED])
    return python


def test_colab_simulation(colab_venv, tmp_path):
    python = colab_venv
    source = copy_checkout(tmp_path / "checkout")
    before = _torch_snapshot(python)
    missing = subprocess.run([str(python), "-c", "import dpolab"], capture_output=True, env=venv_env(python))
    assert missing.returncode != 0, "the Colab venv must start without dpolab"

    # 1. the first student notebook: its install cell installs dpolab from the local checkout
    first = STUDENT_NOTEBOOKS[0]
    nb = nbformat.read(first, as_version=4)
    kernel = kernel_manager(tmp_path, python, child_env(python, DPOLAB_INSTALL_SOURCE=str(source)))
    errors = run_notebook(nb, kernel, tmp_path)
    install = next(c for c in nb.cells if c.get("id") == release.INSTALL_CELL_ID)
    said = stream_text(install)
    version = PROJECT["revision"].removeprefix("v")
    expected = f"installed dpolab {version} from {source}; torch {before['version']} kept as it was"
    assert expected in said, f"the install cell said {said!r}; outputs: {install.outputs}"
    _assert_only_stubs_fail(first, errors)

    after = _torch_snapshot(python)
    assert after == before, f"torch changed: {before} -> {after}"
    where = subprocess.run(
        [str(python), "-c", "import dpolab, sys; print(dpolab.__file__.startswith(sys.prefix))"],
        check=True, capture_output=True, text=True, env=venv_env(python),
    )  # fmt: skip
    assert where.stdout.strip() == "True", "dpolab must be installed into the Colab venv, not found elsewhere"

    # 2. every student notebook, solved, in that environment: the visible tests pass without
    #    nbgrader (the install cell is inert without an install source; dpolab is installed now)
    kernel = kernel_manager(tmp_path, python, child_env(python))
    for path in STUDENT_NOTEBOOKS:
        nb = solved_release(path.name, path.parent)
        errors = run_notebook(nb, kernel, tmp_path)
        assert not errors, (
            f"{path.name} solved fails in the Colab venv (visible tests without nbgrader): {errors}"
        )
    assert _torch_snapshot(python) == before


def _assert_only_stubs_fail(path, errors):
    assert errors, f"{path.name}: the untouched notebook should stop at its stubs"
    wrong = [e for e in errors if e[2] != "NotImplementedError"]
    assert not wrong, (
        f"{path.name}: cells fail with something other than a stub's NotImplementedError: {wrong}"
    )
