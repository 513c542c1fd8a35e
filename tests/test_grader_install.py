"""The lab and its grader are two distributions: ``pip install dpolab`` installs no grader.

A fresh virtual environment (torch first, the CPU build this run uses) gets the lab alone from a
copy of the repository: ``dpolab`` imports, and there is no ``dpolab.autograde``, no
``dpolab_grade`` and no ``dpolab-grade`` command. Then ``pip install ./grader`` adds the grader
(and nbgrader, psutil), and that environment's own ``dpolab-grade`` grades a class in its sandbox:
the honest student keeps 11/11 on notebook 01, the one who imports the reference gets 0.
"""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest

from test_fail_closed import NB, POINTS, write_class
from venv_tools import TORCH, copy_checkout, make_venv, pip_install, venv_env

CHECK = (
    "import importlib.util as u, dpolab; "
    "print(u.find_spec('dpolab.autograde'), u.find_spec('dpolab_grade'), dpolab.__version__)"
)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grader_install")
    checkout = copy_checkout(tmp / "checkout", "grader")
    shutil.rmtree(checkout / "grader" / "dpolab_grade.egg-info", ignore_errors=True)
    python = make_venv(tmp / "venv", [TORCH], [str(checkout)])
    lab_only = subprocess.run(
        [str(python), "-c", CHECK], capture_output=True, text=True, env=venv_env(python)
    )
    scripts_before = sorted(p.name for p in python.parent.glob("dpolab*"))
    pip_install(python, str(checkout / "grader"))
    return {"tmp": tmp, "python": python, "lab_only": lab_only, "scripts_before": scripts_before}


def test_the_lab_alone_has_no_grader(venv):
    assert venv["lab_only"].returncode == 0, venv["lab_only"].stderr
    assert venv["lab_only"].stdout.split() == ["None", "None", "0.1.0"]
    assert venv["scripts_before"] == ["dpolab-train"]


def test_the_grader_installs_from_its_own_folder_and_grades(venv):
    python = venv["python"]
    assert sorted(p.name for p in python.parent.glob("dpolab*")) == [
        "dpolab-grade", "dpolab-graded-course", "dpolab-train",
    ]  # fmt: skip
    p = write_class(venv["tmp"] / "work")
    shutil.rmtree(p["class"] / "odd id ü")
    env = dict(venv_env(python), DPOLAB_DEVICE="cpu")
    from test_grade_cli import bwrap_missing

    sandbox = ["--sandbox", "none"] if bwrap_missing else []
    proc = subprocess.run(
        [str(python.parent / "dpolab-grade"), str(p["class"]), "--out", str(p["out"]),
         "--solutions", str(p["solutions"]), "--no-progress", *sandbox],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(p["out"] / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert rows["honest"]["score"] == str(POINTS) and rows["cheater"]["score"] == "0", rows
    assert (p["out"] / "feedback" / "honest" / "lab_3_1_5_dpo" / f"{NB}.html").exists()
    # the kernels ran with that environment's Python
    assert f"{python} " in (p["out"] / "logs" / "honest" / f"{NB}.log").read_text()
