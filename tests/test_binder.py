"""Binder: binder/, environment.yml and pyproject.toml agree (the Binder session itself: test_browser.py).

Binder itself cannot be reached from here. So the dependency lists are compared (same names,
same version ranges, as ``packaging`` specifier sets). The pip equivalent of
binder/environment.yml (``venv_tools.binder_environment``: torch, a CPU build as conda-forge's
``pytorch-cpu``, the other conda packages by the same ranges, then binder/postBuild itself) is
what tests/test_browser.py opens JupyterLab in, through binder/start, as a Binder session does:
every notebook runs there, in the browser.
"""

from __future__ import annotations

import os

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from notebook_tools import ROOT
from venv_tools import conda_environment

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pyproject_requirements(*extras: str) -> dict[str, SpecifierSet]:
    """Core dependencies plus ``extras``, following ``dpolab[...]`` self-references."""
    project = PYPROJECT["project"]
    out: dict[str, SpecifierSet] = {}
    todo, seen = [*project["dependencies"], *(f"dpolab[{e}]" for e in extras)], set()
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name == "dpolab":
            for extra in req.extras - seen:
                seen.add(extra)
                todo.extend(project["optional-dependencies"][extra])
            continue
        assert name not in out or out[name] == req.specifier, f"{name} is named twice with different ranges"
        out[name] = req.specifier
    return out


def _compare(where: str, got: dict[str, SpecifierSet], expected: dict[str, SpecifierSet]) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    ranges = {n: (str(got[n]), str(expected[n])) for n in set(got) & set(expected) if got[n] != expected[n]}
    assert not (missing or extra or ranges), (
        f"{where} disagrees with pyproject.toml: missing {missing}, not in pyproject {extra}, "
        f"different ranges (theirs, pyproject's) {ranges}"
    )


def test_binder_environment_names_the_lab_dependencies():
    python, deps, pip_section = conda_environment(ROOT / "binder" / "environment.yml")
    _compare("binder/environment.yml", deps, pyproject_requirements("lab"))
    assert not pip_section, "binder/: dpolab comes from postBuild, nothing else from pip"
    assert Version(python) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_conda_environment_names_the_test_dependencies():
    python, deps, pip_section = conda_environment(ROOT / "environment.yml")
    pip_deps = {
        canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in pip_section if r != "-e ."
    }
    assert "-e ." in pip_section, "environment.yml installs dpolab itself with `-e .`"
    assert not set(pip_deps) & set(deps), "a package is named by conda and by pip"
    _compare("environment.yml", {**deps, **pip_deps}, pyproject_requirements("test"))
    assert Version(python) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_postbuild_installs_dpolab_without_touching_torch():
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "repo2docker runs binder/postBuild only when it is executable"
    installs = [line for line in post_build.read_text().splitlines() if "pip install" in line]
    assert installs == ["python -m pip install --no-deps -e ."], installs


@pytest.mark.parametrize("bad", ["numpy=1.24", "numpy>=1.25"])
def test_the_comparison_catches_a_disagreement(tmp_path, bad):
    env = (ROOT / "binder" / "environment.yml").read_text(encoding="utf-8").replace("numpy>=1.24", bad)
    (tmp_path / "environment.yml").write_text(env)
    with pytest.raises(AssertionError):
        _, deps, _ = conda_environment(tmp_path / "environment.yml")
        _compare("a changed environment.yml", deps, pyproject_requirements("lab"))
