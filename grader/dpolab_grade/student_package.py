"""``dpolab-graded-course OUT``: what students receive for a graded course, with no exercise's answer.

    dpolab-graded-course OUT [--solutions solutions/lab_3_1_5_dpo] [--assignment lab_3_1_5_dpo]

writes

``OUT/notebooks/<assignment>/``  the release notebooks (``nbgrader generate_assignment`` on the solutions)
``OUT/package/``                 an installable ``dpolab`` (version ``X+student``): this package without
                                 the reference modules (:data:`dpolab._exports.REFERENCE_MODULES`), with
                                 the runtime dependencies of ``dpolab[lab]``
``OUT/dist/``                    a wheel of it, when ``pip wheel`` can build one offline

and then checks the package: no file of it holds a line of a solution block (``### BEGIN
SOLUTION`` .. ``### END SOLUTION``, lines of 25 or more non-blank characters, compared with
whitespace removed). A leak is reported and the command exits 1.

The grader uses the same package (:func:`build_package`, cached under ``OUT/.grader``): its
sandbox shows it to the student's kernel in place of the full ``dpolab``. Self-study
(``make lab``, Colab, Binder) keeps the full package, reference included.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .build import dpolab_folder, reference_modules

PACKAGE = dpolab_folder()  # the dpolab folder the grader imports (its files; not imported here)
REFERENCE_MODULES = reference_modules()
VERSION_SUFFIX = "+student"
MIN_LINE_CHARS = 25  # shorter solution lines ("return loss", "super().__init__()") are not telling
BEGIN, END = re.compile(r"^\s*### BEGIN SOLUTION\s*$"), re.compile(r"^\s*### END SOLUTION\s*$")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "dpolab"
version = {version}
description = "The DPO Lab's helpers for a graded course: the exercises' reference is not included"
readme = "README.md"
requires-python = ">=3.10"
dependencies = {dependencies}

[tool.setuptools.packages.find]
include = ["dpolab*"]

[tool.setuptools.package-data]
# the shipped results that notebooks 04 and 05 show where their training is not included
dpolab = ["training/*.json"]
"""

README = """\
# dpolab {version} (graded course)

The helpers the DPO Lab's notebooks import (device, tokenizer, tiny GPT, batching, JSONL,
plotting, test helpers), without the reference of any exercise: `dpolab.DPOLoss` and the
other exercises are what you write in the notebooks.

    pip install .          # or: pip install dist/dpolab-{version}-py3-none-any.whl
"""


def reference_paths(package: Path = PACKAGE) -> list[Path]:
    """The files and folders of ``package`` that hold a reference module."""
    out = []
    for module in REFERENCE_MODULES:
        relative = Path(*module.split(".")[1:])
        for candidate in (package / relative, package / relative.with_suffix(".py")):
            if candidate.exists():
                out.append(candidate)
    return out


def package_digest(package: Path = PACKAGE) -> str:
    """A hash of the package's source files and of the reference list: the cache key of a build."""
    h = hashlib.sha256(json.dumps(sorted(REFERENCE_MODULES)).encode())
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" not in path.parts:
            h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def runtime_dependencies() -> list[str]:
    """``dpolab``'s dependencies and those of its ``lab`` extra (what a student's notebook needs)."""
    pyproject = PACKAGE.parents[1] / "pyproject.toml"
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:
        tomllib = None
    if pyproject.exists() and tomllib is not None:  # a checkout (an editable install): the source of truth
        project = tomllib.loads(pyproject.read_text())["project"]
        lab = [r for r in project["optional-dependencies"]["lab"] if not r.startswith("dpolab")]
        return [*project["dependencies"], *lab]
    from importlib.metadata import requires

    out = []
    for req in requires("dpolab") or []:
        name, _, marker = req.partition(";")
        if not marker or re.search(r"""extra\s*==\s*["']lab["']""", marker):
            out.append(name.strip())
    return out


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (PACKAGE / "__init__.py").read_text(), re.M)
    return match.group(1) + VERSION_SUFFIX


def copy_package(dest: Path, package: Path = PACKAGE) -> Path:
    """``package`` without its reference modules, at ``dest/dpolab``; returns that folder."""
    target = dest / "dpolab"
    excluded = {p.resolve() for p in reference_paths(package)}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(SKIP(folder, names))
        return skipped | {n for n in names if (Path(folder) / n).resolve() in excluded}

    shutil.copytree(package, target, ignore=ignore)
    init = target / "__init__.py"
    init.write_text(
        re.sub(r'^__version__ = "([^"]+)"', f'__version__ = "{version()}"', init.read_text(), flags=re.M)
    )
    return target


