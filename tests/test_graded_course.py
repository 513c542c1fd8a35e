"""Graded-course mode (issue 9, item 5): what students receive holds no exercise's answer.

``dpolab-graded-course OUT`` (dpolab_grade.student_package) builds the release notebooks
and a ``dpolab`` without the reference modules. These tests build it once, make a student
environment from it (a venv without pip whose ``.pth`` puts the student package first and
this test run's site-packages, for torch and Jupyter, after it: nothing is downloaded), and
check that

- no reference name can be imported there, and every helper the notebooks use can;
- no line of a solution block is in any file of the package (nor of its wheel);
- the release notebooks run there: with the stubs, only cells that reach a stub fail (never
  a missing dpolab name); with the solutions' answers pasted in, every cell runs;
- inside the grader's sandbox (bubblewrap) the kernel's ``import dpolab`` is the student
  package, and the reference's files are not there; without it (``--sandbox none``) the student
  package comes first on the kernel's ``PYTHONPATH`` (end to end: tests/test_fail_closed.py).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest

import dpolab
from dpolab._exports import EXERCISES, REFERENCE_MODULES, is_reference
from dpolab_grade import sandbox
from dpolab_grade import student_package as sp
from dpolab_grade.release import BADGE_PREFIX, INSTALL_CELL_ID, graded_cell_source
from notebook_tools import ASSIGNMENT, NOTEBOOKS, SOLUTIONS, grading_meta, solved_release
from venv_tools import child_env, kernel_manager, run_notebook

HELPERS = [  # what the notebooks' non-exercise cells and tests import (must work without the reference)
    "get_device", "TinyGPT", "GPTConfig", "CharTokenizer", "ArithmeticTask", "PreferenceBatch",
    "PreferenceData", "collate_preferences", "encode_pairs", "load_jsonl", "save_jsonl", "cosine_lr",
    "run_sft", "lab_recipe", "quick_mode", "DEFAULT_BETA", "kl_to_reference", "complete",
    "split_held_out", "load_part5_results",
]  # fmt: skip
NOT_A_STUDENT_NAME = re.compile(r"graded-course package|cannot import name|No module named 'dpolab")


def package_data() -> list[str]:
    """The data files of the full dpolab (pyproject.toml's package-data), relative to the package."""
    import tomllib

    pyproject = Path(dpolab.__file__).resolve().parents[2] / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["dpolab"]
    assert "training/part5_results.json" in data, data
    return data


def full_package_names() -> dict[str, bool]:
    """Every public name of the full dpolab -> whether it belongs to the reference."""
    table = dpolab._NAMES  # module (relative to dpolab) -> names
    return {name: is_reference("dpolab" + module) for module, names in table.items() for name in names}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """``dpolab-graded-course OUT`` run once: its exit code, output and folders."""
    out = tmp_path_factory.mktemp("graded") / "course"
    proc = subprocess.run(
        [sys.executable, "-m", "dpolab_grade.student_package", str(out), "--solutions", str(SOLUTIONS)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]},
    )
    return {"rc": proc.returncode, "log": proc.stdout + proc.stderr, "out": out}


