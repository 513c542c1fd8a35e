"""Binder: binder/, environment.yml and pyproject.toml agree; the Binder environment runs every notebook.

Binder itself cannot be reached from here. So the dependency lists are compared (same names,
same version ranges, as ``packaging`` specifier sets), and the pip equivalent of
binder/environment.yml is built in a fresh venv: torch (a CPU build, as conda-forge's
``pytorch-cpu``), the other conda packages by the same ranges, then binder/postBuild itself.
Every notebook then runs there: each solution notebook without an error (its peak RSS is
printed: Binder gives 2 GB, the target is under 1.5 GB; benchmarks/bench_notebooks.py prints
it too) and each student notebook with only the stubs failing, with NotImplementedError.
"""

from __future__ import annotations

import os
import re
import subprocess

import nbformat
import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from notebook_tools import ROOT
from venv_tools import TORCH, child_env, copy_checkout, kernel_manager, make_venv, run_notebook, venv_env

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONDA_TO_PIP = {"pytorch-cpu": "torch", "pytorch": "torch"}  # conda-forge names that differ
SOLUTION_NOTEBOOKS = sorted((ROOT / "solutions").glob("*/*.ipynb"))
STUDENT_NOTEBOOKS = sorted((ROOT / "notebooks").glob("*/*.ipynb"))


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


def conda_environment(path) -> tuple[str, dict[str, SpecifierSet], list[str]]:
    """(python version, {pip name: specifier set}, pip section) of a conda environment file."""
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert env["channels"] == ["conda-forge"], f"{path.name}: conda-forge only"
    python, deps, pip_section = None, {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section.extend(dep["pip"])
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+?)\s*([<>=!~].*)?", dep.strip())
        assert match, f"{path.name}: cannot read {dep!r}"
        name, spec = match.group(1), (match.group(2) or "").replace(" ", "")
        if name == "python":
            python = spec.lstrip("=")
            continue
        if name == "pip":
            continue
        assert not re.match(r"=[^=]", spec), (
            f"{path.name}: write {dep!r} with == (conda's = is a prefix match)"
        )
        deps[canonicalize_name(CONDA_TO_PIP.get(name, name))] = SpecifierSet(spec)
    return python, deps, pip_section


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


def test_binder_pip_environment_runs_every_notebook(tmp_path, capsys):
    """The pip equivalent of binder/: the same packages by the same ranges, then postBuild."""
    _, deps, _ = conda_environment(ROOT / "binder" / "environment.yml")
    others = [f"{name}{spec}" for name, spec in sorted(deps.items()) if name != "torch"]
    assert Version(TORCH.split("==")[1]) in deps["torch"], f"{TORCH} is outside binder's torch range"
    python = make_venv(tmp_path / "venv", [TORCH], [TORCH, *others])
    checkout = copy_checkout(tmp_path / "checkout", "binder")
    subprocess.run(
        ["bash", "binder/postBuild"], cwd=checkout, env=venv_env(python), check=True, capture_output=True
    )

    kernel = kernel_manager(tmp_path, python, child_env(python))
    report = []
    for path in SOLUTION_NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        errors, peak_mb, seconds = run_notebook(nb, kernel, tmp_path)
        assert not errors, f"solution {path.name} fails in the Binder environment: {errors}"
        report.append(f"{path.parent.name}/{path.name:<28} peak RSS {peak_mb:7.0f} MB  {seconds:5.1f} s")
    for path in STUDENT_NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        errors, _, _ = run_notebook(nb, kernel, tmp_path)
        assert errors, f"student {path.name}: the untouched notebook should stop at its stubs"
        wrong = [e for e in errors if e[2] != "NotImplementedError"]
        assert not wrong, f"student {path.name}: failures other than a stub's NotImplementedError: {wrong}"
    with capsys.disabled():
        print("\nBinder environment, solution notebooks (DPOLAB_QUICK=1; Binder gives 2 GB):")
        print("\n".join(report))


@pytest.mark.parametrize("bad", ["numpy=1.24", "numpy>=1.25"])
def test_the_comparison_catches_a_disagreement(tmp_path, bad):
    env = (ROOT / "binder" / "environment.yml").read_text(encoding="utf-8").replace("numpy>=1.24", bad)
    (tmp_path / "environment.yml").write_text(env)
    with pytest.raises(AssertionError):
        _, deps, _ = conda_environment(tmp_path / "environment.yml")
        _compare("a changed environment.yml", deps, pyproject_requirements("lab"))
