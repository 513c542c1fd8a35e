"""Shared fixtures for the dpolab tests."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from dpolab.grading import random_lm_batch  # noqa: F401  (re-exported for the test modules)
from notebook_tools import make_course


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """A copy of the course (this repository's nbgrader_config.py, solutions/) with a freshly
    generated release: the release tests compare it, the grading tests grade submissions in it."""
    return make_course(tmp_path_factory.mktemp("nbgrader"))


# What a fresh environment holding the lab alone says of itself: the grader's module and package
# (none) and dpolab's version.
LAB_ONLY_CHECK = (
    "import importlib.util as u, dpolab; "
    "print(u.find_spec('dpolab.autograde'), u.find_spec('dpolab_grade'), dpolab.__version__)"
)


@pytest.fixture(scope="session")
def grader_venv(tmp_path_factory) -> dict:
    """A fresh venv (torch first, the CPU build of this run) with the lab alone installed from a copy
    of the repository, then the grader from that copy's own folder (``pip install ./grader``).
    Built once per test run (tests/test_grader_install.py and tests/test_grading_flows.py use it):
    ``{"python": its python, "lab_only": (LAB_ONLY_CHECK's exit code, stdout, stderr) and
    "scripts_before": its dpolab* commands, both before the grader was installed}``."""
    from venv_tools import TORCH, copy_checkout, make_venv, once_per_run, pip_install, venv_env

    with once_per_run(tmp_path_factory, "grader-venv") as (folder, build):
        if build:
            checkout = copy_checkout(folder / "checkout", "grader")
            shutil.rmtree(checkout / "grader" / "dpolab_grade.egg-info", ignore_errors=True)
            python = make_venv(folder / "venv", [TORCH], [str(checkout)])
            lab_only = subprocess.run(
                [str(python), "-c", LAB_ONLY_CHECK], capture_output=True, text=True, env=venv_env(python)
            )
            before = sorted(p.name for p in python.parent.glob("dpolab*"))
            pip_install(python, str(checkout / "grader"))
            (folder / "before.json").write_text(
                json.dumps({"lab_only": [lab_only.returncode, lab_only.stdout, lab_only.stderr],
                            "scripts_before": before})
            )  # fmt: skip
    return {"python": folder / "venv" / "bin" / "python", **json.loads((folder / "before.json").read_text())}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