@pytest.fixture(scope="module")
def student_python(built, tmp_path_factory) -> Path:
    """A venv whose ``dpolab`` is the student package; torch and Jupyter come from this test run."""
    venv = tmp_path_factory.mktemp("student-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # .pth lines are appended to sys.path in order: the student package first, then this run's
    # packages (whose own .pth files, such as the editable install of the full dpolab, are not read)
    lines = [str(built["out"] / "package"), sysconfig.get_paths()["purelib"]]
    (Path(purelib) / "graded_course.pth").write_text("\n".join(lines) + "\n")
    return python


def run_in(python: Path, code: str) -> dict:
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=child_env(python), cwd="/"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- the command


def test_command_builds_notebooks_package_and_wheel(built):
    out = built["out"]
    assert sorted(p.name for p in (out / "notebooks" / ASSIGNMENT).glob("*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:  # the release: stubs, no solution, no hidden test
        text = (out / "notebooks" / ASSIGNMENT / name).read_text()
        assert "### BEGIN SOLUTION" not in text and "### BEGIN HIDDEN TESTS" not in text
        assert "NotImplementedError" in text
        # the graded release: its Colab cell installs the student package, never the full dpolab
        nb = nbformat.reads(text, as_version=4)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code.get("id") == INSTALL_CELL_ID and first_code.source == graded_cell_source()
        assert "git+" not in first_code.source and "REPOSITORY" not in first_code.source
        assert BADGE_PREFIX not in text
    pyproject = (out / "package" / "pyproject.toml").read_text()
    assert 'name = "dpolab"' in pyproject and f'version = "{dpolab.__version__}+student"' in pyproject
    # the runtime dependencies of dpolab[lab]
    for requirement in ("torch", "numpy", "tqdm", "jupyterlab", "ipywidgets", "matplotlib"):
        assert f'"{requirement}' in pyproject, requirement
    assert "nbgrader" not in pyproject and "trl" not in pyproject
    wheels = list((out / "dist").glob("dpolab-*+student-py3-none-any.whl"))
    assert len(wheels) == 1, built["log"]
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "dpolab/device.py" in names and "dpolab/grading.py" in names
    assert not [n for n in names if is_reference(n.removesuffix(".py").replace("/", "."))]
    # the shipped results that notebooks 04 and 05 show where the reference cannot train
    missing = [f"dpolab/{data}" for data in package_data() if f"dpolab/{data}" not in names]
    assert not missing, f"the student wheel lacks the package's data files: {missing}"


def test_reference_modules_are_gone_from_the_package(built):
    package = built["out"] / "package" / "dpolab"
    for module in REFERENCE_MODULES:
        relative = Path(*module.split(".")[1:])
        assert not (package / relative).exists() and not (package / relative).with_suffix(".py").exists()
    assert not list(package.rglob("__pycache__")) and not list(package.rglob("*.pyc"))


def test_every_exercise_is_in_a_reference_module():
    """The one list (dpolab._exports) against the solutions: every name an answer cell defines."""
    defined = {}
    for name in NOTEBOOKS:
        for cell in nbformat.read(SOLUTIONS / name, as_version=4).cells:
            if cell.cell_type == "code" and grading_meta(cell).get("solution"):
                for node in ast.parse(cell.source).body:
                    if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                        defined[node.name] = name.removesuffix(".ipynb")
    assert defined == EXERCISES
    for name in defined:
        module = getattr(dpolab, name).__module__
        assert is_reference(module), f"{name} lives in {module}, which the student package keeps"


def test_no_solution_line_in_what_students_receive(built, tmp_path):
    wheel = next((built["out"] / "dist").glob("*.whl"))
    zipfile.ZipFile(wheel).extractall(tmp_path / "wheel")
    found = [
        *sp.leaks(built["out"] / "package", SOLUTIONS),
        *sp.leaks(tmp_path / "wheel", SOLUTIONS),
        *sp.leaks(built["out"] / "notebooks", SOLUTIONS),
    ]
    assert not found, "solution lines in the student package:\n" + "\n".join(found)
    assert built["rc"] == 0, built["log"]


def test_the_leak_check_finds_a_copied_answer(tmp_path):
    """The check is not vacuous: a file holding one line of an answer is found."""
    line = next(iter(sp.solution_lines(SOLUTIONS).values()))
    (tmp_path / "copy.py").write_text("x = 1\n    " + line.replace(" ", "  ") + "\n")
    assert sp.leaks(tmp_path, SOLUTIONS) == [f"copy.py: {line}"]


# ---------------------------------------------------------------------- the student environment


def test_no_reference_name_is_importable(student_python):
    names = full_package_names()
    code = f"""
import importlib, importlib.util, json
import dpolab
out = {{"file": dpolab.__file__, "version": dpolab.__version__, "errors": {{}}, "present": [],
       "modules": [m for m in {sorted(REFERENCE_MODULES)!r} if importlib.util.find_spec(m) is not None]}}
for name in {sorted(names)!r}:
    try:
        exec(f"from dpolab import {{name}}")
        out["present"].append(name)
    except ImportError as err:
        out["errors"][name] = f"{{type(err).__name__}}: {{err}}"
try:
    dpolab.DPOLoss
except ImportError as err:
    out["attribute"] = str(err)
exec("from dpolab import *")
print(json.dumps(out))
"""
    got = run_in(student_python, code)
    assert "/package/dpolab/" in got["file"] and got["version"].endswith("+student")
    assert got["modules"] == []
    reference = sorted(n for n, ref in names.items() if ref)
    assert sorted(got["errors"]) == reference
    assert sorted(got["present"]) == sorted(n for n, ref in names.items() if not ref)
    assert set(HELPERS) <= set(got["present"])
    assert got["errors"]["DPOLoss"] == (
        "ReferenceNotIncludedError: DPOLoss is an exercise of notebook 01_dpo_loss: "
        "the graded-course package does not include the reference"
    )
    assert "dpolab.losses" in got["errors"]["sequence_logps"]
    assert got["attribute"].startswith("DPOLoss is an exercise of notebook 01_dpo_loss")


def test_helpers_work_without_the_reference(student_python, tmp_path):
    """The task's pairs, JSONL, batching, SFT and the plots run in the student package."""
    code = f"""
import json, torch
import dpolab
from dpolab.plotting import dpo_loss_and_weight
task = dpolab.ArithmeticTask(seed=0)
pairs = task.preference_pairs(n=4)
dpolab.save_jsonl(pairs, {str(tmp_path / "pairs.jsonl")!r})
back = dpolab.load_jsonl({str(tmp_path / "pairs.jsonl")!r})
tok = dpolab.CharTokenizer()
data = dpolab.PreferenceData(back, tok)
batch = data.batches(2)[0]
loss, weight = dpo_loss_and_weight(torch.tensor([0.0]), beta=1.0)
recipe = dpolab.lab_recipe()
model, history = dpolab.run_sft(task, tok, recipe, seed=0, progress=False)
val, test = dpolab.split_held_out(task.eval_prompts)  # notebook 05 without the reference: shipped results
shipped = dpolab.load_part5_results()
print(json.dumps({{"pairs": [list(p) for p in pairs[:1]], "n": len(back), "rows": list(batch.chosen.input_ids.shape),
                  "loss": loss.item(), "weight": weight.item(), "sft_steps": len(history["loss"]),
                  "split": [len(val), len(test), len(set(val) & set(test))], "part5": sorted(shipped)}}))
"""
    env = child_env(student_python)
    proc = subprocess.run([str(student_python), "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    first = dpolab.ArithmeticTask(seed=0).preference_pairs(n=1)[0]
    assert got["pairs"] == [[first.prompt, first.chosen, first.rejected]]
    assert got["n"] == 4 and got["rows"][0] == 2
    assert got["loss"] == pytest.approx(0.6931471805599453) and got["weight"] == pytest.approx(0.5)
    assert got["sft_steps"] == dpolab.LAB_RECIPE.quick().sft_steps
    assert got["split"][2] == 0 and min(got["split"][:2]) > 0, got["split"]
    assert got["part5"] == sorted(dpolab.load_part5_results())


def stub_errors(errors, nb) -> list[str]:
    """Errors that a missing dpolab name caused (never a stub's)."""
    return [
        f"cell {i} ({nb.cells[i].source.splitlines()[0][:60]!r}): {ename}: {evalue[:200]}"
        for i, _, ename, evalue in errors
        if ename in ("ImportError", "ModuleNotFoundError", "ReferenceNotIncludedError")
        or NOT_A_STUDENT_NAME.search(evalue)
        or (ename == "AttributeError" and "dpolab" in evalue)
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_release_notebook_with_stubs_fails_only_at_stubs(name, built, student_python, tmp_path):
    nb = nbformat.read(built["out"] / "notebooks" / ASSIGNMENT / name, as_version=4)
    errors = run_notebook(nb, kernel_manager(tmp_path, student_python, child_env(student_python)), tmp_path)
    assert errors, "the stubs raise NotImplementedError: some cell must fail"
    assert any(ename == "NotImplementedError" for _, _, ename, _ in errors)
    bad = stub_errors(errors, nb)
    assert not bad, "cells that need the reference:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_release_notebook_with_answers_passes(name, built, student_python, tmp_path):
    nb = solved_release(name, built["out"] / "notebooks" / ASSIGNMENT)
    errors = run_notebook(nb, kernel_manager(tmp_path, student_python, child_env(student_python)), tmp_path)
    failing = [
        f"cell {i} ({nb.cells[i].source.splitlines()[0][:60]!r}): {ename}: {evalue[:200]}"
        for i, _, ename, evalue in errors
    ]
    assert not failing, "cells that fail with the answers in place:\n" + "\n".join(failing)


# ---------------------------------------------------------------------- the grader's sandbox


def test_runner_gives_the_kernel_the_student_package(tmp_path):
    """With or without bubblewrap the kernel gets the student package; only ``full`` gives the reference."""
    from dpolab_grade.runner import Options, kernel_package

    opts = Options(submissions=tmp_path, out=tmp_path / "out", solutions=SOLUTIONS)
    folder, line = kernel_package(opts, use_bwrap=True)
    assert (folder / "__init__.py").exists() and not (folder / "losses").exists()
    assert folder.parent.parent == tmp_path / "out" / ".grader"
    assert "mounted over the kernel's dpolab" in line
    # --sandbox none: the same package, first on the kernel's PYTHONPATH (checked with this Python,
    # whose own dpolab is the full one, an editable install)
    assert kernel_package(opts, use_bwrap=False) == (folder, kernel_package(opts, use_bwrap=False)[1])
    assert "first on the kernel's PYTHONPATH" in kernel_package(opts, use_bwrap=False)[1]
    assert sandbox.student_import(sys.executable, folder) == str(folder / "__init__.py")
    assert sandbox.package_folder(sys.executable) != str(folder)  # without PYTHONPATH: the full package
    opts.kernel_package = "full"
    folder, line = kernel_package(opts, use_bwrap=False)
    assert folder is None and line.startswith("WARNING") and "the reference is importable" in line


def test_runner_refuses_a_kernel_python_that_shadows_the_student_package(tmp_path, monkeypatch):
    """Where the kernel's Python would import another dpolab despite PYTHONPATH, nothing is graded."""
    from dpolab_grade import isolation, runner

    monkeypatch.setattr(isolation, "student_import", lambda python, folder: "/elsewhere/dpolab/__init__.py")
    opts = runner.Options(submissions=tmp_path, out=tmp_path / "out", solutions=SOLUTIONS)
    with pytest.raises(runner.IsolationError, match="imports dpolab from /elsewhere/dpolab/__init__.py"):
        runner.kernel_package(opts, use_bwrap=False)


@pytest.mark.skipif(sandbox.bwrap_available() is not None, reason=f"{sandbox.bwrap_available()}")
def test_sandboxed_kernel_cannot_reach_the_reference(tmp_path):
    folder = sp.build_package(tmp_path / "cache")
    work, notebook_dir, runtime = tmp_path / "work", tmp_path / "course" / "nb", tmp_path / "runtime"
    for d in (work, notebook_dir, runtime):
        d.mkdir(parents=True)
    os.chmod(work, 0o777)
    root = Path(__file__).resolve().parents[1]
    argv = sandbox.bwrap_argv(
        sys.executable, work, notebook_dir, runtime, [SOLUTIONS], student_package=folder
    )
    kernel_dpolab = sandbox.package_folder(sys.executable)
    code = f"""
import glob, importlib.util, json, os, sys
import dpolab
out = {{"file": dpolab.__file__, "modules": [m for m in {sorted(REFERENCE_MODULES)!r}
                                          if importlib.util.find_spec(m) is not None]}}
try:
    dpolab.DPOLoss
    out["DPOLoss"] = "importable"
except ImportError as err:
    out["DPOLoss"] = str(err)
found = []
for entry in [p for p in sys.path if p and os.path.isdir(p)] + [{str(root / "lib")!r}]:
    for base, dirs, files in os.walk(os.path.join(entry, "dpolab")):
        found += [os.path.join(base, f) for f in dirs + files
                  if f.split(".")[0] in ("losses", "preferences", "preference", "evaluation", "hf")]
    for info in glob.glob(os.path.join(entry, "dpolab*.egg-info", "SOURCES.txt")):
        if "losses" in open(info).read():
            found.append(info)
out["reference_files"] = found
out["solutions"] = os.path.exists({str(SOLUTIONS)!r})
print(json.dumps(out))
"""
    proc = subprocess.run([*argv, sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["file"] == os.path.join(kernel_dpolab, "__init__.py")  # the student package, mounted there
    assert got["modules"] == [] and got["reference_files"] == [] and got["solutions"] is False
    assert got["DPOLoss"].startswith("DPOLoss is an exercise of notebook 01_dpo_loss")
    # outside the sandbox the same folder holds the reference (the test would pass vacuously otherwise)
    assert os.path.isdir(os.path.join(kernel_dpolab, "losses"))


def _cell(source: str, **meta) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {
        "schema_version": 3,
        "locked": False,
        "solution": False,
        "grade": False,
        **meta,
    }
    return cell


@pytest.mark.skipif(sandbox.bwrap_available() is not None, reason=f"{sandbox.bwrap_available()}")
def test_dpolab_grade_kernel_imports_the_student_package(tmp_path):
    """End to end through dpolab-grade's kernelspec: an answer that imports the reference earns nothing.

    A one-exercise assignment: ``own`` writes the answer, ``copier`` imports DPOLoss from dpolab
    (which the full package would give it) and ``helper`` uses a helper the student package keeps.
    """
    from dpolab_grade.cli import main

    source = tmp_path / "source"
    source.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        _cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", solution=True, grade_id="answer"),
        _cell("assert answer == 42", grade=True, locked=True, grade_id="test_answer", points=1),
    ]
    nbformat.write(nb, source / "probe.ipynb")
    answers = {
        "own": "answer = 42",
        "copier": "from dpolab import DPOLoss\nanswer = 42",
        "helper": "from dpolab import get_device, load_jsonl\nanswer = 42",
    }
    for student, answer in answers.items():
        (tmp_path / "subs" / student).mkdir(parents=True)
        submitted = nbformat.from_dict(json.loads(json.dumps(nb)))
        submitted.cells[0].source = answer
        nbformat.write(submitted, tmp_path / "subs" / student / "probe.ipynb")
    out = tmp_path / "out"
    args = [str(tmp_path / "subs"), "--out", str(out), "--solutions", str(source), "--assignment", "probe"]
    assert main([*args, "--jobs", "2", "--no-progress", "--sandbox", "bwrap"]) == 0
    scores = {
        line.split(",")[0]: line.split(",")[1] for line in (out / "grades.csv").read_text().splitlines()[1:]
    }
    assert scores == {"own": "1", "copier": "0", "helper": "1"}
    assert dpolab.DPOLoss  # (the grader's own dpolab, where copier's import would have worked)
    assert "the student dpolab" in (out / "grading.log").read_text()