def write_project(dest: Path, package: Path = PACKAGE) -> Path:
    """An installable project at ``dest``: pyproject.toml, README.md and the student ``dpolab``."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    copy_package(dest, package)
    (dest / "pyproject.toml").write_text(
        PYPROJECT.format(version=json.dumps(version()), dependencies=json.dumps(runtime_dependencies()))
    )
    (dest / "README.md").write_text(README.format(version=version()))
    return dest


def build_package(cache: Path) -> Path:
    """The student ``dpolab`` folder, built once per version of the package (under ``cache``)."""
    root = Path(cache) / f"student-{package_digest()[:16]}"
    Path(cache).mkdir(parents=True, exist_ok=True)
    if not (root / "dpolab" / "__init__.py").exists():
        tmp = Path(tempfile.mkdtemp(prefix="student-", dir=cache))
        copy_package(tmp)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root / "dpolab"


def build_wheel(project: Path, dist: Path) -> Path | None:
    """``pip wheel --no-deps --no-build-isolation``: offline, with this environment's setuptools."""
    dist.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--disable-pip-version-check", "-w", str(dist), str(project)],
        capture_output=True, text=True,
    )  # fmt: skip
    shutil.rmtree(project / "build", ignore_errors=True)
    for info in project.glob("*.egg-info"):
        shutil.rmtree(info, ignore_errors=True)
    if proc.returncode != 0:
        print(f"no wheel (pip wheel failed): {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    wheels = sorted(dist.glob("dpolab-*.whl"))
    return wheels[-1] if wheels else None


def release_notebooks(solutions: Path, assignment: str, dest: Path, package_url: str = "") -> list[Path]:
    """The graded release of ``solutions``: generated by nbgrader in a throwaway course, stamped with
    the Colab cell that installs the student package (from ``package_url`` or an uploaded wheel)."""
    from .build import nbgrader_env
    from .course import CONFIG
    from .release import stamp_folder

    with tempfile.TemporaryDirectory(prefix="dpolab-release-") as tmp:
        course = Path(tmp)
        shutil.copytree(solutions, course / "source" / assignment)
        (course / "nbgrader_config.py").write_text(
            CONFIG.format(
                root=str(course), db_url=f"sqlite:///{course / 'gradebook.db'}", assignment=assignment
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force"],
            cwd=course, env=nbgrader_env(), capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment failed:\n{proc.stdout}\n{proc.stderr}")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(course / "release" / assignment, dest)
    return stamp_folder(dest, graded=True, package_url=package_url)


# ---------------------------------------------------------------------- the leak check


def normalise(line: str) -> str:
    return "".join(line.split())


def solution_lines(solutions: Path) -> dict[str, str]:
    """Every telling line of a solution block of ``solutions/*.ipynb``: normalised -> as written."""
    import nbformat

    lines: dict[str, str] = {}
    for path in sorted(Path(solutions).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                if BEGIN.match(line):
                    inside = True
                elif END.match(line):
                    inside = False
                elif inside and len(normalise(line)) >= MIN_LINE_CHARS:
                    lines.setdefault(normalise(line), line.strip())
    return lines


def leaks(folder: Path, solutions: Path) -> list[str]:
    """``file: line`` for each solution line found in a file under ``folder`` (whitespace ignored)."""
    wanted = solution_lines(solutions)
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        text = path.read_bytes().decode("utf-8", errors="replace")
        squeezed = {normalise(line) for line in text.splitlines()}
        flat = normalise(text)
        for key, line in wanted.items():
            if key in squeezed or key in flat:
                found.append(f"{path.relative_to(folder)}: {line}")
    return found


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpolab-graded-course",
        description="Build what students receive for a graded course: the release notebooks and a "
        "dpolab package without the exercises' reference.",
    )
    p.add_argument("out", type=Path, help="output folder: notebooks/, package/, dist/")
    p.add_argument("--assignment", default="lab_3_1_5_dpo")
    p.add_argument("--solutions", type=Path, help="source notebooks (default: ./solutions/ASSIGNMENT)")
    p.add_argument("--no-wheel", action="store_true", help="do not build a wheel of the package")
    p.add_argument("--package-url", default="",
                   help="where students download the wheel (your course site): the notebooks' Colab cell "
                   "installs it from there; without it, the cell installs the wheel a student uploads")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    solutions = (args.solutions or Path("solutions") / args.assignment).resolve()
    if not any(solutions.glob("*.ipynb")):
        print(f"dpolab-graded-course: no source notebooks in {solutions}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    notebooks = release_notebooks(
        solutions, args.assignment, out / "notebooks" / args.assignment, args.package_url
    )
    project = write_project(out / "package")
    wheel = None if args.no_wheel else build_wheel(project, out / "dist")
    print(f"notebooks: {len(notebooks)} in {out / 'notebooks' / args.assignment}")
    print(f"package:   {project} (dpolab {version()}; pip install {wheel or project})")
    found = leaks(project, solutions) + leaks(out / "notebooks", solutions)
    if found:
        print("LEAK: solution lines in what students receive:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    print(f"checked: no line of a solution block in {project} or the notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
