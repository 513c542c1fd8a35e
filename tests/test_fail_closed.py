"""``dpolab-grade`` fails closed on isolation, and ``--sandbox none`` still hides the reference.

Where bubblewrap cannot be used, the default ``--sandbox auto`` (and ``--sandbox bwrap``) refuses
to grade: exit 2, a message that says how to fix it, nothing written in ``--out``. With
``--sandbox none`` the kernel runs unsandboxed, chosen knowingly, but its ``import dpolab`` is the
student package (first on its ``PYTHONPATH``): an answer that imports the reference earns nothing.

bubblewrap is made unusable with a stand-in ``bwrap`` first on ``PATH`` that fails as the real
one does where user namespaces are not allowed (``sandbox.bwrap_available`` finds it through
``PATH``). dpolab-grade runs as a subprocess, against notebook 01 only (11 points).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from notebook_tools import ASSIGNMENT, RELEASE, SOLUTIONS, grading_meta, solved_release

BIN = Path(sys.executable).parent
NB = "01_dpo_loss"
POINTS = 11
NO_NAMESPACES = "bwrap: No permissions to create new namespace"
# the guard against calling the reference switched off: only the package can stop the import
CHEAT = (
    "import dpolab\nimport dpolab.grading\n\n"
    "dpolab.grading.run_own_code = lambda fn, *a, allow=(), **k: fn(*a, **k)\n"
    "print('DPOLAB_FILE', dpolab.__file__)\n"
    "from dpolab import DPOLoss  # the reference, in the full package\n"
)
ODD_ID = "odd id ü"


def no_bwrap_env(tmp: Path) -> dict[str, str]:
    """This venv's bin on PATH, after a ``bwrap`` that cannot create a sandbox."""
    fake = tmp / "fake-bin"
    fake.mkdir(exist_ok=True)
    (fake / "bwrap").write_text(f'#!/bin/sh\necho "{NO_NAMESPACES}" >&2\nexit 1\n')
    (fake / "bwrap").chmod(0o755)
    return dict(
        os.environ, PATH=os.pathsep.join([str(fake), str(BIN), os.environ["PATH"]]), DPOLAB_DEVICE="cpu"
    )


def dpolab_grade(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "dpolab-grade"), *args, "--no-progress"]
    return subprocess.run(cmd, env=no_bwrap_env(tmp), capture_output=True, text=True, timeout=900)


def write_class(tmp: Path) -> dict[str, Path]:
    """Notebook 01 as the assignment; students ``honest`` (solved) and ``cheater`` (imports DPOLoss)."""
    p = {"class": tmp / "class", "solutions": tmp / "solutions" / ASSIGNMENT, "out": tmp / "out"}
    p["solutions"].mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{NB}.ipynb", p["solutions"])
    cheater = nbformat.read(RELEASE / f"{NB}.ipynb", as_version=4)
    for cell in cheater.cells:
        if grading_meta(cell).get("grade_id") == "dpo_loss_answer":
            cell.source = CHEAT
    students = {"honest": solved_release(f"{NB}.ipynb", RELEASE), "cheater": cheater, ODD_ID: cheater}
    for student, nb in students.items():
        (p["class"] / student).mkdir(parents=True)
        nbformat.write(nb, p["class"] / student / f"{NB}.ipynb")
    return p


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def test_resolve_sandbox_refuses_without_bubblewrap(monkeypatch):
    """auto and bwrap raise IsolationError with the fixes; none is the only way to run unsandboxed."""
    from dpolab_grade import isolation, runner

    monkeypatch.setattr(isolation, "bwrap_available", lambda: "bubblewrap (bwrap) is not installed")
    for mode in ("auto", "bwrap"):
        with pytest.raises(runner.IsolationError) as err:
            isolation.resolve_sandbox(mode, runner.DOOR)
        assert f"--sandbox {mode}{' (the default)' * (mode == 'auto')} needs bubblewrap" in str(err.value)
        assert "but bubblewrap (bwrap) is not installed" in str(err.value)
    use_bwrap, line = isolation.resolve_sandbox("none", runner.DOOR)
    assert use_bwrap is False and line.startswith("isolation: none (--sandbox none)")
    monkeypatch.setattr(isolation, "bwrap_available", lambda: None)
    assert isolation.resolve_sandbox("auto", runner.DOOR)[0] is True


