"""The lab and its grader are two distributions: ``pip install dpolab`` installs no grader.

A fresh virtual environment (torch first, the CPU build this run uses) gets the lab alone from a
copy of the repository: ``dpolab`` imports, and there is no ``dpolab.autograde``, no
``dpolab_grade`` and no ``dpolab-grade`` command. Then ``pip install ./grader`` adds the grader
(and nbgrader, psutil) and its commands. That environment's own ``dpolab-grade`` grades the whole
term's class of tests/test_grading_flows.py (the ``grader_venv`` fixture of conftest.py is built
once for both).
"""

from __future__ import annotations


def test_the_lab_alone_has_no_grader(grader_venv):
    code, stdout, stderr = grader_venv["lab_only"]
    assert code == 0, stderr
    assert stdout.split() == ["None", "None", "0.1.0"]
    assert grader_venv["scripts_before"] == ["dpolab-train"]


def test_the_grader_installs_from_its_own_folder_with_its_commands(grader_venv):
    python = grader_venv["python"]
    assert sorted(p.name for p in python.parent.glob("dpolab*")) == [
        "dpolab-grade", "dpolab-graded-course", "dpolab-train",
    ]  # fmt: skip