@pytest.mark.parametrize("sandbox", [[], ["--sandbox", "bwrap"]])
def test_refuses_to_grade_without_bubblewrap(tmp_path, sandbox):
    """No usable bwrap: exit 2, the message says how to fix it, and --out is left as it was."""
    p = write_class(tmp_path)
    p["out"].mkdir()
    (p["out"] / "keep.txt").write_text("the instructor's")
    proc = dpolab_grade(
        tmp_path, str(p["class"]), "--out", str(p["out"]), "--solutions", str(p["solutions"]), *sandbox
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert err.startswith("dpolab-grade: refusing to grade: --sandbox")
    assert NO_NAMESPACES in err  # why bwrap is unusable, as bwrap said it
    for fix in (
        "apt-get install bubblewrap",
        "user namespaces",
        "docs/instructors.md",
        "At scale",
        "--sandbox none",
    ):
        assert fix in err, fix
    assert sorted(f.name for f in p["out"].rglob("*")) == ["keep.txt"]
    assert (p["out"] / "keep.txt").read_text() == "the instructor's"
    # a new --out folder is not even created
    proc = dpolab_grade(
        tmp_path, str(p["class"]), "--out", str(tmp_path / "new"), "--solutions", str(p["solutions"])
    )
    assert proc.returncode == 2 and not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def graded_without_sandbox(tmp_path_factory) -> dict:
    """The class graded with --sandbox none where bwrap is unusable."""
    tmp = tmp_path_factory.mktemp("fail_closed")
    p = write_class(tmp)
    proc = dpolab_grade(
        tmp, str(p["class"]), "--out", str(p["out"]), "--solutions", str(p["solutions"]),
        "--sandbox", "none", "--jobs", "2", "--cell-timeout", "60",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return {
        "p": p,
        "proc": proc,
        "grades": read_csv(p["out"] / "grades.csv"),
        "cells": read_csv(p["out"] / "cells.csv"),
    }


def test_sandbox_none_kernel_imports_the_student_package(graded_without_sandbox):
    """--sandbox none: the cheater's import fails in the kernel, every cell of notebook 01 scores 0;
    the solved notebook keeps its 11 points."""
    g = graded_without_sandbox
    assert g["grades"]["honest"]["status"] == "graded" and g["grades"]["honest"]["score"] == str(POINTS)
    assert g["grades"]["cheater"]["status"] == "graded" and g["grades"]["cheater"]["score"] == "0"
    cells = {k: v for k, v in g["cells"]["cheater"].items() if k not in ("student_id", "status")}
    assert len(cells) == 5 and set(cells.values()) == {"0"}, cells
    # what the kernel imported, printed by the answer cell: the student package built in OUT/.grader
    out = g["p"]["out"]
    graded = nbformat.read(out / "autograded" / "cheater" / ASSIGNMENT / f"{NB}.ipynb", as_version=4)
    (answer,) = [c for c in graded.cells if grading_meta(c).get("grade_id") == "dpo_loss_answer"]
    printed = "".join(o.get("text", "") for o in answer.outputs if o.output_type == "stream")
    file = Path(printed.split("DPOLAB_FILE", 1)[1].split()[0])
    assert file.parent.parent.parent == out / ".grader" and file.parent.parent.name.startswith("student-")
    assert not (file.parent / "losses").exists()
    (error,) = [o for o in answer.outputs if o.output_type == "error"]
    assert error.ename == "ReferenceNotIncludedError" and error.evalue.startswith(
        "DPOLoss is an exercise of notebook 01"
    )
    # the log says what was chosen and what the kernel imports
    log = (out / "grading.log").read_text()
    assert "isolation: none (--sandbox none)" in log
    assert "kernel package: the student dpolab" in log and "first on the kernel's PYTHONPATH" in log


def test_an_unusable_student_id_is_ungradable(graded_without_sandbox):
    """A folder name that cannot be a student id needs the instructor: ungradable, the id named."""
    row = graded_without_sandbox["grades"][ODD_ID]
    assert row["status"] == "ungradable" and row["score"] == "0"
    assert f"{ODD_ID!r} is not a usable student id" in row["reason"]
    assert "not handed in" not in row["reason"]


def test_unsandboxed_kernelspec_puts_the_student_package_first(tmp_path, monkeypatch):
    """--sandbox none: the zygote (whose forks are the kernels) has the student package's folder
    first on PYTHONPATH, the grader's own PYTHONPATH after it; that Python, and another one
    (--kernel-python), find it there."""
    from dpolab_grade import sandbox
    from dpolab_grade.student_package import build_package
    from dpolab_grade.student_sandbox import StudentSandbox

    folder = build_package(tmp_path / "cache")
    monkeypatch.setenv("PYTHONPATH", "/grader/extra")
    student = StudentSandbox(
        tmp_path / "unit", python=sys.executable, limits=sandbox.Limits(), use_bwrap=False, transport="ipc",
        forbidden=[], student_package=folder,
    )  # fmt: skip
    assert student.env["PYTHONPATH"] == f"{folder.parent}{os.pathsep}/grader/extra"
    assert "bwrap" not in student.prefix
    spec = json.loads((student.jupyter / "kernels" / "python3" / "kernel.json").read_text())
    assert spec["argv"][-3:] == ["launch", student.socket, "{connection_file}"]
    monkeypatch.delenv("PYTHONPATH")
    expected = os.path.realpath(folder / "__init__.py")
    assert sandbox.student_import(sys.executable, folder) == expected
    assert sandbox.package_folder(sys.executable) != os.path.realpath(folder)  # its own dpolab otherwise
    other = shutil.which("python3", path="/usr/bin:/bin")  # another environment: no dpolab of its own
    if other:
        assert sandbox.student_import(other, folder) == expected


# --------------------------------------------------------------------------- plain nbgrader's door
def plain_class(tmp: Path, sandbox: str = "") -> dict[str, Path]:
    """An nbgrader course with notebook 01 (``use_judge(c[, sandbox=...])``), ``honest`` and
    ``cheater`` submitted in nbgrader's layout."""
    from test_nbgrader_sandbox import plain_course

    p = write_class(tmp)
    root, home = tmp / "course", tmp / "home"
    plain_course(root, home, sandbox)
    for student in ("honest", "cheater"):
        (root / "submitted" / student / ASSIGNMENT).mkdir(parents=True)
        shutil.copy(p["class"] / student / f"{NB}.ipynb", root / "submitted" / student / ASSIGNMENT)
    return {"root": root, "home": home}


def test_plain_nbgrader_refuses_without_bubblewrap(tmp_path):
    """use_judge(c): no usable bwrap, no notebook graded; exit code 1 and the message with the fixes."""
    from test_nbgrader_sandbox import nbgrader, scores

    c = plain_class(tmp_path)
    proc = nbgrader(c["root"], c["home"], "autograde", ASSIGNMENT, path=no_bwrap_env(tmp_path)["PATH"])
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert 'refusing to grade: use_judge(c, sandbox="bwrap") (the default) needs bubblewrap' in log
    assert NO_NAMESPACES in log
    for fix in ("apt-get install bubblewrap", "At scale", 'use_judge(c, sandbox="none")'):
        assert fix in log, fix
    # nobody graded: nbgrader removes the failed autograded folders; its rows score nothing
    assert list((c["root"] / "autograded").rglob("*.ipynb")) == []
    assert set(scores(c["root"]).values()) <= {0}


def test_plain_nbgrader_sandbox_none_imports_the_student_package(tmp_path):
    """use_judge(c, sandbox="none"): graded without bwrap; the cheater's kernel imports the student
    package (no DPOLoss), so the exercise scores 0; the honest student keeps 11."""
    from test_nbgrader_sandbox import nbgrader, scores

    c = plain_class(tmp_path, sandbox="none")
    proc = nbgrader(c["root"], c["home"], "autograde", ASSIGNMENT, path=no_bwrap_env(tmp_path)["PATH"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert scores(c["root"]) == {"honest": POINTS, "cheater": 0}
    assert 'isolation: none (use_judge(c, sandbox="none"))' in log
    assert "first on the kernel's PYTHONPATH" in log
    graded = (c["root"] / "autograded" / "cheater" / ASSIGNMENT / f"{NB}.ipynb").read_text()
    assert "DPOLoss is an exercise of notebook 01_dpo_loss" in graded


# --------------------------------------------------------------------------- fixtures, pinned
def _graded_cell_with_records(records: list[dict]):
    from dpolab_grade.judge import MIME

    cell = nbformat.v4.new_code_cell("check()")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "test_x", "points": 1, "solution": False}
    cell.outputs = [nbformat.v4.new_output("display_data", data={MIME: r}) for r in records]
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell]
    return nb


def test_the_judge_uses_fixtures_only_with_the_digest_it_was_given_or_first_saw(tmp_path):
    """With ``--sandbox none`` the kernel is the grading user and can write the fixtures file: a file
    changed after the grader took its digest (dpolab-grade: when the course is built; plain nbgrader:
    before its first kernel) is not used, and every hidden test fails its cell (fail closed)."""
    import hashlib

    from traitlets.config import Config

    from dpolab_grade.preprocessors import JudgeRecords, read_fixtures

    record = {"test": "test_x", "records": [{"key": "k", "kind": "equal", "value": 1, "spec": {"msg": ""}}]}
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps({"nb": {"test_x": [record]}}))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    def judge(sha256: str):
        c = Config()
        c.JudgeRecords.fixtures, c.JudgeRecords.fixtures_sha256 = str(path), sha256
        nb, _ = JudgeRecords(config=c).preprocess(
            _graded_cell_with_records([record]), {"nbgrader": {"notebook": "nb", "assignment": "a"}}
        )
        return [o for o in nb.cells[0].outputs if o.output_type == "error"]

    assert judge(sha) == [] and judge("") == []  # as given; as first seen (now pinned)
    assert read_fixtures(path) == {"nb": {"test_x": [record]}}
    path.write_text(json.dumps({"nb": {"test_x": [dict(record, records=[])]}}))  # a kernel's rewrite
    for given in (sha, ""):
        (error,) = judge(given)
        assert "changed while grading" in "".join(error.traceback) and str(path) in "".join(error.traceback)
    with pytest.raises(RuntimeError, match="changed while grading"):
        read_fixtures(path)
